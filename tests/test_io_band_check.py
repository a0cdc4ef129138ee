"""Band error of stored H, S against the DFT code's own bands: measured, stored, enforced, reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from acehamil.io.band_check import band_errors, check_band_tolerance, dataset_band_errors
from acehamil.io.dataset import write_dataset
from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData


def _chain(rng, shift_meV, nk=5):
    """Two-orbital chain with exact reference bands; band 1 (the 'conduction' band) shifted by ``shift_meV``."""
    eps0, t0, t1 = 0.0, -1.0, 0.3
    H = RealSpaceMatrix.from_dense([2], [[0, 0, 0], [1, 0, 0], [-1, 0, 0]],
                                   [np.diag([eps0, 3.0]), np.diag([t0, t1]), np.diag([t0, t1])])
    S = RealSpaceMatrix.from_dense([2], [[0, 0, 0]], [np.eye(2)])
    k = np.zeros((nk, 3))
    k[:, 0] = rng.uniform(0, 0.5, nk)
    c = np.cos(2 * np.pi * k[:, 0])
    ref = np.stack([eps0 + 2 * t0 * c, 3.0 + 2 * t1 * c], 1)
    ref[:, 1] += shift_meV * 1e-3
    return StructureData(Atoms("H", cell=np.eye(3), pbc=True), OrbitalBasis.from_dict({1: [(1, 0), (2, 0)]}), H=(H,), S=S,
                         reference_bands=(k, ref), n_electrons=2.0, fermi_level=1.0)


@pytest.mark.parametrize("shift", [0.0, 0.7, 12.0])
def test_band_errors_measure_a_known_shift(rng, shift):
    e = band_errors(_chain(rng, shift))
    assert e["occupied"]["max_meV"] == pytest.approx(0.0, abs=1e-9)
    assert e["all"]["max_meV"] == pytest.approx(shift, abs=1e-9)
    # conduction band sits at 3 +- 0.6 eV: outside E_F +- 2 eV only for part of k; the window holds what lies inside
    assert e["near_ef"]["max_meV"] <= shift + 1e-9
    assert e["checked_max_meV"] == max(e["occupied"]["max_meV"], e["near_ef"]["max_meV"])
    json.dumps(e)  # storable


def test_band_tolerance_stops_or_flags(rng):
    bad = _chain(rng, 0.0)
    bad = StructureData(**{**{f: getattr(bad, f) for f in bad.__dataclass_fields__}, "fermi_level": 3.0})
    ref_k, ref = bad.reference_bands
    bad = StructureData(**{**{f: getattr(bad, f) for f in bad.__dataclass_fields__},
                           "reference_bands": (ref_k, ref + np.array([0.009, 0.0]))})
    with pytest.raises(ValueError, match=r"band error 9\.00 meV .* exceeds --band-tol 5 meV"):
        check_band_tolerance(bad, 5.0)
    flagged = check_band_tolerance(bad, 5.0, action="flag")
    assert flagged.info["band_error"]["above_tol"] and "band_error" not in bad.info  # argument not mutated
    ok = check_band_tolerance(bad, 10.0)
    assert not ok.info["band_error"]["above_tol"] and ok.info["band_error"]["tol_meV"] == 10.0


def test_missing_reference_bands_is_an_error(rng):
    sd = _chain(rng, 0.0)
    sd = StructureData(**{**{f: getattr(sd, f) for f in sd.__dataclass_fields__}, "reference_bands": None})
    with pytest.raises(ValueError, match="no reference_bands"):
        band_errors(sd)


def test_info_band_error_reports_existing_dataset(tmp_path, rng, capsys):
    """Post hoc: datasets made by any generator version get their band error from `acehamil info --band-error`."""
    from acehamil.cli import main

    path = tmp_path / "d.h5"
    good, off = _chain(rng, 0.0), _chain(rng, 3.0)
    write_dataset(path, [StructureData(**{**{f: getattr(s, f) for f in s.__dataclass_fields__}, "info": {"name": n}})
                         for s, n in ((good, "good"), (off, "off"))])
    rows = dataset_band_errors(path)
    assert [r["name"] for r in rows] == ["good", "off"]
    assert rows[1]["all"]["max_meV"] == pytest.approx(3.0, abs=1e-9)
    assert main(["info", str(path), "--band-error", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["band_errors"][1]["all"]["max_meV"] == pytest.approx(3.0, abs=1e-9)
    assert main(["info", str(path), "--band-error"]) == 0
    assert "2 structures" in capsys.readouterr().out


def test_shipped_dataset_band_errors(request):
    path = Path(request.config.rootpath) / "data" / "si8_szv.h5"
    if not path.exists():
        pytest.skip("data/si8_szv.h5 not generated")
    rows = dataset_band_errors(path, names={"si8-0000", "si8-0001", "si8-0002"})
    assert len(rows) == 3
    for r in rows:  # data/README.md: occupied max 0.54 meV, all bands max 1.8 meV over 40 structures
        assert r["occupied"]["max_meV"] < 0.6 and r["all"]["max_meV"] < 2.0

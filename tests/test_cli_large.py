"""``acehamil dos --method``, ``acehamil eigs`` and supercell tiling on a Slater-Koster dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from acehamil.cli import main
from acehamil.io.dataset import write_dataset
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.structure.supercell import tile_matrix, tile_structure
from acehamil.tb.eigen import solve
from acehamil.tb.toy import slater_koster

BASIS = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("large")
    at = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    at.rattle(0.05, rng=np.random.default_rng(1))
    H, S = slater_koster(at, BASIS, cutoff=4.0)
    write_dataset(d / "si64.h5", [StructureData(at, BASIS, H=(H,), S=S, n_electrons=4.0 * len(at))])
    return d / "si64.h5"


def test_dos_kpm_cli(data_file, tmp_path):
    out = tmp_path / "kpm.json"
    assert main(["dos", str(data_file), "--method", "kpm", "--moments", "256", "--vectors", "4", "--json", str(out),
                 "-q"]) == 0
    res = json.loads(out.read_text())
    assert res["method"] == "kpm" and res["n_moments"] == 256 and res["n_vectors"] == 4
    assert len(res["dos_error"]) == len(res["dos"]) == len(res["energies"])
    assert res["idos"][-1] == pytest.approx(2 * 256, rel=1e-9)
    assert res["fermi_level"] is not None
    dense = tmp_path / "dense.json"
    assert main(["dos", str(data_file), "--method", "dense", "--kmesh", "1", "1", "1", "--json", str(dense), "-q"]) == 0
    assert json.loads(dense.read_text())["method"] == "dense"


def test_eigs_cli_shift_invert_equals_dense(data_file, tmp_path):
    si, de = tmp_path / "si.json", tmp_path / "de.json"
    assert main(["eigs", str(data_file), "--near", "0.8", "-n", "6", "--method", "shift-invert", "--json", str(si), "-q"]) == 0
    assert main(["eigs", str(data_file), "--near", "0.8", "-n", "6", "--method", "dense", "--json", str(de), "-q"]) == 0
    a, b = json.loads(si.read_text()), json.loads(de.read_text())
    np.testing.assert_allclose(a["energies"], b["energies"], atol=1e-8)
    assert a["method"] == "shift-invert" and a["residual_eV"] < 1e-8
    assert main(["eigs", str(data_file), "--near", "fermi", "-n", "4", "-q"]) == 0
    assert main(["eigs", str(data_file), "--near", "middle", "-q"]) == 2
    assert main(["eigs", str(data_file), "-n", "1000", "-q"]) == 2


def test_tiled_cell_spectrum_is_the_cells_k_grid(rng):
    """Tiling n1 x n2 x n3: Gamma of the supercell = the cell at the commensurate k-points; tiling
    the SK model equals building it on the repeated atoms."""
    at = bulk("Si", "diamond", a=5.43)
    at.rattle(0.05, rng=rng)
    H, S = slater_koster(at, BASIS, cutoff=4.0)
    reps = (2, 3, 1)
    Ht, St = tile_matrix(H, reps), tile_matrix(S, reps)
    Hr, Sr = slater_koster(at.repeat(reps), BASIS, cutoff=4.0)
    e_tiled = solve(Ht, St, [[0, 0, 0]])[0]
    e_direct = solve(Hr, Sr, [[0, 0, 0]])[0]
    np.testing.assert_allclose(e_tiled, e_direct, atol=1e-10)
    k = np.array([[a / 2, b / 3, 0.0] for a in range(2) for b in range(3)])
    e_cells = np.sort(solve(H, S, k).ravel())
    np.testing.assert_allclose(e_tiled, e_cells, atol=1e-10)
    sd = tile_structure(StructureData(at, BASIS, H=(H,), S=S, n_electrons=8.0), reps)
    assert sd.n_electrons == 48.0 and len(sd.atoms) == 12 and sd.info["supercell"] == [2, 3, 1]
    with pytest.raises(ValueError, match="non-periodic"):
        at2 = at.copy()
        at2.pbc = (True, True, False)
        tile_structure(StructureData(at2, BASIS, H=(H,), S=S), (1, 1, 2))
    with pytest.raises(ValueError, match="3 integers"):
        tile_matrix(H, (2, 0, 1))


def test_dos_and_eigs_of_a_tiled_supercell_cli(data_file, tmp_path):
    out = tmp_path / "tiled.json"
    assert main(["dos", str(data_file), "--supercell", "2", "1", "1", "--moments", "128", "--vectors", "4",
                 "--json", str(out), "-q"]) == 0
    res = json.loads(out.read_text())
    assert res["method"] == "kpm" and res["idos"][-1] == pytest.approx(2 * 512, rel=1e-9)
    ej = tmp_path / "eigs.json"
    assert main(["eigs", str(data_file), "--supercell", "2", "1", "1", "-n", "6", "--near", "0.5", "--json", str(ej),
                 "-q"]) == 0
    e = json.loads(ej.read_text())
    from acehamil.io.dataset import read_dataset

    sd = read_dataset(data_file)[0]
    w = solve(sd.H[0], sd.S, [[0, 0, 0], [0.5, 0, 0]]).ravel()
    ref = np.sort(w[np.argsort(np.abs(w - 0.5), kind="stable")[:6]])
    np.testing.assert_allclose(e["energies"], ref, atol=1e-8)
    assert e["method"] == "tiled-bloch" and e["norb"] == 512
    assert main(["dos", str(data_file), "--supercell", "2", "1", "1", "--pdos", "-q"]) == 2
    assert main(["eigs", str(data_file), "--supercell", "0", "1", "1", "-q"]) == 2

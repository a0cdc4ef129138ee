"""Acceptance on real DFT output (skips when ../shared/data or a reader is absent):
FHI-aims bilayer graphene bands vs band100*.out, ACEhamiltonians Si DOS vs the stored DOS."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from acehamil.cli import main
from acehamil.io.dataset import write_dataset


def _aims_band_files(folder):
    """k (nk, 3) fractional and energies (nk, nbands) relative to the chemical potential, eV."""
    ks, es = [], []
    for f in sorted(folder.glob("band100*.out")):
        a = np.loadtxt(f, ndmin=2)
        ks.append(a[:, 1:4])
        es.append(a[:, 5::2])  # columns: index, k1 k2 k3, then (occupation, energy) pairs
    return np.concatenate(ks), np.concatenate(es)


@pytest.fixture(scope="module")
def graphene(shared_data):
    fa = pytest.importorskip("acehamil.io.fhi_aims", reason="FHI-aims reader (acehamil.io.fhi_aims) not available")
    folder = shared_data / "fhi-aims" / "bilayer-graphene"
    sd = fa.read_fhi_aims(folder)
    k, rel = _aims_band_files(folder)
    return sd, k, rel + sd.fermi_level  # absolute energies: value + last chemical potential


def test_fhi_aims_bands_reproduced(graphene, tmp_path):
    sd, k, ref = graphene
    data = tmp_path / "bg.h5"
    write_dataset(data, [dataclasses.replace(sd, reference_bands=(k, ref))])
    js, png = tmp_path / "bands.json", tmp_path / "bands.png"
    assert main(["bands", str(data), "-o", str(png), "--json", str(js), "-q"]) == 0
    out = json.loads(js.read_text())
    np.testing.assert_allclose(out["kpts"], k)
    eps = np.array(out["energies"])
    nb = ref.shape[1]  # FHI-aims prints the lowest 29 of the 56 states
    assert eps.shape == (len(k), 56) and nb == 29
    err = np.abs(eps[:, :nb] - ref).max()
    assert err <= 1e-4, f"max |acehamil - FHI-aims| = {err:.2e} eV"
    assert out["reference_max_error"] == pytest.approx(err)
    assert np.array(out["reference_energies"]) == pytest.approx(ref)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_fhi_aims_bands_kpts_file(graphene, tmp_path):
    sd, k, ref = graphene
    data = tmp_path / "bg.h5"
    write_dataset(data, [sd])
    kf = tmp_path / "k.txt"
    np.savetxt(kf, k)
    js = tmp_path / "b.json"
    assert main(["bands", str(data), "--kpts", str(kf), "--json", str(js), "-q"]) == 0
    assert np.abs(np.array(json.loads(js.read_text())["energies"])[:, : ref.shape[1]] - ref).max() <= 1e-4


@pytest.fixture(scope="module")
def si_acehamiltonians(shared_data):
    ah = pytest.importorskip("acehamil.io.acehamiltonians",
                             reason="ACEhamiltonians reader (acehamil.io.acehamiltonians) not available")
    import h5py

    path = shared_data / "acehamiltonians-si" / "example_data.h5"
    sd = ah.read_acehamiltonians(path, "0224")
    with h5py.File(path, "r") as f:
        g = f["0224/Data/DoS"]
        e_rel, values, broadening = g["energies"][()], g["values"][()], float(g["broadening"][()])
        fermi = float(f["0224/Data/fermi_level"][()])
    return sd, e_rel, values, broadening, fermi


def test_acehamiltonians_si_dos_matches_stored(si_acehamiltonians, tmp_path):
    sd, e_rel, ref, broadening, fermi = si_acehamiltonians
    data = tmp_path / "si.h5"
    write_dataset(data, [sd])
    js = tmp_path / "dos.json"
    # the stored DOS: energies relative to the Fermi level, on FHI-aims' Gamma-centred 20x21x21 grid
    # (Info/k-points: 4411 points = the grid reduced by k ~ -k), Gaussian broadening; it is matched by
    # our Gaussian of width sqrt(3) * broadening (see docs/tb.md)
    width = float(np.sqrt(3.0) * broadening)
    e_abs = e_rel + fermi  # float64 array
    argv = ["dos", str(data), "--kmesh", "20", "21", "21", "--gamma-centred", "--width", repr(width), "--erange", repr(float(e_abs[0])),
            repr(float(e_abs[-1])), "--npoints", str(len(e_abs)), "--fermi-level", repr(fermi), "--json", str(js), "-q"]
    assert main(argv) == 0
    out = json.loads(js.read_text())
    np.testing.assert_allclose(out["energies"], e_abs, atol=1e-6)  # the stored grid is uniform to print precision
    dos = np.array(out["dos"])
    assert np.abs(dos - ref).max() <= 0.01 * ref.max()
    assert np.abs(dos - ref).sum() <= 0.002 * ref.sum()


def test_fhi_aims_water_dimer_cluster(shared_data, tmp_path):
    """Non-periodic: Gamma only, eigenvalues.out reproduced, E_F from the electron count = mid HOMO-LUMO."""
    fa = pytest.importorskip("acehamil.io.fhi_aims", reason="FHI-aims reader (acehamil.io.fhi_aims) not available")
    folder = shared_data / "fhi-aims" / "water-dimer"
    sd = fa.read_fhi_aims(folder)
    ref = np.loadtxt(folder / "eigenvalues.out").reshape(-1)  # absolute, eV
    data = tmp_path / "w.h5"
    write_dataset(data, [sd])
    js = tmp_path / "w.json"
    assert main(["bands", str(data), "--json", str(js), "-o", str(tmp_path / "w.pdf"), "-q"]) == 0
    out = json.loads(js.read_text())
    assert out["kpts"] == [[0.0, 0.0, 0.0]]
    eps = np.array(out["energies"])[0]
    assert np.abs(eps[: len(ref)] - ref[: len(eps)]).max() <= 1e-4
    nocc = int(sd.n_electrons) // 2
    assert out["band_gap"] == pytest.approx(eps[nocc] - eps[nocc - 1])
    assert out["fermi_level"] == pytest.approx(0.5 * (eps[nocc] + eps[nocc - 1]))
    assert out["fermi_level"] == pytest.approx(sd.fermi_level, abs=1e-4)  # FHI-aims' chemical potential

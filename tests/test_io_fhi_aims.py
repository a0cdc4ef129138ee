"""FHI-aims reader against FHI-aims' own numbers (../shared/data/fhi-aims)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from acehamil.io.fhi_aims import read_basis_indices, read_fhi_aims
from acehamil.so3 import wigner_d_real
from acehamil.tb.eigen import solve

BANDS = ("band1001.out", "band1002.out", "band1003.out")


@pytest.fixture(scope="module")
def graphene(shared_data):
    folder = shared_data / "fhi-aims" / "bilayer-graphene"
    return folder, {fmt: read_fhi_aims(folder, prefer_hdf5=fmt == "h5") for fmt in ("txt", "h5")}


def _band_file(path: Path):
    rows = np.array([line.split() for line in path.read_text().splitlines() if line.strip()], dtype=float)
    return rows[:, 1:4], rows[:, 5::2]  # k fractional, energies (eV, relative to the chemical potential)


@pytest.mark.parametrize("fmt", ["txt", "h5"])
@pytest.mark.parametrize("band", BANDS)
def test_graphene_bands_match_fhi_aims(graphene, fmt, band):
    folder, data = graphene
    sd = data[fmt]
    kpts, eref = _band_file(folder / band)
    eps = solve(sd.H[0], sd.S, kpts)
    # documented energy reference: band files are relative to the last chemical potential in aims.out
    err = np.abs(eps[:, : eref.shape[1]] - (eref + sd.fermi_level)).max()
    assert err <= 1e-4, f"max band error {err:.2e} eV"


def _aims_dense(path: Path, n: int) -> np.ndarray:
    m = np.zeros((n, n))
    for line in path.read_text().splitlines():
        t = line.split()
        if len(t) == 3:
            a, b, v = int(t[0]) - 1, int(t[1]) - 1, float(t[2])
            m[a, b] = m[b, a] = v
    return m


@pytest.mark.parametrize("which", ["H", "S"])
def test_graphene_cell_sum_equals_gamma_matrices(graphene, which):
    folder, data = graphene
    sd = data["txt"]
    bmap = read_basis_indices(folder / "basis-indices.out", sd.atoms.numbers)
    mat = sd.H[0] if which == "H" else sd.S
    _, dense = mat.to_dense()
    ours = dense.sum(axis=0)
    ref = bmap.to_acehamil(_aims_dense(folder / ("hamiltonian.out" if which == "H" else "overlap-matrix.out"), len(ours)))
    factor = sd.info["hartree_to_ev"] if which == "H" else 1.0
    assert np.abs(ours / factor - ref).max() <= 1e-8  # Hartree


def test_graphene_text_and_hdf5_agree(graphene):
    _, data = graphene
    a, b = data["txt"], data["h5"]
    for m, n in [(a.H[0], b.H[0]), (a.S, b.S)]:
        assert m.same_pattern(n)
        # the text file prints 16 significant digits: equal to the last bit or two
        np.testing.assert_allclose(m.data, n.data, rtol=0, atol=1e-14 * max(1.0, np.abs(m.data).max()))
    assert a.H[0].hermiticity_error() < 1e-12 and a.S.hermiticity_error() < 1e-14


def test_graphene_overlap_depends_on_bond_only(graphene):
    """s-s overlaps at equal bond length agree; s-p overlap vectors point along the bond (one sign)."""
    _, data = graphene
    sd = data["txt"]
    S, pos, cell = sd.S, sd.atoms.positions, sd.atoms.cell.array
    vec = pos[S.j] - pos[S.i] + S.shift @ cell
    s_index, p_index = 1, slice(6, 9)  # C: shells s s s p p d; second s and second p shell

    def spread(bonds):
        groups = {}
        for p, d in enumerate(np.round(np.linalg.norm(bonds, axis=1), 6)):
            groups.setdefault(d, []).append(S.block(p)[s_index, s_index])
        return max(np.ptp(v) for v in groups.values())

    assert spread(vec) < 1e-5
    # negative control: the opposite cell-shift sign breaks it
    assert spread(pos[S.j] - pos[S.i] - S.shift @ cell) > 1e-2
    cosines = []
    for p in range(S.nblocks):
        v = S.block(p)[s_index, p_index]  # (y, z, x)
        r = vec[p]
        if np.linalg.norm(r) > 0.1 and np.linalg.norm(v) > 1e-3:
            cosines.append(np.dot(v[[2, 0, 1]], r) / np.linalg.norm(v) / np.linalg.norm(r))
    cosines = np.array(cosines)
    assert len(cosines) > 20
    assert np.all(np.abs(np.abs(cosines) - 1) < 1e-6) and (np.all(cosines > 0) or np.all(cosines < 0))


def test_graphene_s_d_overlaps_follow_real_harmonics(graphene):
    """<s|d_m> at bond r is f(|r|) Y_2m(r) in our convention: proportional to D^2(Q)[:, m=0] for Q z = r."""
    _, data = graphene
    sd = data["txt"]
    S, pos, cell = sd.S, sd.atoms.positions, sd.atoms.cell.array
    vec = pos[S.j] - pos[S.i] + S.shift @ cell
    checked = 0
    for p in range(S.nblocks):
        r = vec[p]
        v = S.block(p)[1, 9:14]
        if np.linalg.norm(r) < 0.1 or np.linalg.norm(v) < 1e-3:
            continue
        z = r / np.linalg.norm(r)
        a = np.cross([0.0, 0.0, 1.0], z)
        if np.linalg.norm(a) < 1e-9:
            Q = np.eye(3) if z[2] > 0 else np.diag([1.0, -1.0, -1.0])
        else:
            a /= np.linalg.norm(a)
            ang = np.arccos(np.clip(z[2], -1, 1))
            K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
            Q = np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K
        y = wigner_d_real(2, Q)[:, 2]
        cos = np.dot(v, y) / np.linalg.norm(v)
        assert abs(abs(cos) - 1) < 1e-6, (p, cos)
        checked += 1
    assert checked > 10


def test_water_cluster_eigenvalues(shared_data):
    folder = shared_data / "fhi-aims" / "water-dimer"
    sd = read_fhi_aims(folder)
    assert not sd.periodic and sd.H[0].shifts.tolist() == [[0, 0, 0]]
    eps = solve(sd.H[0], sd.S, [[0.0, 0.0, 0.0]])[0]
    ref = np.loadtxt(folder / "eigenvalues.out")
    assert np.abs(eps - ref).max() <= 1e-4


@pytest.mark.parametrize("missing", ["geometry.in", "basis-indices.out", "rs_indices.out", "rs_overlap.out"])
def test_missing_file_is_named(shared_data, tmp_path, missing):
    src = shared_data / "fhi-aims" / "water-dimer"
    for f in src.iterdir():
        if f.name != missing:
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.").replace("rs_overlap\\.out", "rs_overlap")):
        read_fhi_aims(tmp_path)


def test_basis_mismatch_is_reported(shared_data, tmp_path):
    src = shared_data / "fhi-aims" / "water-dimer"
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    lines = (tmp_path / "basis-indices.out").read_text().splitlines()
    (tmp_path / "basis-indices.out").write_text("\n".join(lines[:-1]) + "\n")  # drop the last function
    with pytest.raises(ValueError, match="shell|basis mismatch"):
        read_fhi_aims(tmp_path)


def test_unknown_species_in_geometry_is_reported(shared_data, tmp_path):
    src = shared_data / "fhi-aims" / "water-dimer"
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    geo = (tmp_path / "geometry.in").read_text().replace(" H\n", " Xx\n", 1)
    (tmp_path / "geometry.in").write_text(geo)
    with pytest.raises((ValueError, KeyError)):
        read_fhi_aims(tmp_path)

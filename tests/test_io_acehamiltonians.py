"""ACEhamiltonians HDF5 reader: orientation conventions and the stored DOS."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from acehamil.io import acehamiltonians as ah
from acehamil.tb.eigen import solve

GROUPS = ("0224", "0225")


@pytest.fixture(scope="module")
def example(shared_data):
    path = shared_data / "acehamiltonians-si" / "example_data.h5"
    return path, {g: ah.read_acehamiltonians(path, g) for g in GROUPS}


def _sp_cosines(sd, translation_sign=1):
    """cos(angle) between every <s|p> overlap vector (our order y, z, x) and its bond vector."""
    S, pos, cell = sd.S, sd.atoms.positions, sd.atoms.cell.array
    out = []
    for p in range(S.nblocks):
        r = pos[S.j[p]] - pos[S.i[p]] + translation_sign * S.shift[p] @ cell
        v = S.block(p)[2, 6:9]  # valence 3s with the second p shell
        if np.linalg.norm(r) > 0.1 and np.linalg.norm(v) > 1e-3:
            out.append(np.dot(v[[2, 0, 1]], r) / np.linalg.norm(v) / np.linalg.norm(r))
    return np.array(out)


@pytest.mark.parametrize("group", GROUPS)
def test_overlaps_depend_on_bond_vector_only(example, group):
    """s-s overlaps depend on the bond length only, and s-p overlaps point along the bond with one sign.

    (The 2-atom cells have inversion symmetry, so s-s alone cannot tell the translation sign;
    the s-p test can, and fails for the opposite sign.)"""
    _, data = example
    sd = data[group]
    S, pos, cell = sd.S, sd.atoms.positions, sd.atoms.cell.array
    d = np.round(np.linalg.norm(pos[S.j] - pos[S.i] + S.shift @ cell, axis=1), 6)
    groups = {}
    for p in range(S.nblocks):
        groups.setdefault(d[p], []).append(S.block(p)[2, 2])
    assert max(np.ptp(v) for v in groups.values()) < 1e-8
    cos = _sp_cosines(sd)
    assert len(cos) > 50
    assert np.all(np.abs(cos - cos[0]) < 1e-6) and abs(abs(cos[0]) - 1) < 1e-6
    assert not np.all(np.abs(np.abs(_sp_cosines(sd, -1)) - 1) < 1e-3)  # negative control


@pytest.mark.parametrize("group", GROUPS)
def test_bands_reproduce_stored_dos(example, group):
    """Eigenvalues on the stored k-points, Gaussian-broadened with the stored width, give the stored DOS.

    The stored energies are relative to the Fermi level; the DOS is per cell with spin degeneracy 2."""
    _, data = example
    sd = data[group]
    dos = sd.info["dos"]
    kpts, w = np.array(dos["kpts"]), np.array(dos["weights"])
    E, ref, sig = np.array(dos["energies"]), np.array(dos["values"]), dos["broadening"]
    eps = solve(sd.H[0], sd.S, kpts)
    # Gaussian broadening on a fine grid (bin width sig/20, error O(bin^2)), then shifted look-ups
    h = sig / 20
    grid = np.arange(E.min() + sd.fermi_level - 3, E.max() + sd.fermi_level + 3, h)
    hist = np.bincount(np.clip(np.rint((eps - grid[0]) / h).astype(int), 0, len(grid) - 1).ravel(),
                       weights=np.broadcast_to(w[:, None], eps.shape).ravel(), minlength=len(grid))
    hist[[0, -1]] = 0.0
    kx = np.arange(-8 * sig, 8 * sig + h / 2, h)
    smooth = 2 * np.convolve(hist, np.exp(-0.5 * (kx / sig) ** 2) / (sig * np.sqrt(2 * np.pi)), mode="same")

    def broadened(delta):
        return np.interp(E + sd.fermi_level + delta, grid, smooth)

    ours = broadened(0.0)
    assert ours.sum() == pytest.approx(ref.sum(), rel=1e-3)  # same normalisation (states per cell)
    assert np.abs(ours - ref).max() < 0.04 * ref.max()  # measured 2.6 % (0224)
    assert np.abs(ours - ref).mean() < 0.01 * ref.max()  # measured 0.5 %
    # the best energy alignment lies well within the broadening
    shifts = np.linspace(-2 * sig, 2 * sig, 21)
    best = shifts[np.argmin([np.abs(broadened(d) - ref).mean() for d in shifts])]
    assert abs(best) <= sig / 2


def test_units_and_metadata(example):
    _, data = example
    sd = data["0224"]
    assert sd.basis.lvalues(14) == (0, 0, 0, 1, 1, 1, 2)
    assert sd.H[0].hermiticity_error() < 1e-9 and sd.S.hermiticity_error() < 1e-12
    assert sd.fermi_level == pytest.approx(-5.77904613)
    assert sd.forces.shape == (2, 3)


def test_read_all_groups(example):
    path, data = example
    every = ah.read_acehamiltonians(path)
    assert [sd.info["group"] for sd in every] == list(GROUPS)
    assert np.array_equal(every[1].H[0].data, data["0225"].H[0].data)


def _copy_group(src, dst, group):
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        f.copy(group, g)


def test_errors_name_the_problem(example, tmp_path):
    path, _ = example
    with pytest.raises(ValueError, match="no group 'nope'"):
        ah.read_acehamiltonians(path, "nope")
    bad = tmp_path / "bad.h5"
    _copy_group(path, bad, "0224")
    with h5py.File(bad, "a") as f:
        del f["0224/Data/S"]
    with pytest.raises(ValueError, match="Data/S"):
        ah.read_acehamiltonians(bad, "0224")
    mism = tmp_path / "mismatch.h5"
    _copy_group(path, mism, "0224")
    with h5py.File(mism, "a") as f:
        del f["0224/Info/Basis/14"]
        f["0224/Info/Basis/14"] = np.array([[3, 0], [3, 1]])
    with pytest.raises(ValueError, match="basis mismatch"):
        ah.read_acehamiltonians(mism, "0224")
    unknown = tmp_path / "unknown.h5"
    _copy_group(path, unknown, "0224")
    with h5py.File(unknown, "a") as f:
        f["0224/Structure/atomic_numbers"][0] = 32
    with pytest.raises(ValueError, match="Ge"):
        ah.read_acehamiltonians(unknown, "0224")
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated"):
        ah.read_acehamiltonians(trunc, "0224")

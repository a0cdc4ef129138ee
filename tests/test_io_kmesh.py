"""Fourier and SCF k-meshes chosen from the cell: every kept bond is the unique shortest image."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from acehamil.io.kmesh import (check_fourier_kmesh, check_vacuum, fourier_kmesh_for, max_r_cut, scf_kmesh_for,
                              shortest_vector, vacuum_gaps)
from acehamil.io.pyscf_matrices import _wigner_seitz_blocks


def _random_cell(rng):
    """A random, possibly skewed cell with lengths 2.5-7 Å."""
    while True:
        c = rng.normal(size=(3, 3))
        c *= rng.uniform(2.5, 7.0, size=3)[:, None] / np.linalg.norm(c, axis=1)[:, None]
        lengths, vol = np.linalg.norm(c, axis=1), abs(np.linalg.det(c))
        if vol > 0.3 * np.prod(lengths):  # not too flat
            return c


def _images_within(d, lattice, r_cut, reach=3):
    M = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return int((np.linalg.norm(d + M @ lattice, axis=-1) <= r_cut).sum())


def _brute_shortest(lattice, reach=4):
    M = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    M = M[np.any(M != 0, axis=1)]
    return np.linalg.norm(M @ lattice, axis=1).min()


@pytest.mark.parametrize("trial", range(6))
def test_auto_fourier_mesh_makes_every_bond_unique_and_is_minimal(rng, trial):
    cell = _random_cell(rng)
    r_cut = rng.uniform(4.0, 9.0)
    n = np.array(fourier_kmesh_for(cell, r_cut))
    sup = n[:, None] * cell
    # every vector within r_cut has no other image within r_cut, for any atom positions
    for d in rng.uniform(-1, 1, size=(200, 3)) * r_cut:
        if np.linalg.norm(d) <= r_cut:
            assert _images_within(d, sup, r_cut) == 1
    # minimal: one fewer k-point layer in any direction breaks it (a bond and an image both within r_cut)
    for i in range(3):
        m = n.copy()
        m[i] -= 1
        if m[i] == 0:
            continue
        assert max_r_cut(cell, m) <= r_cut
        with pytest.raises(ValueError, match="too coarse"):
            check_fourier_kmesh(cell, m, r_cut)
    check_fourier_kmesh(cell, n, r_cut)  # accepted
    assert shortest_vector(sup) == pytest.approx(_brute_shortest(sup))


def test_coarse_mesh_refused_with_required_mesh_sic():
    """Issue 12: 4x4x4 for 3C-SiC (a = 4.36 Å) silently lost a third of the bonds <= 12 Å."""
    cell = bulk("SiC", "zincblende", a=4.36).cell.array
    with pytest.raises(ValueError, match=r"--fourier-kmesh 8 8 8.*--r-cut 6\.16"):
        check_fourier_kmesh(cell, (4, 4, 4), 12.0)
    assert fourier_kmesh_for(cell, 12.0) == (8, 8, 8)


def test_wigner_seitz_blocks_complete_on_auto_mesh_and_incomplete_on_coarse(rng):
    at = bulk("SiC", "zincblende", a=4.36)
    at.positions += rng.normal(size=at.positions.shape) * 0.1
    r_cut = 7.0
    pos, cell = at.positions, at.cell.array
    # brute force: every (a, b, T) with |pos_b - pos_a + T.cell| <= r_cut
    M = np.stack(np.meshgrid(*[np.arange(-4, 5)] * 3, indexing="ij"), -1).reshape(-1, 3)
    expect = {(a, b, tuple(T)) for a in range(2) for b in range(2) for T in M
              if np.linalg.norm(pos[b] - pos[a] + T @ cell) <= r_cut}
    n = fourier_kmesh_for(cell, r_cut)
    blocks = _wigner_seitz_blocks(pos, cell, n, r_cut)
    assert all(w == 1.0 for *_, w in blocks)
    assert {(a, b, tuple(int(x) for x in T)) for a, b, _, T, _ in blocks} == expect
    coarse = _wigner_seitz_blocks(pos, cell, (3, 3, 3), r_cut)  # the old fixed-mesh behaviour
    assert len({(a, b, tuple(int(x) for x in T)) for a, b, _, T, _ in coarse}) < len(expect)


@pytest.mark.parametrize("reps", [(1, 1, 1), (2, 1, 1), (2, 2, 2), (3, 3, 3)])
def test_scf_mesh_keeps_k_density_for_supercells(reps):
    """A Gamma-including n-mesh of the small cell = the same k-points as a supercell with mesh/n."""
    small = bulk("Si", "diamond", a=5.43, cubic=True).cell.array
    base = np.array(scf_kmesh_for(small))
    sup = np.array(scf_kmesh_for(np.array(reps)[:, None] * small))
    assert tuple(base) == (2, 2, 2)
    assert np.all(sup * np.array(reps) >= base) and np.all(sup >= 1)
    assert np.all((sup - 1) * np.array(reps) < base)  # not denser than needed


@pytest.mark.parametrize("bad", [(0, 2, 2), (2, 2), (1.5, 2, 2)])
def test_bad_mesh_rejected(bad):
    with pytest.raises(ValueError, match="k-mesh"):
        check_fourier_kmesh(np.eye(3) * 5.0, bad, 4.0)


def _random_slab(rng, r_cut):
    """A random skewed 2D lattice (2.5-7 Å) and a third axis shorter than 2 r_cut (where a 3D mesh needs 2)."""
    while True:
        a = _random_cell(rng)
        normal = np.cross(a[0], a[1])
        normal /= np.linalg.norm(normal)
        c = normal * rng.uniform(r_cut + 2.0, 2 * r_cut - 0.5) + rng.uniform(-0.2, 0.2) * (a[0] + a[1])  # tilted c
        cell = np.vstack([a[:2], c])
        if abs(np.linalg.det(cell)) > 0.3 * np.prod(np.linalg.norm(cell, axis=1)):
            return cell


@pytest.mark.parametrize("trial", range(4))
def test_slab_meshes_are_2d_and_keep_every_bond_unique(rng, trial):
    pbc = (True, True, False)
    r_cut = rng.uniform(4.0, 9.0)
    cell = _random_slab(rng, r_cut)
    n = np.array(fourier_kmesh_for(cell, r_cut, pbc=pbc))
    assert n[2] == 1 and scf_kmesh_for(cell, pbc=pbc)[2] == 1
    assert fourier_kmesh_for(cell, r_cut)[2] >= 2  # what a 3D-periodic cell of this shape would need
    assert tuple(n[:2]) != (1, 1) or max_r_cut(cell, n, pbc) > r_cut
    # atoms within a slab of thickness t; vacuum > r_cut: no bond through the vacuum, in-plane images unique
    h = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[0], cell[1]))
    t = h - r_cut - 0.3
    assert t > 0.5
    frac = np.column_stack([rng.uniform(size=(30, 2)), rng.uniform(0, t / h, size=30)])
    pos = frac @ cell
    gaps = vacuum_gaps(cell, pos, pbc)
    assert set(gaps) == {2} and gaps[2] > r_cut
    check_vacuum(cell, pos, pbc, r_cut)  # accepted
    sup = n[:, None] * cell
    for a in range(len(pos)):
        for b in range(len(pos)):
            d = pos[b] - pos[a]
            d = d - np.round(np.linalg.solve(sup.T, d))[:2] @ sup[:2]  # shortest in-plane image, roughly
            if np.linalg.norm(d) <= r_cut:
                assert _images_within(d, sup, r_cut) == 1
    # one fewer in-plane layer is too coarse
    for i in range(2):
        m = n.copy()
        m[i] -= 1
        if m[i]:
            with pytest.raises(ValueError, match="too coarse"):
                check_fourier_kmesh(cell, m, r_cut, pbc=pbc)


def test_vacuum_gap_straddling_the_cell_and_thin_vacuum_refused():
    from ase.build import diamond100

    slab = diamond100("Si", size=(1, 1, 4), a=5.43, vacuum=5.0)  # 10 Å gap
    assert vacuum_gaps(slab.cell, slab.positions, slab.pbc)[2] == pytest.approx(10.0)
    shifted = slab.positions + [0, 0, 0.5 * slab.cell[2, 2]]  # slab across the boundary: same gap
    assert vacuum_gaps(slab.cell, shifted, slab.pbc)[2] == pytest.approx(10.0)
    check_vacuum(slab.cell, shifted, slab.pbc, 9.9)
    with pytest.raises(ValueError, match=r"vacuum along non-periodic axis 3 is 10.00 Å, not longer than r_cut 12"):
        check_vacuum(slab.cell, slab.positions, slab.pbc, 12.0)
    with pytest.raises(ValueError, match="at least one periodic axis"):
        scf_kmesh_for(slab.cell, pbc=(False, False, False))

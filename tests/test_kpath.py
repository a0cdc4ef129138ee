"""k-paths: vacuum-aware periodicity, lattice tolerance, breaks, labels from given k-points."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, graphene

from acehamil.tb.kpath import band_path, effective_pbc, kmesh_for, lattice_name, linear_axis, path_from_kpts


def _rotation(rng, proper=True):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q if proper else -q


@pytest.mark.parametrize("proper", [True, False])
def test_effective_pbc_detects_vacuum_under_rotations_and_permutations(rng, proper):
    slab = graphene(vacuum=9.0)
    slab.center(axis=2)
    q = _rotation(rng, proper)
    perm = rng.permutation(len(slab))
    moved = Atoms(slab.numbers[perm], positions=slab.positions[perm] @ q.T, cell=slab.cell.array @ q.T, pbc=True)
    assert effective_pbc(moved).tolist() == [True, True, False]
    assert kmesh_for(moved)[2] == 1
    assert effective_pbc(moved, vacuum=30.0).tolist() == [True, True, True]


def test_bulk_and_molecule():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    assert effective_pbc(si).all()
    mol = Atoms("H2O", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]], cell=[15, 15, 15], pbc=True)
    assert not effective_pbc(mol).any()
    assert band_path(mol).path == "G" and len(band_path(mol).kpts) == 1


def test_lattice_tolerance_gives_the_cubic_path_of_a_strained_cell(rng):
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    strained = si.copy()
    strained.set_cell(si.cell.array @ (np.eye(3) + rng.uniform(-0.006, 0.006, (3, 3))), scale_atoms=True)
    assert lattice_name(strained, eps=2e-4) != "CUB"
    assert lattice_name(strained) == "CUB"
    assert band_path(strained, npoints=50).path == band_path(si, npoints=50).path
    with pytest.raises(ValueError, match="tolerance"):
        band_path(si, eps=0.0)


def test_breaks_split_lines_and_add_no_length():
    si = bulk("Si", "diamond", a=5.43)
    bp = band_path(si, "GX,KL", npoints=40)
    ax = linear_axis(bp)
    assert ax.labels == ["Γ", "X|K", "L"]
    (q,) = ax.breaks
    assert ax.x[q] == ax.x[q - 1]
    assert [s.stop - s.start for s in ax.segments()] == [q, len(bp.kpts) - q]
    assert np.all(np.diff(ax.x) >= 0)


def test_path_from_kpts_finds_labels_and_breaks_of_segments():
    si = bulk("Si", "diamond", a=5.43)
    gx = np.linspace([0, 0, 0], [0.5, 0, 0.5], 11)
    kl = np.linspace([0.375, 0.375, 0.75], [0.5, 0.5, 0.5], 5)
    lg = np.linspace([0.5, 0.5, 0.5], [0, 0, 0], 6)
    bp = path_from_kpts(si, np.concatenate([gx, kl, lg]))
    ax = linear_axis(bp)
    assert bp.path == "GX,KLG"
    assert ax.breaks == [11] and ax.labels == ["Γ", "X|K", "L", "Γ"]
    # explicit labels and breaks (a DFT code's segments)
    bp2 = path_from_kpts(si, np.concatenate([gx, kl]), labels=[[0, "G"], [10, "X"], [11, "K"], [15, "L"]], breaks=[11])
    assert linear_axis(bp2).labels == ["Γ", "X|K", "L"]
    with pytest.raises(ValueError, match="labels on both"):
        path_from_kpts(si, np.concatenate([gx, kl]), labels=[[0, "G"]], breaks=[11])
    with pytest.raises(ValueError, match="k-point 99"):
        path_from_kpts(si, gx, labels=[[99, "G"]])


def test_equivalent_special_points_get_their_name():
    g = graphene(vacuum=10.0)
    k = np.linspace([1 / 3, 1 / 3, 0], [-1 / 3, 2 / 3, 0], 7)  # K to an equivalent K' through M (0, 1/2, 0)
    ax = linear_axis(path_from_kpts(g, k))
    assert ax.labels == ["K", "M", "K"] and ax.breaks == []


def test_unlabelled_k_list_breaks_at_jumps(rng):
    from ase.dft.kpoints import BandPath

    si = bulk("Si", "diamond", a=5.43)
    a = np.linspace([0.1, 0.0, 0.0], [0.2, 0.0, 0.0], 6)
    b = np.linspace([0.3, 0.3, 0.1], [0.3, 0.3, 0.2], 6)
    ax = linear_axis(BandPath(si.cell, kpts=np.concatenate([a, b]), special_points={}, path=""))
    assert ax.breaks == [6] and ax.labels == []
    assert ax.x[6] == ax.x[5]

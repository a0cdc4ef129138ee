"""structure.neighbours: vesin pairs against ase.neighborlist on periodic, slab and
cluster cells; clear errors for broken input."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list

from acehamil.structure.neighbours import neighbour_pairs


def rattled(atoms, rng, amp=0.05):
    atoms = atoms.copy()
    atoms.positions += rng.normal(scale=amp, size=atoms.positions.shape)
    return atoms


def structures(rng):
    si = rattled(bulk("Si", "diamond", a=5.43, cubic=True), rng)
    small = rattled(bulk("Cu", "fcc", a=3.6), rng)  # cutoff > lattice vectors: self-images
    tri = rattled(Atoms("SiC", cell=[[3.0, 0, 0], [1.2, 2.9, 0], [0.4, 0.7, 3.3]], scaled_positions=[[0, 0, 0], [0.4, 0.3, 0.6]], pbc=True), rng)
    slab = rattled(fcc111("Al", size=(2, 2, 3), vacuum=6.0), rng)
    cluster = rattled(molecule("C6H6"), rng)
    return {"bulk_si": (si, 4.0), "small_cell": (small, 5.5), "triclinic": (tri, 4.5), "slab": (slab, 4.0), "cluster": (cluster, 3.0)}


@pytest.mark.parametrize("name", ["bulk_si", "small_cell", "triclinic", "slab", "cluster"])
def test_matches_ase(name, rng):
    atoms, cutoff = structures(rng)[name]
    nl = neighbour_pairs(atoms, cutoff)
    i, j, S, D = neighbor_list("ijSD", atoms, cutoff)
    ours = sorted(zip(nl.i.tolist(), nl.j.tolist(), map(tuple, nl.shift.tolist())))
    ref = sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))
    assert ours == ref
    np.testing.assert_allclose(nl.vec, atoms.positions[nl.j] - atoms.positions[nl.i] + nl.shift @ atoms.cell.array, atol=1e-12)
    np.testing.assert_allclose(nl.dist, np.linalg.norm(nl.vec, axis=1), atol=1e-12)
    assert np.all(nl.dist < cutoff) and np.all(nl.dist > 0)
    # every pair appears in both directions
    fwd = set(zip(nl.i.tolist(), nl.j.tolist(), map(tuple, nl.shift.tolist())))
    assert all((b, a, tuple(-s for s in sh)) in fwd for a, b, sh in fwd)


def test_nan_positions_rejected():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        neighbour_pairs(atoms, 3.0)


def test_overlapping_atoms_rejected():
    atoms = Atoms("Si2", positions=[[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(ValueError, match="apart"):
        neighbour_pairs(atoms, 3.0)


def test_bad_cutoff_and_cell():
    with pytest.raises(ValueError, match="cutoff"):
        neighbour_pairs(bulk("Si", "diamond", a=5.43), -1.0)
    with pytest.raises(ValueError, match="degenerate"):
        neighbour_pairs(Atoms("Si", positions=[[0, 0, 0]], cell=np.zeros((3, 3)), pbc=True), 3.0)


@pytest.mark.parametrize("natoms", [7, 2**21])
def test_pair_order_is_the_lexicographic_order(rng, natoms):
    """The one-key sort of the pairs (and its lexsort fallback for huge index ranges) orders by i, j, shift."""
    from acehamil.structure.neighbours import _pair_order

    keys = {(int(a), int(b)) + tuple(int(x) for x in rng.integers(-3, 4, size=3)) for a, b in rng.integers(0, 7, size=(300, 2))}
    arr = np.array(sorted(keys, key=lambda k: rng.random()))
    i, j, S = arr[:, 0] * (natoms // 7), arr[:, 1] * (natoms // 7), arr[:, 2:] * (1 if natoms < 100 else 2**20)
    order = _pair_order(i, j, S, natoms)
    expect = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    assert order.tolist() == expect.tolist()


@pytest.mark.parametrize("name", ["bulk_si", "small_cell", "triclinic", "slab", "cluster"])
@pytest.mark.parametrize("distance", [0.1, 0.6, 1.3])
def test_pairs_closer_than_matches_ase(name, distance, rng):
    """The close-pair search of check_atoms (a 1 Å cell list, filtered) finds exactly ASE's pairs,
    periodic images included, with two atoms moved close to others."""
    from acehamil.structure.neighbours import pairs_closer_than

    atoms, _ = structures(rng)[name]
    atoms = atoms * (2, 2, 2) if len(atoms) < 4 else atoms.copy()
    atoms.positions[1] = atoms.positions[0] + rng.normal(size=3) * 0.3 * distance / np.sqrt(3)
    atoms.positions[-1] = atoms.positions[-2] + np.array([0.0, 0.0, 0.9 * distance])
    i, j, d = pairs_closer_than(atoms, distance)
    ia, ja, da = neighbor_list("ijd", atoms, distance, self_interaction=False)
    assert len(i) >= 4
    assert sorted(zip(i.tolist(), j.tolist(), np.round(d, 10).tolist())) == \
        sorted(zip(ia.tolist(), ja.tolist(), np.round(da, 10).tolist()))
    assert d.max() < distance

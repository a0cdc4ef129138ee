"""Orbital basis/layout, block-sparse real-space matrices and the structure record."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from acehamil.structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData


def test_basis_from_symbols_and_tuples():
    b = OrbitalBasis.from_dict({"O": [(2, 0), (2, 1)], 1: [0]})
    assert b.species == (1, 8)
    assert b.norb(8) == 4 and b.norb(1) == 1
    assert b.shells_of(8)[1] == Shell(l=1, n=2)
    assert OrbitalBasis.from_dict(b.to_dict()) == b


@pytest.mark.parametrize(
    "spec, msg",
    [({"Xx": [0]}, "unknown species"), ({14: []}, "no shells"), ({14: [(1, 2, 3, 4)]}, "cannot read shell"), ({14: [7]}, "0..6")],
)
def test_basis_rejects_bad_input(spec, msg):
    with pytest.raises(ValueError, match=msg):
        OrbitalBasis.from_dict(spec)


def test_layout_unknown_species_is_named():
    b = OrbitalBasis.from_dict({14: [0, 1]})
    with pytest.raises(ValueError, match=r"C \(Z=6\).*Si \(Z=14\)"):
        b.layout([14, 6])


def test_layout_offsets_and_labels():
    lay = OrbitalBasis.from_dict({14: [0, 1, 2], 1: [0]}).layout([14, 1, 14])
    assert lay.norb == 19
    assert lay.atom_offsets.tolist() == [0, 9, 10, 19]
    assert lay.orbital_l.tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 2, 0] + [0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert lay.orbital_shell[:5].tolist() == [0, 1, 1, 1, 2]
    assert lay.orbital_atom.tolist() == [0] * 9 + [1] + [2] * 9


def _random_hermitian_rs(rng, norb_per_atom, shifts):
    """Random real-space matrix with H_ji(-T) = H_ij(T)^T built from dense cell matrices."""
    n = int(np.sum(norb_per_atom))
    shifts = [tuple(t) for t in shifts]
    mats = {}
    for t in shifts:
        if t in mats:
            continue
        m = rng.normal(size=(n, n))
        mt = tuple(-x for x in t)
        if mt == t:
            m = 0.5 * (m + m.T)
        mats[t] = m
        mats[mt] = m.T
    keys = sorted(mats)
    return keys, RealSpaceMatrix.from_dense(norb_per_atom, keys, [mats[k] for k in keys])


def test_dense_round_trip_and_hermiticity(rng):
    keys, m = _random_hermitian_rs(rng, [2, 3], [(0, 0, 0), (1, 0, 0), (0, -1, 2)])
    assert m.hermiticity_error() < 1e-15
    shifts, dense = m.to_dense()
    assert [tuple(s) for s in shifts.tolist()] == keys
    m2 = RealSpaceMatrix.from_dense([2, 3], shifts, dense)
    assert m2.same_pattern(m) and np.array_equal(m2.data, m.data)
    p = m.find(1, 0, (1, 0, 0))
    assert p >= 0 and m.block(p).shape == (3, 2)
    assert m.find(0, 0, (5, 5, 5)) == -1


def test_coo_matches_blocks(rng):
    _, m = _random_hermitian_rs(rng, [1, 4, 2], [(0, 0, 0), (0, 0, 1)])
    rows, cols, vals, bidx = m.coo()
    for p in range(m.nblocks):
        sel = bidx == p
        blk = m.block(p)
        r0, c0 = m.atom_offsets[m.i[p]], m.atom_offsets[m.j[p]]
        np.testing.assert_array_equal(vals[sel], blk[rows[sel] - r0, cols[sel] - c0])


def test_missing_partner_detected(rng):
    m = RealSpaceMatrix.from_blocks([1, 1], [0], [1], [[1, 0, 0]], [np.ones((1, 1))])
    assert m.hermiticity_error() == float("inf")


def test_immutable_and_no_argument_mutation():
    data = np.arange(4.0)
    m = RealSpaceMatrix([2], [0], [0], [[0, 0, 0]], data)
    data[0] = 99.0
    assert m.data[0] == 0.0
    with pytest.raises(ValueError):
        m.data[0] = 1.0


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(data=np.zeros(3)), "blocks need 4"),
        (dict(i=[2]), "out of range"),
        (dict(data=np.array([0, 0, 0, np.nan])), "NaN"),
    ],
)
def test_realspace_rejects_bad_input(kwargs, msg):
    args = dict(norb_per_atom=[2], i=[0], j=[0], shift=[[0, 0, 0]], data=np.zeros(4))
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        RealSpaceMatrix(**args)


def test_structure_data_checks_basis_mismatch():
    atoms = bulk("Si", "diamond", a=5.43)
    basis = OrbitalBasis.from_dict({14: [0, 1]})
    s_ok = RealSpaceMatrix.from_blocks([4, 4], [0], [0], [[0, 0, 0]], [np.eye(4)])
    rec = StructureData(atoms, basis, S=s_ok)
    assert rec.periodic and rec.nspin == 0
    s_bad = RealSpaceMatrix.from_blocks([9, 9], [0], [0], [[0, 0, 0]], [np.eye(9)])
    with pytest.raises(ValueError, match="basis mismatch"):
        StructureData(atoms, basis, S=s_bad)


def test_structure_data_rejects_nan_positions():
    atoms = Atoms("Si2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        StructureData(atoms, OrbitalBasis.from_dict({14: [0]}))

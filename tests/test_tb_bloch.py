"""Bloch sums: analytic chain, Hermiticity, k-periodicity, time reversal, gauges, sparse = dense."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, graphene

from acehamil.structure import OrbitalBasis, RealSpaceMatrix
from acehamil.tb.bloch import BlochAssembler, bloch_sum, bloch_sum_sparse, phase_factors
from acehamil.tb.toy import slater_koster

SP = OrbitalBasis.from_dict({6: [(2, 0), (2, 1)], 14: [(3, 0), (3, 1)], 1: [(1, 0)]})


def _systems():
    si = bulk("Si", "diamond", a=5.43)
    gr = graphene("C2", a=2.46, vacuum=5.0)  # periodic in-plane only
    mol = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                                  [0.63, -0.63, -0.63]])
    return {"si": si, "graphene": gr, "ch4": mol}


@pytest.fixture(params=["si", "graphene", "ch4"])
def model(request):
    atoms = _systems()[request.param]
    H, S = slater_koster(atoms, SP, cutoff=4.0 if request.param != "ch4" else 2.5)
    return atoms, H, S


def _reference_bloch(m: RealSpaceMatrix, kpts):
    shifts, mats = m.to_dense()
    ph = np.exp(2j * np.pi * np.asarray(kpts) @ shifts.T)
    return np.einsum("kc,cab->kab", ph, mats)


def test_chain_analytic(rng):
    t, e0 = rng.normal(), rng.normal()
    m = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], [[0, 0, 0], [1, 0, 0], [-1, 0, 0]],
                                    [np.full((1, 1), e0), np.full((1, 1), t), np.full((1, 1), t)])
    k = np.c_[rng.uniform(-1, 1, 7), rng.uniform(-1, 1, (7, 2))]
    hk = bloch_sum(m, k)
    np.testing.assert_allclose(hk[:, 0, 0], e0 + 2 * t * np.cos(2 * np.pi * k[:, 0]), atol=1e-13)


def test_matches_reference_sum_and_is_hermitian(model, rng):
    _, H, S = model
    k = rng.uniform(-1, 1, (5, 3))
    for m in (H, S):
        hk = bloch_sum(m, k)
        np.testing.assert_allclose(hk, _reference_bloch(m, k), atol=1e-12)
        np.testing.assert_allclose(hk, np.conj(np.swapaxes(hk, 1, 2)), atol=1e-12)


def test_periodic_in_reciprocal_lattice(model, rng):
    _, H, _ = model
    k = rng.uniform(-1, 1, (4, 3))
    G = rng.integers(-3, 4, (4, 3))
    np.testing.assert_allclose(bloch_sum(H, k + G), bloch_sum(H, k), atol=1e-11)


def test_time_reversal_for_real_blocks(model, rng):
    _, H, _ = model
    k = rng.uniform(-1, 1, (4, 3))
    np.testing.assert_allclose(bloch_sum(H, -k), np.conj(bloch_sum(H, k)), atol=1e-12)


def test_atomic_gauge_is_unitary_transform(model, rng):
    atoms, H, _ = model
    x = atoms.get_scaled_positions(wrap=False) if atoms.pbc.all() else np.linalg.solve(
        atoms.cell.complete().T, atoms.positions.T).T
    k = rng.uniform(-1, 1, (3, 3))
    lat = bloch_sum(H, k)
    ato = bloch_sum(H, k, gauge="atomic", frac_positions=x)
    xo = np.repeat(x, H.norb_per_atom, axis=0)
    u = np.exp(2j * np.pi * (k @ xo.T))  # (nk, norb)
    np.testing.assert_allclose(ato, np.conj(u)[:, :, None] * lat * u[:, None, :], atol=1e-12)


def test_sparse_equals_dense(model, rng):
    _, H, S = model
    k = rng.uniform(-1, 1, (3, 3))
    for m in (H, S):
        sps = bloch_sum_sparse(m, k)
        dense = bloch_sum(m, k)
        assert len(sps) == 3
        for q in range(3):
            assert sps[q].format == "csr"
            np.testing.assert_allclose(sps[q].toarray(), dense[q], atol=1e-13)
        asm = BlochAssembler(m)
        np.testing.assert_allclose(asm.sparse(k[0]).toarray(), dense[0], atol=1e-13)


def test_dense_of_another_matrix_of_the_pattern_is_its_own_assembly(model, rng):
    """dense_of shares one sparsity analysis between matrices of one pattern (the calibration's several models of
    one structure): bit for bit the assembly of each on its own, in the lattice and the atomic gauge."""
    atoms, H, S = model
    k = rng.uniform(-1, 1, (4, 3))
    other = H.with_data(rng.normal(size=H.data.size))
    np.testing.assert_array_equal(BlochAssembler(H).dense_of(other.data, k), BlochAssembler(other).dense(k))
    np.testing.assert_array_equal(BlochAssembler(H).dense_of(H.data, k), BlochAssembler(H).dense(k))
    x = atoms.get_scaled_positions(wrap=False) if atoms.pbc.all() else np.linalg.solve(
        atoms.cell.complete().T, atoms.positions.T).T
    ato = BlochAssembler(H, gauge="atomic", frac_positions=x)
    np.testing.assert_array_equal(ato.dense_of(other.data, k),
                                  BlochAssembler(other, gauge="atomic", frac_positions=x).dense(k))
    with pytest.raises(ValueError, match="data must have shape"):
        BlochAssembler(H).dense_of(other.data[:-1], k)


def test_duplicate_entries_are_summed():
    # two blocks at the same (i, j, T) position must add up, as in a sum over T
    m = RealSpaceMatrix.from_blocks([1], [0, 0], [0, 0], [[0, 0, 0], [0, 0, 0]], [np.ones((1, 1)), np.ones((1, 1))])
    assert bloch_sum(m, [0.3, 0, 0])[0, 0, 0] == pytest.approx(2.0)
    assert bloch_sum_sparse(m, [0.3, 0, 0])[0][0, 0] == pytest.approx(2.0)


def test_phase_factors_shape():
    ph = phase_factors([[0.5, 0, 0], [0, 0, 0]], [[1, 0, 0], [2, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(ph, [[-1, 1, 1], [1, 1, 1]], atol=1e-15)


@pytest.mark.parametrize(
    "kwargs, kpts, err",
    [
        ({}, [[0, 0]], ValueError),
        ({}, [[np.nan, 0, 0]], ValueError),
        ({"gauge": "weird"}, [[0, 0, 0]], ValueError),
        ({"gauge": "atomic"}, [[0, 0, 0]], ValueError),
        ({"gauge": "atomic", "frac_positions": np.zeros((2, 3))}, [[0, 0, 0]], ValueError),
    ],
)
def test_bad_input(kwargs, kpts, err):
    m = RealSpaceMatrix.from_blocks([1], [0], [0], [[0, 0, 0]], [np.ones((1, 1))])
    with pytest.raises(err):
        bloch_sum(m, kpts, **kwargs)


def test_not_a_matrix():
    with pytest.raises(TypeError):
        bloch_sum(np.eye(2), [[0, 0, 0]])


def test_sparse_bloch_sums_feed_a_sparse_solver(rng):
    """A 4x4x4 Si supercell (512 orbitals): sparse H(k), S(k) give, through shift-invert Lanczos,
    the same eigenvalues near a target energy as the dense generalized solve."""
    import scipy.sparse.linalg as spla

    from acehamil.tb.eigen import solve

    atoms = bulk("Si", "diamond", a=5.43).repeat((4, 4, 4))
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    H, S = slater_koster(atoms, basis, cutoff=4.0)
    k = rng.uniform(-0.5, 0.5, 3)
    hk, sk = bloch_sum_sparse(H, k)[0], bloch_sum_sparse(S, k)[0]
    assert hk.nnz < 0.2 * H.norb**2  # genuinely sparse
    dense = solve(H, S, k[None])[0]
    target = 0.5 * (dense[250] + dense[251])
    vals = np.sort(spla.eigsh(hk, k=6, M=sk, sigma=target, which="LM", return_eigenvectors=False))
    expected = dense[np.argsort(np.abs(dense - target))[:6]]
    np.testing.assert_allclose(vals, np.sort(expected), atol=1e-8)


@pytest.mark.parametrize("n, span", [(0, 3), (1, 3), (7, 3), (5000, 3), (5000, 40), (300, 10**6)])
def test_pattern_uniques_equal_numpys(rng, n, span):
    """The Bloch pattern's linear-time uniques give np.unique's arrays (cells in lexicographic order)."""
    from acehamil.tb.bloch import _unique_ints, _unique_rows

    s = rng.integers(-span, span + 1, size=(n, 3))
    cells, inv = _unique_rows(s)
    if n:
        ref_cells, ref_inv = np.unique(s, axis=0, return_inverse=True)
        np.testing.assert_array_equal(cells, ref_cells)
        np.testing.assert_array_equal(inv, np.asarray(ref_inv).reshape(-1))
    else:
        assert cells.shape == (0, 3) and inv.shape == (0,)
    x = rng.integers(0, 3 * n + 5, size=n)
    for bound in (3 * n + 5, 10**9):  # flag table / sort
        u, j = _unique_ints(x, bound)
        ref_u, ref_j = np.unique(x, return_inverse=True)
        np.testing.assert_array_equal(u, ref_u)
        np.testing.assert_array_equal(j, ref_j)

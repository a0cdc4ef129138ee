"""so3: real Wigner-D (homomorphism, D^1, Y(Qr) = D Y(r)) and real Clebsch-Gordan
(orthonormality, invariance, exact agreement with sympy)."""

from __future__ import annotations

import numpy as np
import pytest
from sympy import S
from sympy.physics.quantum.cg import CG

from acehamil.so3 import cg_real, complex_to_real, random_rotation, real_sph_harm, wigner_d_real
from acehamil.so3.wigner import cartesian_to_sh_permutation

LS = list(range(7))


@pytest.mark.parametrize("l", LS)
@pytest.mark.parametrize("improper", [(False, False), (False, True), (True, True)])
def test_wigner_homomorphism(l, improper, rng):
    Q1 = random_rotation(rng, improper=improper[0])
    Q2 = random_rotation(rng, improper=improper[1])
    D12 = wigner_d_real(l, Q1 @ Q2)
    np.testing.assert_allclose(D12, wigner_d_real(l, Q1) @ wigner_d_real(l, Q2), atol=1e-12)
    D = wigner_d_real(l, Q1)
    np.testing.assert_allclose(D @ D.T, np.eye(2 * l + 1), atol=1e-12)
    np.testing.assert_allclose(wigner_d_real(l, -Q1), (-1) ** l * D, atol=1e-12)


@pytest.mark.parametrize("l", [0, 1, 2, 5, 8])
def test_wigner_of_a_batch_equals_one_by_one_and_rotates_harmonics(l, rng):
    """The batched call (prediction: one D per bond) gives each matrix as a single call does, and
    each satisfies Y(Q r) = D Y(r) (also beyond the l of the other tests: the coupling recursion)."""
    Q = np.stack([random_rotation(rng, improper=bool(k % 2)) for k in range(6)]).reshape(2, 3, 3, 3)
    D = wigner_d_real(l, Q)
    assert D.shape == (2, 3, 2 * l + 1, 2 * l + 1)
    r = rng.normal(size=(3 * (2 * l + 1), 3))
    Y = real_sph_harm(r, l)[:, l * l:]
    for a in range(2):
        for b in range(3):
            np.testing.assert_allclose(D[a, b], wigner_d_real(l, Q[a, b]), atol=1e-14)
            np.testing.assert_allclose(real_sph_harm(r @ Q[a, b].T, l)[:, l * l:], Y @ D[a, b].T, atol=1e-12)


@pytest.mark.parametrize("improper", [False, True])
def test_d1_is_permuted_rotation(improper, rng):
    Q = random_rotation(rng, improper=improper)
    p = cartesian_to_sh_permutation()
    np.testing.assert_allclose(wigner_d_real(1, Q), Q[np.ix_(p, p)], atol=1e-13)


@pytest.mark.parametrize("l", LS)
@pytest.mark.parametrize("improper", [False, True])
def test_harmonics_rotate_with_wigner_d(l, improper, rng):
    Q = random_rotation(rng, improper=improper)
    r = rng.normal(size=(20, 3))
    Y = real_sph_harm(r, l)[:, l * l :]
    YQ = real_sph_harm(r @ Q.T, l)[:, l * l :]
    np.testing.assert_allclose(YQ, Y @ wigner_d_real(l, Q).T, atol=1e-12)


TRIPLES = [(l1, l2, L) for l1 in range(5) for l2 in range(5) for L in range(abs(l1 - l2), l1 + l2 + 1)]


@pytest.mark.parametrize("l1, l2", [(l1, l2) for l1 in range(5) for l2 in range(5)])
def test_cg_orthogonal(l1, l2):
    blocks = np.concatenate(
        [cg_real(l1, l2, L).reshape(-1, 2 * L + 1) for L in range(abs(l1 - l2), l1 + l2 + 1)], axis=1
    )
    n = (2 * l1 + 1) * (2 * l2 + 1)
    assert blocks.shape == (n, n)
    np.testing.assert_allclose(blocks.T @ blocks, np.eye(n), atol=1e-13)


@pytest.mark.parametrize("l1, l2, L", TRIPLES)
@pytest.mark.parametrize("improper", [False, True])
def test_cg_invariance(l1, l2, L, improper, rng):
    """C contracted with D^l1 x D^l2 equals D^L C (times (-1)^(l1+l2+L) for improper Q)."""
    Q = random_rotation(rng, improper=improper)
    C = cg_real(l1, l2, L)
    lhs = np.einsum("ai,bj,abM->ijM", wigner_d_real(l1, Q), wigner_d_real(l2, Q), C)
    sign = (-1) ** (l1 + l2 + L) if improper else 1
    rhs = sign * np.einsum("ijN,MN->ijM", C, wigner_d_real(L, Q))
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)


@pytest.mark.parametrize("l1, l2, L", TRIPLES)
def test_cg_equals_sympy_exact(l1, l2, L):
    exact = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * L + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            M = m1 + m2
            if abs(M) <= L:
                exact[l1 + m1, l2 + m2, L + M] = float(CG(S(l1), S(m1), S(l2), S(m2), S(L), S(M)).doit())
    u1, u2, uL = complex_to_real(l1), complex_to_real(l2), complex_to_real(L)
    r = np.einsum("MP,abP,ia,jb->ijM", uL, exact, u1.conj(), u2.conj())
    ref = r.real if np.abs(r.real).max() >= np.abs(r.imag).max() else r.imag
    assert min(np.abs(r.real).max(), np.abs(r.imag).max()) < 1e-14  # a single phase
    C = cg_real(l1, l2, L)
    # cg_real fixes one overall sign convention; the exact tensor must match up to that sign
    s = np.sign(np.sum(C * ref))
    np.testing.assert_allclose(C, s * ref, atol=1e-14)


def test_cg_rejects_bad_input():
    with pytest.raises(ValueError):
        cg_real(-1, 1, 0)
    with pytest.raises(ValueError):
        wigner_d_real(1, np.ones((3, 3)))
    assert np.all(cg_real(1, 1, 3) == 0)


def test_float_clebsch_gordan_is_the_exact_value_rounded_bit_for_bit():
    """cg_complex's integer Racah sum gives the float of the exact Fraction result, for every
    coefficient up to l = 8 (and zeros off the selection rules)."""
    from math import sqrt

    from acehamil.so3.clebsch_gordan import _cg_float, cg_complex_exact_squared

    n = 0
    for l1 in range(9):
        for l2 in range(9):
            for L in range(abs(l1 - l2) - 1, l1 + l2 + 2):
                for m1 in range(-l1, l1 + 1):
                    for m2 in range(-l2, l2 + 1):
                        s, v = cg_complex_exact_squared(l1, m1, l2, m2, L, m1 + m2)
                        assert _cg_float(l1, m1, l2, m2, L, m1 + m2) == s * sqrt(v), (l1, m1, l2, m2, L)
                        n += 1
    assert n > 50_000

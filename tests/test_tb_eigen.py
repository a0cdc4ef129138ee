"""Generalized eigen-solves: analytic models, identities in k, S checks and the projection remedy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from ase.build import bulk

from acehamil.structure import OrbitalBasis, RealSpaceMatrix
from acehamil.tb.bloch import bloch_sum
from acehamil.tb import eigen
from acehamil.tb.eigen import OverlapError, solve, solve_k
from acehamil.tb.toy import slater_koster

SP = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})


@pytest.fixture(scope="module")
def si_model():
    atoms = bulk("Si", "diamond", a=5.43)
    H, S = slater_koster(atoms, SP, cutoff=4.0)
    return atoms, H, S


@pytest.fixture(params=["batched", "per-k"], autouse=True)
def solver_path(request, monkeypatch):
    """Run every test through both the stacked small-matrix path and the per-k LAPACK path."""
    if request.param == "per-k":
        monkeypatch.setattr(eigen, "BATCH_NORB", 0)
    return request.param


def _chain(e0, t, s):
    sh = [[0, 0, 0], [1, 0, 0], [-1, 0, 0]]
    H = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], sh, [np.full((1, 1), v) for v in (e0, t, t)])
    S = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], sh, [np.full((1, 1), v) for v in (1.0, s, s)])
    return H, S


@pytest.mark.parametrize("s", [0.0, 0.15, -0.3])
def test_chain_with_overlap_analytic(rng, s):
    e0, t = rng.normal(), rng.normal()
    H, S = _chain(e0, t, s)
    k = np.c_[np.linspace(-0.5, 0.5, 11), np.zeros((11, 2))]
    c = np.cos(2 * np.pi * k[:, 0])
    np.testing.assert_allclose(solve(H, S, k)[:, 0], (e0 + 2 * t * c) / (1 + 2 * s * c), atol=1e-13)


@pytest.mark.parametrize("s", [0.0, 0.2, -0.45])
def test_two_level_analytic(rng, s):
    ea, eb, t = rng.normal(size=3)
    Hk = np.array([[[ea, t], [t, eb]]], dtype=complex)
    Sk = np.array([[[1, s], [s, 1]]], dtype=complex)
    # det(H - e S) = 0: (1-s^2) e^2 - (ea + eb - 2 t s) e + (ea eb - t^2) = 0
    a, b, c = 1 - s * s, -(ea + eb - 2 * t * s), ea * eb - t * t
    roots = np.sort([(-b - np.sqrt(b * b - 4 * a * c)) / (2 * a), (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)])
    np.testing.assert_allclose(solve_k(Hk, Sk)[0], roots, atol=1e-13)


def test_matches_scipy_and_eigenvectors(si_model, rng):
    _, H, S = si_model
    k = rng.uniform(-1, 1, (4, 3))
    eps, vecs = solve(H, S, k, eigenvectors=True)
    hk, sk = bloch_sum(H, k), bloch_sum(S, k)
    for q in range(len(k)):
        np.testing.assert_allclose(eps[q], sla.eigh(hk[q], sk[q], eigvals_only=True), atol=1e-12)
        c = vecs[q]
        np.testing.assert_allclose(c.conj().T @ sk[q] @ c, np.eye(H.norb), atol=1e-12)
        np.testing.assert_allclose(hk[q] @ c, sk[q] @ c * eps[q], atol=1e-11)
    np.testing.assert_allclose(solve(H, S, k), eps, atol=0)  # eigenvalues-only path agrees


def test_orthogonal_basis(si_model, rng):
    _, H, _ = si_model
    k = rng.uniform(-1, 1, (2, 3))
    np.testing.assert_allclose(solve(H, None, k), np.linalg.eigvalsh(bloch_sum(H, k)), atol=1e-12)


def test_k_identities(si_model, rng):
    atoms, H, S = si_model
    k = rng.uniform(-1, 1, (4, 3))
    G = rng.integers(-2, 3, (4, 3))
    ref = solve(H, S, k)
    np.testing.assert_allclose(solve(H, S, k + G), ref, atol=1e-11)  # periodic in k
    np.testing.assert_allclose(solve(H, S, -k), ref, atol=1e-11)  # time reversal (real H(T))
    x = atoms.get_scaled_positions()
    np.testing.assert_allclose(solve(H, S, k, gauge="atomic", frac_positions=x), ref, atol=1e-11)


def test_supercell_bands_fold_onto_primitive(rng):
    prim = bulk("Si", "diamond", a=5.43)
    sc = prim.repeat((2, 2, 2))
    Hp, Sp = slater_koster(prim, SP, cutoff=4.0)
    Hs, Ss = slater_koster(sc, SP, cutoff=4.0)
    ksc = rng.uniform(-0.5, 0.5, (2, 3))
    n = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    for kq in ksc:
        kprim = (kq + n) / 2.0
        folded = np.sort(solve(Hp, Sp, kprim).ravel())
        np.testing.assert_allclose(solve(Hs, Ss, kq[None])[0], folded, atol=1e-10)


def test_not_positive_definite_is_reported():
    H, S = _chain(0.0, -1.0, 0.6)  # S(k=1/2) = 1 - 1.2 < 0
    k = np.array([[0.0, 0, 0], [0.1, 0, 0], [0.5, 0, 0]])
    with pytest.raises(OverlapError) as exc:
        solve(H, S, k)
    err = exc.value
    assert err.index == 2 and np.allclose(err.kpoint, [0.5, 0, 0])
    assert err.smallest_eigenvalue == pytest.approx(-0.2)
    msg = str(err)
    assert "not positive definite" in msg and "-2.000e-01" in msg and "0.5" in msg and "remedy='project'" in msg


def _duplicated_orbital_model(atoms, eps=0.0):
    """SK model whose Si atoms carry the s orbital twice (S singular up to ``eps``)."""
    H, S = slater_koster(atoms, SP, cutoff=4.0)
    lay = np.array([0, 0, 1, 2, 3])  # new orbital -> old orbital within an atom
    hb, sb = [], []
    for p in range(H.nblocks):
        h, s = H.block(p)[np.ix_(lay, lay)].copy(), S.block(p)[np.ix_(lay, lay)].copy()
        if H.i[p] == H.j[p] and not H.shift[p].any():
            s[0, 1] = s[1, 0] = 1.0 - eps
        hb.append(h), sb.append(s)
    n = np.full(H.natoms, 5)
    return (RealSpaceMatrix.from_blocks(n, H.i, H.j, H.shift, hb), RealSpaceMatrix.from_blocks(n, S.i, S.j, S.shift, sb)), (H, S)


@pytest.mark.parametrize("eps", [0.0, 1e-13])
def test_singular_overlap_error_and_projection_remedy(si_model, rng, eps):
    atoms = si_model[0]
    (H2, S2), (H, S) = _duplicated_orbital_model(atoms, eps)
    k = rng.uniform(-0.5, 0.5, (3, 3))
    with pytest.raises(OverlapError, match=r"k-point 0 .*smallest eigenvalue"):
        solve(H2, S2, k)
    eps_p, vec_p = solve(H2, S2, k, remedy="project", s_threshold=1e-8, eigenvectors=True)
    ref = solve(H, S, k)
    assert eps_p.shape == ref.shape  # the duplicated direction is removed on each atom
    np.testing.assert_allclose(eps_p, ref, atol=1e-8)
    sk = bloch_sum(S2, k)
    for q in range(len(k)):
        np.testing.assert_allclose(vec_p[q].conj().T @ sk[q] @ vec_p[q], np.eye(ref.shape[1]), atol=1e-8)


def test_ill_conditioned_limit_is_adjustable(si_model):
    (H2, S2), _ = _duplicated_orbital_model(si_model[0], 1e-4)  # smallest eigenvalue of S(k) ~ 1e-4
    k = [[0.5, 0, 0], [0, 0, 0]]
    with pytest.raises(OverlapError, match="ill-conditioned") as exc:
        solve(H2, S2, k, max_condition=1e3)
    assert 0 < exc.value.smallest_eigenvalue < 1e-3 and exc.value.condition > 1e3
    eps = solve(H2, S2, k)  # default limit 1e10 accepts it
    assert eps.shape == (2, 10) and np.all(np.isfinite(eps))


@pytest.mark.parametrize(
    "args, kwargs, err",
    [
        ((np.zeros((2, 2, 3)),), {}, ValueError),
        ((np.zeros((1, 2, 2)), np.zeros((1, 3, 3))), {}, ValueError),
        ((np.eye(2)[None], np.eye(2)[None]), {"remedy": "magic"}, ValueError),
        ((np.eye(2)[None], np.eye(2)[None]), {"max_condition": 0.5}, ValueError),
        ((np.eye(2)[None], np.eye(2)[None]), {"remedy": "project", "s_threshold": 0.0}, ValueError),
        ((np.eye(2)[None], np.eye(2)[None]), {"remedy": "project", "s_threshold": 2.0}, ValueError),
        ((np.eye(2)[None], np.eye(2)[None], np.zeros((2, 3))), {}, ValueError),
    ],
)
def test_bad_input(args, kwargs, err):
    with pytest.raises(err):
        solve_k(*args, **kwargs)


def test_solve_type_checks(si_model):
    _, H, S = si_model
    with pytest.raises(TypeError):
        solve(np.eye(8), S, [[0, 0, 0]])
    with pytest.raises(TypeError):
        solve(H, np.eye(8), [[0, 0, 0]])
    other = RealSpaceMatrix.from_blocks([4], [0], [0], [[0, 0, 0]], [np.eye(4)])
    with pytest.raises(ValueError, match="orbitals per atom"):
        solve(H, other, [[0, 0, 0]])


@pytest.mark.parametrize("n", [3, 12])
def test_overlap_check_follows_the_exact_condition_number(rng, n, solver_path):
    """S(k) of known spectrum (random unitary U, eigenvalues from 1 down to s_min): accepted iff
    s_max / s_min <= max_condition, whatever shortcut the solver takes (the batched path bounds the
    condition number from its Cholesky factor, loosely by up to n^2, and falls back to the exact
    spectrum in between); the refused k-point is the first bad one; eigenvalues match scipy."""
    limit = 1e6

    def overlap(cond):
        q, _ = np.linalg.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
        s = np.geomspace(1.0, 1.0 / cond, n)
        return (q * s) @ q.conj().T

    conds = [2.0, limit / 3, limit * 0.999, limit * 1.001, limit * 50]  # in the loose zone, both sides
    sk = np.array([overlap(c) for c in conds])
    a = rng.normal(size=(len(conds), n, n)) + 1j * rng.normal(size=(len(conds), n, n))
    hk = a + a.conj().transpose(0, 2, 1)
    ok = [0, 1, 2] if solver_path == "batched" else [0, 1]  # per k: a 1-norm estimate (pocon), >= cond_2
    eps = solve_k(hk[ok], sk[ok], max_condition=limit)
    for q in ok:
        np.testing.assert_allclose(eps[q], sla.eigh(hk[q], sk[q], eigvals_only=True), atol=1e-7 * np.abs(eps[q]).max())
    if solver_path == "batched":  # the per-k path estimates a 1-norm condition number (pocon) instead
        for bad in (3, 4):
            with pytest.raises(OverlapError, match="ill-conditioned") as exc:
                solve_k(hk[[0, 1, bad, 2]], sk[[0, 1, bad, 2]], max_condition=limit)
            assert exc.value.index == 2


def test_factored_solve_equals_the_stacked_solve(si_model, rng, solver_path):
    """solve_factored (eigen_sigma's solve: the vectors formed only for the bands asked for): the eigenvalues
    and, as xh @ y, the eigenvectors of solve on the stacked path, the same S(k) check; None where solve
    would take another path (large matrices, here forced by BATCH_NORB = 0)."""
    from acehamil.tb.eigen import solve_factored

    _, H, S = si_model
    k = rng.uniform(-1, 1, (5, 3))
    fac = solve_factored(H, S, k)
    if solver_path == "per-k":
        assert fac is None
        return
    eps, xh, y = fac
    ref_eps, ref_vecs = solve(H, S, k, eigenvectors=True)
    np.testing.assert_array_equal(eps, ref_eps)
    np.testing.assert_allclose(xh @ y, ref_vecs, atol=1e-13)
    np.testing.assert_allclose(xh @ y[:, :, 2:5], ref_vecs[:, :, 2:5], atol=1e-13)
    Hc, Sc = _chain(0.0, -1.0, 0.6)  # S(k=1/2) not positive definite: refused as by solve
    with pytest.raises(OverlapError):
        solve_factored(Hc, Sc, np.array([[0.0, 0, 0], [0.5, 0, 0]]))

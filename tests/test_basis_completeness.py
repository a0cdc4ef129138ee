"""ACE basis: completeness (span of the coupled features == span of the product basis
averaged over O(3) with an exact Haar quadrature) and linear independence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from acehamil.basis import BOND, ACEBasis, BasisSpec, Centres, RadialSpec
from acehamil.basis.radial import RadialBasis
from acehamil.so3 import real_sph_harm, wigner_d_real

SMALL = {
    "site": BasisSpec(categories=(14,), radial=RadialSpec(n_max=2, r_cut=4.0), max_nu=3, max_degree=(3, 3, 3), L_max=3),
    "two_species": BasisSpec(categories=(1, 14), radial=RadialSpec(n_max=1, r_cut=4.0), max_nu=3, max_degree=(3, 3, 3), L_max=3),
    "bond": BasisSpec(
        categories=(BOND, 14), radial=RadialSpec(n_max=2, r_cut=4.0), max_nu=3, max_degree=(2, 3, 2), L_max=2,
        singleton_categories=(BOND,),
    ),
}


def haar_quadrature(K):
    """Rotations and weights integrating Wigner-D entries of degree <= K exactly (ZYZ Euler)."""
    n_ab = K + 1
    x, w = np.polynomial.legendre.leggauss((K + 2) // 2)
    al = 2 * np.pi * np.arange(n_ab) / n_ab

    def rz(t):
        c, s = np.cos(t), np.sin(t)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    def ry(cb):
        sb = np.sqrt(1 - cb * cb)
        return np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])

    Qs, ws = [], []
    for a, (cb, wb), g in itertools.product(al, zip(x, w), al):
        Qs.append(rz(a) @ ry(cb) @ rz(g))
        ws.append(wb)
    ws = np.array(ws)
    return np.array(Qs), ws / ws.sum()


def random_envs(rng, spec, n_env, per_env=6):
    cats = [c for c in spec.categories if c not in spec.singleton_categories]
    out = []
    for _ in range(n_env):
        vec = rng.uniform(-2.0, 2.0, size=(per_env, 3))
        cat = list(rng.choice(cats, size=per_env))
        if spec.singleton_categories:
            cat[0] = spec.singleton_categories[0]
        out.append((vec, np.array(cat)))
    return out


def independent_A(spec, envs):
    """Atomic base computed directly (R_n * Y_lm summed per category), independent of the engine.

    Returns A (n_env, n_A) and the (category, n, l) of each column.
    """
    lmax = int(max(spec.max_degree) / spec.weight_l)
    rb = RadialBasis(spec.radial)
    labels = [
        (c, n, l, m)
        for c in spec.categories
        for n in range(spec.radial.n_max)
        for l in range(lmax + 1)
        for m in range(2 * l + 1)
        if spec.weight_n * n + spec.weight_l * l <= max(spec.max_degree) + 1e-9
    ]
    vec = np.stack([v for v, _ in envs])  # (n_env, per_env, 3)
    cat = np.stack([c for _, c in envs])
    r = np.linalg.norm(vec, axis=-1).ravel()
    R = rb.evaluate(r, np.full(len(r), spec.radial.r_cut)).reshape(vec.shape[:2] + (-1,))
    Y = real_sph_harm(vec.reshape(-1, 3), lmax).reshape(vec.shape[:2] + (-1,))
    c_k = np.array([lab[0] for lab in labels])
    n_k = np.array([lab[1] for lab in labels])
    lm_k = np.array([lab[2] ** 2 + lab[3] for lab in labels])
    A = np.einsum("epk,epk->ek", (cat[:, :, None] == c_k) * R[:, :, n_k], Y[:, :, lm_k])
    return A, labels


def product_tuples(spec, labels):
    """All sorted A-index tuples allowed by the spec (degree per nu, singleton rule)."""
    deg = [spec.weight_n * n + spec.weight_l * l for _, n, l, _ in labels]
    single = [c in spec.singleton_categories for c, _, _, _ in labels]
    out = []
    for nu in range(1, spec.max_nu + 1):
        for t in itertools.combinations_with_replacement(range(len(labels)), nu):
            if sum(deg[i] for i in t) > spec.degree_limit(nu) + 1e-9:
                continue
            if spec.singleton_categories and sum(single[i] for i in t) != 1:
                continue
            out.append(t)
    return out


def rank(M, rtol=1e-9):
    if M.shape[1] == 0:
        return 0, np.zeros(0)
    M = M / np.maximum(np.linalg.norm(M, axis=0), 1e-300)
    s = np.linalg.svd(M, compute_uv=False)
    return int(np.sum(s > rtol * s[0])), s


@pytest.mark.parametrize("name", list(SMALL))
def test_completeness_against_haar_averaged_products(name, rng):
    spec = SMALL[name]
    basis = ACEBasis(spec)
    nB_max = max(basis.n_features.values())
    envs = random_envs(rng, spec, n_env=nB_max + 10)
    lmax = int(max(spec.max_degree) / spec.weight_l)
    K = lmax + spec.L_max  # products of harmonics with sum(l) <= lmax, times D^L
    Qs, wq = haar_quadrature(K)
    # A of every rotated (and inverted) environment, computed independently of the engine
    rot = [(Q @ v.T).T for Q in Qs for v, _ in envs]
    cats = [c for _ in Qs for _, c in envs]
    Ap, labels = independent_A(spec, list(zip(rot, cats)))
    Am, _ = independent_A(spec, list(zip([-x for x in rot], cats)))
    tuples = product_tuples(spec, labels)
    Fp = np.stack([np.prod(Ap[:, list(t)], axis=1) for t in tuples], axis=1).reshape(len(Qs), len(envs), -1)
    Fm = np.stack([np.prod(Am[:, list(t)], axis=1) for t in tuples], axis=1).reshape(len(Qs), len(envs), -1)
    centres = Centres(
        np.full(len(envs), 14),
        np.concatenate([np.full(len(v), e) for e, (v, _) in enumerate(envs)]),
        np.concatenate([v for v, _ in envs]),
        np.concatenate([c for _, c in envs]),
    )
    vals = basis.evaluate(centres)
    for L in range(spec.L_max + 1):
        DQ = wigner_d_real(L, Qs)  # (q, 2L+1, 2L+1)
        for parity in (1, -1):
            # G_{t,M'}(env)_M = int_O(3) rho(Q)_{M'M} f_t(Q env) dQ, rho = parity^[det<0] D^L(det Q Q)
            G = 0.5 * np.einsum("q,qNM,qet->eMtN", wq, DQ, Fp + parity * Fm)
            G = G.reshape(len(envs) * (2 * L + 1), -1)
            G = G[:, np.linalg.norm(G, axis=0) > 1e-10 * np.sqrt(len(G)) * np.abs(Fp).max()]  # drop averaged-to-zero
            rG, _ = rank(G)
            key = (L, parity)
            if key not in vals:
                assert rG == 0, f"{name} {key}: averaged products have rank {rG} but the basis has no features"
                continue
            B = vals[key].transpose(0, 2, 1).reshape(len(envs) * (2 * L + 1), -1)
            rB, sB = rank(B)
            rGB, _ = rank(np.concatenate([G, B], axis=1))
            nB = B.shape[1]
            assert rB == nB, f"{name} {key}: coupled features rank {rB} < {nB} (s = {sB[-3:]})"
            assert rG == rB == rGB, f"{name} {key}: ranks averaged={rG}, coupled={rB}, stacked={rGB}"


INDEP = {
    "site_nu3": BasisSpec(categories=(14,), radial=RadialSpec(n_max=4, r_cut=5.0), max_nu=3, max_degree=(6, 6, 5), L_max=4),
    "site_nu4": BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=4, max_degree=(4, 4, 4, 3), L_max=4),
    "multi": BasisSpec(categories=(1, 14), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=3, max_degree=(4, 4, 3), L_max=4),
    "bond": BasisSpec(
        categories=(BOND, 14), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=3, max_degree=(5, 5, 4), L_max=4,
        singleton_categories=(BOND,),
    ),
}


def smallest_normalised_singular_values(basis, rng, factor=5, per_env=10):
    """{key: (n_B, n_env, s_min / s_max)} with columns scaled to unit norm."""
    nB_max = max(basis.n_features.values())
    n_env = factor * nB_max
    spec = basis.spec
    cats = [c for c in spec.categories if c not in spec.singleton_categories]
    pc = np.repeat(np.arange(n_env), per_env)
    r = rng.uniform(1.0, 0.95 * spec.radial.r_cut, size=len(pc))
    d = rng.normal(size=(len(pc), 3))
    vec = d / np.linalg.norm(d, axis=1, keepdims=True) * r[:, None]
    cat = rng.choice(cats, size=len(pc))
    if spec.singleton_categories:
        cat[::per_env] = spec.singleton_categories[0]
    vals = basis.evaluate(Centres(np.full(n_env, 14), pc, vec, cat))
    out = {}
    for key, v in vals.items():
        M = v.transpose(0, 2, 1).reshape(-1, v.shape[1])
        M = M / np.linalg.norm(M, axis=0)
        s = np.linalg.svd(M, compute_uv=False)
        out[key] = (v.shape[1], n_env, s[-1] / s[0])
    return out


@pytest.mark.parametrize("name", list(INDEP))
def test_linear_independence(name, rng):
    basis = ACEBasis(INDEP[name])
    for key, (nB, n_env, smin) in smallest_normalised_singular_values(basis, rng).items():
        assert n_env >= 5 * nB
        assert smin > 1e-8, f"{name} {key}: {nB} features, normalised smallest singular value {smin:.2e}"

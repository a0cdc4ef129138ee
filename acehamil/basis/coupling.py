"""Generalised Clebsch-Gordan coupling of ``nu`` real harmonics, symmetrised and reduced.

For angular momenta ``ls = (l_1, ..., l_nu)`` (a sorted multiset of one-particle
functions ``v_i = (category, n, l)``, identical ``v``'s adjacent) and a target
``L``, every left-coupled tree ``((l_1 l_2)K_2 l_3)K_3 ... -> L`` gives a tensor
``C[m_1, ..., m_nu, M]`` mapping the product ``A_{v_1 m_1} ... A_{v_nu m_nu}`` to
an ``L`` vector.  The trees of one ``ls`` are orthonormal and together span
every equivariant map.  Because identical ``v``'s make the product symmetric
under permuting their ``m``'s, only the part of ``C`` symmetric under those
permutations matters: each tree is projected onto that subspace and an
orthonormal basis of the span of the projections is kept: Gram-Schmidt in tree
order (deterministic, unlike an SVD basis of degenerate singular values), with
the rank cross-checked by an SVD (singular values ``< 1e-10`` dropped - the
unprojected trees have unit norm, so a projection is either O(1) or zero up to
rounding).  This removes every linear dependence that
comes from the permutation symmetry of the product basis; the kept tensors are
linearly independent by construction (orthonormal).

Finally the tensor is reduced to sorted ``m``-tuples (within each group of
identical ``v``), so each distinct product of ``A``'s is computed once.

Examples
--------
>>> pat = coupling_pattern((1, 1), (0, 0), 0)       # two identical l=1 factors -> scalar
>>> pat.coeffs.shape[1], pat.mtuples.shape         # one feature, 6 sorted m pairs
(1, (6, 2))
>>> coupling_pattern((1, 1), (0, 0), 1).coeffs.shape[1]   # antisymmetric: removed
0
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..so3 import cg_real

#: Singular values below this are dropped (trees have unit Frobenius norm).
RANK_TOL = 1e-10


def coupling_trees(ls: tuple, L: int) -> list[np.ndarray]:
    """All left-coupled generalised CG tensors for ``ls -> L``.

    Parameters
    ----------
    ls : tuple of int
        Angular momenta ``l_1..l_nu``.
    L : int

    Returns
    -------
    list of ndarray, each shape (2l_1+1, ..., 2l_nu+1, 2L+1)
        Orthonormal (Frobenius) when ``len(ls) >= 1``; empty when ``L`` cannot be reached.
    """
    partial = [(ls[0], np.eye(2 * ls[0] + 1))]  # (K, tensor[..., K-index])
    for l in ls[1:]:
        nxt = []
        for K, T in partial:
            for K2 in range(abs(K - l), K + l + 1):
                C = cg_real(K, l, K2)
                nxt.append((K2, np.tensordot(T, C, axes=([-1], [0]))))
        partial = nxt
    return [T for K, T in partial if K == L]


def _groups(ident: tuple) -> list[list[int]]:
    """Positions grouped by identical one-particle function (``ident`` labels)."""
    out: dict = {}
    for i, g in enumerate(ident):
        out.setdefault(g, []).append(i)
    return list(out.values())


def _symmetry_perms(ident: tuple) -> list[tuple]:
    groups = _groups(ident)
    perms = []
    for choice in itertools.product(*[list(itertools.permutations(g)) for g in groups]):
        perm = list(range(len(ident)))
        for g, p in zip(groups, choice):
            for src, dst in zip(g, p):
                perm[src] = dst
        perms.append(tuple(perm))
    return perms


@dataclass(frozen=True, eq=False)
class CouplingPattern:
    """Reduced coupling of one ``(ls, identity pattern, L)``.

    Attributes
    ----------
    mtuples : ndarray of int, shape (n_u, nu)
        Offsets ``l_i + m_i`` (0..2l_i) with ``m`` non-decreasing inside each group
        of identical factors.
    coeffs : ndarray, shape (n_u, n_f, 2L+1)
        ``B_{f,M} = sum_u coeffs[u, f, M] prod_i A_{v_i, mtuples[u, i]}``.
    """

    mtuples: np.ndarray
    coeffs: np.ndarray


@lru_cache(maxsize=4096)
def coupling_pattern(ls: tuple, ident: tuple, L: int) -> CouplingPattern:
    """Symmetrised, rank-reduced coupling for factors ``ls`` -> ``L``.

    Parameters
    ----------
    ls : tuple of int
        Angular momenta of the (sorted) factors.
    ident : tuple of int
        Labels; equal labels mark identical one-particle functions (must be adjacent
        and have equal ``l``).
    L : int

    Returns
    -------
    CouplingPattern
        ``coeffs.shape[1]`` is the number of independent features (possibly 0).
    """
    ls, ident = tuple(int(x) for x in ls), tuple(int(x) for x in ident)
    nu = len(ls)
    dims = tuple(2 * l + 1 for l in ls)
    trees = coupling_trees(ls, L)
    if not trees:
        return CouplingPattern(np.zeros((0, nu), np.int64), np.zeros((0, 0, 2 * L + 1)))
    perms = _symmetry_perms(ident)
    stacked = np.stack(trees)  # (t, *dims, 2L+1)
    if len(perms) > 1:
        sym = np.zeros_like(stacked)
        for p in perms:
            sym += np.transpose(stacked, (0,) + tuple(1 + q for q in p) + (nu + 1,))
        stacked = sym / len(perms)
    flat = stacked.reshape(len(trees), -1)
    rank = int(np.sum(np.linalg.svd(flat, compute_uv=False) > RANK_TOL))
    if rank == 0:
        return CouplingPattern(np.zeros((0, nu), np.int64), np.zeros((0, 0, 2 * L + 1)))
    basis = _gram_schmidt(flat)
    if len(basis) != rank:  # pragma: no cover - would mean a tolerance problem, never silent
        raise RuntimeError(f"coupling {ls}->{L}: Gram-Schmidt kept {len(basis)} tensors, SVD rank is {rank}")
    feats = _fix_signs(basis.reshape((rank,) + dims + (2 * L + 1,)))
    # reduce to m-tuples sorted within identical groups (sum over equivalent orderings)
    grid = np.array(list(itertools.product(*[range(d) for d in dims])), dtype=np.int64).reshape(-1, nu)
    canon = grid.copy()
    for g in _groups(ident):
        if len(g) > 1:
            canon[:, g] = np.sort(grid[:, g], axis=1)
    uniq, inv = np.unique(canon, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    vals = feats.reshape(rank, -1, 2 * L + 1).transpose(1, 0, 2)  # (n_grid, rank, 2L+1)
    coeffs = np.zeros((len(uniq), rank, 2 * L + 1))
    np.add.at(coeffs, inv, vals)
    coeffs[np.abs(coeffs) < 1e-15] = 0.0
    uniq.setflags(write=False)
    coeffs.setflags(write=False)
    return CouplingPattern(uniq, coeffs)


def _gram_schmidt(rows: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the span of ``rows``, built row by row in order.

    Unlike an SVD, whose basis is arbitrary (and LAPACK-dependent) when singular
    values are degenerate, the result depends only on the order of the rows
    (the coupling trees), so stored model coefficients mean the same thing on
    every machine.  Modified Gram-Schmidt with one re-orthogonalisation pass;
    a row is kept when its residual norm exceeds :data:`RANK_TOL`.
    """
    kept: list = []
    for r in rows:
        v = r.copy()
        for _ in range(2):
            for q in kept:
                v -= (q @ v) * q
        norm = np.linalg.norm(v)
        if norm > RANK_TOL:
            kept.append(v / norm)
    return np.array(kept).reshape(len(kept), rows.shape[1])


def _fix_signs(feats: np.ndarray) -> np.ndarray:
    """Deterministic sign: first entry of largest magnitude is positive."""
    out = feats.copy()
    for f in range(len(out)):
        flat = out[f].ravel()
        k = int(np.argmax(np.abs(flat) > np.abs(flat).max() * 0.5))
        if flat[k] < 0:
            out[f] = -out[f]
    return out

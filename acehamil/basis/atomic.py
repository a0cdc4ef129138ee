"""Atomic base ``A_{c n l m}`` per centre and the one-particle functions behind it.

``phi_a(x_p) = w_p R_n(|x_p|) Y_lm(x_p / |x_p|) [category_p == c]`` for
``a = (c, n, l, m)``, and ``A_a(centre) = sum_{p in centre} phi_a(x_p)``.
The weight ``w_p`` (optional, default 1) is treated as a constant: no gradient
flows through it.

The category is folded into the radial index, ``k = category_index * n_max + n``,
so that ``Rc[p, k] = w_p R_n(r_p) [category_p == category k]`` and the full table
``A_full[c, k, lm] = sum_p Rc[p, k] Y[p, lm]`` is one batched matrix product over
centres (particles padded to the largest centre of the batch).
"""

from __future__ import annotations

import numpy as np


def fold_categories(R: np.ndarray, cat_index: np.ndarray, n_cat: int, weight: np.ndarray) -> np.ndarray:
    """Radial values placed in the block of each particle's category.

    Parameters
    ----------
    R : ndarray, shape (P, n_max)
    cat_index : ndarray of int, shape (P,)
        Position of each particle's category in ``spec.categories``.
    n_cat : int
    weight : ndarray, shape (P,)

    Returns
    -------
    ndarray, shape (P, n_cat * n_max)

    Examples
    --------
    >>> fold_categories(np.array([[1.0, 2.0]]), np.array([1]), 2, np.array([0.5]))
    array([[0. , 0. , 0.5, 1. ]])
    """
    P, n = R.shape
    if n_cat == 1:  # one category: nothing to place (same values, no scatter)
        return R * weight[:, None]
    out = np.zeros((P, n_cat, n))
    out[np.arange(P), cat_index] = R * weight[:, None]
    return out.reshape(P, n_cat * n)


def padding(local: np.ndarray, n_centres: int) -> tuple[np.ndarray, int]:
    """Slot of each particle inside its centre, and the largest centre size.

    Parameters
    ----------
    local : ndarray of int, shape (P,)
        Non-decreasing centre index (0..n_centres-1).
    n_centres : int

    Returns
    -------
    slot : ndarray of int, shape (P,)
    p_max : int

    Examples
    --------
    >>> padding(np.array([0, 0, 2]), 3)
    (array([0, 1, 0]), 2)
    """
    starts = np.searchsorted(local, np.arange(n_centres))
    slot = np.arange(len(local)) - starts[local]
    return slot, int(slot.max()) + 1 if len(slot) else 0


def pad(x: np.ndarray, local: np.ndarray, slot: np.ndarray, n_centres: int, p_max: int) -> np.ndarray:
    """Per-particle rows ``x (P, ...)`` scattered to ``(n_centres, p_max, ...)`` (zeros elsewhere)."""
    out = np.zeros((n_centres, p_max) + x.shape[1:])
    out[local, slot] = x
    return out


def atomic_base(Rc, Y, local, slot, n_centres, p_max, a_k, a_lm) -> np.ndarray:
    """Sum one-particle functions over each centre's particles.

    Parameters
    ----------
    Rc : ndarray, shape (P, K)
        Category-folded radial values (:func:`fold_categories`).
    Y : ndarray, shape (P, n_lm)
    local, slot : ndarray of int, shape (P,)
        Centre (non-decreasing) and slot of each particle (:func:`padding`).
    n_centres, p_max : int
    a_k, a_lm : ndarray of int, shape (n_A,)
        Folded radial index and flat ``l*l+l+m`` of each A.

    Returns
    -------
    A : ndarray, shape (n_centres, n_A)
    """
    if len(Rc) == 0:
        return np.zeros((n_centres, len(a_k)))
    if p_max == 1 and len(Rc) == n_centres:  # one particle per centre (e.g. two-centre bonds): no sum
        return Rc[:, a_k] * Y[:, a_lm]
    if len(Rc) < 8 * n_centres:  # few particles per centre: padded, one batched product
        full = np.matmul(pad(Rc, local, slot, n_centres, p_max).transpose(0, 2, 1), pad(Y, local, slot, n_centres, p_max))
        return full[:, a_k, a_lm]
    # many particles per centre, grouped by centre: one small product per centre on its contiguous
    # rows (measured faster than padding every centre to the largest one and one batched product)
    starts = np.searchsorted(local, np.arange(n_centres + 1))
    full = np.empty((n_centres, Rc.shape[1], Y.shape[1]))
    for c in range(n_centres):
        np.matmul(Rc[starts[c]:starts[c + 1]].T, Y[starts[c]:starts[c + 1]], out=full[c])
    return full.reshape(n_centres, -1)[:, a_k * Y.shape[1] + a_lm]


def atomic_base_by_category(R, Y, cat_index, local, n_centres, groups, n_A) -> np.ndarray:
    """:func:`atomic_base` without folding the categories into the radial index: each category's
    particles of each centre are summed on their own (a bond's single bond particle by a plain
    product, the environment atoms by one small matrix product per centre on contiguous rows), so no
    zero radial values are stored or multiplied.  Same values as :func:`atomic_base` of the folded
    radial values (up to the order of the sums).

    Parameters
    ----------
    R : ndarray, shape (P, n_max)
        Weighted radial values ``w_p R_n(r_p)``.
    Y : ndarray, shape (P, n_lm)
    cat_index : ndarray of int, shape (P,)
        Position of each particle's category in ``spec.categories``.
    local : ndarray of int, shape (P,)
        Centre of each particle; the particles sorted by ``(local, cat_index)``.
    n_centres : int
    groups : sequence of (category index, columns (n_c,), a_n (n_c,), a_lm (n_c,))
        The one-particle sums of each category: their columns in ``A``, radial and flat ``lm`` index.
    n_A : int

    Returns
    -------
    A : ndarray, shape (n_centres, n_A)

    Examples
    --------
    >>> R, Y = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.5], [2.0, 1.0]])
    >>> groups = [(0, np.array([0, 1]), np.array([0, 1]), np.array([0, 1])), (1, np.array([2]), np.array([1]), np.array([0]))]
    >>> atomic_base_by_category(R, Y, np.array([0, 1]), np.array([0, 0]), 1, groups, 3).tolist()
    [[1.0, 1.0, 8.0]]
    """
    A = np.zeros((n_centres, n_A))
    if len(R) == 0:
        return A
    ncat = 1 + max(int(cat_index.max()), max(g[0] for g in groups))
    keys = local * ncat + cat_index
    if np.any(keys[1:] < keys[:-1]):
        raise ValueError("particles must be sorted by centre and category")
    base = np.arange(n_centres) * ncat
    for ci, cols, a_n, a_lm in groups:
        start = np.searchsorted(keys, base + ci)
        count = np.searchsorted(keys, base + ci + 1) - start
        top = int(count.max(initial=0))
        if top == 0:
            continue
        if len(cols) and cols[-1] - cols[0] == len(cols) - 1:  # the category's columns are one range: a slice
            cols = slice(int(cols[0]), int(cols[-1]) + 1)
        if top == 1:  # at most one particle of this category per centre (e.g. the bond): no sum
            c = np.nonzero(count)[0]
            rows = start[c]
            # column gathers by np.take(mode="clip"): several times faster than fancy indexing on axis 1
            vals = np.take(R[rows], a_n, axis=1, mode="clip")
            vals *= np.take(Y[rows], a_lm, axis=1, mode="clip")
            if len(c) == n_centres:  # every centre has one: rows of A in order
                A[:, cols] = vals
            else:
                A[c[:, None], np.arange(n_A)[cols][None, :]] = vals
            continue
        full = np.zeros((n_centres, R.shape[1], Y.shape[1]))
        RT, mm = R.T, np.matmul
        for c, s0, s1 in zip(range(n_centres), start.tolist(), (start + count).tolist()):  # plain ints: less overhead per centre
            if s1 > s0:
                mm(RT[:, s0:s1], Y[s0:s1], out=full[c])
        A[:, cols] = np.take(full.reshape(n_centres, -1), a_n * Y.shape[1] + a_lm, axis=1, mode="clip")
    return A

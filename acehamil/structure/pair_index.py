"""Vectorised look-up of atom-pair blocks ``(i, j, shift)``: the one "find the block" and
"find the reverse block" of the package.

Blocks of real-space matrices, bonds of neighbour lists and centres of block
families are all keyed by ``(i, j, shift)``; the Hermitian partner of
``(i, j, T)`` is ``(j, i, -T)``.  Both look-ups here sort the keys once
(``O(n log n)``), with no Python loop per block.
"""

from __future__ import annotations

import numpy as np


def _keys(i, j, shift) -> np.ndarray:
    i = np.asarray(i, dtype=np.int64).reshape(-1)
    j = np.asarray(j, dtype=np.int64).reshape(-1)
    shift = np.asarray(shift, dtype=np.int64).reshape(-1, 3)
    if not (len(i) == len(j) == len(shift)):
        raise ValueError(f"i, j, shift lengths differ: {len(i)}, {len(j)}, {len(shift)}")
    return np.column_stack([i, j, shift])


def _encode(keys: np.ndarray, queries: np.ndarray):
    """One int64 code per ``(i, j, shift)`` row of ``keys`` and of ``queries`` (equal rows, equal
    codes: a mixed-radix number over the ranges both sets span), or None when it would overflow."""
    both_min = np.minimum(keys.min(axis=0), queries.min(axis=0))
    span = np.maximum(keys.max(axis=0), queries.max(axis=0)) - both_min + 1
    if float(np.prod(span.astype(float))) >= 2.0**62:
        return None
    codes = []
    for x in (keys, queries):
        c = np.zeros(len(x), dtype=np.int64)
        for col in range(x.shape[1]):
            c *= span[col]
            c += x[:, col] - both_min[col]
        codes.append(c)
    return codes


def lookup(i, j, shift, qi, qj, qshift) -> np.ndarray:
    """Position of each query ``(qi, qj, qshift)`` among the keys ``(i, j, shift)``, -1 if absent.

    Parameters
    ----------
    i, j : array of int, shape (n,)
    shift : array of int, shape (n, 3)
        The keys (e.g. the blocks of a :class:`~acehamil.structure.RealSpaceMatrix`).
    qi, qj : array of int, shape (m,)
    qshift : array of int, shape (m, 3)
        The queries.

    Returns
    -------
    ndarray of int64, shape (m,)
        For a key present more than once, its last position.

    Notes
    -----
    Each row is coded as one int64 (mixed radix over the index ranges), the key codes are
    sorted once (stable) and the queries found by binary search: ``O((n + m) log n)``.  Rows whose
    ranges would overflow int64 fall back to a row-wise :func:`numpy.unique`.

    Examples
    --------
    >>> lookup([0, 1], [1, 0], [[0, 0, 0], [0, 0, 1]], [1, 1, 0], [0, 0, 1], [[0, 0, 1], [0, 0, 0], [0, 0, 0]]).tolist()
    [1, -1, 0]
    """
    keys, queries = _keys(i, j, shift), _keys(qi, qj, qshift)
    if len(queries) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(keys) == 0:
        return np.full(len(queries), -1, dtype=np.int64)
    codes = _encode(keys, queries)
    if codes is None:
        return _lookup_unique(keys, queries)
    kc, qc = codes
    order = np.argsort(kc, kind="stable")
    sk = kc[order]
    pos = np.searchsorted(sk, qc, side="right") - 1  # the last of equal keys (stable order)
    hit = pos >= 0
    hit[hit] = sk[pos[hit]] == qc[hit]
    return np.where(hit, order[np.maximum(pos, 0)], -1).astype(np.int64)


def _lookup_unique(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """:func:`lookup` by a row-wise unique (any index range)."""
    uniq, inv = np.unique(np.concatenate([keys, queries]), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    slot = np.full(len(uniq), -1, dtype=np.int64)
    np.maximum.at(slot, inv[: len(keys)], np.arange(len(keys), dtype=np.int64))
    return slot[inv[len(keys):]]


def reverse_index(i, j, shift) -> np.ndarray:
    """Position of the reversed pair ``(j, i, -shift)`` of every pair, -1 if absent.

    Parameters
    ----------
    i, j : array of int, shape (n,)
    shift : array of int, shape (n, 3)

    Returns
    -------
    ndarray of int64, shape (n,)

    Examples
    --------
    >>> reverse_index([0, 1, 0], [1, 0, 0], [[0, 0, 1], [0, 0, -1], [1, 0, 0]]).tolist()
    [1, 0, -1]
    """
    keys = _keys(i, j, shift)
    return lookup(keys[:, 0], keys[:, 1], keys[:, 2:], keys[:, 1], keys[:, 0], -keys[:, 2:])

"""Vectorised look-up of atom-pair blocks ``(i, j, shift)``: the one "find the block" and
"find the reverse block" of the package.

Blocks of real-space matrices, bonds of neighbour lists and centres of block
families are all keyed by ``(i, j, shift)``; the Hermitian partner of
``(i, j, T)`` is ``(j, i, -T)``.  Both look-ups here sort the keys once
(``O(n log n)``), with no Python loop per block.
"""

from __future__ import annotations

import numpy as np


def _columns(i, j, shift, sign: int = 1) -> list:
    """The five int64 key columns ``i, j, sign * shift[:, 0..2]`` (views where possible)."""
    i = np.asarray(i, dtype=np.int64).reshape(-1)
    j = np.asarray(j, dtype=np.int64).reshape(-1)
    shift = np.asarray(shift, dtype=np.int64).reshape(-1, 3)
    if not (len(i) == len(j) == len(shift)):
        raise ValueError(f"i, j, shift lengths differ: {len(i)}, {len(j)}, {len(shift)}")
    return [i, j] + [shift[:, c] if sign > 0 else -shift[:, c] for c in range(3)]


def _encode(keys: list, queries: list):
    """One int64 code per row of the key columns and of the query columns (equal rows, equal
    codes: a mixed-radix number over the ranges both sets span), or None when it would overflow."""
    lo = [min(int(k.min()), int(q.min())) for k, q in zip(keys, queries)]
    span = [max(int(k.max()), int(q.max())) - m + 1 for k, q, m in zip(keys, queries, lo)]
    if float(np.prod(np.array(span, dtype=float))) >= 2.0**62:
        return None
    codes = []
    for cols in (keys, queries):
        c = np.zeros(len(cols[0]), dtype=np.int64)
        for x, m, n in zip(cols, lo, span):
            c *= n
            c += x
            c -= m
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
    return _lookup(_columns(i, j, shift), _columns(qi, qj, qshift))


def _lookup(keys: list, queries: list) -> np.ndarray:
    """:func:`lookup` on key and query columns."""
    if len(queries[0]) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(keys[0]) == 0:
        return np.full(len(queries[0]), -1, dtype=np.int64)
    codes = _encode(keys, queries)
    if codes is None:
        return _lookup_unique(np.column_stack(keys), np.column_stack(queries))
    kc, qc = codes
    order = np.argsort(kc, kind="stable")
    sk = kc[order]
    del kc
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


class KeyIndex:
    """Keys ``(i, j, shift)`` sorted once for many :func:`lookup` calls against them (e.g. the block
    pattern of a prediction, searched by every block family, forward and reversed).

    Examples
    --------
    >>> ix = KeyIndex([0, 1], [1, 0], [[0, 0, 0], [0, 0, 1]])
    >>> ix.find([1, 1, 0, 5], [0, 0, 1, 0], [[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]).tolist()
    [1, -1, 0, -1]
    """

    def __init__(self, i, j, shift):
        self._keys = _columns(i, j, shift)
        n = len(self._keys[0])
        self._lo = [int(k.min()) if n else 0 for k in self._keys]
        self._span = [int(k.max()) - m + 1 if n else 1 for k, m in zip(self._keys, self._lo)]
        self._coded = n > 0 and float(np.prod(np.array(self._span, dtype=float))) < 2.0**62
        if self._coded:
            codes = self._code(self._keys)
            self._order = np.argsort(codes, kind="stable")
            self._sorted = codes[self._order]

    def _code(self, cols) -> np.ndarray:
        c = np.zeros(len(cols[0]), dtype=np.int64)
        for x, m, n in zip(cols, self._lo, self._span):
            c *= n
            c += x
            c -= m
        return c

    def find(self, qi, qj, qshift) -> np.ndarray:
        """Position of each query among the keys, -1 if absent (as :func:`lookup`); shape (m,)."""
        queries = _columns(qi, qj, qshift)
        if not self._coded:
            return _lookup(self._keys, queries)
        m = len(queries[0])
        inside = np.ones(m, dtype=bool)
        for x, lo, n in zip(queries, self._lo, self._span):
            inside &= (x >= lo) & (x < lo + n)
        out = np.full(m, -1, dtype=np.int64)
        q = np.nonzero(inside)[0]
        if len(q) == 0:
            return out
        qc = self._code([x[q] for x in queries])
        pos = np.searchsorted(self._sorted, qc, side="right") - 1  # the last of equal keys (stable order)
        hit = pos >= 0
        hit[hit] = self._sorted[pos[hit]] == qc[hit]
        out[q[hit]] = self._order[pos[hit]]
        return out


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
    keys = _columns(i, j, shift)
    return _lookup(keys, [keys[1], keys[0]] + [-x for x in keys[2:]])

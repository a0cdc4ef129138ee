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

"""Block-sparse real-space operators ``O_ij(T)`` (Hamiltonian or overlap).

A :class:`RealSpaceMatrix` holds only the atom-pair blocks that exist.  Block
``p`` couples the orbitals of atom ``i[p]`` in the home cell with those of
atom ``j[p]`` in cell ``shift[p]``:
``O_ij(T) = <phi_i(0) | O | phi_j(T)>`` (see :mod:`acehamil.conventions`).
Blocks are stored flat and ragged (atoms may differ in orbital count):
block ``p`` is ``data[offsets[p]:offsets[p+1]].reshape(norb[i[p]], norb[j[p]])``.

Units: eV for H, dimensionless for S.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .orbitals import atom_offsets
from .pair_index import lookup


@dataclass(frozen=True, eq=False)
class RealSpaceMatrix:
    """Block-sparse real-space matrix of one structure.

    Attributes
    ----------
    norb_per_atom : ndarray of int, shape (natoms,)
    i, j : ndarray of int, shape (P,)
        Atom indices of each block.
    shift : ndarray of int, shape (P, 3)
        Cell shift ``T`` of atom ``j``.
    data : ndarray of float64, shape (sum_p norb[i_p] * norb[j_p],)
        Row-major blocks, concatenated.

    Examples
    --------
    >>> import numpy as np
    >>> m = RealSpaceMatrix.from_blocks([1, 2], [0, 1], [1, 0], [[0, 0, 0], [0, 0, 0]],
    ...                                 [np.array([[1.0, 2.0]]), np.array([[1.0], [2.0]])])
    >>> m.nblocks, m.block(0).shape, m.hermiticity_error()
    (2, (1, 2), 0.0)
    """

    norb_per_atom: np.ndarray
    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    data: np.ndarray

    def __post_init__(self):
        # own copies, made read-only: the caller's arrays are never frozen or aliased
        self._freeze(np.array)

    @classmethod
    def adopt(cls, norb_per_atom, i, j, shift, data) -> "RealSpaceMatrix":
        """Like the constructor, but takes ownership of the arrays instead of copying them (they are made
        read-only; the caller must not keep writable references).  For freshly built matrices (prediction),
        where a copy would double the peak memory; H and S may share their ``i, j, shift``."""
        m = cls.__new__(cls)
        for name, arr in (("norb_per_atom", norb_per_atom), ("i", i), ("j", j), ("shift", shift), ("data", data)):
            object.__setattr__(m, name, arr)
        m._freeze(np.asarray)
        return m

    def _freeze(self, take) -> None:
        norb = take(self.norb_per_atom, dtype=np.int64).reshape(-1)
        i = take(self.i, dtype=np.int64).reshape(-1)
        j = take(self.j, dtype=np.int64).reshape(-1)
        shift = take(self.shift, dtype=np.int64).reshape(-1, 3)
        data = take(self.data, dtype=np.float64).reshape(-1)
        if not (len(i) == len(j) == len(shift)):
            raise ValueError(f"i, j, shift lengths differ: {len(i)}, {len(j)}, {len(shift)}")
        natoms = len(norb)
        if len(i) and (i.min() < 0 or j.min() < 0 or i.max() >= natoms or j.max() >= natoms):
            raise ValueError(f"atom index out of range 0..{natoms - 1}")
        sizes = norb[i] * norb[j]
        if sizes.sum() != data.size:
            raise ValueError(f"data has {data.size} values, blocks need {int(sizes.sum())}")
        if not np.all(np.isfinite(data)):
            raise ValueError("real-space matrix contains NaN or inf")
        for name, arr in (("norb_per_atom", norb), ("i", i), ("j", j), ("shift", shift), ("data", data)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_blocks(cls, norb_per_atom, i, j, shift, blocks) -> "RealSpaceMatrix":
        """Build from a list of dense blocks, block ``p`` of shape (norb[i_p], norb[j_p])."""
        norb = np.asarray(norb_per_atom, dtype=np.int64)
        i = np.asarray(i, dtype=np.int64).reshape(-1)
        j = np.asarray(j, dtype=np.int64).reshape(-1)
        for p, b in enumerate(blocks):
            if np.shape(b) != (norb[i[p]], norb[j[p]]):
                raise ValueError(f"block {p} ({i[p]},{j[p]}) has shape {np.shape(b)}, expected {(norb[i[p]], norb[j[p]])}")
        data = np.concatenate([np.asarray(b, float).ravel() for b in blocks]) if len(blocks) else np.zeros(0)
        return cls(norb, i, j, shift, data)

    @classmethod
    def from_dense(cls, norb_per_atom, shifts, matrices, tol: float = 0.0) -> "RealSpaceMatrix":
        """Build from dense cell matrices ``matrices[c]`` (norb, norb) at ``shifts[c]``.

        Blocks whose largest magnitude is ``<= tol`` are dropped.
        """
        norb = np.asarray(norb_per_atom, dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(norb)])
        ii, jj, ss, blocks = [], [], [], []
        for t, m in zip(np.asarray(shifts).reshape(-1, 3), matrices):
            for a in range(len(norb)):
                for b in range(len(norb)):
                    blk = m[off[a] : off[a + 1], off[b] : off[b + 1]]
                    if np.abs(blk).max(initial=0.0) > tol:
                        ii.append(a), jj.append(b), ss.append(t), blocks.append(blk)
        return cls.from_blocks(norb, ii, jj, np.array(ss).reshape(-1, 3), blocks)

    # ------------------------------------------------------------------ views
    @property
    def natoms(self) -> int:
        return len(self.norb_per_atom)

    @property
    def nblocks(self) -> int:
        return len(self.i)

    @cached_property
    def atom_offsets(self) -> np.ndarray:
        """First orbital of each atom, shape (natoms+1,)."""
        return atom_offsets(self.norb_per_atom)

    @property
    def norb(self) -> int:
        return int(self.atom_offsets[-1])

    @cached_property
    def offsets(self) -> np.ndarray:
        """Start of each block in ``data``, shape (P+1,)."""
        sizes = self.norb_per_atom[self.i] * self.norb_per_atom[self.j]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def block(self, p: int) -> np.ndarray:
        """Block ``p`` as a read-only (norb[i_p], norb[j_p]) array."""
        return self.data[self.offsets[p] : self.offsets[p + 1]].reshape(self.norb_per_atom[self.i[p]], self.norb_per_atom[self.j[p]])

    @cached_property
    def _index(self) -> dict:
        return {(int(a), int(b), tuple(int(x) for x in t)): p for p, (a, b, t) in enumerate(zip(self.i, self.j, self.shift))}

    def find(self, i: int, j: int, shift) -> int:
        """Index of block (i, j, shift), or -1 when absent (one block; many at once: :meth:`lookup`)."""
        return self._index.get((int(i), int(j), tuple(int(x) for x in shift)), -1)

    def lookup(self, i, j, shift) -> np.ndarray:
        """Indices of blocks ``(i[n], j[n], shift[n])``, -1 where absent; shape (n,) int (vectorised :meth:`find`)."""
        return lookup(self.i, self.j, self.shift, i, j, shift)

    def on_pattern(self, pattern: "RealSpaceMatrix") -> tuple:
        """This matrix's values on the blocks of ``pattern`` (same atoms and orbitals).

        Returns
        -------
        values : ndarray, shape (pattern.data.size,), float64
            Laid out like ``pattern.data``; 0 in blocks this matrix does not have.
        used : ndarray of bool, shape (nblocks,)
            Which of this matrix's blocks ``pattern`` has.
        """
        q = self.lookup(pattern.i, pattern.j, pattern.shift)
        bidx = np.repeat(np.arange(pattern.nblocks), np.diff(pattern.offsets))
        qe = q[bidx]
        ok = qe >= 0
        values = np.zeros(pattern.data.size)
        values[ok] = self.data[self.offsets[qe[ok]] + (np.arange(pattern.data.size) - pattern.offsets[bidx])[ok]]
        used = np.zeros(self.nblocks, dtype=bool)
        used[q[q >= 0]] = True
        return values, used

    @cached_property
    def partner(self) -> np.ndarray:
        """Index of the Hermitian partner ``(j, i, -T)`` of every block, -1 where absent; shape (P,) int."""
        out = self.lookup(self.j, self.i, -self.shift)
        out.setflags(write=False)
        return out

    @cached_property
    def shifts(self) -> np.ndarray:
        """Unique cell shifts, shape (ncells, 3), int, sorted lexicographically."""
        return np.unique(self.shift, axis=0) if self.nblocks else np.zeros((0, 3), np.int64)

    def coo(self) -> tuple:
        """Scalar entries: ``rows, cols, values, block_index`` each of shape (nnz,).

        ``rows``/``cols`` are global orbital indices; ``block_index`` gives the
        block (hence the shift) of each entry.
        """
        block_index, r, c = self._local_entries()
        rows = self.atom_offsets[self.i][block_index] + r
        cols = self.atom_offsets[self.j][block_index] + c
        return rows, cols, self.data, block_index

    def to_dense(self, shifts=None) -> tuple:
        """Dense cell matrices.

        Parameters
        ----------
        shifts : array of int, shape (ncells, 3), optional
            Defaults to :attr:`shifts`.

        Returns
        -------
        shifts : ndarray, shape (ncells, 3)
        matrices : ndarray, shape (ncells, norb, norb), float64
        """
        shifts = self.shifts if shifts is None else np.asarray(shifts, dtype=np.int64).reshape(-1, 3)
        cell_of = {tuple(t): c for c, t in enumerate(shifts.tolist())}
        out = np.zeros((len(shifts), self.norb, self.norb))
        rows, cols, vals, bidx = self.coo()
        cidx = np.array([cell_of.get(tuple(t), -1) for t in self.shift.tolist()], dtype=np.int64)
        keep = cidx[bidx] >= 0
        out[cidx[bidx][keep], rows[keep], cols[keep]] = vals[keep]
        return shifts, out

    def hermiticity_error(self) -> float:
        """Largest ``|O_ji(-T) - O_ij(T)^T|`` over blocks; ``inf`` if a partner is missing."""
        if self.nblocks and np.any(self.partner < 0):
            return float("inf")
        return float(np.abs(self.partner_transpose() - self.data).max(initial=0.0))

    def partner_transpose(self) -> np.ndarray:
        """``O_ji(-T)^T`` laid out like :attr:`data`: entry ``(a, b)`` of block ``p`` holds entry
        ``(b, a)`` of its partner block; shape (nnz,), float64.

        Raises
        ------
        ValueError
            A block has no partner ``(j, i, -T)`` (message names the first one).
        """
        q = self.partner
        missing = np.nonzero(q < 0)[0]
        if len(missing):
            p = int(missing[0])
            raise ValueError(f"block ({self.i[p]}, {self.j[p]}, {self.shift[p].tolist()}) has no Hermitian partner")
        bidx, rows, cols = self._local_entries()
        qb = q[bidx]
        return self.data[self.offsets[qb] + cols * self.norb_per_atom[self.j[qb]] + rows]

    def _local_entries(self) -> tuple:
        """Block, row and column inside the block of every stored value, each shape (nnz,) int."""
        nj = self.norb_per_atom[self.j]
        bidx = np.repeat(np.arange(self.nblocks), self.norb_per_atom[self.i] * nj)
        local = np.arange(self.data.size) - self.offsets[bidx]
        return bidx, local // nj[bidx], local % nj[bidx]

    def with_data(self, data) -> "RealSpaceMatrix":
        """Same sparsity pattern, new values."""
        return RealSpaceMatrix(self.norb_per_atom, self.i, self.j, self.shift, data)

    def same_pattern(self, other: "RealSpaceMatrix") -> bool:
        return (
            np.array_equal(self.norb_per_atom, other.norb_per_atom)
            and np.array_equal(self.i, other.i)
            and np.array_equal(self.j, other.j)
            and np.array_equal(self.shift, other.shift)
        )


def scatter_blocks(data: np.ndarray, offsets, ncols, row0: int, col0: int, X: np.ndarray) -> None:
    """Write sub-blocks ``X (n, d1, d2)`` into flat row-major block data, in place.

    Sub-block ``k`` goes to rows ``row0..row0+d1``, columns ``col0..col0+d2`` of the
    block starting at ``offsets[k]`` with ``ncols[k]`` columns.  ``data`` is the
    caller's own buffer (the one array this package writes in place).
    """
    n, d1, d2 = X.shape
    if n == 0:
        return
    idx = (np.asarray(offsets)[:, None, None] + (row0 + np.arange(d1))[None, :, None] * np.asarray(ncols)[:, None, None]
           + (col0 + np.arange(d2))[None, None, :])
    data[idx] = X


def gather_blocks(matrix: RealSpaceMatrix, q: np.ndarray, row0: int, col0: int, d1: int, d2: int) -> np.ndarray:
    """Sub-blocks ``(n, d1, d2)`` at rows ``row0..``, columns ``col0..`` of blocks ``q`` of ``matrix``
    (zeros where ``q < 0``)."""
    q = np.asarray(q, dtype=np.int64)
    out = np.zeros((len(q), d1, d2))
    ok = q >= 0
    if ok.any():
        qq = q[ok]
        nc = matrix.norb_per_atom[matrix.j[qq]]
        idx = (matrix.offsets[qq][:, None, None] + (row0 + np.arange(d1))[None, :, None] * nc[:, None, None]
               + (col0 + np.arange(d2))[None, None, :])
        out[ok] = matrix.data[idx]
    return out

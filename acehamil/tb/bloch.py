"""Bloch sums ``O(k) = sum_T O(T) exp(+2 pi i k.T)`` of block-sparse real-space matrices.

``k`` is fractional (reduced coordinates, no ``2 pi``), ``T`` integer cell
shifts: the *lattice gauge* of :mod:`acehamil.conventions`.  The *atomic gauge*
adds the intra-cell positions, ``exp(+2 pi i k.(T + x_j - x_i))``; it is a
unitary (diagonal) transformation of the lattice gauge, so eigenvalues agree.

Many k-points are done at once: the distinct orbital positions ``(row, col)``
of the COO entries form a sparse ``(n_pos, ncells)`` matrix ``V`` of values per
cell (dense when it is nearly full, e.g. a small cell with many shifts); ``V @ phases.T`` with ``phases (ncells, nk)`` gives every matrix element
at every k, which is then scattered into dense ``(nk, norb, norb)`` arrays or
into CSR matrices sharing one sparsity pattern.  No dense
``(ncells, norb, norb)`` array is ever formed.

Examples
--------
>>> import numpy as np
>>> from acehamil.structure import RealSpaceMatrix
>>> t = -1.0  # 1D chain, one s orbital per cell: eps(k) = 2 t cos(2 pi k)
>>> chain = RealSpaceMatrix.from_blocks([1], [0, 0], [0, 0], [[1, 0, 0], [-1, 0, 0]],
...                                     [np.array([[t]]), np.array([[t]])])
>>> hk = bloch_sum(chain, [[0.0, 0, 0], [0.25, 0, 0], [0.5, 0, 0]])
>>> (np.round(hk[:, 0, 0].real, 12) + 0.0).tolist()
[-2.0, 0.0, 2.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from ..structure import RealSpaceMatrix

__all__ = ["BlochAssembler", "bloch_sum", "bloch_sum_sparse", "phase_factors", "as_kpts", "check_pair"]

_GAUGES = ("lattice", "atomic")
_DENSE_FILL = 0.25  # use a dense (n_pos, ncells) value table above this fill ...
_DENSE_MAX = 2**24  # ... and below this many entries (128 MB)


#: Largest |fractional k coordinate| accepted: float64 keeps the phase of a bond 100 cells long to ~1e-8 there.
MAX_FRACTIONAL_K = 1e6


def as_kpts(kpts) -> np.ndarray:
    """Validate k-points: array-like (3,) or (nk, 3) -> float64 (nk, 3).

    >>> as_kpts([0.5, 0, 0]).shape
    (1, 3)
    """
    k = np.asarray(kpts, dtype=np.float64)
    if k.ndim == 1:
        k = k.reshape(1, -1)
    if k.ndim != 2 or k.shape[1] != 3:
        raise ValueError(f"k-points must have shape (nk, 3) (fractional), got {np.shape(kpts)}")
    if not len(k):  # eigenvalues of none said "min() arg is an empty sequence"
        raise ValueError("no k-points given (shape (0, 3)): at least one is needed")
    if not np.all(np.isfinite(k)):
        raise ValueError("k-points contain NaN or inf")
    if k.size and np.abs(k).max() > MAX_FRACTIONAL_K:
        raise ValueError(f"k-point {k[np.argmax(np.abs(k).max(axis=1))].tolist()} has a fractional coordinate beyond "
                         f"{MAX_FRACTIONAL_K:.0e} (every k-point equals one within [-0.5, 0.5]; at 1e300 the phases "
                         f"were rounding noise): Cartesian or garbage values?")
    return k


def check_pair(H, S) -> None:
    """Refuse an H that is not a :class:`RealSpaceMatrix`, or an S (None allowed: orthonormal
    basis) that is not one or has other orbitals per atom than H.

    Raises
    ------
    TypeError, ValueError
    """
    if not isinstance(H, RealSpaceMatrix):
        raise TypeError(f"H must be a RealSpaceMatrix, got {type(H).__name__}")
    if S is not None:
        if not isinstance(S, RealSpaceMatrix):
            raise TypeError(f"S must be a RealSpaceMatrix or None, got {type(S).__name__}")
        if not np.array_equal(S.norb_per_atom, H.norb_per_atom):
            raise ValueError(f"H and S have different orbitals per atom: {H.norb_per_atom.tolist()[:8]} vs "
                             f"{S.norb_per_atom.tolist()[:8]}")


def phase_factors(kpts, shifts) -> np.ndarray:
    """``exp(+2 pi i k.T)``.

    Parameters
    ----------
    kpts : array, shape (nk, 3), fractional
    shifts : array of int, shape (ncells, 3)

    Returns
    -------
    ndarray of complex128, shape (nk, ncells)
    """
    k = as_kpts(kpts)
    t = np.asarray(shifts, dtype=np.float64).reshape(-1, 3)
    return np.exp(2j * np.pi * (k @ t.T))


@dataclass(frozen=True, eq=False)
class BlochAssembler:
    """Cached sparsity pattern of one :class:`RealSpaceMatrix` for repeated Bloch sums.

    Parameters
    ----------
    matrix : RealSpaceMatrix
        ``O(T)`` blocks (eV for H, dimensionless for S).
    gauge : {"lattice", "atomic"}
        ``"atomic"`` needs ``frac_positions``.
    frac_positions : array, shape (natoms, 3), optional
        Fractional atomic positions (only for the atomic gauge).

    Examples
    --------
    >>> import numpy as np
    >>> from acehamil.structure import RealSpaceMatrix
    >>> m = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], [[0, 0, 0], [1, 0, 0], [-1, 0, 0]],
    ...                                 [np.ones((1, 1)), np.full((1, 1), 0.5), np.full((1, 1), 0.5)])
    >>> asm = BlochAssembler(m)
    >>> asm.dense([[0, 0, 0]]).shape, asm.sparse([0.5, 0, 0]).toarray().real.tolist()
    ((1, 1, 1), [[0.0]])
    """

    matrix: RealSpaceMatrix
    gauge: str = "lattice"
    frac_positions: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.matrix, RealSpaceMatrix):
            raise TypeError(f"matrix must be a RealSpaceMatrix, got {type(self.matrix).__name__}")
        if self.gauge not in _GAUGES:
            raise ValueError(f"gauge must be one of {_GAUGES}, got {self.gauge!r}")
        if self.gauge == "atomic":
            if self.frac_positions is None:
                raise ValueError("the atomic gauge needs frac_positions (natoms, 3)")
            x = np.array(self.frac_positions, dtype=np.float64)
            if x.shape != (self.matrix.natoms, 3):
                raise ValueError(f"frac_positions must have shape ({self.matrix.natoms}, 3), got {x.shape}")
            x.setflags(write=False)
            object.__setattr__(self, "frac_positions", x)

    @property
    def norb(self) -> int:
        return self.matrix.norb

    @cached_property
    def _slots(self):
        """Where each stored value goes: ``cells`` (ncells, 3), ``pos`` (n_pos,) the distinct flat orbital
        positions, each value's position index and cell index (nnz,), and whether the value table is dense."""
        m = self.matrix
        rows, cols, _, bidx = m.coo()
        cells, block_cell = _unique_rows(m.shift)
        lin = rows * m.norb + cols
        pos, pos_index = _unique_ints(lin, m.norb * m.norb)
        cell_index = block_cell[bidx]
        size = len(pos) * len(cells)
        # nearly full (small cell, many shifts): a dense table, as BLAS beats sparse products
        dense = bool(size <= _DENSE_MAX and np.count_nonzero(
            np.bincount(pos_index * len(cells) + cell_index, minlength=size)) > _DENSE_FILL * size)
        return cells, pos, pos_index, cell_index, dense

    def _table(self, vals):
        """V[p, c]: value at orbital position p in cell c (duplicates summed), of ``vals`` laid out as the
        matrix's data: a dense array or a CSR matrix, shape (n_pos, ncells)."""
        cells, pos, pos_index, cell_index, dense = self._slots
        if dense:
            return np.bincount(pos_index * len(cells) + cell_index, weights=vals,
                               minlength=len(pos) * len(cells)).reshape(len(pos), len(cells))
        return sp.csr_matrix((vals, (pos_index, cell_index)), shape=(len(pos), len(cells)))

    @cached_property
    def _pattern(self):
        m = self.matrix
        cells, pos = self._slots[:2]
        v = self._table(m.data)
        # CSR structure of the k-space matrix: pos is sorted by (row, col) already
        prow, pcol = np.divmod(pos, m.norb)
        indptr = np.searchsorted(prow, np.arange(m.norb + 1)).astype(np.int64)
        return cells, v, pos, prow, pcol, indptr

    @property
    def cells(self) -> np.ndarray:
        """Distinct cell shifts ``T``, shape (ncells, 3), int."""
        return self._pattern[0]

    def _values(self, kpts, v=None) -> np.ndarray:
        """Matrix elements at the pattern positions, shape (n_pos, nk), complex (of the value table ``v``,
        :meth:`_table`; default the matrix's own)."""
        k = as_kpts(kpts)
        cells, v0, _, prow, pcol, _ = self._pattern
        v = v0 if v is None else v
        ph = phase_factors(k, cells).T  # (ncells, nk)
        vals = (v @ np.ascontiguousarray(ph.real)) + 1j * (v @ np.ascontiguousarray(ph.imag))  # real products
        if self.gauge == "atomic":
            x = self.frac_positions
            oa = np.repeat(np.arange(self.matrix.natoms), self.matrix.norb_per_atom)
            dx = x[oa[pcol]] - x[oa[prow]]  # (n_pos, 3)
            vals = vals * np.exp(2j * np.pi * (dx @ k.T))
        return np.asarray(vals)

    def dense(self, kpts) -> np.ndarray:
        """Dense Bloch sums.

        Parameters
        ----------
        kpts : array, shape (nk, 3) or (3,), fractional

        Returns
        -------
        ndarray of complex128, shape (nk, norb, norb)
        """
        k = as_kpts(kpts)
        n = self.norb
        out = np.zeros((len(k), n * n), dtype=np.complex128)
        out[:, self._pattern[2]] = self._values(k).T
        return out.reshape(len(k), n, n)

    def dense_of(self, data, kpts) -> np.ndarray:
        """Dense Bloch sums of another matrix of the same pattern, given by its ``data`` (laid out as
        ``matrix.data``): the sparsity analysis is shared (e.g. several models' predictions of one
        structure); the same numbers as ``BlochAssembler(matrix.with_data(data)).dense(kpts)``.

        Parameters
        ----------
        data : array, shape (matrix.data.size,)
        kpts : array, shape (nk, 3) or (3,), fractional

        Returns
        -------
        ndarray of complex128, shape (nk, norb, norb)
        """
        data = np.asarray(data, dtype=np.float64)
        if data.shape != self.matrix.data.shape:
            raise ValueError(f"data must have shape {self.matrix.data.shape}, got {data.shape}")
        k = as_kpts(kpts)
        n = self.norb
        out = np.zeros((len(k), n * n), dtype=np.complex128)
        out[:, self._pattern[2]] = self._values(k, self._table(data)).T
        return out.reshape(len(k), n, n)

    def sparse(self, kpt) -> sp.csr_matrix:
        """Bloch sum at one k-point as a ``(norb, norb)`` complex CSR matrix."""
        return self.sparse_many(kpt)[0]

    def sparse_many(self, kpts) -> list:
        """Bloch sums at many k-points: list of ``(norb, norb)`` complex CSR matrices
        sharing one sparsity pattern (the union over all cells)."""
        k = as_kpts(kpts)
        _, _, _, _, pcol, indptr = self._pattern
        vals = self._values(k)
        n = self.norb
        return [sp.csr_matrix((vals[:, q].copy(), pcol, indptr), shape=(n, n)) for q in range(len(k))]


def _unique_ints(x, bound: int) -> tuple:
    """``np.unique(x, return_inverse=True)`` for ints in ``[0, bound)``: by a table of ``bound`` flags
    (linear time) when that is not much larger than ``x``, else by sorting.  Same arrays either way.

    Examples
    --------
    >>> u, inv = _unique_ints(np.array([5, 1, 5, 3]), 8)
    >>> u.tolist(), inv.tolist()
    ([1, 3, 5], [2, 0, 2, 1])
    """
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    if bound > max(4 * len(x), 1 << 16):
        u, inv = np.unique(x, return_inverse=True)
        return u, np.asarray(inv).reshape(-1)
    seen = np.zeros(bound, dtype=bool)
    seen[x] = True
    u = np.flatnonzero(seen)
    slot = np.cumsum(seen) - 1  # position of each present value in u
    return u, slot[x]


def _unique_rows(shift) -> tuple:
    """``np.unique(shift, axis=0, return_inverse=True)`` of integer cell shifts ``(n, 3)``, through one
    integer key per row (lexicographic order kept): the same ``(cells, inverse)``, without a sort of
    structured rows."""
    shift = np.asarray(shift, dtype=np.int64).reshape(-1, 3)
    if not len(shift):
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    lo = shift.min(axis=0)
    span = shift.max(axis=0) - lo + 1
    if float(np.prod(span.astype(float))) >= 2.0**62:  # keys would overflow: sort the rows themselves
        cells, inv = np.unique(shift, axis=0, return_inverse=True)
        return cells, np.asarray(inv).reshape(-1)
    key = ((shift[:, 0] - lo[0]) * span[1] + (shift[:, 1] - lo[1])) * span[2] + (shift[:, 2] - lo[2])
    ukey, inv = _unique_ints(key, int(np.prod(span)))
    c2 = ukey % span[2]
    c1 = (ukey // span[2]) % span[1]
    c0 = ukey // (span[1] * span[2])
    return np.stack([c0 + lo[0], c1 + lo[1], c2 + lo[2]], axis=1), inv


def bloch_sum(matrix: RealSpaceMatrix, kpts, *, gauge: str = "lattice", frac_positions=None) -> np.ndarray:
    """Dense Bloch sums ``O(k) = sum_T O(T) exp(+2 pi i k.T)`` at many k-points.

    Parameters
    ----------
    matrix : RealSpaceMatrix
        Real-space blocks (eV for H, dimensionless for S).
    kpts : array, shape (nk, 3) or (3,)
        Fractional k-points.
    gauge : {"lattice", "atomic"}
        Lattice gauge (default, the acehamil convention) or atomic gauge
        (phase includes ``x_j - x_i``; needs ``frac_positions``).
    frac_positions : array, shape (natoms, 3), optional

    Returns
    -------
    ndarray of complex128, shape (nk, norb, norb)
    """
    return BlochAssembler(matrix, gauge, frac_positions).dense(kpts)


def bloch_sum_sparse(matrix: RealSpaceMatrix, kpts, *, gauge: str = "lattice", frac_positions=None) -> list:
    """Sparse Bloch sums: list (length nk) of ``(norb, norb)`` complex128 CSR matrices.

    Assembled directly from the block-sparse data (memory ~ nnz * nk); use it
    for large systems with iterative or shift-invert solvers.
    """
    return BlochAssembler(matrix, gauge, frac_positions).sparse_many(kpts)

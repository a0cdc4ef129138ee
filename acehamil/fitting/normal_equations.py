"""Batched accumulation of weighted normal equations.

A linear least-squares problem ``min_c sum_r w_r (y_r - A_r . c)^2`` needs only
``A^T W A`` (n, n), ``A^T W y`` (n,), ``y^T W y`` and the row count; these are
accumulated batch by batch, so memory does not grow with the number of
structures.  Accumulators add (``ne1 + ne2``) which makes k-fold
cross-validation cheap: fit on the sum of the other folds, score on one.
"""

from __future__ import annotations

import numpy as np


class NormalEquations:
    """Accumulator of ``A^T W A``, ``A^T W y``, ``y^T W y`` and the row count.

    Parameters
    ----------
    n : int
        Number of unknowns (columns of the design matrix).

    Attributes
    ----------
    AtA : ndarray, float64, shape (n, n)
        ``sum_r w_r a_r a_r^T``.
    Aty : ndarray, float64, shape (n,)
        ``sum_r w_r y_r a_r``.
    yty : float
        ``sum_r w_r y_r^2``.
    count : int
        Number of rows added.
    weight_sum : float
        ``sum_r w_r``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> A, y = rng.normal(size=(10, 3)), rng.normal(size=10)
    >>> ne = NormalEquations(3).add(A[:4], y[:4]).add(A[4:], y[4:])
    >>> bool(np.allclose(ne.AtA, A.T @ A)), ne.count
    (True, 10)
    """

    def __init__(self, n: int):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"number of unknowns must be a positive integer, got {n!r}")
        self.n = int(n)
        self.AtA = np.zeros((self.n, self.n))
        self.Aty = np.zeros(self.n)
        self.yty = 0.0
        self.count = 0
        self.weight_sum = 0.0

    def add(self, A, y, weights=None, columns=None) -> "NormalEquations":
        """Add a batch of rows in place and return ``self`` (for chaining).

        Parameters
        ----------
        A : array_like, float, shape (m, n) or (m, k)
        y : array_like, float, shape (m,)
        weights : array_like, float, shape (m,), optional
            Non-negative row weights (default 1).  Not modified.
        columns : array_like of int, shape (k,), optional
            Rows that are zero outside these distinct unknowns, given by those ``k`` columns only
            (``A`` of shape (m, k)): the products cost ``k^2``, not ``n^2``, per row, and every other
            entry of the sums is unchanged (it would add zeros).

        Examples
        --------
        >>> A = np.array([[0.0, 2.0, 0.0, 1.0], [0.0, -1.0, 0.0, 3.0]])
        >>> a = NormalEquations(4).add(A, [1.0, 2.0])
        >>> b = NormalEquations(4).add(A[:, [1, 3]], [1.0, 2.0], columns=[1, 3])
        >>> bool(np.array_equal(a.AtA, b.AtA) and np.array_equal(a.Aty, b.Aty)), b.count
        (True, 2)
        """
        A = np.asarray(A, dtype=float)
        y = np.asarray(y, dtype=float)
        if columns is not None:
            cols = np.asarray(columns)
            if cols.ndim != 1 or cols.dtype.kind not in "iu":
                raise TypeError(f"columns must be a 1-D array of integers, got {cols.dtype} shape {cols.shape}")
            if len(cols) and (cols.min() < 0 or cols.max() >= self.n or len(np.unique(cols)) != len(cols)):
                raise ValueError(f"columns must be distinct indices in 0..{self.n - 1}")
            if A.ndim != 2 or A.shape[1] != len(cols):
                raise ValueError(f"design batch must have shape (m, {len(cols)}) for {len(cols)} columns, got {A.shape}")
            if len(cols):
                sub = NormalEquations(len(cols)).add(A, y, weights)
                self.AtA[np.ix_(cols, cols)] += sub.AtA
                self.Aty[cols] += sub.Aty
            else:  # no unknown touched: only the targets and the row count
                sub = NormalEquations(1).add(np.zeros((A.shape[0], 1)), y, weights)
            self.yty += sub.yty
            self.count += sub.count
            self.weight_sum += sub.weight_sum
            return self
        if A.ndim != 2 or A.shape[1] != self.n:
            raise ValueError(f"design batch must have shape (m, {self.n}), got {A.shape}")
        if y.shape != (A.shape[0],):
            raise ValueError(f"targets must have shape ({A.shape[0]},), got {y.shape}")
        if weights is None:
            w = np.ones(A.shape[0])
        else:
            w = np.asarray(weights, dtype=float)
            if w.shape != (A.shape[0],):
                raise ValueError(f"weights must have shape ({A.shape[0]},), got {w.shape}")
            if np.any(w < 0) or not np.all(np.isfinite(w)):
                raise ValueError("weights must be finite and non-negative")
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(y))):
            raise ValueError("design batch or targets contain NaN or inf")
        Aw = A * w[:, None]
        if len(w) and np.all(w == w[0]):
            # one weight for the batch (a structure's rows): w A^T A by BLAS syrk (numpy picks it for
            # A.T @ A), half the flops of the general product; equal to it up to rounding (~1e-16 relative)
            self.AtA += (A.T @ A) * w[0] if w[0] != 1.0 else A.T @ A
        else:
            self.AtA += Aw.T @ A
        self.Aty += Aw.T @ y
        self.yty += float(np.dot(w * y, y))
        self.count += int(A.shape[0])
        self.weight_sum += float(w.sum())
        return self

    def copy(self) -> "NormalEquations":
        """An independent copy."""
        out = NormalEquations(self.n)
        out.AtA = self.AtA.copy()
        out.Aty = self.Aty.copy()
        out.yty, out.count, out.weight_sum = self.yty, self.count, self.weight_sum
        return out

    def scaled(self, factor: float) -> "NormalEquations":
        """A copy with every row weight multiplied by ``factor`` (>= 0)."""
        if not (np.isfinite(factor) and factor >= 0):
            raise ValueError(f"scale factor must be finite and >= 0, got {factor}")
        out = self.copy()
        out.AtA *= factor
        out.Aty *= factor
        out.yty *= factor
        out.weight_sum *= factor
        return out

    def __add__(self, other: "NormalEquations") -> "NormalEquations":
        if not isinstance(other, NormalEquations):
            return NotImplemented
        if other.n != self.n:
            raise ValueError(f"cannot add normal equations with {self.n} and {other.n} unknowns")
        out = self.copy()
        out.AtA += other.AtA
        out.Aty += other.Aty
        out.yty += other.yty
        out.count += other.count
        out.weight_sum += other.weight_sum
        return out

    def __radd__(self, other):
        if other == 0:  # allows sum([...])
            return self.copy()
        return NotImplemented

    def select(self, columns) -> "NormalEquations":
        """The sub-problem restricted to some unknowns (e.g. features up to a lower degree).

        Parameters
        ----------
        columns : array_like of int or bool, shape (k,) or (n,)
        """
        cols = np.arange(self.n)[np.asarray(columns)]
        if cols.size == 0:
            raise ValueError("select needs at least one column")
        out = NormalEquations(int(cols.size))
        out.AtA = self.AtA[np.ix_(cols, cols)].copy()
        out.Aty = self.Aty[cols].copy()
        out.yty, out.count, out.weight_sum = self.yty, self.count, self.weight_sum
        return out

    def residual_sum_of_squares(self, coef) -> float:
        """``sum_r w_r (y_r - a_r . c)^2`` computed from the accumulated sums.

        Parameters
        ----------
        coef : array_like, shape (n,)
        """
        c = np.asarray(coef, dtype=float)
        if c.shape != (self.n,):
            raise ValueError(f"coefficients must have shape ({self.n},), got {c.shape}")
        rss = self.yty - 2.0 * c @ self.Aty + c @ self.AtA @ c
        return float(max(rss, 0.0))

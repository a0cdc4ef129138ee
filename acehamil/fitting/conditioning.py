"""Conditioning of normal equations: equilibration, condition numbers, the ridge strength
``lam`` and the ridge path.  Both fits (H/S blocks and site-energy potentials) use these.

The meaning of ``lam`` (one, everywhere)
    ``lam`` is dimensionless.  The ridge penalty on coefficient ``k`` is
    ``lam * data_scale(ne) * prior_k`` where :func:`data_scale` is the mean
    diagonal of ``A^T W A`` *in the coordinates the prior acts on*, and
    ``prior_k`` the relative prior precision (a smoothness prior
    ``(1 + degree_k)^power`` times per-column factors).  So ``lam`` does not
    change with the number of rows, their weights or the units of the
    targets.  The H/S fit applies the prior to the raw coefficients; the
    potential fit first scales every column to unit root-mean-square per
    training configuration, so there the mean diagonal is the number of
    training configurations.

Equilibration
    Before a factorisation or an eigen-solve, a symmetric matrix is scaled to
    unit diagonal, ``M_s = D^-1 M D^-1`` with ``D = sqrt(diag M)`` (zero
    diagonals left unscaled); solutions scale back by ``D^-1``.
"""

from __future__ import annotations

import numpy as np

from .normal_equations import NormalEquations


def equilibrate(M) -> tuple[np.ndarray, np.ndarray]:
    """Scale a symmetric matrix to unit diagonal.

    Parameters
    ----------
    M : array_like, float, shape (n, n)

    Returns
    -------
    Ms : ndarray, shape (n, n)
        ``M / d[:, None] / d[None, :]``.
    d : ndarray, shape (n,)
        ``sqrt(diag M)``, 1 where the diagonal is not positive.

    Examples
    --------
    >>> Ms, d = equilibrate([[4.0, 2.0], [2.0, 9.0]])
    >>> Ms.tolist(), d.tolist()
    ([[1.0, 0.3333333333333333], [0.3333333333333333, 1.0]], [2.0, 3.0])
    """
    M = np.asarray(M, dtype=float)
    d = np.sqrt(np.diag(M))
    d = np.where(d > 0, d, 1.0)
    return M / d[:, None] / d[None, :], d


def condition_number(M, equilibrated: bool = False) -> float:
    """2-norm condition number of the equilibrated symmetric matrix ``M`` (inf when singular).

    Parameters
    ----------
    M : array_like, shape (n, n)
    equilibrated : bool
        ``M`` is already scaled (by :func:`equilibrate`): used as it is.

    Examples
    --------
    >>> condition_number(np.diag([1.0, 100.0]))
    1.0
    """
    e = np.linalg.eigvalsh(np.asarray(M, dtype=float) if equilibrated else equilibrate(M)[0])
    return float("inf") if e[0] <= 0 else float(e[-1] / e[0])


def data_scale(ne: NormalEquations) -> float:
    """Mean diagonal of ``A^T W A`` (1 when it is 0): the unit of ``lam`` (module docstring)."""
    return float(np.mean(np.diag(ne.AtA))) or 1.0


def column_scale(ne: NormalEquations, n_groups: int) -> np.ndarray:
    """Root-mean-square of each weighted design column per group (e.g. per configuration), shape (n,).

    ``sqrt(diag(A^T W A) / n_groups)``, 1 where that is 0: dividing the columns by
    it gives every column mean square 1 per group.
    """
    d = np.sqrt(np.diag(ne.AtA) / max(int(n_groups), 1))
    return np.where(d > 1e-300, d, 1.0)


def scale_columns(ne: NormalEquations, d) -> NormalEquations:
    """The normal equations of the design with column ``k`` divided by ``d[k]`` (a new object)."""
    out = ne.copy()
    out.AtA = ne.AtA / d[:, None] / d[None, :]
    out.Aty = ne.Aty / d
    return out

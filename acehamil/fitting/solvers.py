"""Linear solvers: Tikhonov/ridge with a smoothness prior, and Bayesian linear
regression (BLR) with evidence-maximised hyperparameters.

Every solver works from accumulated normal equations
(:class:`~acehamil.fitting.normal_equations.NormalEquations`); the ``A, y``
convenience forms only accumulate and call those.

Model and notation (weights ``w_r`` per row, ``n`` unknowns, ``N`` rows)::

    ridge:  min_c  sum_r w_r (y_r - a_r . c)^2 + sum_k reg_k c_k^2
    BLR:    y_r = a_r . c + noise,  noise ~ N(0, 1 / (beta w_r)),
            prior c ~ N(0, (alpha P)^-1),  P = diag(prior_diag)

BLR picks ``alpha`` (prior precision) and ``beta`` (noise precision) by
maximising the evidence with MacKay's fixed point on the eigendecomposition of
``P^-1/2 A^T W A P^-1/2``; the posterior (mean and covariance, kept as its
eigendecomposition) gives predictive variances for new design rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .conditioning import condition_number, equilibrate
from .normal_equations import NormalEquations


def smoothness_prior(degrees, lam: float = 1.0, power: float = 2.0) -> np.ndarray:
    """Diagonal regulariser growing with feature degree: ``lam * (1 + degree)^power``.

    Parameters
    ----------
    degrees : array_like, float, shape (n,)
        Per-feature polynomial degree (e.g. ``basis.feature_info[(0, 1)]`` degrees), >= 0.
    lam : float
        Overall strength, >= 0.
    power : float
        Growth exponent, >= 0.

    Returns
    -------
    ndarray, float64, shape (n,)

    Examples
    --------
    >>> smoothness_prior([0, 1, 3], lam=0.5, power=2).tolist()
    [0.5, 2.0, 8.0]
    """
    d = np.asarray(degrees, dtype=float)
    if d.ndim != 1 or np.any(d < 0) or not np.all(np.isfinite(d)):
        raise ValueError("degrees must be a 1-D array of finite non-negative numbers")
    if not (np.isfinite(lam) and lam >= 0 and np.isfinite(power) and power >= 0):
        raise ValueError(f"lam and power must be finite and >= 0, got lam={lam}, power={power}")
    return float(lam) * (1.0 + d) ** float(power)


@dataclass(frozen=True)
class RidgeResult:
    """Diagnostics of a ridge solve.

    Attributes
    ----------
    condition_number : float
        2-norm condition number of the (column-equilibrated) regularised matrix.
    condition_number_unregularised : float
        Same for ``A^T W A`` alone (inf when singular).
    jitter : float
        Relative diagonal jitter that was added to make the Cholesky factorisation succeed (0 if none).
    method : str
        ``"cholesky"`` or ``"eigh"`` (pseudo-inverse fallback).
    rss : float
        Weighted residual sum of squares on the data, ``sum_r w_r (y_r - a_r.c)^2``.
    """

    condition_number: float
    condition_number_unregularised: float
    jitter: float
    method: str
    rss: float


def _check_diag(reg, n, name) -> np.ndarray:
    r = np.broadcast_to(np.asarray(reg, dtype=float), (n,)).copy() if np.ndim(reg) == 0 else np.asarray(reg, dtype=float)
    if r.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {r.shape}")
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError(f"{name} must be finite and non-negative")
    return r


def ridge_normal(ne: NormalEquations, reg_diag, condition: bool = True) -> tuple[np.ndarray, RidgeResult]:
    """Solve ``(A^T W A + diag(reg)) c = A^T W y`` stably.

    The matrix is equilibrated (scaled to unit diagonal) and Cholesky-factorised;
    on failure a growing relative jitter is added, and as a last resort an
    eigendecomposition pseudo-inverse is used.

    Parameters
    ----------
    ne : NormalEquations
    reg_diag : float or array_like, shape (n,)
        Non-negative regulariser (e.g. :func:`smoothness_prior`).
    condition : bool
        Compute the condition numbers (one extra O(n^3) symmetric eigensolve).

    Returns
    -------
    coef : ndarray, float64, shape (n,)
    result : RidgeResult
    """
    if not isinstance(ne, NormalEquations):
        raise TypeError(f"expected NormalEquations, got {type(ne).__name__}")
    reg = _check_diag(reg_diag, ne.n, "reg_diag")
    Ms, d = equilibrate(ne.AtA + np.diag(reg))
    bs = ne.Aty / d
    jitter, method, z = 0.0, "cholesky", None
    for jit in (0.0, 1e-14, 1e-12, 1e-10, 1e-8):
        try:
            z = scipy.linalg.cho_solve(scipy.linalg.cho_factor(Ms + jit * np.eye(ne.n), lower=True), bs)
            jitter = jit
            if np.all(np.isfinite(z)):
                break
        except np.linalg.LinAlgError:
            continue
    if z is None or not np.all(np.isfinite(z)):
        s, V = np.linalg.eigh(Ms)
        keep = s > s.max() * 1e-14
        z = V[:, keep] @ ((V[:, keep].T @ bs) / s[keep])
        method = "eigh"
    coef = z / d
    cond_reg = cond_raw = float("nan")
    if condition:
        cond_reg = condition_number(Ms, equilibrated=True)
        cond_raw = condition_number(ne.AtA)
    return coef, RidgeResult(cond_reg, cond_raw, jitter, method, ne.residual_sum_of_squares(coef))


def ridge_path(ne: NormalEquations, prior, strengths) -> dict:
    """Ridge solutions along a path of strengths: ``(A^T W A + t P) c = A^T W y`` for each ``t``.

    Each is an equilibrated Cholesky solve (:func:`ridge_normal`), accurate however wide the
    range of the prior ``P``; an eigendecomposition shared by all ``t`` is not (with the
    potential's E0 prior of 1e-6 it lost 10-40 % of the coefficients at ``lam = 1e-9``) and,
    for fewer than about 10 strengths, not faster.

    Parameters
    ----------
    ne : NormalEquations
    prior : array_like, shape (n,)
        Non-negative relative prior precisions ``P``.
    strengths : iterable of float
        ``t >= 0`` (for ``lam`` of :mod:`acehamil.fitting.conditioning`: ``lam * data_scale(ne)``).

    Returns
    -------
    dict {t: ndarray (n,)}

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> A, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    >>> c = ridge_path(NormalEquations(4).add(A, y), np.ones(4), [0.5])[0.5]
    >>> bool(np.allclose(c, np.linalg.solve(A.T @ A + 0.5 * np.eye(4), A.T @ y)))
    True
    """
    P = _check_diag(prior, ne.n, "prior")
    return {t: ridge_normal(ne, t * P, condition=False)[0] for t in strengths}


def ridge(A, y, reg_diag, weights=None, condition: bool = True) -> tuple[np.ndarray, RidgeResult]:
    """Ridge/Tikhonov fit from a design matrix; see :func:`ridge_normal`.

    Parameters
    ----------
    A : array_like, shape (N, n)
    y : array_like, shape (N,)
    reg_diag : float or array_like, shape (n,)
    weights : array_like, shape (N,), optional

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> A = rng.normal(size=(50, 4)); c = np.array([1.0, -2.0, 0.5, 3.0])
    >>> coef, info = ridge(A, A @ c, 1e-10)
    >>> bool(np.allclose(coef, c, atol=1e-8)), info.method
    (True, 'cholesky')
    """
    A = np.asarray(A, dtype=float)
    if A.ndim != 2:
        raise ValueError(f"A must be 2-D (N, n), got shape {A.shape}")
    return ridge_normal(NormalEquations(A.shape[1]).add(A, y, weights), reg_diag, condition)


@dataclass(frozen=True, eq=False)
class BLRPosterior:
    """Gaussian posterior of Bayesian linear regression.

    Attributes
    ----------
    mean : ndarray, shape (n,)
        Posterior mean coefficients (the fitted model).
    alpha, beta : float
        Evidence-maximising prior precision and noise precision (1/eV^2 for energies).
    gamma : float
        Effective number of well-determined parameters.
    log_evidence : float
        Log marginal likelihood at (alpha, beta) (up to the constant ``0.5 sum log w``).
    eigvals : ndarray, shape (n,)
        Eigenvalues ``s`` of ``P^-1/2 A^T W A P^-1/2`` (clipped at 0).
    eigvecs : ndarray, shape (n, n)
        Its eigenvectors ``V`` (columns).
    prior_diag : ndarray, shape (n,)
        ``P``.
    proj : ndarray, shape (n,)
        ``V^T P^-1/2 A^T W y``.
    yty : float
    count : int
        Number of data rows ``N``.
    n_iter : int
    converged : bool
    """

    mean: np.ndarray
    alpha: float
    beta: float
    gamma: float
    log_evidence: float
    eigvals: np.ndarray
    eigvecs: np.ndarray
    prior_diag: np.ndarray
    proj: np.ndarray
    yty: float
    count: int
    n_iter: int
    converged: bool

    def nonconvergence(self) -> str | None:
        """None when the evidence iteration converged; else what its run-off means, in words.

        Three ways (judged from where it stopped): the prior precision ran off (``gamma``, the number of
        well-determined parameters, fell below 1e-6: the targets carry nothing the features can fit, e.g. a block
        zero by symmetry whose targets are rounding noise; the coefficients are ~0, which is right, but
        the error bars are not meaningful); the noise precision ran off (the data are fitted exactly: error bars
        too narrow); or both still moving after ``n_iter`` iterations.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> A, y = rng.normal(size=(50, 3)), rng.normal(size=50)
        >>> y = 1e-16 * (y - A @ np.linalg.lstsq(A, y, rcond=None)[0])  # rounding noise, orthogonal to the features
        >>> print(bayesian_linear_regression(A, y)[1].nonconvergence()[:32])
        the prior took all weight (alpha
        """
        if self.converged:
            return None
        where = f"alpha {self.alpha:.2g} after {self.n_iter} iterations, {self.gamma:.2g} parameters determined"
        if self.gamma < 1e-6:
            return (f"the prior took all weight ({where}): the targets (sum of squares {self.yty:.2g}) carry nothing "
                    "the features fit (noise, or zero to rounding as a block zero by symmetry); coefficients ~0, error "
                    "bars without meaning")
        if self.beta >= 1e299:
            return (f"the noise precision ran off (beta {self.beta:.2g}, {where}): the data are fitted exactly; error "
                    "bars too narrow")
        return f"alpha and beta still moving ({where}, beta {self.beta:.2g}): result of the last iteration used"

    def log_evidence_at(self, alpha: float, beta: float) -> float:
        """Log evidence for other hyperparameters (same data); used to check the maximum."""
        return _log_evidence(self.eigvals, self.proj, self.yty, self.count, self.prior_diag, alpha, beta)[0]

    def covariance(self) -> np.ndarray:
        """Posterior covariance of the coefficients, shape (n, n)."""
        Q = self.eigvecs / np.sqrt(self.prior_diag)[:, None]
        return (Q / (self.beta * self.eigvals + self.alpha)) @ Q.T

    def predictive_variance(self, A_new, include_noise: bool = True) -> np.ndarray:
        """Predictive variance ``a S a^T (+ 1/beta)`` for new design rows.

        Parameters
        ----------
        A_new : array_like, shape (m, n)
        include_noise : bool
            Add the noise variance ``1/beta`` (for a row of weight 1).

        Returns
        -------
        ndarray, shape (m,)
        """
        A_new = np.atleast_2d(np.asarray(A_new, dtype=float))
        if A_new.shape[1] != self.mean.size:
            raise ValueError(f"design rows must have {self.mean.size} columns, got {A_new.shape[1]}")
        proj = (A_new / np.sqrt(self.prior_diag)) @ self.eigvecs
        var = (proj**2 / (self.beta * self.eigvals + self.alpha)).sum(axis=1)
        return var + (1.0 / self.beta if include_noise else 0.0)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Coefficient draws from the posterior, shape (size, n)."""
        z = rng.standard_normal((size, self.mean.size)) / np.sqrt(self.beta * self.eigvals + self.alpha)
        return self.mean + (z @ self.eigvecs.T) / np.sqrt(self.prior_diag)


def _log_evidence(s, b, yty, N, P, alpha, beta):
    """Log evidence, posterior mean (rotated coords), gamma, data misfit.

    In the rotated coordinates ``u = V^T P^1/2 c`` the prior is isotropic; the
    evidence does not depend on the parametrisation, so ``P`` adds no term.
    """
    h = beta * s + alpha
    u = beta * b / h
    E_D = max(yty - 2.0 * u @ b + (s * u) @ u, 0.0)
    E_W = float(u @ u)
    M = s.size
    logev = 0.5 * (
        M * np.log(alpha) + N * np.log(beta) - beta * E_D - alpha * E_W - np.log(h).sum() - N * np.log(2 * np.pi)
    )
    gamma = float((beta * s / h).sum())
    return float(logev), u, gamma, E_D, E_W


def blr_normal(
    ne: NormalEquations,
    prior_diag=None,
    alpha: float | None = None,
    beta: float | None = None,
    max_iter: int = 500,
    tol: float = 1e-8,
    min_ratio: float = 0.0,
) -> tuple[np.ndarray, BLRPosterior]:
    """Bayesian linear regression with evidence maximisation (MacKay fixed point).

    Parameters
    ----------
    ne : NormalEquations
    prior_diag : array_like, shape (n,), optional
        Positive relative prior precisions ``P`` (e.g. :func:`smoothness_prior` with ``lam=1``);
        default all ones.
    alpha, beta : float, optional
        Starting values (default: from a lightly regularised least-squares fit).
    max_iter : int
    tol : float
        Relative change of alpha and beta at convergence; raised to the rounding precision of the
        misfit ``E_D`` (``8 eps (y^T y + 2|u.b| + u.s.u) / E_D``) when the data are fitted nearly exactly,
        where alpha and beta cannot settle any closer.
    min_ratio : float
        Lower bound on ``alpha / beta`` (the equivalent ridge strength ``lam``, same units
        as ``A^T W A``).  Without it nearly noise-free data drive the evidence to
        ``alpha -> 0`` and the poorly determined directions of the posterior mean
        (and covariance) run off to overflow; the ridge ``lam * mean(diag(A^T W A))`` is
        the natural floor.

    Returns
    -------
    coef : ndarray, shape (n,)
        Posterior mean.
    posterior : BLRPosterior
    """
    if not isinstance(ne, NormalEquations):
        raise TypeError(f"expected NormalEquations, got {type(ne).__name__}")
    if ne.count < 2:
        raise ValueError("Bayesian linear regression needs at least two data rows")
    n = ne.n
    P = np.ones(n) if prior_diag is None else np.asarray(prior_diag, dtype=float)
    if P.shape != (n,) or np.any(P <= 0) or not np.all(np.isfinite(P)):
        raise ValueError(f"prior_diag must be positive and finite with shape ({n},)")
    r = 1.0 / np.sqrt(P)
    s, V = np.linalg.eigh(ne.AtA * r[:, None] * r[None, :])
    s = np.clip(s, 0.0, None)
    b = V.T @ (ne.Aty * r)
    N = ne.count
    smax = max(float(s.max()), 1e-300)
    if beta is None or alpha is None:
        lam = 1e-8 * smax
        u0 = b / (s + lam)
        rss0 = max(ne.yty - 2 * u0 @ b + (s * u0) @ u0, 1e-12 * max(ne.yty, 1e-300))
        beta = beta if beta is not None else N / rss0
        alpha = alpha if alpha is not None else max(lam * beta, 1e-300)
    alpha, beta = float(alpha), float(beta)
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"alpha and beta must be positive, got {alpha}, {beta}")
    if not (np.isfinite(min_ratio) and min_ratio >= 0):
        raise ValueError(f"min_ratio must be finite and >= 0, got {min_ratio}")
    alpha = max(alpha, min_ratio * beta)
    converged, it = False, 0
    # the misfit from normal equations, yty - 2 u.b + u.s.u, cancels to rounding noise
    # (~1e-16 yty) when the data are (nearly) interpolated: floor it there, or beta runs
    # off to overflow
    E_D_floor = 1e-12 * max(float(ne.yty), 1e-300)
    for it in range(1, max_iter + 1):
        _, u, gamma, E_D, E_W = _log_evidence(s, b, ne.yty, N, P, alpha, beta)
        a_new = gamma / max(E_W, 1e-300)
        b_new = max(N - gamma, 1e-12) / max(E_D, E_D_floor)
        a_new = min(max(a_new, 1e-300), 1e300)
        b_new = min(max(b_new, 1e-300), 1e300)
        a_new = min(max(a_new, min_ratio * b_new), 1e300)
        # E_D comes from the normal equations as a difference of terms of size ~yty: its rounding error is
        # ~eps * (yty + 2|u.b| + u.s.u), so for nearly exact fits beta (and alpha, tied to it by the ridge floor
        # or through gamma) can only settle to that relative precision, never to tol
        floor = 8 * np.finfo(float).eps * (ne.yty + 2 * abs(u @ b) + (s * u) @ u) / max(E_D, E_D_floor)
        step_tol = max(tol, floor)
        done = abs(np.log(a_new / alpha)) < step_tol and abs(np.log(b_new / beta)) < step_tol
        alpha, beta = a_new, b_new
        if done:
            converged = True
            break
    logev, u, gamma, _, _ = _log_evidence(s, b, ne.yty, N, P, alpha, beta)
    coef = r * (V @ u)
    post = BLRPosterior(coef, alpha, beta, gamma, logev, s, V, P, b, float(ne.yty), int(N), it, converged)
    return coef, post


def bayesian_linear_regression(A, y, weights=None, prior_diag=None, **kwargs) -> tuple[np.ndarray, BLRPosterior]:
    """BLR from a design matrix; see :func:`blr_normal`.

    Parameters
    ----------
    A : array_like, shape (N, n)
    y : array_like, shape (N,)
    weights : array_like, shape (N,), optional
    prior_diag : array_like, shape (n,), optional

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> A = rng.normal(size=(200, 3)); y = A @ [1.0, 2.0, -1.0] + 0.1 * rng.normal(size=200)
    >>> coef, post = bayesian_linear_regression(A, y)
    >>> bool(np.allclose(coef, [1, 2, -1], atol=0.05)), bool(0.07 < post.beta ** -0.5 < 0.13)
    (True, True)
    """
    A = np.asarray(A, dtype=float)
    if A.ndim != 2:
        raise ValueError(f"A must be 2-D (N, n), got shape {A.shape}")
    return blr_normal(NormalEquations(A.shape[1]).add(A, y, weights), prior_diag, **kwargs)


def ridge_posterior(ne: NormalEquations, coef, lam: float, prior_diag) -> BLRPosterior:
    """The Gaussian posterior that a ridge fit implies, with the noise estimated from its residuals.

    Ridge with regulariser ``lam * P`` is the posterior mean of BLR with prior precision
    ``alpha P`` and noise precision ``beta`` whenever ``alpha / beta = lam``.  ``beta`` is
    taken from the residuals with the effective number of parameters removed,
    ``beta = (N - gamma) / RSS``, ``gamma = sum s / (s + lam)`` (as in generalized
    cross-validation); then ``alpha = lam beta``.  The mean is ``coef`` itself.

    Parameters
    ----------
    ne : NormalEquations
    coef : ndarray, shape (n,)
        The ridge solution of ``(A^T W A + lam P) c = A^T W y``.
    lam : float
        > 0.
    prior_diag : array_like, shape (n,)
        ``P`` (positive).

    Returns
    -------
    BLRPosterior

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> A = rng.normal(size=(400, 3)); y = A @ [1.0, 2.0, -1.0] + 0.1 * rng.normal(size=400)
    >>> coef, _ = ridge(A, y, 1e-3)
    >>> post = ridge_posterior(NormalEquations(3).add(A, y), coef, 1e-3, np.ones(3))
    >>> bool(0.08 < post.beta ** -0.5 < 0.12), bool(np.allclose(post.mean, coef))
    (True, True)
    """
    if not isinstance(ne, NormalEquations):
        raise TypeError(f"expected NormalEquations, got {type(ne).__name__}")
    P = np.asarray(prior_diag, dtype=float)
    c = np.asarray(coef, dtype=float)
    if P.shape != (ne.n,) or np.any(P <= 0) or not np.all(np.isfinite(P)):
        raise ValueError(f"prior_diag must be positive and finite with shape ({ne.n},)")
    if c.shape != (ne.n,):
        raise ValueError(f"coef must have shape ({ne.n},), got {c.shape}")
    if not (np.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be finite and > 0, got {lam}")
    r = 1.0 / np.sqrt(P)
    s, V = np.linalg.eigh(ne.AtA * r[:, None] * r[None, :])
    s = np.clip(s, 0.0, None)
    b = V.T @ (ne.Aty * r)
    gamma = float((s / (s + lam)).sum())
    rss = max(ne.residual_sum_of_squares(c), 1e-12 * max(float(ne.yty), 1e-300))
    beta = max(ne.count - gamma, 1.0) / rss
    alpha = lam * beta
    logev = _log_evidence(s, b, ne.yty, ne.count, P, alpha, beta)[0]
    return BLRPosterior(c, alpha, beta, gamma, logev, s, V, P, b, float(ne.yty), int(ne.count), 0, True)

"""Scores of error bars, and the likelihood that fits the factors of a spread.

* :func:`interval_metrics`: coverage of the 90 % and 68 % intervals (``+-1.645 sigma``,
  ``+-sigma``) and the rank correlation of sigma with the absolute error (:func:`spearman`);
  what ``acehamil evaluate --json`` reports under ``"uncertainty"``.
* :func:`fit_scales`: maximum-likelihood factors of the parts of a spread from errors and the
  unscaled parts, then one common factor that puts 90 % of the errors inside ``1.645 sigma``
  (:func:`weighted_quantile` when the values carry weights); the calibration of
  :mod:`acehamil.models.hamiltonian.calibrate` calls it on the training folds.

Plain arrays in, floats out: nothing here knows about models or structures.
"""

from __future__ import annotations

import numpy as np

#: z-values of the central 90 % and 68.3 % intervals of a normal distribution.
Z90, Z68 = 1.6448536269514722, 1.0


def fit_scales(err, *sigmas, weights=None) -> tuple:
    """Maximum-likelihood factors of ``err ~ N(0, sum_p (f_p sigma_p)^2)``, then one common
    factor so that the 90 % quantile of ``|err| / sigma`` is 1.645.

    Parameters
    ----------
    err : array, shape (n,), eV
    *sigmas : arrays, shape (n,), eV
        The parts of the spread (e.g. epistemic, noise, shared noise).
    weights : array, shape (n,), optional
        Weight of each value in the likelihood and the quantile (e.g. ``1 / p`` for values drawn
        with probability ``p``: an unbiased estimate of the objective of all values); default 1.

    Returns
    -------
    tuple of float
        One factor per part (a part that does not help the likelihood gets a factor near 0).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> se, sn = rng.uniform(0.1, 2, 4000), np.full(4000, 0.5)
    >>> err = rng.normal(size=4000) * np.sqrt((3 * se) ** 2 + (0.5 * sn) ** 2)
    >>> a, b = fit_scales(err, se, sn)
    >>> bool(2.5 < a < 3.5), bool(b < 0.8)
    (True, True)
    """
    from scipy.optimize import minimize

    e = np.abs(np.asarray(err, dtype=float))
    S = [np.asarray(x, dtype=float) for x in sigmas]
    if not S or any(x.shape != e.shape for x in S) or e.size < 2:
        raise ValueError("err and every sigma must have one equal shape with >= 2 values")
    S2 = np.array([x**2 for x in S])
    tiny = 1e-30
    w = None if weights is None else np.asarray(weights, dtype=float)
    if w is not None and (w.shape != e.shape or not np.all(w > 0) or not np.all(np.isfinite(w))):
        raise ValueError("weights must be finite, > 0 and of the shape of err")
    wn = np.ones_like(e) if w is None else w * (len(w) / w.sum())  # mean 1: the same scale of the objective

    def nll(p):
        v = np.exp(p) @ S2 + tiny
        return 0.5 * float(np.sum(wn * (np.log(v) + e**2 / v)))

    x0 = np.log(max(float(np.mean(e**2)) / max(float(np.mean(S2.sum(axis=0))), tiny), tiny))
    best = None
    for start in ([x0] * len(S), *([x0 + (8.0 if q == p else -8.0) for q in range(len(S))] for p in range(len(S)))):
        res = minimize(nll, start, method="Nelder-Mead",
                       options={"xatol": 1e-4, "fatol": 1e-8, "maxiter": 4000, "maxfev": 8000})
        if best is None or res.fun < best.fun:
            best = res
    f = np.sqrt(np.exp(best.x))
    s = np.sqrt(np.exp(best.x) @ S2) + tiny
    g = (float(np.quantile(e / s, 0.9)) if w is None else weighted_quantile(e / s, w, 0.9)) / Z90
    return tuple(float(x * g) for x in f)


def weighted_quantile(x, w, q: float) -> float:
    """The smallest ``x_i`` whose cumulative weight (``x`` ascending) reaches ``q`` of the total.

    Examples
    --------
    >>> weighted_quantile([3.0, 1.0, 2.0], [1.0, 1.0, 2.0], 0.5)
    2.0
    >>> weighted_quantile([3.0, 1.0, 2.0], [1.0, 3.0, 1.0], 0.5)
    1.0
    """
    x, w = np.asarray(x, dtype=float).reshape(-1), np.asarray(w, dtype=float).reshape(-1)
    if x.shape != w.shape or x.size == 0 or not 0 <= q <= 1:
        raise ValueError("x and w need one equal non-empty shape, q in [0, 1]")
    order = np.argsort(x, kind="mergesort")
    c = np.cumsum(w[order])
    return float(x[order][min(int(np.searchsorted(c, q * c[-1])), len(x) - 1)])


def interval_metrics(err, sigma) -> dict:
    """Coverage of the 90 % and 68 % intervals and the rank correlation of sigma with |err|.

    ``coverage_90`` is the fraction with ``|err| <= 1.645 sigma``, ``coverage_68`` with
    ``|err| <= sigma``; ``spearman_sigma_error`` is Spearman's rho of ``sigma`` and ``|err|``.

    Examples
    --------
    >>> m = interval_metrics([0.1, -0.5, 2.0, 0.0], [1.0, 1.0, 1.0, 0.1])
    >>> m["coverage_90"], m["coverage_68"], m["n"]
    (0.75, 0.75, 4)
    """
    e = np.abs(np.asarray(err, dtype=float)).reshape(-1)
    s = np.asarray(sigma, dtype=float).reshape(-1)
    if e.shape != s.shape:
        raise ValueError(f"err and sigma shapes differ: {e.shape} vs {s.shape}")
    nan = float("nan")
    if e.size == 0:
        return {"coverage_90": nan, "coverage_68": nan, "spearman_sigma_error": nan, "n": 0}
    rho = nan
    if e.size > 2 and np.ptp(s) > 0 and np.ptp(e) > 0:
        rho = spearman(s, e)
    return {"coverage_90": float(np.mean(e <= Z90 * s)), "coverage_68": float(np.mean(e <= Z68 * s)),
            "spearman_sigma_error": rho, "n": int(e.size)}


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n of ``x`` (1-D), ties sharing their average rank (scipy.stats.rankdata's "average").

    Examples
    --------
    >>> average_ranks([3.0, 1.0, 3.0, 2.0]).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    x = np.asarray(x, dtype=float).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.concatenate([[True], xs[1:] != xs[:-1]]))  # first position of each tie group
    ends = np.concatenate([starts[1:], [len(x)]])
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(0.5 * (starts + 1 + ends), ends - starts)
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation of two 1-D arrays: Pearson's of their :func:`average_ranks`
    (the value of ``scipy.stats.spearmanr``, without importing scipy.stats: ~1 s at the start of
    every job that scores error bars).

    Examples
    --------
    >>> round(spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 20.0, 40.0]), 6)
    0.948683
    """
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])

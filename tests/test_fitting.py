"""Tests for acehamil.fitting: normal equations, ridge, Bayesian linear regression."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.fitting import (
    NormalEquations,
    bayesian_linear_regression,
    blr_normal,
    ridge,
    ridge_normal,
    smoothness_prior,
)


def _synthetic(rng, N=300, n=8, noise=0.0, scales=None):
    A = rng.normal(size=(N, n))
    if scales is not None:
        A = A * scales
    c = rng.normal(size=n)
    y = A @ c + noise * rng.normal(size=N)
    return A, y, c


@pytest.mark.parametrize("nbatch", [1, 3, 7])
def test_batch_accumulation_equals_one_shot(rng, nbatch):
    A, y, _ = _synthetic(rng, N=70)
    w = rng.uniform(0.1, 2.0, size=70)
    one = NormalEquations(A.shape[1]).add(A, y, w)
    acc = NormalEquations(A.shape[1])
    for idx in np.array_split(np.arange(70), nbatch):
        acc.add(A[idx], y[idx], w[idx])
    np.testing.assert_allclose(acc.AtA, one.AtA, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.Aty, one.Aty, rtol=1e-12)
    assert acc.yty == pytest.approx(one.yty, rel=1e-12)
    assert acc.count == one.count == 70
    parts = [NormalEquations(A.shape[1]).add(A[idx], y[idx], w[idx]) for idx in np.array_split(np.arange(70), nbatch)]
    summed = sum(parts)
    np.testing.assert_allclose(summed.AtA, one.AtA, rtol=1e-12, atol=1e-12)
    c1, _ = ridge_normal(acc, 1e-6)
    c2, _ = ridge(A, y, 1e-6, weights=w)
    np.testing.assert_allclose(c1, c2, rtol=1e-9)


def test_residual_sum_of_squares_and_select(rng):
    A, y, _ = _synthetic(rng, N=40, n=5, noise=0.3)
    w = rng.uniform(0.5, 1.5, size=40)
    ne = NormalEquations(5).add(A, y, w)
    c = rng.normal(size=5)
    assert ne.residual_sum_of_squares(c) == pytest.approx(float(np.sum(w * (y - A @ c) ** 2)), rel=1e-10)
    sub = ne.select([0, 2, 4])
    np.testing.assert_allclose(sub.AtA, (A[:, [0, 2, 4]] * w[:, None]).T @ A[:, [0, 2, 4]], rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_bad_weights_rejected(rng, bad):
    A, y, _ = _synthetic(rng, N=5, n=2)
    w = np.ones(5)
    w[2] = bad
    with pytest.raises(ValueError, match="weights"):
        NormalEquations(2).add(A, y, w)


@pytest.mark.parametrize("uniform", [True, False])
def test_rows_given_by_their_nonzero_columns_add_what_the_full_rows_add(rng, uniform):
    """Rows that are zero outside some columns, added through ``columns``, give the sums of the full
    rows (mixed with full rows, in any split), and touch nothing else."""
    n = 9
    A, y, _ = _synthetic(rng, N=60, n=n)
    cols = np.sort(rng.choice(n, 4, replace=False))
    A[30:] = 0.0
    A[30:, cols] = rng.normal(size=(30, 4))
    w = np.full(60, 0.7) if uniform else rng.uniform(0.1, 2.0, size=60)
    full = NormalEquations(n).add(A, y, w)
    split = NormalEquations(n).add(A[:30], y[:30], w[:30]).add(A[30:, cols], y[30:], w[30:], columns=cols)
    np.testing.assert_allclose(split.AtA, full.AtA, rtol=1e-12, atol=1e-12 * np.abs(full.AtA).max())
    np.testing.assert_allclose(split.Aty, full.Aty, rtol=1e-12, atol=1e-12 * np.abs(full.Aty).max())
    assert split.yty == pytest.approx(full.yty, rel=1e-12)
    assert split.count == full.count and split.weight_sum == pytest.approx(full.weight_sum, rel=1e-12)
    only = NormalEquations(n).add(A[30:, cols], y[30:], w[30:], columns=cols)
    rest = np.setdiff1d(np.arange(n), cols)
    assert not only.AtA[rest].any() and not only.AtA[:, rest].any() and not only.Aty[rest].any()
    none = NormalEquations(n).add(np.zeros((5, 0)), y[:5], w[:5], columns=np.zeros(0, np.int64))
    assert not none.AtA.any() and none.count == 5 and none.yty == pytest.approx(float(np.sum(w[:5] * y[:5] ** 2)))


@pytest.mark.parametrize("cols, err", [([0, 0], ValueError), ([0, 3], ValueError), ([-1, 1], ValueError),
                                       ([0.0, 1.0], TypeError), ([[0, 1]], TypeError)])
def test_bad_columns_rejected(rng, cols, err):
    with pytest.raises(err, match="columns"):
        NormalEquations(3).add(rng.normal(size=(4, 2)), np.ones(4), columns=np.array(cols))
    with pytest.raises(ValueError, match="shape"):
        NormalEquations(3).add(rng.normal(size=(4, 3)), np.ones(4), columns=np.array([0, 1]))


def test_shape_errors(rng):
    with pytest.raises(ValueError, match="shape"):
        NormalEquations(3).add(np.ones((4, 2)), np.ones(4))
    with pytest.raises(ValueError, match="positive integer"):
        NormalEquations(0)
    with pytest.raises(TypeError):
        ridge_normal(np.eye(2), 1.0)


@pytest.mark.parametrize("scale_spread", [0.0, 3.0])
def test_ridge_recovers_coefficients(rng, scale_spread):
    scales = 10.0 ** rng.uniform(-scale_spread, scale_spread, size=8)
    A, y, c = _synthetic(rng, scales=scales)
    coef, info = ridge(A, y, 1e-14)
    np.testing.assert_allclose(coef, c, rtol=1e-6, atol=1e-8)
    assert info.method == "cholesky"
    assert info.condition_number >= 1.0
    assert info.rss < 1e-12 * float(y @ y)


def test_ridge_singular_system_is_solved(rng):
    A, y, _ = _synthetic(rng, N=50, n=4)
    A = np.hstack([A, A[:, :1]])  # duplicated column: A^T A singular
    coef, info = ridge(A, y, 0.0)
    assert np.all(np.isfinite(coef))
    assert info.condition_number_unregularised > 1e10
    assert info.rss < 1e-8 * float(y @ y)


def test_smoothness_prior_shrinks_high_degree(rng):
    A, y, _ = _synthetic(rng, N=30, n=6, noise=1.0)
    degrees = np.arange(6)
    flat, _ = ridge(A, y, smoothness_prior(np.zeros(6), lam=5.0, power=0))
    smooth, _ = ridge(A, y, smoothness_prior(degrees, lam=5.0, power=4))
    ratio = np.abs(smooth) / np.maximum(np.abs(flat), 1e-12)
    assert ratio[-1] < ratio[0]


@pytest.mark.parametrize("noise", [0.05, 0.5])
def test_blr_recovers_coefficients_and_noise(rng, noise):
    A, y, c = _synthetic(rng, N=2000, n=6, noise=noise)
    coef, post = bayesian_linear_regression(A, y)
    assert post.converged
    sigma = np.sqrt(np.diag(post.covariance()))
    assert np.all(np.abs(coef - c) < 5 * sigma)
    assert post.beta**-0.5 == pytest.approx(noise, rel=0.1)
    assert post.gamma == pytest.approx(6.0, abs=0.1)


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_blr_noise_free_data_do_not_overflow(rng, scale):
    """Interpolated data make the normal-equation misfit pure rounding noise; the
    evidence iteration must stay finite (it overflowed for large design columns)."""
    A = scale * rng.normal(size=(50, 3))
    y = A @ np.array([1.0, 2.0, 3.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        coef, post = bayesian_linear_regression(A, y)
    np.testing.assert_allclose(coef, [1.0, 2.0, 3.0], rtol=1e-6)
    assert np.isfinite(post.alpha) and np.isfinite(post.beta) and np.isfinite(post.log_evidence)


def test_blr_evidence_is_a_maximum(rng):
    A, y, _ = _synthetic(rng, N=60, n=12, noise=0.5)
    _, post = blr_normal(NormalEquations(12).add(A, y), prior_diag=smoothness_prior(np.arange(12) % 4, 1.0, 1.0))
    best = post.log_evidence_at(post.alpha, post.beta)
    assert best == pytest.approx(post.log_evidence)
    for fa, fb in [(1.2, 1), (1 / 1.2, 1), (1, 1.2), (1, 1 / 1.2), (1.2, 1.2), (1 / 1.2, 1 / 1.2)]:
        assert post.log_evidence_at(post.alpha * fa, post.beta * fb) < best


def test_blr_evidence_matches_direct_gaussian(rng):
    """Log evidence equals log N(y; 0, A (alpha P)^-1 A^T + I/beta) computed densely."""
    from scipy.stats import multivariate_normal

    A, y, _ = _synthetic(rng, N=25, n=4, noise=0.3)
    P = np.array([1.0, 2.0, 3.0, 4.0])
    _, post = blr_normal(NormalEquations(4).add(A, y), prior_diag=P)
    a, b = 0.7, 5.0
    C = (A / (a * P)) @ A.T + np.eye(25) / b
    direct = multivariate_normal(mean=np.zeros(25), cov=C).logpdf(y)
    assert post.log_evidence_at(a, b) == pytest.approx(direct, rel=1e-9)


def test_blr_predictive_variance_matches_covariance(rng):
    A, y, _ = _synthetic(rng, N=80, n=5, noise=0.2)
    coef, post = bayesian_linear_regression(A, y, prior_diag=np.arange(1, 6.0))
    Anew = rng.normal(size=(7, 5))
    var = post.predictive_variance(Anew, include_noise=False)
    np.testing.assert_allclose(var, np.einsum("ri,ij,rj->r", Anew, post.covariance(), Anew), rtol=1e-9)
    assert np.all(post.predictive_variance(Anew) > var)
    draws = post.sample(rng, 4000)
    np.testing.assert_allclose(draws.mean(axis=0), coef, atol=5 * np.sqrt(np.diag(post.covariance())).max() / np.sqrt(4000) * 3)


@pytest.mark.parametrize("factor", [0.0, 0.5, 3.0])
def test_scaled_equals_weighted_rows(rng, factor):
    A, y, _ = _synthetic(rng, N=20, n=3)
    a = NormalEquations(3).add(A, y).scaled(factor)
    b = NormalEquations(3).add(A, y, np.full(20, factor))
    np.testing.assert_allclose(a.AtA, b.AtA, atol=1e-12)
    np.testing.assert_allclose(a.Aty, b.Aty, atol=1e-12)
    assert a.yty == pytest.approx(b.yty) and a.count == b.count

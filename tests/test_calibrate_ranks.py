"""The rank correlation of the error-bar scores (intervals.spearman) against scipy's."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.models.hamiltonian.intervals import average_ranks, interval_metrics, spearman


@pytest.mark.parametrize("n", [3, 17, 2000])
@pytest.mark.parametrize("decimals", [None, 1])
def test_spearman_equals_scipy_with_and_without_ties(rng, n, decimals):
    from scipy.stats import rankdata, spearmanr

    a = rng.normal(size=n)
    b = a + rng.normal(size=n)
    if decimals is not None:  # many ties
        a, b = np.round(a, decimals), np.round(b, decimals)
    np.testing.assert_array_equal(average_ranks(a), rankdata(a))
    assert spearman(a, b) == pytest.approx(spearmanr(a, b)[0], abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)


def test_interval_metrics_rank_correlation_is_invariant_under_monotone_maps(rng):
    e, s = rng.normal(size=200), rng.uniform(0.1, 1.0, size=200)
    rho = interval_metrics(e, s)["spearman_sigma_error"]
    assert interval_metrics(e, np.exp(3 * s))["spearman_sigma_error"] == pytest.approx(rho, abs=1e-12)

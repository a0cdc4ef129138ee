"""The CV selection criterion of potential fits (:mod:`acehamil.models.potential.cv_criterion`): the combined
score and the target-aligned energy-MAE criterion with a force budget, on random tables and through the fit."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.models.potential.cv_criterion import rank_cv, row_score
from acehamil.models.potential.fit import FitSettings, accumulate, cross_validate

from test_potential_cv import problem  # noqa: F401  (module fixture: 8 noisy Si configurations of a known truth)


def _table(rng, n=40):
    return [{"energy_mae_meV_per_atom": float(e), "energy_rmse_meV_per_atom": float(1.3 * e), "force_rmse_eV_per_A": float(f)}
            for e, f in zip(rng.uniform(0.5, 5.0, n), rng.uniform(0.05, 0.15, n), strict=True)]


@pytest.mark.parametrize("tol", [0.0, 0.003, 0.02, 1.0])
def test_energy_mae_criterion_is_the_smallest_energy_mae_within_the_force_budget(rng, tol):
    rows = _table(rng)
    s = FitSettings(cv_criterion="energy_mae", cv_force_tolerance=tol)
    ranked = rank_cv(rows, s)
    fmin = min(r["force_rmse_eV_per_A"] for r in rows)
    ok = [r for r in rows if r["force_rmse_eV_per_A"] <= fmin + tol]
    assert ranked[0]["energy_mae_meV_per_atom"] == min(r["energy_mae_meV_per_atom"] for r in ok)
    assert sum(r["eligible"] for r in ranked) == len(ok)
    # every eligible row before every ineligible one; eligible rows by energy MAE
    flags = [r["eligible"] for r in ranked]
    assert flags == sorted(flags, reverse=True)
    maes = [r["score"] for r in ranked if r["eligible"]]
    assert maes == sorted(maes)
    assert len(ranked) == len(rows) and rows[0].get("score") is None  # new dicts, input untouched


def test_combined_criterion_is_the_weighted_rmse_sum(rng):
    rows = _table(rng)
    s = FitSettings(cv_energy_scale=2e-3, cv_force_scale=0.1)
    ranked = rank_cv(rows, s)
    want = sorted(r["energy_rmse_meV_per_atom"] / 2.0 + r["force_rmse_eV_per_A"] / 0.1 for r in rows)
    np.testing.assert_allclose([r["score"] for r in ranked], want, rtol=1e-12)
    assert all(r["eligible"] for r in ranked)


def test_force_reference_tightens_the_budget(rng):
    rows = _table(rng)
    s = FitSettings(cv_criterion="energy_mae", cv_force_tolerance=0.01)
    fmin = min(r["force_rmse_eV_per_A"] for r in rows)
    loose, tight = rank_cv(rows, s), rank_cv(rows, s, force_reference=fmin - 0.005)
    assert sum(r["eligible"] for r in tight) < sum(r["eligible"] for r in loose)
    # a reference above the table's best does not loosen it
    same = rank_cv(rows, s, force_reference=fmin + 1.0)
    assert [r["eligible"] for r in same] == [r["eligible"] for r in loose]


def test_the_two_criteria_can_disagree():
    rows = [{"energy_mae_meV_per_atom": 2.0, "energy_rmse_meV_per_atom": 3.0, "force_rmse_eV_per_A": 0.100},
            {"energy_mae_meV_per_atom": 1.5, "energy_rmse_meV_per_atom": 2.5, "force_rmse_eV_per_A": 0.104}]
    # combined with forces weighted heavily: 3 + 10 = 13 vs 2.5 + 10.4 = 12.9 -> the second; heavier still -> the first
    s = FitSettings(cv_force_scale=0.002)
    assert rank_cv(rows, s)[0]["energy_mae_meV_per_atom"] == 2.0
    assert rank_cv(rows, FitSettings(cv_criterion="energy_mae", cv_force_tolerance=0.005))[0]["energy_mae_meV_per_atom"] == 1.5
    assert rank_cv(rows, FitSettings(cv_criterion="energy_mae", cv_force_tolerance=0.001))[0]["energy_mae_meV_per_atom"] == 2.0


@pytest.mark.parametrize("bad", [{"cv_criterion": "energy"}, {"cv_force_tolerance": -0.1}, {"cv_force_tolerance": float("nan")},
                                 {"cv_force_tolerance": True}, {"cv_force_tolerance": "0.005"}])
def test_bad_criterion_settings_are_refused(bad):
    with pytest.raises(ValueError):
        FitSettings(**bad)


def test_cross_validate_ranks_by_the_criterion(problem):  # noqa: F811
    basis, species, configs = problem
    grids = {"lam": (1e-9, 1e-6, 1e-3), "power": (0.0, 2.0), "energy_factors": (0.1, 1.0, 10.0), "n_folds": 4}
    comb = FitSettings(**grids)
    acc = accumulate(basis, species, configs, comb)
    table = cross_validate(acc, basis, species, comb)
    for tol in (0.0, 1e-4, 1.0):
        s = FitSettings(**grids, cv_criterion="energy_mae", cv_force_tolerance=tol)
        ranked = cross_validate(acc, basis, species, s)
        fmin = min(r["force_rmse_eV_per_A"] for r in ranked)
        ok = [r for r in ranked if r["force_rmse_eV_per_A"] <= fmin + tol]
        assert ranked[0]["energy_mae_meV_per_atom"] == min(r["energy_mae_meV_per_atom"] for r in ok)
        assert ranked[0]["score"] == ranked[0]["energy_mae_meV_per_atom"]
    # same rows, only ordered differently
    key = lambda r: (r["shift"], r["energy_factor"], r["power"], r["lam"])  # noqa: E731
    assert sorted(map(key, table)) == sorted(map(key, ranked))
    assert table[0]["score"] == min(row_score(r, comb) for r in table)

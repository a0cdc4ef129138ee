"""The CV selection criterion of potential fits (:mod:`acehamil.models.potential.cv_criterion`): the combined
score and the target-aligned energy-MAE criterion with a force budget, on random tables and through the fit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from acehamil.models.potential.cv_criterion import rank_cv, row_score
from acehamil.models.potential.fit import (FitSettings, _columns, accumulate, chosen_energy_factor, cross_validate, cv_fold_solutions,
                                          fit_potential, solve, type_balance_factors)

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


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_type_balance_factors(gamma, rng):
    types = list(rng.choice(["AIMD", "Surface", "Vacancy"], size=30, p=[0.7, 0.1, 0.2]))
    b = type_balance_factors(types, gamma)
    assert b.shape == (30,) and np.isclose(b.mean(), 1.0) and np.all(b > 0)
    totals = {t: b[np.array(types) == t].sum() for t in set(types)}
    if gamma == 0:
        np.testing.assert_array_equal(b, 1.0)
    elif gamma == 1:  # every type the same total energy weight
        np.testing.assert_allclose(list(totals.values()), 30 / len(totals), rtol=1e-12)
    else:  # rarer types weigh more per configuration
        per = {t: b[np.array(types) == t][0] for t in set(types)}
        counts = {t: types.count(t) for t in set(types)}
        assert sorted(per, key=per.get) == sorted(counts, key=counts.get, reverse=True)
    np.testing.assert_array_equal(type_balance_factors(["x"] * 5, gamma), 1.0)  # one type: nothing to balance


def test_type_balance_in_the_cv_and_the_final_solve(problem):  # noqa: F811
    basis, species, configs = problem
    configs = [replace(c, config_type="rare" if k < 2 else "common") for k, c in enumerate(configs)]
    s = FitSettings(lam=(1e-9, 1e-3), power=(0.0,), n_folds=4, type_balance=(0.0, 1.0))
    acc = accumulate(basis, species, configs, s)
    table = cross_validate(acc, basis, species, s)
    assert sorted({r.get("type_balance", 0.0) for r in table}) == [0.0, 1.0] and len(table) == 4
    # a balanced row is the plain solver with per-configuration energy factors
    cols, degs = _columns(basis, species, 0)
    b = type_balance_factors([c.config_type for c in configs], 1.0)
    np.testing.assert_allclose(b[:2], 3 * b[2:].mean(), rtol=1e-12)  # 2 rare vs 6 common configurations: 3x per configuration
    efv = chosen_energy_factor(acc, {"energy_factor": 2.0, "type_balance": 1.0})
    np.testing.assert_allclose(efv, 2.0 * b)
    fast = cv_fold_solutions(acc, s, cols, degs, len(species), 0.0, efv, 1)[1e-9]
    plain, _ = solve(acc, s, cols, degs, len(species), 0.0, 1e-9, train=acc.folds != 1, e_factor=efv)
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-10 * np.abs(plain).max())
    unbalanced, _ = solve(acc, s, cols, degs, len(species), 0.0, 1e-9, train=acc.folds != 1, e_factor=2.0)
    assert np.abs(plain - unbalanced).max() > 1e-6 * np.abs(plain).max()  # the balance changes the fit
    # the fit records the CV's choice and refits with it
    res = fit_potential(configs, basis, species, FitSettings(lam=(1e-9,), power=(0.0,), n_folds=1, type_balance=(1.0,)),
                        accumulated=acc)
    assert res.chosen["type_balance"] == 1.0
    theta, _ = solve(acc, s, cols, degs, len(species), 0.0, 1e-9, e_factor=b)
    np.testing.assert_allclose(res.potential.parameter_vector(), theta, rtol=0, atol=1e-10 * np.abs(theta).max())


@pytest.mark.parametrize("bad", [{"type_balance": (-1.0,)}, {"type_balance": (1.0,), "solver": "blr"}])
def test_bad_type_balance_is_refused(bad):
    with pytest.raises(ValueError, match="type_balance"):
        FitSettings(**bad)


def test_type_balance_reaches_the_embedded_fit(problem):  # noqa: F811
    """The density fit's variable projection uses the same balanced energy weights: at zero densities its
    linear part is the balanced linear solve."""
    from acehamil.models.potential.embedded_fit import ProjectedLoss, density_columns, embedding_data

    basis, species, configs = problem
    configs = [replace(c, config_type="rare" if k < 2 else "common") for k, c in enumerate(configs)]
    s = FitSettings(lam=(1e-9,), power=(0.0,), n_folds=1, type_balance=(1.0,))
    data = embedding_data(basis, species, configs, s, density_columns(basis, (4, 2, 0)))
    acc = data.accumulated(s)
    cols, degs = _columns(basis, species, 0)
    chosen = {"energy_factor": 3.0, "type_balance": 1.0}
    efv = chosen_energy_factor(data, chosen)
    np.testing.assert_allclose(efv, chosen_energy_factor(acc, chosen))
    loss = ProjectedLoss(data, s, cols, degs, 0.0, 1e-9, efv, ("fs",), 1e-3, np.ones(len(configs), bool))
    a = loss.linear_part(np.zeros(loss.shape).ravel())
    theta, _ = solve(acc, s, cols, degs, len(species), 0.0, 1e-9, e_factor=efv)
    e_loss, e_solve = acc.energy_rows[:, cols] @ a, acc.energy_rows @ theta
    np.testing.assert_allclose(e_loss, e_solve, rtol=0, atol=1e-7)


def test_config_keys_reach_the_fit_settings(problem):  # noqa: F811
    from acehamil.models.potential.config import job_from_config

    _, _, configs = problem
    cfg = {"data": {"train": "unused.xyz"}, "basis": {"r_cut": 4.0, "n_max": 3, "max_nu": 2, "max_degree": [3, 2]},
           "fit": {"cv_criterion": "energy_mae", "cv_force_tolerance": 0.01, "type_balance": [0, 1]}}
    s = job_from_config(cfg, configs).settings
    assert (s.cv_criterion, s.cv_force_tolerance, s.type_balance) == ("energy_mae", 0.01, (0, 1))
    with pytest.raises(ValueError, match="cv_criterion"):
        job_from_config({**cfg, "fit": {"cv_criterion": "mae"}}, configs)

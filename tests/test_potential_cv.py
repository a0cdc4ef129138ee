"""The potential fit's fast cross-validation path (one eigendecomposition for every lam) is pinned
to the plain solver: same parameters, fold by fold, for every lam, power, energy factor and
degree cut-back of the grid."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.potential.config import make_basis
from acehamil.models.potential.data import Config
from acehamil.models.potential.fit import FitSettings, _columns, accumulate, cv_fold_solutions, solve
from acehamil.models.potential.model import ACEPotential, feature_degrees


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(21)
    species = (14,)
    basis = make_basis(species, r_cut=4.0, n_max=4, max_nu=3, max_degree=(4, 4, 3))
    nB = len(feature_degrees(basis))
    truth = ACEPotential(basis, species, rng.normal(size=1), 0.1 * rng.normal(size=(1, nB)), None, {})
    configs = []
    for k in range(8):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.positions += 0.15 * rng.normal(size=atoms.positions.shape)
        atoms.set_cell(atoms.cell.array * (1 + 0.02 * rng.normal()), scale_atoms=True)
        res = truth.compute(atoms)
        noise = 1e-3 * rng.normal(size=res["forces"].shape)  # not exactly representable: lam matters
        configs.append(Config(atoms, res["energy"] + 1e-3 * rng.normal(), res["forces"] + noise, res["stress"], "md", 1.0))
    return basis, species, configs


@pytest.mark.parametrize("shift,power,e_factor", [(0, 0.0, 1.0), (0, 2.0, 3.0), (1, 2.0, 1.0)])
def test_fast_cv_path_equals_the_plain_solver(problem, shift, power, e_factor):
    basis, species, configs = problem
    settings = FitSettings(lam=(1e-9, 1e-6, 1e-3), power=(power,), energy_factors=(e_factor,), degree_shifts=(shift,),
                           n_folds=4)
    acc = accumulate(basis, species, configs, settings)
    cols, degs = _columns(basis, species, shift)
    for fold in range(settings.n_folds):
        fast = cv_fold_solutions(acc, settings, cols, degs, len(species), power, e_factor, fold)
        assert set(fast) == set(settings.lam)
        for lam, theta in fast.items():
            plain, _ = solve(acc, settings, cols, degs, len(species), power, lam, train=acc.folds != fold, e_factor=e_factor)
            scale = np.abs(plain).max()
            np.testing.assert_allclose(theta, plain, rtol=0, atol=1e-10 * scale, err_msg=f"fold {fold}, lam {lam}")
    # the pin can fail: different lam give different parameters
    a, b = fast[1e-9], fast[1e-3]
    assert np.abs(a - b).max() > 1e-6 * np.abs(a).max()


def test_fast_cv_path_blr_equals_the_plain_solver(problem):
    basis, species, configs = problem
    settings = FitSettings(solver="blr", power=(2.0,), n_folds=3)
    acc = accumulate(basis, species, configs, settings)
    cols, degs = _columns(basis, species, 0)
    for fold in range(settings.n_folds):
        fast = cv_fold_solutions(acc, settings, cols, degs, len(species), 2.0, 1.0, fold)
        plain, _ = solve(acc, settings, cols, degs, len(species), 2.0, None, train=acc.folds != fold)
        np.testing.assert_allclose(fast[None], plain, rtol=0, atol=1e-10 * np.abs(plain).max())

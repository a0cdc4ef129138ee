"""Potential error bars: the calculator's force/energy sigma equal the spread of forces over
posterior draws of the parameters (plus the noise), the calibration scale is positive."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from acehamil.calculators import ACECalculator
from acehamil.models.potential.config import make_basis
from acehamil.models.potential.data import Config
from acehamil.models.potential.fit import FitSettings, accumulate, fit_potential
from acehamil.models.potential.model import ACEPotential
from acehamil.models.potential.uncertainty import calibrate, posterior_from_fit, predict_sigma


def _emt_copper(rng, n: int) -> list:
    """``n`` fcc Cu cells (lattice constant 3.6 Å x U(0.97, 1.03), rattled 0.1 Å) labelled by ASE's EMT."""
    from ase.calculators.emt import EMT

    configs = []
    for _ in range(n):
        at = bulk("Cu", "fcc", a=3.6 * rng.uniform(0.97, 1.03), cubic=True)
        at.rattle(0.1, rng=rng)
        at.calc = EMT()
        configs.append(Config(at.copy(), float(at.get_potential_energy()), at.get_forces().copy(), None))
    return configs


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(2)
    configs = _emt_copper(rng, 12)
    basis = make_basis((29,), r_cut=4.5, n_max=4, max_nu=2, max_degree=(6, 4))
    settings = FitSettings(solver="blr", power=(2.0,), n_folds=3, force_sigma=0.05)
    acc = accumulate(basis, (29,), configs, settings)
    res = fit_potential(configs, basis, (29,), settings, accumulated=acc)
    return res, settings, acc


def test_force_sigma_equals_spread_over_parameter_draws(fitted, rng):
    res, settings, _ = fitted
    post = posterior_from_fit(res, settings)
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True)
    atoms.rattle(0.12, rng=rng)
    sig = predict_sigma(res.potential, post, atoms)
    theta0 = res.potential.parameter_vector()
    draws = []
    for _ in range(400):
        th = theta0.copy()
        th[post.cols] += post.factor @ rng.standard_normal(post.factor.shape[1])
        pot = ACEPotential.from_parameter_vector(res.potential.basis, res.potential.species, th, res.potential.repulsion)
        draws.append(pot.compute(atoms, forces=True, stress=False)["forces"])
    emp = np.asarray(draws).std(axis=0)
    expect = np.sqrt(sig["forces_sigma"] ** 2 - post.force_noise**2)
    big = expect > 0.2 * expect.max()
    assert np.all(np.abs(emp[big] / expect[big] - 1) < 0.2)


def test_calculator_reports_sigma_and_calibration(fitted, rng):
    res, settings, acc = fitted
    post = calibrate(res, settings, acc)
    assert post.scale > 0
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, rng=rng)
    atoms.calc = ACECalculator(res.potential, posterior=post)
    f = atoms.get_forces()
    r = atoms.calc.results
    assert r["forces_sigma"].shape == f.shape and np.all(r["forces_sigma"] > 0) and r["energy_sigma"] > 0
    # a squeezed cell lies outside the training data: larger force sigma
    squeezed = bulk("Cu", "fcc", a=3.3, cubic=True)
    squeezed.rattle(0.05, rng=rng)
    assert predict_sigma(res.potential, post, squeezed)["forces_sigma"].mean() > r["forces_sigma"].mean()


def test_multilayer_sigma_equals_spread_over_parameter_draws_and_reaches_the_calculator(rng):
    """The multilayer model is linear in its parameters: the BLR posterior of its joint fit gives
    force sigmas equal to the spread over parameter draws (second-layer columns included), the
    calibration runs on its design data, and the calculator reports them."""
    from acehamil.models.potential.multilayer import MessageSpec, MultilayerACEPotential
    from acehamil.models.potential.multilayer_fit import accumulate_multilayer, fit_multilayer, multilayer_layer

    configs = _emt_copper(rng, 8)
    basis = make_basis((29,), r_cut=4.5, n_max=3, max_nu=2, max_degree=(4, 3))
    settings = FitSettings(solver="blr", power=(2.0,), n_folds=2, force_sigma=0.05, layer_prior_factors=(3.0,))
    layer = multilayer_layer(MessageSpec(n_message=2, r_message=4.0, n_pass=2, r_pass=4.0, embeddings=("identity",)), (29,), configs)
    acc = accumulate_multilayer(basis, (29,), configs, settings, layer)
    res = fit_multilayer(configs, basis, (29,), settings, accumulated=acc, layer=layer)
    pot = res.potential
    post = posterior_from_fit(res, settings)
    assert post.cols.max() == pot.parameter_vector().size - 1  # second-layer columns are in the posterior
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True)
    atoms.rattle(0.12, rng=rng)
    sig = predict_sigma(pot, post, atoms)
    theta0 = pot.parameter_vector()
    ns, nB = len(pot.species), pot.n_features
    draws = []
    for _ in range(300):
        th = theta0.copy()
        th[post.cols] += post.factor @ rng.standard_normal(post.factor.shape[1])
        drawn = MultilayerACEPotential(pot.basis, pot.species, th[:ns], th[ns : ns * (1 + nB)].reshape(ns, nB), pot.layer,
                                       th[ns * (1 + nB) :].reshape(ns, -1), pot.repulsion)
        draws.append(drawn.compute(atoms, forces=True, stress=False)["forces"])
    emp = np.asarray(draws).std(axis=0)
    expect = np.sqrt(sig["forces_sigma"] ** 2 - post.force_noise**2)
    big = expect > 0.2 * expect.max()
    assert np.all(np.abs(emp[big] / expect[big] - 1) < 0.25)
    cal = calibrate(res, settings, acc)
    assert cal.scale > 0
    atoms.calc = ACECalculator(pot, posterior=cal)
    f = atoms.get_forces()
    assert atoms.calc.results["forces_sigma"].shape == f.shape and atoms.calc.results["energy_sigma"] > 0
    with pytest.raises(ValueError, match="columns"):
        predict_sigma(pot.linear, post, atoms)

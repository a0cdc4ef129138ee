"""The eigenvalue-aware fit (models/hamiltonian/eigen_update.py): a Bayesian update of the H coefficients
from training eigenvalues.  The update against the closed-form Gaussian posterior, r -> inf, the linearised
errors against exact ones, equivariance of the updated model, the fit option and its config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sk_si import TINY_CFG as CFG, distorted_sk_cells

from acehamil.errors import UserError
from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.eigen_update import (apply_J, eigenvalue_update, flat_difference,
                                                      observe, structure_observations, update, update_model)
from acehamil.models.hamiltonian.fit import fit
from acehamil.structure import StructureData
from acehamil.testing import assert_blocks_equivariant, rotated

SPEC = {"noise_meV": 5.0, "states": 12, "kmesh": (2, 2, 2), "window_eV": 3.0, "iterations": 1, "per_kind": 0}


@pytest.fixture(scope="module")
def data():
    """Rattled, strained 8-atom cells of the toy Slater-Koster model, a smooth per-pair change added so
    that the ACE model cannot fit them exactly (tests/sk_si.py)."""
    return distorted_sk_cells(6)


@pytest.fixture(scope="module")
def model(data):
    return fit(data[:4], ModelConfig.from_dict(CFG), progress=False)


def _random_problem(rng, sizes=(3, 5), m=7):
    coefs = {f"t{q}": {0: rng.normal(size=n)} for q, n in enumerate(sizes)}
    factors = {(f"t{q}", 0): rng.normal(size=(n, n)) for q, n in enumerate(sizes)}
    J = {(f"t{q}", 0): rng.normal(size=(m, n)) for q, n in enumerate(sizes)}
    return coefs, factors, J


def test_update_is_the_closed_form_gaussian_posterior_mean(rng):
    """Linear observations y = J theta + noise, prior N(theta0, F F^T): the update equals
    (Sigma0^-1 + J^T R^-1 J)^-1 (Sigma0^-1 theta0 + J^T R^-1 y), across coupled block types."""
    coefs, factors, J = _random_problem(rng)
    keys = list(J)
    theta0 = np.concatenate([coefs[k][L] for k, L in keys])
    Sigma0 = np.zeros((len(theta0),) * 2)
    o = 0
    for k in keys:
        n = factors[k].shape[0]
        Sigma0[o:o + n, o:o + n] = factors[k] @ factors[k].T
        o += n
    Jall = np.concatenate([J[k] for k in keys], axis=1)
    y = rng.normal(size=Jall.shape[0])
    R = rng.uniform(0.1, 2.0, size=len(y))
    out = update(coefs, factors, J, y - Jall @ theta0, R)
    got = np.concatenate([out[k][L] for k, L in keys])
    P = np.linalg.inv(Sigma0) + Jall.T @ np.diag(1 / R) @ Jall
    want = np.linalg.solve(P, np.linalg.solve(Sigma0, theta0) + Jall.T @ (y / R))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    # the input is not modified, and a second update at the new point with exactly linear data moves nothing:
    # the iterated (relinearised) form is the same posterior when the observations are linear
    assert np.array_equal(np.concatenate([coefs[k][L] for k, L in keys]), theta0)
    delta = flat_difference(out, coefs, keys)
    again = update(coefs, factors, J, y - Jall @ got + apply_J(J, delta), R)
    np.testing.assert_allclose(np.concatenate([again[k][L] for k, L in keys]), got, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("noise", [1e3, 1e6, 1e12])
def test_update_with_large_noise_leaves_the_prior_mean(rng, noise):
    coefs, factors, J = _random_problem(rng)
    out = update(coefs, factors, J, rng.normal(size=7), np.full(7, noise**2))
    moved = max(np.max(np.abs(out[k][L] - coefs[k][L])) for k, L in J)
    assert moved < 1e2 / noise**2
    ignored = update(coefs, factors, J, rng.normal(size=7), np.full(7, np.inf))  # inf: rows ignored
    assert all(np.array_equal(ignored[k][L], coefs[k][L]) for k, L in J)


def test_update_rejects_bad_input(rng):
    coefs, factors, J = _random_problem(rng)
    with pytest.raises(ValueError, match="> 0"):
        update(coefs, factors, J, np.zeros(7), np.zeros(7))
    with pytest.raises(ValueError, match="rows"):
        update(coefs, factors, J, np.zeros(6), np.ones(6))


@pytest.mark.parametrize("own_reference", [True, False])
def test_linearised_errors_match_exact_ones(model, data, own_reference):
    """err(theta0 + t d) = err(theta0) + t J d + ...: the update's observation model, on a real model.  With the
    model's own prediction as the reference, J (taken at the reference's eigenvectors) is the exact gradient, so the
    gap is second order (halving t quarters it); against the DFT reference the eigenvectors differ a little and the
    gap is first order, a small fraction of the change."""
    sd = data[4]
    if own_reference:
        m = model.matrices(sd.atoms)
        sd = StructureData(sd.atoms, sd.basis, H=(m.H,), S=m.S, n_electrons=sd.n_electrons)
    e0, J = structure_observations(model, sd, SPEC, np.random.default_rng(0))
    rng = np.random.default_rng(3)
    d = {k: rng.normal(size=v.shape[1]) * np.abs(model.H.coefficients[k[0]][k[1]]).mean() for k, v in J.items()}
    gaps, moves = [], []
    for t in (1e-2, 5e-3, 2.5e-3):
        coefs = {key: {L: c + t * d[(key, L)] if (key, L) in d else c for L, c in per.items()}
                 for key, per in model.H.coefficients.items()}
        mt = dataclasses.replace(model, H=dataclasses.replace(model.H, coefficients=coefs))
        et, _ = structure_observations(mt, sd, SPEC, np.random.default_rng(0))
        gaps.append(np.max(np.abs(et - (e0 + t * apply_J(J, d)))))
        moves.append(np.max(np.abs(et - e0)))
    if own_reference:
        assert np.max(np.abs(e0)) < 1e-9
        assert gaps[1] < 0.35 * gaps[0] and gaps[2] < 0.35 * gaps[1], gaps  # second order
    else:
        assert max(g / m for g, m in zip(gaps, moves)) < 0.2, (gaps, moves)


def test_update_lowers_the_training_eigenvalue_error_and_noise_controls_it(model, data):
    train = data[:4]
    w = np.ones(4)
    errs = {}
    for r in (1.0, 30.0, 1e6):
        spec = {**SPEC, "noise_meV": r}
        updated, obs, rep = eigenvalue_update(model, train, w, spec)
        after = observe(updated, train, w, spec)
        errs[r] = float(np.mean(np.abs(after.err)))
        assert rep["iterations"][0]["n_states"] == len(after.err)
    before = float(np.mean(np.abs(observe(model, train, w, SPEC).err)))
    assert errs[1.0] < errs[30.0] < before
    assert abs(errs[1e6] - before) < 1e-6 * before


@pytest.mark.parametrize("improper", [False, True])
def test_updated_model_stays_equivariant(model, data, rng, improper):
    updated, _, _ = eigenvalue_update(model, data[:4], np.ones(4), SPEC)
    atoms = data[5].atoms.copy()
    Q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    Q *= np.sign(np.linalg.det(Q))
    if improper:
        Q = -Q
    H = updated.H.predict(atoms)
    H_rot = updated.H.predict(rotated(atoms, Q))
    assert_blocks_equivariant(H, H_rot, atoms.numbers, updated.orbital_basis, Q, rtol=1e-10)
    assert not np.allclose(H.data, model.H.predict(atoms).data, atol=1e-8)  # the update did move the model


def test_fold_update_uses_only_its_own_structures(model, data):
    """update_model(keep) sees only the rows of ``keep``: a fold without structure 0 equals the update from the
    observations of the other structures alone (every window state taken, so no seeded choice differs)."""
    spec = {**SPEC, "states": 10_000}
    w = np.ones(4)
    obs = observe(model, data[:4], w, spec)
    a = update_model(model, obs, keep=[1, 2, 3])
    b = update_model(model, observe(model, data[1:4], w[1:], spec))
    c = update_model(model, obs)
    for key, per in a.H.coefficients.items():
        for L, x in per.items():
            np.testing.assert_allclose(x, b.H.coefficients[key][L], rtol=1e-9, atol=1e-12)
    key = next(iter(obs.J))
    assert not np.allclose(a.H.coefficients[key[0]][key[1]], c.H.coefficients[key[0]][key[1]])


def test_fit_option_updates_reports_and_calibrates(data):
    cfg = ModelConfig.from_dict({**CFG, "fit": {"eigenvalue_update": {"noise_meV": 3.0, "states": 12, "kmesh": [2, 2, 2],
                                                                      "window_eV": 3.0}},
                                 "uncertainty": {"calibrate": True, "calibration_folds": 2, "kmesh": [2, 2, 2],
                                                 "window_eV": 3.0}})
    plain = fit(data[:4], dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, eigenvalue_update=())), progress=False)
    m = fit(data[:4], cfg, progress=False)
    rep = m.report["eigenvalue_update"]["iterations"][0]
    assert rep["mae_meV_after_linear"] < rep["mae_meV_before"]
    assert m.report["uncertainty"]["calibration"]["n"] > 0
    key = next(iter(m.H.coefficients))
    assert not np.allclose(m.H.coefficients[key][0], plain.H.coefficients[key][0])
    # the posterior keeps the block fit's covariance and moves its mean with the coefficients: draws are centred
    # on the updated prediction
    post, post0 = m.H.posteriors[key][0], plain.H.posteriors[key][0]
    np.testing.assert_array_equal(post.mean, m.H.coefficients[key][0])
    np.testing.assert_array_equal(post.eigvecs, post0.eigvecs)
    from acehamil.models.hamiltonian.uncertainty import sample_matrix

    atoms = data[5].atoms
    mean, _ = sample_matrix(m.H, atoms, 4, np.random.default_rng(0))
    np.testing.assert_allclose(mean.data, m.H.predict(atoms).data, rtol=0, atol=1e-12)


def test_fit_option_is_stored_in_the_model_file(data, tmp_path):
    from acehamil.io.models import load_model, save_model

    cfg = ModelConfig.from_dict({**CFG, "fit": {"eigenvalue_update": {"noise_meV": 3.0, "states": 12, "kmesh": [2, 2, 2],
                                                                      "window_eV": 3.0}}})
    m = fit(data[:3], cfg, progress=False)
    save_model(m, tmp_path / "m.h5")
    back = load_model(tmp_path / "m.h5")
    assert back.config.fit.eigenvalue_update == cfg.fit.eigenvalue_update
    assert dict(back.config.fit.eigenvalue_update)["kmesh"] == (2, 2, 2)
    atoms = data[5].atoms
    np.testing.assert_array_equal(back.H.predict(atoms).data, m.H.predict(atoms).data)


@pytest.mark.parametrize("table, match", [
    ({"noise": 3.0}, "unknown eigenvalue_update keys"),
    ({"noise_meV": 0.0}, "> 0"),
    ({"noise_meV": float("inf")}, "> 0"),
    ({"states": 0}, ">= 1"),
    ({"states": 2.5}, "integer"),
    ({"iterations": True}, "integer"),
    ({"kmesh": [4, 4]}, "3 integers"),
    ({"per_kind": -1}, ">= 0"),
    ({"window_eV": "2"}, "number"),
])
def test_bad_eigenvalue_update_settings_are_refused(table, match):
    with pytest.raises(UserError, match=match):
        ModelConfig.from_dict({"fit": {"eigenvalue_update": table}})


def test_eigenvalue_update_needs_a_posterior(data):
    cfg = ModelConfig.from_dict({**CFG, "solver": {"method": "ridge", "lam": 0.0}, "fit": {"eigenvalue_update": {"states": 4}}})
    with pytest.raises(ValueError, match="posterior"):
        fit(data[:3], cfg, progress=False)

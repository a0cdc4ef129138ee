"""The eigenvalue update from the calibration's held-out eigenvalues (eigen_calibrated.calibrated_update,
``[fit] eigenvalue_update`` ``source = "calibration"``): the updated posterior's diagonal blocks against the
closed-form Gaussian posterior, the information form against the observation form, the errors under the model
and moved to a fold against exact ones, the r -> inf limit (the plain calibration), the fit option and its
model file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sk_si import TINY_CFG as CFG, distorted_sk_cells

from acehamil.errors import UserError
from acehamil.models.hamiltonian.calibrate import cross_validated_errors
from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.eigen_calibrated import _posterior, _Whitened, moved_errors, prior_scales
from acehamil.models.hamiltonian.eigen_update import (coefficient_factors, posterior_update, structure_observations,
                                                      updated_posteriors)
from acehamil.models.hamiltonian.fit import fit

UNC = {"calibrate": True, "calibration_folds": 3, "kmesh": [2, 2, 2], "window_eV": 3.0, "calibration_states": 1000}


def _config(noise_meV=3.0, **unc):
    return ModelConfig.from_dict({**CFG, "fit": {"eigenvalue_update": {"noise_meV": noise_meV, "states": 1000,
                                                                      "source": "calibration"}},
                                  "uncertainty": {**UNC, **unc}})


@pytest.fixture(scope="module")
def data():
    """Rattled, strained 8-atom cells of the toy Slater-Koster model, a smooth per-pair change added so
    that the ACE model cannot fit them exactly (tests/sk_si.py)."""
    return distorted_sk_cells(7)


@pytest.fixture(scope="module")
def plain(data):
    cfg = _config()
    return fit(data[:6], dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, eigenvalue_update=())), progress=False)


def test_updated_posterior_holds_the_diagonal_blocks_of_the_exact_posterior(plain, rng):
    """Random linear observations of a fitted model's coefficients: the stored posterior of each (block type, L)
    is the diagonal block of (Sigma0^-1 + J^T R^-1 J)^-1, its mean the posterior mean."""
    H = plain.H
    F = coefficient_factors(H)
    keys = sorted(F, key=str)
    m = 9
    # each key's observations of the size of its prior spread (some keys are pinned to ~1e-80 by their prior)
    J = {k: rng.normal(size=(m, F[k].shape[0])) / np.sqrt(np.sum(F[k] ** 2)) for k in keys}
    R = rng.uniform(0.5, 2.0, size=m)
    innovation = rng.normal(size=m)
    coefs, B = posterior_update(H.coefficients, F, J, innovation, R)
    C = {k: np.eye(F[k].shape[0]) - B[k].T @ B[k] for k in B}
    posts = updated_posteriors(H.posteriors, coefs, C)
    # the information form of eigen_calibrated (whitened by F, prior N(0, I)): the same mean and blocks
    space = _Whitened(H.posteriors, {0: J})
    A = space.rows(J)
    z, Cz = _posterior(np.eye(space.N), np.zeros(space.N), A.T @ (A / R[:, None]), A.T @ (-innovation / R), space)
    info_coefs = space.coefficients(H.coefficients, z)
    for k in keys:
        np.testing.assert_allclose(info_coefs[k[0]][k[1]], coefs[k[0]][k[1]], rtol=1e-8,
                                   atol=1e-10 * np.abs(coefs[k[0]][k[1]]).max())
        np.testing.assert_allclose(Cz[k], C[k], rtol=1e-7, atol=1e-9)
    n = [F[k].shape[0] for k in keys]
    Sigma0 = np.zeros((sum(n),) * 2)
    o = np.concatenate([[0], np.cumsum(n)])
    for q, k in enumerate(keys):
        Sigma0[o[q]:o[q + 1], o[q]:o[q + 1]] = F[k] @ F[k].T
    Jall = np.concatenate([J[k] for k in keys], axis=1)
    G = Jall @ Sigma0 @ Jall.T + np.diag(R)
    Sigma1 = Sigma0 - Sigma0 @ Jall.T @ np.linalg.solve(G, Jall @ Sigma0)
    new = coefficient_factors(dataclasses.replace(H, posteriors=posts))
    for q, (key, L) in enumerate(keys):
        block = Sigma1[o[q]:o[q + 1], o[q]:o[q + 1]]
        got = new[(key, L)] @ new[(key, L)].T
        np.testing.assert_allclose(got, block, rtol=1e-6, atol=1e-8 * np.abs(block).max())
        np.testing.assert_array_equal(posts[key][L].mean, coefs[key][L])
        assert np.trace(got) < np.trace(F[(key, L)] @ F[(key, L)].T)  # the observations narrowed it


def test_onsite_prior_scale_is_the_posterior_of_the_scaled_prior(plain, rng):
    """``onsite_prior`` c: the whitened update with the on-site blocks' prior c Sigma0 gives the closed-form
    Gaussian posterior of that prior (mean and diagonal blocks), and its blocks relative to the unscaled factors
    (what the model file stores) are the same Sigma1."""
    H = plain.H
    F = coefficient_factors(H)
    keys = sorted(F, key=str)
    scale = prior_scales(H.posteriors, {"onsite_prior": 0.05})
    assert scale and all(str(k[0]).startswith("onsite/") for k in scale)
    assert any(not str(k[0]).startswith("onsite/") for k in keys)
    m = 11
    J = {k: rng.normal(size=(m, F[k].shape[0])) / np.sqrt(np.sum(F[k] ** 2)) for k in keys}
    R = rng.uniform(0.5, 2.0, size=m)
    e0 = rng.normal(size=m)
    space = _Whitened(H.posteriors, {0: J}, scale)
    A = space.rows(J)
    z, Cz = _posterior(None, np.zeros(space.N), A.T @ (A / R[:, None]), A.T @ (e0 / R), space)
    got = space.coefficients(H.coefficients, z)
    n = [F[k].shape[0] for k in keys]
    o = np.concatenate([[0], np.cumsum(n)])
    Sigma0 = np.zeros((sum(n),) * 2)
    for q, k in enumerate(keys):
        Sigma0[o[q]:o[q + 1], o[q]:o[q + 1]] = scale.get(k, 1.0) * F[k] @ F[k].T
    Jall = np.concatenate([J[k] for k in keys], axis=1)
    G = Jall @ Sigma0 @ Jall.T + np.diag(R)
    delta = -Sigma0 @ Jall.T @ np.linalg.solve(G, e0)  # observations 0 = e0 + J dtheta + noise
    Sigma1 = Sigma0 - Sigma0 @ Jall.T @ np.linalg.solve(G, Jall @ Sigma0)
    stored = space.unwhitened(Cz)
    for q, (key, L) in enumerate(keys):
        want = H.coefficients[key][L] + delta[o[q]:o[q + 1]]
        np.testing.assert_allclose(got[key][L], want, rtol=1e-7, atol=1e-9 * np.abs(want).max())
        Fk = F[(key, L)]
        block = Sigma1[o[q]:o[q + 1], o[q]:o[q + 1]]
        np.testing.assert_allclose(Fk @ stored[(key, L)] @ Fk.T, block, rtol=1e-6, atol=1e-8 * np.abs(block).max())


def test_small_onsite_prior_holds_the_onsite_blocks(plain, data):
    """``onsite_prior`` -> 0: the update leaves the on-site coefficients at the block fit's and still moves the
    off-site ones; ``onsite_prior = 1`` is the plain update (the same coefficients)."""
    def cfg(**extra):
        return ModelConfig.from_dict({**CFG, "fit": {"eigenvalue_update": {"noise_meV": 3.0, "states": 1000,
                                                                          "source": "calibration", **extra}},
                                      "uncertainty": UNC})

    held = fit(data[:6], cfg(onsite_prior=1e-9), progress=False)
    plain_update = fit(data[:6], cfg(), progress=False)
    one = fit(data[:6], cfg(onsite_prior=1.0), progress=False)
    moved = 0.0
    for key, per in plain.H.coefficients.items():
        for L, c in per.items():
            scale = np.abs(plain_update.H.coefficients[key][L] - c).max()
            np.testing.assert_array_equal(one.H.coefficients[key][L], plain_update.H.coefficients[key][L])
            if key.startswith("onsite/"):
                assert np.abs(held.H.coefficients[key][L] - c).max() <= 1e-3 * scale, key
            else:
                moved = max(moved, np.abs(held.H.coefficients[key][L] - c).max() / max(scale, 1e-300))
    assert moved > 0.1


def test_errors_under_the_model_and_moved_to_a_fold_match_exact_ones(plain, data):
    """The calibration pass also returns each held-out structure's exact errors under the full model (same
    states); moved along J to a fold model they approximate its exact errors there: the gap is a small fraction
    of the move (J at the reference's eigenvectors, so first order in how far the model's differ; every block,
    epistemic_bond_cut 0)."""
    cv = cross_validated_errors(data[:6], plain, _parts(plain, data[:6]), keep_observations=True)
    spec = {"kmesh": (2, 2, 2), "window_eV": 3.0, "states": 1000, "bond_cut": 0.0}
    gaps, moves = [], []
    theta0 = plain.H.coefficients
    for i in sorted(cv["J"]):
        rows = np.flatnonzero(cv["structure"] == i)
        exact0, _ = structure_observations(plain, data[i], spec, np.random.default_rng(0))
        np.testing.assert_allclose(cv["err_model"][rows], exact0, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(moved_errors(cv, i, rows, theta0, theta0), cv["err_model"][rows])
        f = next(q for q, val in enumerate(cv["folds"]) if i in val)
        # and under every other fold model (the folds' innovations), exact
        assert sorted(cv["err_folds"][i]) == [g for g in range(len(cv["folds"])) if g != f]
        for g, e in cv["err_folds"][i].items():
            exact_g, _ = structure_observations(cv["fold_models"][g], data[i], spec, np.random.default_rng(0))
            np.testing.assert_allclose(e, exact_g, rtol=0, atol=1e-10)
        fold = cv["fold_models"][f]
        moved = moved_errors(cv, i, rows, fold.H.coefficients, theta0)
        gaps.append(np.mean(np.abs(moved - cv["err"][rows])))  # cv["err"]: exact under the fold model
        moves.append(np.mean(np.abs(exact0 - cv["err"][rows])))
    # the toy's errors are 40-450 meV (its eigenvectors far from the reference's), the folds move them by 20-90 meV
    assert min(moves) > 1e-3
    assert all(g < 0.5 * mv for g, mv in zip(gaps, moves)), (gaps, moves)
    assert sum(gaps) < 0.15 * sum(moves), (gaps, moves)


def test_errors_under_the_model_are_exact_with_an_epistemic_cut(plain, data):
    """With epistemic_bond_cut > 0 the two predictions (fold and full model) come from one mapped pass: the
    errors under the full model are still exact (the cut only limits J), and the folds' errors and spreads are
    those of the plain calibration; only the structures asked for get them."""
    cut = dataclasses.replace(plain, config=dataclasses.replace(
        plain.config, uncertainty=dataclasses.replace(plain.config.uncertainty, epistemic_bond_cut=3.0)))
    parts = _parts(plain, data[:6])
    cv = cross_validated_errors(data[:6], cut, parts, keep_observations=[0, 2, 3])
    ref = cross_validated_errors(data[:6], cut, parts)
    spec = {"kmesh": (2, 2, 2), "window_eV": 3.0, "states": 1000, "bond_cut": 0.0}
    for key in ("err", "sigma_epi", "sigma_noise", "structure"):
        np.testing.assert_array_equal(cv[key], ref[key])
    for i in range(6):
        rows = np.flatnonzero(cv["structure"] == i)
        if i in (0, 2, 3):
            exact0, _ = structure_observations(plain, data[i], spec, np.random.default_rng(0))
            np.testing.assert_allclose(cv["err_model"][rows], exact0, rtol=0, atol=1e-10)
            for g, e in cv["err_folds"][i].items():  # one mapped pass for every model
                exact_g, _ = structure_observations(cv["fold_models"][g], data[i], spec, np.random.default_rng(0))
                np.testing.assert_allclose(e, exact_g, rtol=0, atol=1e-10)
        else:
            assert np.all(np.isnan(cv["err_model"][rows]))


def test_the_updates_on_threads_are_the_serial_ones(plain, data):
    """update_from_cv runs its six updates (full model and folds) as tasks of the calibration's mapper: two threads
    give the serial coefficients, posteriors, figures and spread factors bit for bit."""
    from acehamil.models.hamiltonian.eigen_calibrated import update_from_cv
    from acehamil.threads import thread_mapper

    cv = cross_validated_errors(data[:6], plain, _parts(plain, data[:6]), keep_observations=True)
    spec = {"noise_meV": 3.0, "states": 2}
    w = np.ones(6)
    serial = update_from_cv(plain, cv, w, spec)
    threaded = update_from_cv(plain, cv, w, spec, mapper=thread_mapper(2))
    for key, per in serial[0].H.coefficients.items():
        for L, c in per.items():
            np.testing.assert_array_equal(threaded[0].H.coefficients[key][L], c)
    assert serial[0].H.posteriors
    for key, per in serial[0].H.posteriors.items():
        for L, post in per.items():
            np.testing.assert_array_equal(threaded[0].H.posteriors[key][L].eigvals, post.eigvals)
    drop = ("seconds", "seconds_cpu")
    assert {k: v for k, v in threaded[1].items() if k not in drop} == {k: v for k, v in serial[1].items() if k not in drop}
    assert threaded[2] == serial[2]
    assert serial[1]["n_states"] < len(cv["err"])  # some structures' chosen rows are not all theirs (whitened apart)


def _parts(model, train):
    """Per-structure H sums of ``model``'s fit (what the calibration refits its folds from)."""
    from acehamil.models.hamiltonian.sums import structure_sums

    return [structure_sums(model.H, sd, lambda s: s.H[0], {}, 1.0, np.random.default_rng(0), index=k)
            for k, sd in enumerate(train)]


def test_large_noise_is_the_plain_calibration(plain, data):
    """r -> inf: the coefficients, the posterior and the spread factors are the block fit's and its calibration's."""
    m = fit(data[:6], _config(noise_meV=1e9), progress=False)
    for key, per in plain.H.coefficients.items():
        for L, c in per.items():
            np.testing.assert_allclose(m.H.coefficients[key][L], c, rtol=1e-9, atol=1e-14)
    a, b = m.report["uncertainty"], plain.report["uncertainty"]
    assert a["calibration"]["coverage_90"] == b["calibration"]["coverage_90"]
    for k in ("scale_epistemic", "scale_noise", "scale_shared", "extrapolation_sigma_eV"):
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k  # (factors near 0 are ill-determined)


def test_fit_option_updates_narrows_calibrates_and_round_trips(plain, data, tmp_path):
    from acehamil.io.models import load_model, save_model
    from acehamil.models.hamiltonian.uncertainty import sample_matrix

    m = fit(data[:6], _config(), progress=False)
    rep = m.report["eigenvalue_update"]
    assert rep["source"] == "calibration" and rep["n_structures"] == 6
    assert rep["mae_meV_after_linear"] < 0.8 * rep["mae_meV_before"]
    assert m.report["uncertainty"]["calibration"]["n"] > 0
    key = next(iter(m.H.coefficients))
    assert not np.allclose(m.H.coefficients[key][0], plain.H.coefficients[key][0])
    F0, F1 = coefficient_factors(plain.H), coefficient_factors(m.H)
    assert sum(np.sum(F1[k] ** 2) for k in F1) < sum(np.sum(F0[k] ** 2) for k in F0)  # Sigma1 kept, narrower
    atoms = data[6].atoms
    mean, _ = sample_matrix(m.H, atoms, 4, np.random.default_rng(0))  # draws centred on the updated prediction
    np.testing.assert_allclose(mean.data, m.H.predict(atoms).data, rtol=0, atol=1e-12)
    save_model(m, tmp_path / "m.h5")
    back = load_model(tmp_path / "m.h5")
    assert dict(back.config.fit.eigenvalue_update)["source"] == "calibration"
    Fb = coefficient_factors(back.H)
    for k in F1:
        np.testing.assert_allclose(Fb[k] @ Fb[k].T, F1[k] @ F1[k].T, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("table, match", [
    ({"source": "held-out"}, "source must be one of"),
    ({"source": "calibration", "iterations": 2}, "one update"),
    ({"source": "fit", "onsite_prior": 0.1}, "needs source = 'calibration'"),
    ({"source": "calibration", "onsite_prior": 0.0}, "onsite_prior must be finite and > 0"),
    ({"source": "calibration", "onsite_prior": "small"}, "onsite_prior must be a number"),
])
def test_bad_source_settings_are_refused(table, match):
    with pytest.raises(UserError, match=match):
        ModelConfig.from_dict({"fit": {"eigenvalue_update": table}})


def test_source_calibration_needs_the_calibration(data):
    cfg = ModelConfig.from_dict({**CFG, "fit": {"eigenvalue_update": {"source": "calibration"}}})
    with pytest.raises(ValueError, match="calibrate = true"):
        fit(data[:3], cfg, progress=False)


def test_update_posterior_factorised_in_place_with_the_same_numbers():
    """The eigenvalue update's precision is built in Fortran order and factorised and inverted in place
    (eigen_calibrated._solved: two N x N matrices fewer per fold update); mean and diagonal blocks are bit
    for bit those of the copying formulation (cholesky of Q + info, then dtrtri of the factor)."""
    import types

    import scipy.linalg

    from acehamil.models.hamiltonian.eigen_calibrated import _posterior, _solved

    rng = np.random.default_rng(3)
    N = 60
    A = rng.normal(size=(80, N))
    info = np.triu(A.T @ A)  # upper triangle only, as _gram_upper
    B = rng.normal(size=(N, N))
    Q = B @ B.T / N + np.eye(N)
    z0, grad = rng.normal(size=N), rng.normal(size=N)
    space = types.SimpleNamespace(keys=[("a", 0), ("b", 1)], off=np.array([0, 25, N]))
    U = scipy.linalg.cholesky(Q + info, lower=False, check_finite=False)
    z_ref = scipy.linalg.cho_solve((U, False), Q @ z0 - grad)
    Uinv = scipy.linalg.lapack.dtrtri(U, lower=0)[0]
    z, C = _posterior(Q, z0, info, grad, space)
    np.testing.assert_array_equal(z, z_ref)
    for q, k in enumerate(space.keys):
        X = Uinv[space.off[q]:space.off[q + 1], space.off[q]:]
        np.testing.assert_array_equal(C[k], X @ X.T)
    lam = np.asfortranarray(Q + info)
    before = lam.copy()
    z2, _ = _solved(lam, Q @ z0 - grad, space)
    np.testing.assert_array_equal(z2, z_ref)
    assert not np.array_equal(lam, before)  # factorised and inverted in its own memory, no copy

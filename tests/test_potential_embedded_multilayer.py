"""Embedded multilayer potential: a multilayer model whose first layer has embedded densities."""

from __future__ import annotations

import numpy as np
import pytest

from potential_cases import case, labelled

from acehamil.basis import ACEBasis, BasisSpec, RadialSpec
from acehamil.models.potential.data import error_metrics
from acehamil.models.potential.embedded_fit import EmbeddingSettings, ProjectedLoss, density_columns, embedding_data
from acehamil.models.potential.embedded_multilayer_fit import fit_embedded_multilayer, with_layer_columns
from acehamil.models.potential.fit import FitSettings, _columns
from acehamil.models.potential.model import feature_degrees
from acehamil.models.potential.multilayer import MessageLayer, MessageSpec, MultilayerACEPotential
from acehamil.models.potential.multilayer_fit import accumulate_multilayer_from_linear, fit_multilayer
from acehamil.models.potential.repulsion import RepulsionSpec
from acehamil.testing import assert_fd_converges, assert_site_energy_invariant, assert_stress_matches_strain, fd_errors

SPEC = MessageSpec(n_message=3, r_message=3.6, n_pass=3, r_pass=4.0, embeddings=("identity", "fs"))


def _basis(species=(14,), r_cut=4.0):
    return ACEBasis(BasisSpec(categories=tuple(species), radial=RadialSpec(n_max=3, r_cut=r_cut), max_nu=2,
                              max_degree=(4, 3), L_max=0, parities=(1,)))


def _potential(rng, species=(14,), repulsion=None, embeddings=("fs", "tanh"), density_scale=0.5):
    basis = _basis(species)
    ns, nB = len(species), len(feature_degrees(basis))
    ks = ns * SPEC.n_message
    layer = MessageLayer(SPEC, species, shift=rng.normal(size=ks), scale=0.5 + rng.random(ks))
    dens = density_scale * rng.normal(size=(ns, len(embeddings), nB))
    return MultilayerACEPotential(basis, species, rng.normal(size=ns), 0.05 * rng.normal(size=(ns, nB)), layer,
                                  0.05 * rng.normal(size=(ns, layer.n_features)), repulsion, {}, dens, embeddings)


def _setup(kind, rng):
    return case(kind, rng, _potential)


# ---------------------------------------------------------------- physics
@pytest.mark.parametrize("kind", ["bulk", "cluster", "binary"])
def test_forces_are_minus_gradient_with_shrinking_error(kind, rng):
    pot, atoms = _setup(kind, rng)
    F = pot.compute(atoms)["forces"]
    assert np.abs(F.sum(axis=0)).max() < 1e-10 * max(1.0, np.abs(F).max()) and np.abs(F).max() > 1e-3
    x0 = atoms.positions.copy()

    def energy(x):
        moved = atoms.copy()
        moved.positions = x
        return pot.compute(moved, forces=False, stress=False)["energy"]

    dirs = [d / np.linalg.norm(d) for d in rng.normal(size=(3,) + x0.shape)]
    errs = fd_errors(energy, lambda u: -np.sum(F * u), x0, dirs, steps=(1e-2, 1e-3, 1e-4, 1e-5))
    assert_fd_converges(errs, scale=np.abs(F).max(), best=1e-6)


@pytest.mark.parametrize("kind", ["bulk", "binary"])
def test_stress_matches_strain_finite_difference(kind, rng):
    pot, atoms = _setup(kind, rng)
    assert_stress_matches_strain(pot.compute, lambda a: pot.compute(a, forces=False, stress=False)["energy"], atoms)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("kind", ["bulk", "cluster", "binary"])
def test_energy_invariant_under_rotation_permutation_translation(kind, improper, rng):
    pot, atoms = _setup(kind, rng)
    assert_site_energy_invariant(pot.compute, atoms, rng, improper=improper)


def test_densities_add_their_embedded_site_energy_and_zero_densities_give_the_multilayer_model(rng):
    pot, atoms = _setup("bulk", rng)
    plain = MultilayerACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.layer, pot.weights)
    zero = MultilayerACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.layer, pot.weights, None, {},
                                  np.zeros_like(pot.densities), pot.embeddings)
    a, b, c = plain.compute(atoms), zero.compute(atoms), pot.compute(atoms)
    np.testing.assert_allclose(b["energies"], a["energies"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b["forces"], a["forces"], rtol=0, atol=1e-12)
    # the difference is exactly the first layer's embedded term sum_k F_k(d_k . B_i)
    from acehamil.models.potential.embedded import EmbeddedACEPotential

    emb = EmbeddedACEPotential(pot.basis, pot.species, np.zeros(1), np.zeros_like(pot.coef), pot.densities, pot.embeddings)
    np.testing.assert_allclose(c["energies"] - a["energies"], emb.compute(atoms)["energies"], rtol=1e-10, atol=1e-12)
    assert np.abs(c["energies"] - a["energies"]).max() > 1e-3
    assert pot.n_densities == 2 and plain.n_densities == 0 and plain.densities is None


def test_bad_input_is_refused(rng):
    pot, _ = _setup("bulk", rng)
    args = (pot.basis, pot.species, pot.e0, pot.coef, pot.layer, pot.weights, None, {})
    with pytest.raises(ValueError, match="densities must have shape"):
        MultilayerACEPotential(*args, pot.densities[:, :1], pot.embeddings)
    with pytest.raises(ValueError, match="embeddings given without densities"):
        MultilayerACEPotential(*args, None, ("fs",))
    with pytest.raises(TypeError, match="one string"):
        MultilayerACEPotential(*args, pot.densities, "fs")
    with pytest.raises(ValueError, match="unknown embedding"):
        MultilayerACEPotential(*args, pot.densities, ("fs", "cube"))
    bad = np.array(pot.densities)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        MultilayerACEPotential(*args, bad, pot.embeddings)


# ---------------------------------------------------------------- files, calculator
def test_file_round_trip_calculator_damage_and_no_posterior(tmp_path, rng):
    import h5py

    from acehamil.calculators import ACECalculator
    from acehamil.io.potential_file import load_potential, save_potential
    from acehamil.models.potential.uncertainty import PotentialPosterior

    pot, atoms = _setup("binary", rng)
    path = tmp_path / "eml.h5"
    save_potential(path, pot)
    with h5py.File(path, "r") as f:
        assert int(f.attrs["format_version"]) == 4 and f.attrs["model"] == "embedded_multilayer"
    back = load_potential(path)
    assert isinstance(back, MultilayerACEPotential) and back.embeddings == pot.embeddings
    np.testing.assert_array_equal(back.densities, pot.densities)
    a, b = pot.compute(atoms), back.compute(atoms)
    assert a["energy"] == b["energy"]
    np.testing.assert_array_equal(a["forces"], b["forces"])
    atoms.calc = ACECalculator.from_file(path)
    np.testing.assert_array_equal(atoms.get_forces(), a["forces"])
    save_potential(path, pot)
    with h5py.File(path, "r+") as f:
        f["densities"][0, 0, 0] = f["densities"][0, 0, 0] * (1 + 1e-9) + 1e-12
    with pytest.raises(ValueError, match="checksum"):
        load_potential(path)
    save_potential(path, pot)
    with h5py.File(path, "r+") as f:
        f.attrs["embeddings"] = '["fs", "fs"]'
    with pytest.raises(ValueError, match="checksum"):
        load_potential(path)
    post = PotentialPosterior(np.arange(3), np.eye(3), 0.1, 0.01)
    with pytest.raises(TypeError, match="nonlinear"):
        save_potential(tmp_path / "post.h5", pot, posterior=post)


# ---------------------------------------------------------------- fitting
def _truth(rng, basis, density_scale=0.0):
    nB = len(feature_degrees(basis))
    spec = MessageSpec(n_message=3, r_message=4.0, n_pass=3, r_pass=4.0, embeddings=("identity", "fs"))
    layer = MessageLayer(spec, (14,))
    dens = None
    if density_scale:
        cols = density_columns(basis, (4, 2, 0))
        dens = np.zeros((1, 1, nB))
        dens[0, 0, cols] = density_scale * rng.normal(size=len(cols))
    return MultilayerACEPotential(basis, (14,), [-4.0], 0.02 * rng.normal(size=(1, nB)), layer,
                                  2e-3 * rng.normal(size=(1, layer.n_features)), None, {}, dens, ("fs",) if density_scale else ())


def test_layer_rows_give_the_multilayer_normal_equations(rng):
    basis = _basis()
    truth = _truth(rng, basis)
    configs = labelled(truth, rng, 4, "md") + labelled(truth, rng, 2, "strain", stress=True)
    settings = FitSettings(n_folds=2)
    rep = RepulsionSpec((((14, 14), 2.0),), 5.0)
    data = embedding_data(basis, (14,), configs, settings, density_columns(basis, (4, 2)), rep)
    full = with_layer_columns(data, configs, truth.layer)
    ref = accumulate_multilayer_from_linear(data, configs, settings, truth.layer)
    mine = full.accumulated(settings)
    np.testing.assert_allclose(mine.energy_rows, ref.energy_rows, atol=1e-12)
    for f in range(2):
        for x, y in ((mine.forces[f], ref.forces[f]), (mine.stress[f], ref.stress[f])):
            np.testing.assert_allclose(x.AtA, y.AtA, rtol=1e-10, atol=1e-8)
            np.testing.assert_allclose(x.Aty, y.Aty, rtol=1e-10, atol=1e-8)
    assert full.B is data.B and full.n_cols == data.n_cols + truth.layer.n_features
    with pytest.raises(ValueError, match="other configurations"):
        with_layer_columns(data, configs[:-1], truth.layer)


def test_projected_loss_gradient_with_layer_columns_matches_finite_differences(rng):
    basis = _basis()
    truth = _truth(rng, basis, density_scale=0.5)
    configs = labelled(truth, rng, 4, "md") + labelled(truth, rng, 2, "strain", stress=True)
    settings = FitSettings(n_folds=2)
    data = with_layer_columns(embedding_data(basis, (14,), configs, settings, density_columns(basis, (3, 2))), configs,
                              truth.layer)
    extra = np.tile(truth.layer.feature_degrees(), 1)
    cols, degs = _columns(basis, (14,), 0, extra)
    loss = ProjectedLoss(data, settings, cols, degs, 1.0, 1e-6, 1.0, ("fs", "tanh"), 1e-3, data.folds == 0,
                         n_extra=len(extra), extra_factor=3.0)
    th = loss.initial(0.5, 1)
    f0, g = loss(th)
    d = rng.normal(size=th.shape)
    errs = [abs((loss(th + h * d)[0] - loss(th - h * d)[0]) / (2 * h) - g @ d) for h in (1e-2, 1e-3, 1e-4)]
    assert errs[-1] < 1e-5 * max(1.0, abs(g @ d)) and errs[-1] < errs[0]


def test_fit_starts_from_the_multilayer_fit_and_recovers_embedded_truth(rng):
    basis = _basis()
    truth = _truth(rng, basis, density_scale=1.0)
    configs = labelled(truth, rng, 14, "md") + labelled(truth, rng, 4, "strain", stress=True)
    settings = FitSettings(lam=(1e-10,), power=(0.0,), n_folds=3, force_sigma=1e-2, layer_prior_factors=(1.0, 3.0))
    data = embedding_data(basis, (14,), configs, settings, density_columns(basis, (4, 2, 0)))
    layer = truth.layer
    ml = fit_multilayer(configs, basis, (14,), settings, repulsion=None,
                        accumulated=accumulate_multilayer_from_linear(data, configs, settings, layer), layer=layer)
    # theta = 0 is the multilayer fit: the projection reproduces its coefficients (same hyperparameters)
    full = with_layer_columns(data, configs, layer)
    extra = np.tile(layer.feature_degrees(), 1)
    cols, degs = _columns(basis, (14,), 0, extra)
    ch = ml.chosen
    loss = ProjectedLoss(full, settings, cols, degs, ch["power"], ch["lam"], ch["energy_factor"], ("fs",), 1e-3,
                         np.ones(len(configs), bool), n_extra=len(extra), extra_factor=ch["layer_prior"])
    e0, f0, _ = loss.predict(np.zeros(loss.shape).ravel())
    p0 = ml.potential.parameter_vector()[cols]  # (coefficients agree to the conditioning of lam = 1e-10; predictions:)
    np.testing.assert_allclose(e0, loss.AE @ p0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(f0, loss.AF @ p0, rtol=0, atol=1e-6)
    emb = EmbeddingSettings(embeddings=("fs",), density_max_degree=(4, 2, 0), lam=(1e-8, 1e-4), maxiter=400)
    res = fit_embedded_multilayer(configs, basis, (14,), settings, emb=emb, data=data, multilayer=ml)
    pot = res.potential
    assert isinstance(pot, MultilayerACEPotential) and pot.n_densities == 1 and pot.layer is layer
    assert res.linear is ml and res.chosen["layer_prior"] == ch["layer_prior"] and res.chosen["lam_density"] in (1e-8, 1e-4)
    assert [r["lam_density"] for r in res.cv].count(None) == 1 and len(res.cv) == 3
    assert set(res.cv_by_type) == {"all", "md", "strain"}
    m_ml = error_metrics(ml.potential, configs)["all"]
    m_eml = error_metrics(pot, configs)["all"]
    assert m_ml["force_rmse_eV_per_A"] > 5e-5  # the densities matter here
    assert m_eml["force_rmse_eV_per_A"] < 0.5 * m_ml["force_rmse_eV_per_A"]
    assert m_eml["energy_rmse_meV_per_atom"] < m_ml["energy_rmse_meV_per_atom"]
    assert pot.metadata["message_spec"] == layer.spec.to_dict()
    with pytest.raises(TypeError, match="fit_multilayer"):
        fit_embedded_multilayer(configs, basis, (14,), settings, emb=emb, data=data, multilayer=res)


@pytest.mark.slow
@pytest.mark.shared_data
def test_nve_energy_is_conserved_with_a_fitted_embedded_multilayer_model(shared_data):
    """64-atom Si from 1000 K, velocity Verlet at 1 fs, 400 steps: exact forces conserve the total energy."""
    import sys
    from pathlib import Path

    from acehamil.io.labelled import read_configs
    from acehamil.models.potential.config import core_repulsion, make_basis

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from nve_drift import run_nve

    train = read_configs(shared_data / "mlearn" / "Si_training.xyz", index="::10")
    basis = make_basis((14,), r_cut=4.5, n_max=5, max_nu=2, max_degree=(6, 6))
    rep = core_repulsion(train, (14,))
    res = fit_embedded_multilayer(train, basis, (14,), FitSettings(lam=(1e-6,), power=(0.0,), n_folds=1),
                                  MessageSpec(n_message=4, r_message=4.5, n_pass=4, r_pass=4.5),
                                  EmbeddingSettings(density_max_degree=(4, 3), lam=(1e-3,), maxiter=30, init_scale=0.3, cv=False), rep)
    assert np.abs(res.potential.densities).max() > 0
    t, etot, epot, temp = run_nve(res.potential, steps=400, every=10)
    drift = np.polyfit(np.asarray(t), np.asarray(etot), 1)[0] * (t[-1] - t[0]) * 1e3
    assert abs(drift) < 1.0 and np.ptp(etot) * 1e3 < 5.0, (drift, np.ptp(etot))
    assert np.ptp(epot) * 1e3 > 10.0


def test_cli_fits_and_evaluates_an_embedded_multilayer_model(tmp_path, rng, capsys):
    import json

    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from acehamil.cli import main
    from acehamil.io.potential_file import load_potential

    frames = []
    for c in labelled(_truth(rng, _basis(), density_scale=1.0), rng, 6, "md"):
        a = c.atoms.copy()
        a.calc = SinglePointCalculator(a, energy=c.energy, forces=c.forces)
        frames.append(a)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    cfg = tmp_path / "fit.toml"
    cfg.write_text(
        '[data]\ntrain = "train.xyz"\n[basis]\nr_cut = 4.0\nn_max = 3\nmax_nu = 2\nmax_degree = [4, 3]\n'
        "[fit]\nlam = [1e-10]\npower = [0.0]\nn_folds = 2\n"
        '[model]\nkind = "embedded_multilayer"\nn_message = 3\nn_pass = 3\n'
        '[model.densities]\nembeddings = ["fs"]\ndensity_max_degree = [4, 2]\nlam = [1e-6]\nmaxiter = 30\ncv = false\n'
    )
    out = tmp_path / "pot.h5"
    assert main(["fit-potential", str(cfg), "-o", str(out), "-q", "--report", str(tmp_path / "rep.json")]) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["model"] == "embedded_multilayer" and rep["optimiser"]["iterations"] > 0 and rep["linear_cv"]
    pot = load_potential(out)
    assert isinstance(pot, MultilayerACEPotential) and pot.n_densities == 1 and np.abs(pot.densities).max() > 0
    capsys.readouterr()
    assert main(["evaluate-potential", str(out), str(tmp_path / "train.xyz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["force_mae_eV_per_A"] < 1e-2
    cfg.write_text(cfg.read_text().replace("cv = false", "cv = false\nbogus = 1"))
    assert main(["fit-potential", str(cfg), "-o", str(tmp_path / "x.h5"), "-q"]) != 0
    assert "model.densities" in capsys.readouterr().err


@pytest.mark.parametrize("criterion", ["combined", "energy_mae"])
@pytest.mark.parametrize("base_score", [-1.0, 1e9])
def test_keep_base_lets_the_cv_choose_no_densities(base_score, criterion, rng):
    """With ``keep_base`` the starting multilayer fit competes in the density CV by its own CV row, scored by the
    settings' criterion (its held-out errors set to 0, or huge, decide)."""
    from dataclasses import replace

    from acehamil.models.potential.embedded_fit import fit_embedded

    basis = _basis()
    truth = _truth(rng, basis, density_scale=1.0)
    configs = labelled(truth, rng, 6, "md")
    settings = FitSettings(lam=(1e-8,), power=(0.0,), n_folds=2, force_sigma=1e-2, cv_criterion=criterion)
    data = embedding_data(basis, (14,), configs, settings, density_columns(basis, (4, 2, 0)))
    ml = fit_multilayer(configs, basis, (14,), settings, accumulated=accumulate_multilayer_from_linear(data, configs, settings, truth.layer),
                        layer=truth.layer)
    err = 0.0 if base_score < 0 else base_score
    ml = replace(ml, cv=[{**ml.cv[0], "energy_mae_meV_per_atom": err, "energy_rmse_meV_per_atom": err,
                          "force_rmse_eV_per_A": 0.0 if base_score < 0 else ml.cv[0]["force_rmse_eV_per_A"]}])
    emb = EmbeddingSettings(embeddings=("fs",), density_max_degree=(4, 2, 0), lam=(1e-6,), maxiter=20, keep_base=True)
    res = fit_embedded_multilayer(configs, basis, (14,), settings, emb=emb, data=data, multilayer=ml)
    assert [r["lam_density"] for r in res.cv][0] == (None if base_score < 0 else 1e-6)
    if base_score < 0:
        assert res.chosen["lam_density"] is None and res.potential.n_densities == 0
        np.testing.assert_array_equal(res.potential.parameter_vector(), ml.potential.parameter_vector())
    else:
        assert res.chosen["lam_density"] == 1e-6 and res.potential.n_densities == 1
    with pytest.raises(ValueError, match="keep_base"):
        fit_embedded(configs, basis, (14,), settings, emb, data=data)


def test_density_cv_row_and_precomputed_layer_rows_give_the_fit_s_own_results(rng):
    """``density_cv_row`` (one density setting's k-fold row, as benchmarks/density_cv.py scores several settings on one
    multilayer fit) is the row ``fit_embedded_multilayer``'s own CV reports, and passing the second layer's rows
    already formed (``layer_data``) gives the same potential as forming them inside; rows of other data are refused."""
    from acehamil.models.potential.embedded_fit import density_cv_row

    basis = _basis()
    truth = _truth(rng, basis, density_scale=1.0)
    configs = labelled(truth, rng, 6, "md") + labelled(truth, rng, 2, "strain", stress=True)
    settings = FitSettings(lam=(1e-8,), power=(0.0,), n_folds=2, force_sigma=1e-2)
    data = embedding_data(basis, (14,), configs, settings, density_columns(basis, (4, 2, 0)))
    ml = fit_multilayer(configs, basis, (14,), settings, accumulated=accumulate_multilayer_from_linear(data, configs, settings, truth.layer),
                        layer=truth.layer)
    emb = EmbeddingSettings(embeddings=("fs", "tanh"), density_max_degree=(4, 2, 0), lam=(1e-6,), maxiter=15)
    res = fit_embedded_multilayer(configs, basis, (14,), settings, emb=emb, data=data, multilayer=ml)
    full = with_layer_columns(data, configs, truth.layer)
    extra = np.tile(truth.layer.feature_degrees(), 1)
    cols, degs = _columns(basis, (14,), 0, extra)
    row, errs = density_cv_row(full, settings, emb, cols, degs, ml.chosen, 1e-6, n_extra=len(extra))
    mine = next(r for r in res.cv if r["lam_density"] == 1e-6)
    for key in ("energy_mae_meV_per_atom", "energy_rmse_meV_per_atom", "force_rmse_eV_per_A", "score"):
        assert row[key] == pytest.approx(mine[key], rel=1e-12)
    assert errs.shape == (len(configs),) and np.mean(np.abs(errs)) > 0
    again = fit_embedded_multilayer(configs, basis, (14,), settings, emb=emb, data=data, multilayer=ml, layer_data=full)
    np.testing.assert_array_equal(again.potential.parameter_vector(), res.potential.parameter_vector())
    np.testing.assert_array_equal(again.potential.densities, res.potential.densities)
    with pytest.raises(ValueError, match="layer_data"):
        fit_embedded_multilayer(configs, basis, (14,), settings, emb=emb, data=data, multilayer=ml, layer_data=data)


def test_projected_loss_factors_a_singular_system_with_jitter(rng):
    """A starting fit with an almost vanishing prior on rank-deficient columns (Si's multilayer choice, lam 1e-12 times
    layer prior 3e-4, failed with 'leading minor not positive definite' here) gets the linear solver's relative jitter."""
    basis = _basis()
    truth = _truth(rng, basis, density_scale=0.5)
    configs = labelled(truth, rng, 3, "md")
    settings = FitSettings(n_folds=1)
    data = with_layer_columns(embedding_data(basis, (14,), configs, settings, density_columns(basis, (3, 2))), configs,
                              truth.layer)
    data = replace_rows_with_duplicate_column(data)
    extra = np.tile(truth.layer.feature_degrees(), 1)
    cols, degs = _columns(basis, (14,), 0, extra)
    loss = ProjectedLoss(data, settings, cols, degs, 0.0, 0.0, 1.0, ("fs",), 1e-3, np.ones(len(configs), bool),
                         n_extra=len(extra), extra_factor=3e-4)
    assert loss.jitter > 0
    f, g = loss(loss.initial(0.3, 0))
    assert np.isfinite(f) and np.all(np.isfinite(g))


def replace_rows_with_duplicate_column(data):
    """``data`` with its last design column a copy of its second-to-last (an exactly singular system)."""
    from dataclasses import replace

    def dup(a):
        a = a.copy()
        a[..., -1] = a[..., -2]
        return a

    return replace(data, energy_rows=dup(data.energy_rows), force_rows=dup(data.force_rows), stress_rows=dup(data.stress_rows))

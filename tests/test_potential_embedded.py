"""Embedded (Finnis-Sinclair-like) ACE potentials: physics, the fit's analytic gradient, recovery of a known model."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potential_cases import case, rattled_si

from acehamil.testing import assert_site_energy_invariant, assert_stress_matches_strain
from acehamil.basis import ACEBasis, BasisSpec, RadialSpec
from acehamil.models.potential.model import ACEPotential, feature_degrees
from acehamil.models.potential.data import Config, error_metrics
from acehamil.models.potential.embedded import EmbeddedACEPotential, embed
from acehamil.models.potential.embedded_fit import (
    EmbeddingSettings,
    ProjectedLoss,
    density_columns,
    embedding_data,
    fit_embedded,
    minimise,
)
from acehamil.models.potential.fit import FitSettings, _columns, accumulate
from acehamil.models.potential.repulsion import RepulsionSpec


def _basis(species=(14,), r_cut=4.0):
    return ACEBasis(BasisSpec(categories=tuple(species), radial=RadialSpec(n_max=4, r_cut=r_cut), max_nu=3,
                              max_degree=(4, 4, 3), L_max=0, parities=(1,)))


def _potential(rng, species=(14,), repulsion=None, embeddings=("fs", "tanh")):
    basis = _basis(species)
    nB = len(feature_degrees(basis))
    ns = len(species)
    return EmbeddedACEPotential(basis, species, rng.normal(size=ns), 0.1 * rng.normal(size=(ns, nB)),
                                0.5 * rng.normal(size=(ns, len(embeddings), nB)), embeddings, repulsion)


def _setup(kind, rng):
    return case(kind, rng, _potential)


@pytest.mark.parametrize("name", ["fs", "tanh"])
def test_embedding_derivatives(name, rng):
    x = rng.normal(size=20) * 3
    F, dF, ddF = embed(name, x)
    h = 1e-6
    np.testing.assert_allclose(dF, (embed(name, x + h)[0] - embed(name, x - h)[0]) / (2 * h), atol=1e-8)
    np.testing.assert_allclose(ddF, (embed(name, x + h)[1] - embed(name, x - h)[1]) / (2 * h), atol=1e-6)
    with pytest.raises(ValueError, match="unknown embedding"):
        embed("cube", x)


@pytest.mark.parametrize("kind", ["bulk", "cluster", "binary"])
def test_forces_are_minus_gradient_with_shrinking_error(kind, rng):
    pot, atoms = _setup(kind, rng)
    F = pot.compute(atoms)["forces"]
    assert np.abs(F.sum(axis=0)).max() < 1e-10 * max(1.0, np.abs(F).max()) and np.abs(F).max() > 1e-3
    d = rng.normal(size=(len(atoms), 3))
    d /= np.linalg.norm(d)
    errs = []
    for h in (1e-2, 1e-3):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions += h * d
        minus.positions -= h * d
        e = [pot.compute(x, forces=False, stress=False)["energy"] for x in (plus, minus)]
        errs.append(abs((e[0] - e[1]) / (2 * h) + np.sum(F * d)))
    assert errs[1] < max(errs[0] / 20, 1e-8), errs


@pytest.mark.parametrize("kind", ["bulk", "binary"])
def test_stress_matches_strain_finite_difference(kind, rng):
    pot, atoms = _setup(kind, rng)
    assert_stress_matches_strain(pot.compute, lambda a: pot.compute(a, forces=False, stress=False)["energy"], atoms)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("kind", ["bulk", "cluster", "binary"])
def test_energy_invariant_under_rotation_permutation_translation(kind, improper, rng):
    pot, atoms = _setup(kind, rng)
    assert_site_energy_invariant(pot.compute, atoms, rng, improper=improper)


def test_embedding_is_nonlinear_and_reduces_to_linear(rng):
    """Without densities' effect (zero coefficients) it is the linear model; scaling the densities is not linear."""
    pot, atoms = _setup("bulk", rng)
    lin = ACEPotential(pot.basis, pot.species, pot.e0, pot.coef)
    zero = EmbeddedACEPotential(pot.basis, pot.species, pot.e0, pot.coef, 0 * pot.densities, pot.embeddings)
    a, b = lin.compute(atoms), zero.compute(atoms)
    assert a["energy"] == pytest.approx(b["energy"], abs=1e-10)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)
    e = [EmbeddedACEPotential(pot.basis, pot.species, pot.e0, 0 * pot.coef, s * pot.densities, pot.embeddings).compute(atoms)["energy"]
         - pot.e0.sum() * len(atoms) for s in (1.0, 2.0)]
    assert abs(e[1] - 2 * e[0]) > 1e-3 * abs(e[0])
    no_grad = pot.compute(atoms, forces=False, stress=False)
    assert no_grad["energy"] == pytest.approx(pot.compute(atoms)["energy"], rel=1e-12)


def test_chunking_and_bad_input(rng):
    pot, atoms = _setup("bulk", rng)
    atoms = atoms.repeat((2, 1, 1))
    a, b = pot.compute(atoms, chunk_atoms=3), pot.compute(atoms, chunk_atoms=1000)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12)
    with pytest.raises(ValueError, match="densities must have shape"):
        EmbeddedACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.densities[:, :1], pot.embeddings)
    with pytest.raises(ValueError, match="unknown embedding"):
        EmbeddedACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.densities, ("fs", "nope"))
    with pytest.raises(ValueError, match="not one of the model's species"):
        pot.compute(Atoms("Ge2", positions=[[0, 0, 0], [0, 0, 2.4]]))


# ---------------------------------------------------------------- fitting
def _labelled(truth, rng, n, config_type, stress=False):
    out = []
    for _ in range(n):
        atoms = rattled_si(rng, amp=0.15)
        atoms.set_cell(atoms.cell.array * (1 + 0.03 * rng.normal()), scale_atoms=True)
        res = truth.compute(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=res["energy"], forces=res["forces"],
                                           **({"stress": res["stress"]} if stress else {}))
        atoms.info["config_type"] = config_type
        c = atoms.copy()
        c.calc = None
        out.append(Config(c, res["energy"], res["forces"], res["stress"] if stress else None, config_type))
    return out


def _truth(rng, basis):
    nB = len(feature_degrees(basis))
    cols = density_columns(basis, (4, 2, 0))
    dens = np.zeros((1, 1, nB))
    dens[0, 0, cols] = rng.normal(size=len(cols))
    return EmbeddedACEPotential(basis, (14,), [-4.0], 0.05 * rng.normal(size=(1, nB)), dens, ("fs",))


@pytest.mark.parametrize("with_stress", [False, True])
def test_projected_loss_gradient_matches_finite_differences(with_stress, rng):
    basis = _basis()
    truth = _truth(rng, basis)
    configs = _labelled(truth, rng, 4, "md", stress=with_stress)
    settings = FitSettings(n_folds=2)
    data = embedding_data(basis, (14,), configs, settings, density_columns(basis, (4, 2, 0)),
                          RepulsionSpec((((14, 14), 2.0),), 5.0))
    cols, degs = _columns(basis, (14,), 0)
    train = np.array([True, True, False, True])
    loss = ProjectedLoss(data, settings, cols, degs, 1.0, 1e-6, 3.0, ("fs", "tanh"), 1e-3, train)
    assert loss.use_stress == with_stress
    theta = loss.initial(1.0, 0)
    L, g = loss(theta)
    d = rng.normal(size=theta.shape)
    errs = []
    for h in (1e-3, 1e-4):
        fd = (loss(theta + h * d)[0] - loss(theta - h * d)[0]) / (2 * h)
        errs.append(abs(fd - g @ d))
    assert errs[1] < max(errs[0] / 20, 1e-9 * abs(L)), errs
    assert errs[1] < 1e-6 * max(abs(g @ d), 1.0)


def test_embedding_data_matches_linear_accumulation(rng):
    basis = _basis()
    configs = _labelled(_truth(rng, basis), rng, 5, "md")
    settings = FitSettings(n_folds=2)
    rep = RepulsionSpec((((14, 14), 2.0),), 5.0)
    data = embedding_data(basis, (14,), configs, settings, density_columns(basis, (4, 2, 0)), rep)
    acc, ref = data.accumulated(settings), accumulate(basis, (14,), configs, settings, rep)
    np.testing.assert_array_equal(acc.folds, ref.folds)
    np.testing.assert_allclose(acc.energy_rows, ref.energy_rows, atol=1e-12)
    np.testing.assert_allclose(acc.energy_targets, ref.energy_targets, atol=1e-12)
    for f in range(2):
        np.testing.assert_allclose(acc.forces[f].AtA, ref.forces[f].AtA, rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(acc.forces[f].Aty, ref.forces[f].Aty, rtol=1e-10, atol=1e-8)


def test_fit_recovers_an_embedded_potential_better_than_linear(rng):
    basis = _basis()
    truth = _truth(rng, basis)
    configs = _labelled(truth, rng, 14, "md") + _labelled(truth, rng, 4, "strain", stress=True)
    settings = FitSettings(lam=(1e-10,), power=(0.0,), n_folds=3, force_sigma=1e-2)
    emb = EmbeddingSettings(embeddings=("fs",), density_max_degree=(4, 2, 0), lam=(1e-8, 1e-4), maxiter=400)
    res = fit_embedded(configs, basis, (14,), settings, emb)
    assert res.chosen["lam_density"] in (1e-8, 1e-4) and len(res.cv) == 3
    assert {r["lam_density"] for r in res.cv} == {None, 1e-8, 1e-4}
    m_emb = error_metrics(res.potential, configs)["all"]
    m_lin = error_metrics(res.linear.potential, configs)["all"]
    assert m_emb["force_rmse_eV_per_A"] < 0.5 * m_lin["force_rmse_eV_per_A"]
    assert m_emb["energy_rmse_meV_per_atom"] < m_lin["energy_rmse_meV_per_atom"]
    assert set(res.cv_by_type) == {"all", "md", "strain"}


def test_minimise_from_truth_stays(rng):
    """At the generating densities the loss is at its floor; L-BFGS does not leave it."""
    basis = _basis()
    truth = _truth(rng, basis)
    configs = _labelled(truth, rng, 6, "md")
    settings = FitSettings(n_folds=2)
    cols_d = density_columns(basis, (4, 2, 0))
    data = embedding_data(basis, (14,), configs, settings, cols_d)
    cols, degs = _columns(basis, (14,), 0)
    loss = ProjectedLoss(data, settings, cols, degs, 0.0, 1e-14, 1.0, ("fs",), 0.0, np.ones(6, bool))
    theta = (truth.densities[:, :, cols_d] * loss.dm).ravel()
    L0, _ = loss(theta)
    theta1, _ = minimise(loss, theta, 50)
    assert loss(theta1)[0] <= L0 + 1e-12
    assert L0 < 1e-6 * loss(loss.initial(1.0, 0))[0]


# ---------------------------------------------------------------- files, calculator, CLI
def test_file_round_trip_calculator_and_damage(tmp_path, rng):
    import h5py

    from acehamil.calculators import ACECalculator
    from acehamil.io.potential_file import load_potential, save_potential

    pot, atoms = _setup("binary", rng)
    path = tmp_path / "emb.h5"
    save_potential(path, pot)
    back = load_potential(path)
    assert isinstance(back, EmbeddedACEPotential) and back.embeddings == pot.embeddings
    a, b = pot.compute(atoms), back.compute(atoms)
    assert a["energy"] == b["energy"]
    np.testing.assert_array_equal(a["forces"], b["forces"])
    atoms.calc = ACECalculator.from_file(path)
    np.testing.assert_array_equal(atoms.get_forces(), a["forces"])
    assert atoms.get_stress().shape == (6,)
    with h5py.File(path, "r+") as f:
        f["densities"][0, 0, 0] += 1e-9
    with pytest.raises(ValueError, match="checksum"):
        load_potential(path)
    save_potential(path, pot)
    with h5py.File(path, "r+") as f:
        f.attrs["embeddings"] = '["fs", "tanh", "fs"]'
    with pytest.raises(ValueError, match="checksum|densities must have shape"):
        load_potential(path)
    # linear files keep format version 1
    lin = ACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.repulsion)
    save_potential(tmp_path / "lin.h5", lin)
    with h5py.File(tmp_path / "lin.h5", "r") as f:
        assert int(f.attrs["format_version"]) == 1 and "densities" not in f
    assert isinstance(load_potential(tmp_path / "lin.h5"), ACEPotential)


def test_cli_fits_and_evaluates_an_embedded_model(tmp_path, rng, capsys):
    import json

    import ase.io

    from acehamil.cli import main
    from acehamil.io.potential_file import load_potential

    truth = _truth(rng, _basis())
    frames = []
    for c in _labelled(truth, rng, 8, "md"):
        a = c.atoms.copy()
        a.calc = SinglePointCalculator(a, energy=c.energy, forces=c.forces)
        a.info["config_type"] = c.config_type
        frames.append(a)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    cfg = tmp_path / "fit.toml"
    cfg.write_text(
        '[data]\ntrain = "train.xyz"\n[basis]\nr_cut = 4.0\nn_max = 4\nmax_nu = 3\nmax_degree = [4, 4, 3]\n'
        "[fit]\nlam = [1e-10]\npower = [0.0]\nn_folds = 2\n"
        '[model]\nkind = "embedded"\nembeddings = ["fs"]\ndensity_max_degree = [4, 2, 0]\nlam = [1e-6]\nmaxiter = 60\n'
    )
    out = tmp_path / "pot.h5"
    assert main(["fit-potential", str(cfg), "-o", str(out), "-q", "--report", str(tmp_path / "rep.json")]) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["model"] == "embedded" and rep["chosen"]["lam_density"] == 1e-6 and rep["optimiser"]["iterations"] > 0
    assert isinstance(load_potential(out), EmbeddedACEPotential)
    capsys.readouterr()
    assert main(["evaluate-potential", str(out), str(tmp_path / "train.xyz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["force_mae_eV_per_A"] < 0.05
    cfg.write_text(cfg.read_text().replace('kind = "embedded"', 'kind = "deep"'))
    assert main(["fit-potential", str(cfg), "-o", str(tmp_path / "x.h5"), "-q"]) != 0
    assert "model.kind" in capsys.readouterr().err


@pytest.mark.shared_data
def test_embedded_pipeline_on_a_subset_of_si_training_data(shared_data):
    """End to end on 24 real Si structures: the embedded fit starts from the linear one and predicts held-out data sensibly."""
    from acehamil.io.labelled import read_configs
    from acehamil.models.potential.config import make_basis

    configs = read_configs(shared_data / "mlearn" / "Si_training.xyz", index="::8")
    train, held = configs[::2], configs[1::2]
    basis = make_basis((14,), r_cut=4.5, n_max=5, max_nu=2, max_degree=(6, 6))
    emb = EmbeddingSettings(embeddings=("fs",), density_max_degree=(4, 2), lam=(1e-3,), maxiter=40, init_scale=0.3, cv=False)
    res = fit_embedded(train, basis, (14,), FitSettings(lam=(1e-8, 1e-5), power=(0.0,), n_folds=3), emb)
    assert res.info["iterations"] > 0 and res.cv == [] and res.cv_by_type == {}
    m = error_metrics(res.potential, held)["all"]
    assert m["energy_mae_meV_per_atom"] < 100 and m["force_mae_eV_per_A"] < 0.5
    lin = error_metrics(res.linear.potential, train)["all"]
    assert error_metrics(res.potential, train)["all"]["force_rmse_eV_per_A"] <= 1.05 * lin["force_rmse_eV_per_A"]

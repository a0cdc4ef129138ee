"""Multilayer (message-passing) ACE potentials: physics, design rows, recovery of a known model, files, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potential_cases import case, labelled, rattled_si

from acehamil.testing import assert_fd_converges, assert_site_energy_invariant, assert_stress_matches_strain, fd_errors
from acehamil.basis import ACEBasis, BasisSpec, RadialSpec
from acehamil.models.potential.data import error_metrics
from acehamil.models.potential.fit import FitSettings, accumulate
from acehamil.models.potential.model import ACEPotential, feature_degrees
from acehamil.models.potential.multilayer import MessageLayer, MessageSpec, MultilayerACEPotential
from acehamil.models.potential.multilayer_fit import (
    accumulate_multilayer,
    fit_multilayer,
    linear_from_accumulated,
    message_normalisation,
    multilayer_layer,
    multilayer_rows,
)
from acehamil.models.potential.repulsion import RepulsionSpec
from acehamil.so3 import random_rotation
from acehamil.structure.neighbours import neighbour_pairs

SPEC = MessageSpec(n_message=3, r_message=3.6, n_pass=3, r_pass=4.0, embeddings=("identity", "fs", "tanh"))


def _basis(species=(14,), r_cut=4.0):
    return ACEBasis(BasisSpec(categories=tuple(species), radial=RadialSpec(n_max=3, r_cut=r_cut), max_nu=2,
                              max_degree=(4, 3), L_max=0, parities=(1,)))


def _potential(rng, species=(14,), repulsion=None, spec=SPEC, linear_scale=0.05, layer_scale=0.05):
    basis = _basis(species)
    ns, nB = len(species), len(feature_degrees(basis))
    ks = ns * spec.n_message
    layer = MessageLayer(spec, species, shift=rng.normal(size=ks), scale=0.5 + rng.random(ks))
    return MultilayerACEPotential(basis, species, rng.normal(size=ns), linear_scale * rng.normal(size=(ns, nB)), layer,
                                  layer_scale * rng.normal(size=(ns, layer.n_features)), repulsion)


def _setup(kind, rng):
    if kind == "shared-pairs":  # both layers on the same pairs and radial functions (the prediction path shares them)
        spec = MessageSpec(n_message=3, r_message=4.0, n_pass=3, r_pass=4.0, embeddings=("fs",))
        return _potential(rng, species=(6, 14), spec=spec), rattled_si(rng, numbers=[6, 14] * 4)
    return case(kind, rng, _potential)


# ---------------------------------------------------------------- physics
@pytest.mark.parametrize("kind", ["bulk", "cluster", "binary", "shared-pairs"])
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


@pytest.mark.parametrize("kind", ["bulk", "binary", "shared-pairs"])
def test_stress_matches_strain_finite_difference(kind, rng):
    pot, atoms = _setup(kind, rng)
    assert_stress_matches_strain(pot.compute, lambda a: pot.compute(a, forces=False, stress=False)["energy"], atoms)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("kind", ["bulk", "cluster", "binary"])
def test_energy_invariant_under_rotation_permutation_translation(kind, improper, rng):
    pot, atoms = _setup(kind, rng)
    assert_site_energy_invariant(pot.compute, atoms, rng, improper=improper)


def test_vector_messages_see_improper_rotations_as_polar_vectors(rng):
    """V_j are polar vectors: under an improper rotation they follow the positions (V -> Q V)."""
    layer = MessageLayer(SPEC, (14,))
    atoms = Atoms(numbers=[14] * 6, positions=rng.normal(size=(6, 3)) * 1.5)
    Q = random_rotation(rng, improper=True)
    V = layer._first_layer(atoms.numbers, neighbour_pairs(atoms, layer.cutoff))[7]
    moved = Atoms(numbers=atoms.numbers, positions=atoms.positions @ Q.T)
    Vq = layer._first_layer(moved.numbers, neighbour_pairs(moved, layer.cutoff))[7]
    np.testing.assert_allclose(Vq, V @ Q.T, atol=1e-12)
    assert np.abs(V).max() > 1e-2


def test_second_layer_is_semi_local_and_reduces_to_linear(rng):
    """E_i depends on atoms up to r_message + r_pass away (beyond the first layer's cutoff), and
    with zero second-layer weights the model is the linear one."""
    spec = MessageSpec(n_message=2, r_message=3.0, n_pass=2, r_pass=3.0)
    pot = _potential(rng, spec=spec)
    # a chain 0 - 1 - 2 with spacings 2.5 Å: atom 2 is 5 Å from atom 0 (beyond each 3 Å cutoff, within 6 Å)
    chain = Atoms(numbers=[14] * 3, positions=[[0, 0, 0], [2.5, 0.1, 0], [5.0, 0.0, 0.2]])
    e0 = pot.compute(chain)["energies"][0]
    far = chain.copy()
    far.positions[2] += [0.1, 0.05, 0.0]
    assert abs(pot.compute(far)["energies"][0] - e0) > 1e-8
    assert pot.linear.compute(far)["energies"][0] == pytest.approx(pot.linear.compute(chain)["energies"][0], abs=1e-14)
    gone = chain.copy()
    gone.positions[2] = [6.5, 0.0, 0.0]  # 4 Å from atom 1: no longer a neighbour of anyone
    moved = gone.copy()
    moved.positions[2] += [0.3, 0.2, 0.1]
    assert pot.compute(gone)["energies"][0] == pytest.approx(pot.compute(moved)["energies"][0], abs=1e-14)
    zero = MultilayerACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.layer, 0 * pot.weights)
    atoms = rattled_si(rng)
    a, b = zero.compute(atoms), pot.linear.compute(atoms)
    assert a["energy"] == pytest.approx(b["energy"], abs=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12)


@pytest.mark.parametrize("kind", ["bulk", "binary", "shared-pairs", "cluster"])
def test_prediction_path_equals_the_general_adjoint_for_any_block_size(kind, rng):
    """MessageLayer.energy (pair-minor blocks of chunk_pairs pairs) against forward/backward:
    site energies, forces and strain derivative, for blocks of 1, 7 and all pairs; an atom
    without neighbours gets zero."""
    pot, atoms = _setup(kind, rng)
    if kind == "cluster":
        atoms = atoms + Atoms("Si", positions=[[40.0, 0.0, 0.0]])  # isolated: no pairs
    layer, w = pot.layer, pot.weights
    pairs = neighbour_pairs(atoms, layer.cutoff)
    phi, state = layer.forward(atoms.numbers, pairs)
    lam = w[state.sidx][None]
    dEdr_ref, dEde_ref = layer.gradients(state, lam)
    e_ref = np.einsum("if,if->i", phi, w[state.sidx])
    for chunk in (1, 7, 10**9):
        e, dEdr, dEde = layer.energy(atoms.numbers, pairs, w, chunk_pairs=chunk)
        np.testing.assert_allclose(e, e_ref, atol=1e-12)
        np.testing.assert_allclose(dEdr, dEdr_ref[0], atol=1e-11)
        np.testing.assert_allclose(dEde, dEde_ref[0], atol=1e-10)
    assert np.abs(dEdr_ref).max() > 1e-3
    if kind == "cluster":
        assert e[-1] == 0.0 and np.all(dEdr[-1] == 0.0)
    e2, none_r, none_e = layer.energy(atoms.numbers, pairs, w, gradients=False)
    np.testing.assert_allclose(e2, e_ref, atol=1e-12)
    assert none_r is None and none_e is None
    with pytest.raises(ValueError, match="chunk_pairs"):
        layer.energy(atoms.numbers, pairs, w, chunk_pairs=0)


@pytest.mark.parametrize("kind", ["binary", "shared-pairs"])
def test_design_rows_reproduce_the_model(kind, rng):
    """Energy, force and strain rows of the joint layout times [E0, c, w] (the general adjoint pass)
    are the model's (its prediction path), without repulsion."""
    pot, atoms = _setup(kind, rng)
    pot = MultilayerACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.layer, pot.weights)
    rows = multilayer_rows(pot.basis, pot.species, pot.layer, atoms)
    theta = pot.parameter_vector()
    ref = pot.compute(atoms)
    assert rows.energy @ theta == pytest.approx(ref["energy"], abs=1e-10)
    np.testing.assert_allclose(rows.forces @ theta, ref["forces"], atol=1e-10)
    np.testing.assert_allclose(rows.strain @ theta, ref["virial_strain"], atol=1e-9)
    n_lin = len(pot.species) * (1 + pot.n_features)
    lin_rows = multilayer_rows(pot.basis, pot.species, pot.layer, atoms, gradients=False)
    assert lin_rows.forces is None and lin_rows.energy.shape == (n_lin + pot.weights.size,)


def test_backward_is_linear_in_the_weights(rng):
    pot, atoms = _setup("binary", rng)
    phi, state = pot.layer.forward(atoms.numbers, neighbour_pairs(atoms, pot.layer.cutoff))
    lam = rng.normal(size=(2, len(atoms), pot.layer.n_features))
    g1, g2 = pot.layer.backward(state, lam)
    h1, h2 = pot.layer.backward(state, lam.sum(axis=0, keepdims=True))
    np.testing.assert_allclose(g1.sum(axis=0), h1[0], atol=1e-12)
    np.testing.assert_allclose(g2.sum(axis=0), h2[0], atol=1e-12)
    with pytest.raises(ValueError, match="lam must have shape"):
        pot.layer.backward(state, lam[:, :, :-1])


def test_bad_input_is_refused(rng):
    with pytest.raises(ValueError, match="n_message"):
        MessageSpec(n_message=0)
    with pytest.raises(ValueError, match="r_pass"):
        MessageSpec(r_pass=-1.0)
    with pytest.raises(ValueError, match="unknown message embedding"):
        MessageSpec(embeddings=("cube",))
    with pytest.raises(TypeError, match="sequence of names"):
        MessageSpec(embeddings="fs")
    with pytest.raises(ValueError, match="scale"):
        MessageLayer(SPEC, (14,), scale=np.zeros(SPEC.n_message))
    pot = _potential(rng)
    with pytest.raises(ValueError, match="weights must have shape"):
        MultilayerACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.layer, pot.weights[:, :-1])
    with pytest.raises(ValueError, match="species"):
        MultilayerACEPotential(pot.basis, pot.species, pot.e0, pot.coef, MessageLayer(SPEC, (6,)), pot.weights)
    with pytest.raises(ValueError, match="not one of the model's species"):
        pot.compute(Atoms(numbers=[14, 8], positions=[[0, 0, 0], [2, 0, 0]]))
    assert MessageSpec.from_dict(SPEC.to_dict()) == SPEC


# ---------------------------------------------------------------- fitting
def _truth(rng, basis):
    ns, nB = 1, len(feature_degrees(basis))
    spec = MessageSpec(n_message=3, r_message=4.0, n_pass=3, r_pass=4.0, embeddings=("identity", "fs"))
    layer = MessageLayer(spec, (14,))
    return MultilayerACEPotential(basis, (14,), [-4.0], 0.02 * rng.normal(size=(ns, nB)), layer,
                                  2e-3 * rng.normal(size=(ns, layer.n_features)))


def _write_train_xyz(path, configs, rng=None, force_noise=0.0):
    """Write labelled configs as extended XYZ (energy, forces, config_type), forces plus
    ``force_noise`` eV/Å of Gaussian noise from ``rng`` when given (drawn config by config)."""
    import ase.io

    frames = []
    for c in configs:
        a = c.atoms.copy()
        forces = c.forces + force_noise * rng.normal(size=c.forces.shape) if force_noise else c.forces
        a.calc = SinglePointCalculator(a, energy=c.energy, forces=forces)
        a.info["config_type"] = c.config_type
        frames.append(a)
    ase.io.write(path, frames, format="extxyz")


def test_fit_recovers_a_multilayer_potential_better_than_linear(rng):
    basis = _basis()
    truth = _truth(rng, basis)
    configs = labelled(truth, rng, 10, "md") + labelled(truth, rng, 4, "strain", stress=True)
    settings = FitSettings(lam=(1e-12, 1e-8), power=(0.0,), n_folds=3, force_sigma=1e-2)
    layer = truth.layer  # the generating normalisation: the truth is then exactly representable
    acc = accumulate_multilayer(basis, (14,), configs, settings, layer)
    res = fit_multilayer(configs, basis, (14,), settings, accumulated=acc, layer=layer)
    lin = linear_from_accumulated(acc, basis, (14,), settings)
    assert isinstance(res.potential, MultilayerACEPotential) and isinstance(lin.potential, ACEPotential)
    m_ml = error_metrics(res.potential, configs)["all"]
    m_lin = error_metrics(lin.potential, configs)["all"]
    assert m_lin["force_rmse_eV_per_A"] > 1e-3  # the second layer matters here
    assert m_ml["force_rmse_eV_per_A"] < 1e-3 * m_lin["force_rmse_eV_per_A"]
    assert m_ml["energy_rmse_meV_per_atom"] < 1e-2 * m_lin["energy_rmse_meV_per_atom"]
    assert set(res.cv_by_type) == {"all", "md", "strain"}
    # the linear fit from the joint design data equals the plain linear fit
    ref = accumulate(basis, (14,), configs, settings)
    n_lin = ref.n_cols
    np.testing.assert_allclose(acc.energy_rows[:, :n_lin], ref.energy_rows, atol=1e-12)
    np.testing.assert_allclose(acc.forces[0].AtA[:n_lin, :n_lin], ref.forces[0].AtA, rtol=1e-10, atol=1e-8)
    with pytest.raises(ValueError, match="together"):
        fit_multilayer(configs, basis, (14,), settings, accumulated=acc)


def test_layer_prior_factor_is_chosen_by_cv_and_shrinks_the_second_layer(rng):
    """``layer_prior_factors`` is a CV axis of the multilayer fit only: a huge factor drives the second
    layer's weights to zero (the fit becomes the linear one), the CV table carries the factor, and
    on data from a true multilayer model CV prefers the weak prior."""
    basis = _basis()
    truth = _truth(rng, basis)
    configs = labelled(truth, rng, 9, "md")
    layer = truth.layer
    base = FitSettings(lam=(1e-10,), power=(0.0,), n_folds=3, force_sigma=1e-2)
    acc = accumulate_multilayer(basis, (14,), configs, base, layer)
    lin = linear_from_accumulated(acc, basis, (14,), base).potential
    strong = fit_multilayer(configs, basis, (14,), FitSettings(**{**base.__dict__, "layer_prior_factors": (1e20,)}),
                            accumulated=acc, layer=layer).potential
    weak = fit_multilayer(configs, basis, (14,), base, accumulated=acc, layer=layer).potential
    assert np.abs(strong.weights).max() < 1e-6 * np.abs(weak.weights).max()
    np.testing.assert_allclose(strong.coef, lin.coef, rtol=1e-4, atol=1e-6 * np.abs(lin.coef).max())
    res = fit_multilayer(configs, basis, (14,), FitSettings(**{**base.__dict__, "layer_prior_factors": (1.0, 1e20)}),
                         accumulated=acc, layer=layer)
    assert {row["layer_prior"] for row in res.cv} == {1.0, 1e20}
    assert res.chosen["layer_prior"] == 1.0 == res.cv[0]["layer_prior"]
    assert res.potential.metadata["chosen"]["layer_prior"] == 1.0
    # the linear fit has no appended columns: no layer_prior axis
    assert "layer_prior" not in linear_from_accumulated(acc, basis, (14,), base).chosen
    with pytest.raises(ValueError, match="layer_prior_factors"):
        FitSettings(layer_prior_factors=(0.0,))


def test_joint_rows_from_cached_linear_rows_equal_the_direct_accumulation(rng):
    from acehamil.models.potential.embedded_fit import density_columns, embedding_data
    from acehamil.models.potential.multilayer_fit import accumulate_multilayer_from_linear

    basis = _basis()
    truth = _truth(rng, basis)
    configs = labelled(truth, rng, 4, "md") + labelled(truth, rng, 2, "strain", stress=True)
    settings = FitSettings(n_folds=2)
    rep = RepulsionSpec((((14, 14), 2.0),), 5.0)
    data = embedding_data(basis, (14,), configs, settings, density_columns(basis, (4, 2)), rep)
    a = accumulate_multilayer_from_linear(data, configs, settings, truth.layer)
    b = accumulate_multilayer(basis, (14,), configs, settings, truth.layer, rep)
    np.testing.assert_allclose(a.energy_rows, b.energy_rows, atol=1e-12)
    np.testing.assert_allclose(a.energy_targets, b.energy_targets, atol=1e-12)
    for f in range(2):
        for x, y in ((a.forces[f], b.forces[f]), (a.stress[f], b.stress[f])):
            np.testing.assert_allclose(x.AtA, y.AtA, rtol=1e-10, atol=1e-8)
            np.testing.assert_allclose(x.Aty, y.Aty, rtol=1e-10, atol=1e-8)
    assert a.stress[0].count + a.stress[1].count > 0
    with pytest.raises(ValueError, match="fold"):
        accumulate_multilayer_from_linear(data, configs, FitSettings(n_folds=3), truth.layer)


def test_message_normalisation_is_mean_and_std(rng):
    basis = _basis()
    configs = labelled(_truth(rng, basis), rng, 3, "md")
    shift, scale = message_normalisation(SPEC, (14,), configs)
    layer_fit = multilayer_layer(SPEC, (14,), configs)
    np.testing.assert_array_equal(layer_fit.shift, shift)
    layer = MessageLayer(SPEC, (14,))
    rho = np.concatenate([layer.densities(c.atoms.numbers, neighbour_pairs(c.atoms, layer.cutoff)) for c in configs])
    np.testing.assert_allclose(shift, rho.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scale, rho.std(axis=0), rtol=1e-8)


# ---------------------------------------------------------------- files, calculator, CLI
def test_file_round_trip_calculator_and_damage(tmp_path, rng):
    import h5py

    from acehamil.calculators import ACECalculator
    from acehamil.io.potential_file import load_potential, save_potential

    pot, atoms = _setup("binary", rng)
    path = tmp_path / "ml.h5"
    save_potential(path, pot)
    with h5py.File(path, "r") as f:
        assert int(f.attrs["format_version"]) == 3 and f.attrs["model"] == "multilayer"
    back = load_potential(path)
    assert isinstance(back, MultilayerACEPotential) and back.layer.spec == pot.layer.spec
    a, b = pot.compute(atoms), back.compute(atoms)
    assert a["energy"] == b["energy"]
    np.testing.assert_array_equal(a["forces"], b["forces"])
    atoms.calc = ACECalculator.from_file(path)
    np.testing.assert_array_equal(atoms.get_forces(), a["forces"])
    assert atoms.get_stress().shape == (6,)
    for name in ("layer_weights", "message_scale"):
        save_potential(path, pot)
        with h5py.File(path, "r+") as f:
            f[name][0] = f[name][0] * (1 + 1e-9)
        with pytest.raises(ValueError, match="checksum"):
            load_potential(path)
    save_potential(path, pot)
    with h5py.File(path, "r+") as f:
        f.attrs["message_spec"] = f.attrs["message_spec"].replace('"n_pass": 3', '"n_pass": 4')
    with pytest.raises(ValueError, match="checksum"):
        load_potential(path)


def test_cli_fits_and_evaluates_a_multilayer_model(tmp_path, rng, capsys):
    import json

    from acehamil.cli import main
    from acehamil.io.potential_file import load_potential

    truth = _truth(rng, _basis())
    _write_train_xyz(tmp_path / "train.xyz", labelled(truth, rng, 6, "md"))
    cfg = tmp_path / "fit.toml"
    cfg.write_text(
        '[data]\ntrain = "train.xyz"\n[basis]\nr_cut = 4.0\nn_max = 3\nmax_nu = 2\nmax_degree = [4, 3]\n'
        "[fit]\nlam = [1e-12]\npower = [0.0]\nn_folds = 2\n"
        '[model]\nkind = "multilayer"\nn_message = 3\nn_pass = 3\nembeddings = ["identity", "fs"]\n'
    )
    out = tmp_path / "pot.h5"
    assert main(["fit-potential", str(cfg), "-o", str(out), "-q", "--report", str(tmp_path / "rep.json")]) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["model"] == "multilayer" and rep["message_spec"]["r_pass"] == 4.0 and rep["n_layer2_features"] > 0
    pot = load_potential(out)
    assert isinstance(pot, MultilayerACEPotential)
    capsys.readouterr()
    assert main(["evaluate-potential", str(out), str(tmp_path / "train.xyz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["force_mae_eV_per_A"] < 1e-3
    cfg.write_text(cfg.read_text().replace("n_pass = 3", "n_pass = 3\ndensity_max_degree = [4]"))
    assert main(["fit-potential", str(cfg), "-o", str(tmp_path / "x.h5"), "-q"]) != 0
    assert "density_max_degree" in capsys.readouterr().err


def test_blr_fit_stores_its_posterior_and_the_calculator_reads_it(tmp_path, rng):
    """fit-potential with solver = "blr" writes the calibrated posterior into the model file; it reloads
    bit for bit, the calculator reports sigma from it, and a damaged or foreign posterior is refused."""
    import h5py

    from acehamil.calculators import ACECalculator
    from acehamil.cli import main
    from acehamil.io.potential_file import load_posterior, load_potential, save_potential
    from acehamil.models.potential.uncertainty import predict_sigma

    truth = _truth(rng, _basis())
    _write_train_xyz(tmp_path / "train.xyz", labelled(truth, rng, 6, "md"), rng=rng, force_noise=0.01)
    cfg = tmp_path / "fit.toml"
    cfg.write_text(
        '[data]\ntrain = "train.xyz"\n[basis]\nr_cut = 4.0\nn_max = 3\nmax_nu = 2\nmax_degree = [4, 3]\n'
        '[fit]\nsolver = "blr"\npower = [0.0]\nn_folds = 2\nlayer_prior_factors = [1.0, 10.0]\n'
        '[model]\nkind = "multilayer"\nn_message = 3\nn_pass = 3\nembeddings = ["identity"]\n'
    )
    out = tmp_path / "pot.h5"
    assert main(["fit-potential", str(cfg), "-o", str(out), "-q"]) == 0
    pot, post = load_potential(out), load_posterior(out)
    assert isinstance(pot, MultilayerACEPotential) and post is not None
    assert post.cols.max() == pot.parameter_vector().size - 1 and post.scale > 0
    atoms = rattled_si(rng, amp=0.1)
    atoms.calc = ACECalculator.from_file(out, uncertainty=True)
    atoms.get_forces()
    ref = predict_sigma(pot, post, atoms)
    np.testing.assert_array_equal(atoms.calc.results["forces_sigma"], ref["forces_sigma"])
    assert np.all(ref["forces_sigma"] > 0) and ref["energy_sigma"] > 0
    # a file without a posterior: None, and the calculator asks for a BLR fit
    plain = tmp_path / "plain.h5"
    save_potential(plain, pot)
    assert load_posterior(plain) is None
    with pytest.raises(ValueError, match="no posterior"):
        ACECalculator.from_file(plain, uncertainty=True)
    with pytest.raises(ValueError, match="does not fit"):
        save_potential(tmp_path / "bad.h5", pot.linear, posterior=post)
    # damaged factor, or the posterior moved onto another model: refused
    with h5py.File(out, "r+") as f:
        f["posterior/factor"][0, 0] += 1e-9
    with pytest.raises(ValueError, match="posterior checksum"):
        load_posterior(out)
    save_potential(out, pot, posterior=post)
    other = MultilayerACEPotential(pot.basis, pot.species, pot.e0, pot.coef, pot.layer, 2 * pot.weights, pot.repulsion)
    save_potential(tmp_path / "other.h5", other)
    with h5py.File(out, "r") as src, h5py.File(tmp_path / "other.h5", "r+") as dst:
        src.copy("posterior", dst)
    with pytest.raises(ValueError, match="another model"):
        load_posterior(tmp_path / "other.h5")
    # the linear model's BLR fit stores its posterior too
    cfg.write_text(cfg.read_text().split("[model]")[0])
    assert main(["fit-potential", str(cfg), "-o", str(tmp_path / "lin.h5"), "-q"]) == 0
    lin, lpost = load_potential(tmp_path / "lin.h5"), load_posterior(tmp_path / "lin.h5")
    assert isinstance(lin, ACEPotential) and lpost.cols.max() == lin.parameter_vector().size - 1


@pytest.mark.slow
@pytest.mark.shared_data
def test_nve_energy_is_conserved_with_a_fitted_multilayer_model(shared_data):
    """64-atom Si from 1000 K, velocity Verlet at 1 fs (a shorter run than benchmarks/nve_drift.py's 2 ps):
    with exact forces the total energy drifts far below 1 meV/atom."""
    import sys
    from pathlib import Path

    from acehamil.io.labelled import read_configs
    from acehamil.models.potential.config import core_repulsion, make_basis

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from nve_drift import run_nve

    train = read_configs(shared_data / "mlearn" / "Si_training.xyz", index="::10")
    basis = make_basis((14,), r_cut=4.5, n_max=5, max_nu=2, max_degree=(6, 6))
    res = fit_multilayer(train, basis, (14,), FitSettings(lam=(1e-6,), power=(0.0,), n_folds=1),
                         MessageSpec(n_message=4, r_message=4.5, n_pass=4, r_pass=4.5), core_repulsion(train, (14,)))
    t, etot, epot, temp = run_nve(res.potential, steps=400, every=10)
    drift = np.polyfit(np.asarray(t), np.asarray(etot), 1)[0] * (t[-1] - t[0]) * 1e3
    assert abs(drift) < 1.0 and np.ptp(etot) * 1e3 < 5.0, (drift, np.ptp(etot))
    assert np.ptp(epot) * 1e3 > 10.0  # the atoms really moved

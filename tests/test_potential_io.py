"""Potential files, the ASE calculator, the fitting pipeline and the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator

from acehamil.calculators import ACECalculator
from acehamil.io.potential_file import load_potential, save_potential
from acehamil.models.potential.model import ACEPotential, feature_degrees
from acehamil.models.potential.config import make_basis
from acehamil.io.labelled import read_configs
from acehamil.models.potential.data import Config, config_from_atoms, error_metrics
from acehamil.models.potential.fit import FitSettings, fit_potential
from acehamil.models.potential.repulsion import RepulsionSpec


def _small_potential(rng, species=(14,), repulsion=None):
    basis = make_basis(species, r_cut=4.0, n_max=4, max_nu=3, max_degree=(4, 4, 3))
    nB = len(feature_degrees(basis))
    return ACEPotential(basis, species, rng.normal(size=len(species)), 0.1 * rng.normal(size=(len(species), nB)), repulsion,
                        {"note": "test"})


def _si(rng, amp=0.1):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += amp * rng.normal(size=atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("with_repulsion", [False, True])
def test_file_round_trip_is_bit_identical(tmp_path, rng, with_repulsion):
    rep = RepulsionSpec((((14, 14), 1.9),), 7.0) if with_repulsion else None
    pot = _small_potential(rng, repulsion=rep)
    path = tmp_path / "pot.h5"
    save_potential(path, pot)
    back = load_potential(path)
    assert back.species == pot.species and back.repulsion == pot.repulsion
    assert back.metadata == {"note": "test"}
    assert np.array_equal(back.coef, pot.coef) and np.array_equal(back.e0, pot.e0)
    atoms = _si(rng)
    a, b = pot.compute(atoms), back.compute(atoms)
    assert a["energy"] == b["energy"]
    assert np.array_equal(a["forces"], b["forces"]) and np.array_equal(a["stress"], b["stress"])


@pytest.mark.parametrize("damage", ["coef", "kind", "version", "truncate", "basis", "canary"])
def test_corrupted_or_incompatible_files_are_refused(tmp_path, rng, damage):
    pot = _small_potential(rng)
    path = tmp_path / "pot.h5"
    save_potential(path, pot)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        match = "not a readable HDF5|corrupted"
    else:
        with h5py.File(path, "r+") as f:
            if damage == "coef":
                f["coef"][0, 0] += 1e-9
                match = "checksum"
            elif damage == "kind":
                f.attrs["acehamil_kind"] = "hamiltonian_model"
                match = "expected 'ace_potential'"
            elif damage == "version":
                f.attrs["format_version"] = 99
                match = "format version 99"
            elif damage == "canary":  # as if the basis engine had changed numerically
                f["canary_features"][0, -1] *= 1.001
                match = "different features"
            else:
                spec = json.loads(f.attrs["basis_spec"])
                spec["radial"]["n_max"] = 5
                f.attrs["basis_spec"] = json.dumps(spec)
                match = "incompatible basis"
    with pytest.raises(ValueError, match=match):
        load_potential(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_potential(tmp_path / "nope.h5")


@pytest.mark.parametrize("periodic", [True, False])
def test_calculator_properties(rng, periodic):
    pot = _small_potential(rng, repulsion=RepulsionSpec((((14, 14), 1.9),), 5.0))
    atoms = _si(rng) if periodic else Atoms("Si5", positions=rng.normal(size=(5, 3)) * 1.5)
    atoms.calc = ACECalculator(pot)
    e = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == e
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), e, rtol=1e-12)
    assert atoms.get_forces().shape == (len(atoms), 3)
    if periodic:
        from ase.calculators.fd import calculate_numerical_stress

        num = calculate_numerical_stress(atoms, eps=1e-5)  # ASE's own sign convention
        np.testing.assert_allclose(atoms.get_stress(), num, atol=1e-7)
    else:
        with pytest.raises(PropertyNotImplementedError):
            atoms.get_stress()


def test_calculator_rejects_non_potential():
    with pytest.raises(TypeError, match="ACEPotential"):
        ACECalculator(object())


def _labelled(truth, rng, n, config_type, stress=False):
    out = []
    for _ in range(n):
        atoms = _si(rng, amp=0.15)
        atoms.set_cell(atoms.cell.array * (1 + 0.02 * rng.normal()), scale_atoms=True)
        res = truth.compute(atoms)
        extra = {"stress": res["stress"]} if stress else {}
        atoms.calc = SinglePointCalculator(atoms, energy=res["energy"], forces=res["forces"], **extra)
        atoms.info["config_type"] = config_type
        out.append(atoms)
    return out


def test_fit_recovers_a_known_potential_and_cli_round_trip(tmp_path, rng, capsys):
    """Data generated by a potential of the same form is fitted to ~zero error; then via the CLI."""
    import ase.io

    from acehamil.cli import main

    truth = _small_potential(rng)
    frames = _labelled(truth, rng, 16, "md") + _labelled(truth, rng, 6, "strain", stress=True)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    configs = read_configs(tmp_path / "train.xyz")
    settings = FitSettings(lam=(1e-12, 1e-6), power=(0.0,), n_folds=3, energy_sigma=1e-3, force_sigma=1e-2)
    res = fit_potential(configs, truth.basis, truth.species, settings)
    assert res.chosen["lam"] == 1e-12
    m = error_metrics(res.potential, configs)
    assert m["all"]["energy_mae_meV_per_atom"] < 0.05 and m["all"]["force_mae_eV_per_A"] < 1e-3
    assert set(m) == {"all", "md", "strain"}
    assert m["strain"]["stress_rmse_eV_per_A3"] < 1e-5
    assert configs[-1].stress is not None
    assert set(res.cv_by_type) == {"all", "md", "strain"} and res.cv_by_type["all"]["nconfigs"] == len(configs)
    assert res.cv_by_type["all"]["energy_max_abs_meV_per_atom"] < 0.5
    blr = fit_potential(configs, truth.basis, truth.species, FitSettings(solver="blr", power=(0.0, 1.0), n_folds=3))
    assert blr.chosen["lam"] is None and len(blr.cv) == 2 and blr.info["beta"] > 0
    assert error_metrics(blr.potential, configs)["all"]["force_mae_eV_per_A"] < 1e-2

    cfg = tmp_path / "fit.toml"
    cfg.write_text(
        '[data]\ntrain = "train.xyz"\n[basis]\nr_cut = 4.0\nn_max = 4\nmax_nu = 3\nmax_degree = [4, 4, 3]\n'
        "[fit]\nlam = [1e-12]\npower = [0.0]\nn_folds = 2\n"
    )
    out = tmp_path / "pot.h5"
    assert main(["fit-potential", str(cfg), "-o", str(out), "-q", "--report", str(tmp_path / "rep.json")]) == 0
    assert "training-set cross-validation" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "rep.json").read_text())["cv_by_type"]) == {"all", "md", "strain"}
    assert main(["evaluate-potential", str(out), str(tmp_path / "train.xyz"), "--json"]) == 0


def test_cli_evaluate_json_keys(tmp_path, rng, capsys):
    import ase.io

    from acehamil.cli import main

    truth = _small_potential(rng)
    ase.io.write(tmp_path / "t.xyz", _labelled(truth, rng, 3, "md"), format="extxyz")
    save_potential(tmp_path / "p.h5", truth)
    assert main(["evaluate-potential", str(tmp_path / "p.h5"), str(tmp_path / "t.xyz"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"energy_mae_meV_per_atom", "energy_rmse_meV_per_atom", "force_mae_eV_per_A", "force_rmse_eV_per_A", "nconfigs"} <= set(out)
    assert out["nconfigs"] == 3 and out["energy_mae_meV_per_atom"] < 1e-3  # extxyz print precision


def test_bad_config_is_reported(tmp_path, capsys):
    from acehamil.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[data]\ntrain = "x.xyz"\n[fit]\nbogus = 1\n')
    assert main(["fit-potential", str(cfg), "-o", str(tmp_path / "p.h5")]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.shared_data
def test_pipeline_on_a_subset_of_si_training_data(shared_data, tmp_path):
    """End to end on 24 real Si structures: a tiny model fits and predicts held-out structures sensibly."""
    configs = read_configs(shared_data / "mlearn" / "Si_training.xyz", index="::8")
    train, held = configs[::2], configs[1::2]
    basis = make_basis((14,), r_cut=4.5, n_max=5, max_nu=2, max_degree=(6, 6))
    res = fit_potential(train, basis, (14,), FitSettings(lam=(1e-8, 1e-5), power=(0.0,), n_folds=3))
    m = error_metrics(res.potential, held)["all"]
    assert m["energy_mae_meV_per_atom"] < 100 and m["force_mae_eV_per_A"] < 0.5


def test_core_repulsion_radius_stays_below_training_distances(rng):
    from acehamil.models.potential.config import core_repulsion
    from acehamil.models.potential.data import config_from_atoms

    frames = []
    for atoms in _labelled(_small_potential(rng), rng, 4, "md"):
        frames.append(config_from_atoms(atoms))
    rep = core_repulsion(frames, (14,), fraction=0.8)
    shortest = min(float(np.min(c.atoms.get_all_distances(mic=True)[np.triu_indices(len(c.atoms), 1)])) for c in frames)
    (pair, r), = rep.r_core
    assert pair == (14, 14)
    assert r <= 0.95 * shortest + 1e-12 and r <= 0.8 * 2.36


def test_config_from_atoms_requires_energy():
    from acehamil.models.potential.data import config_from_atoms

    with pytest.raises(ValueError, match="no energy"):
        config_from_atoms(Atoms("Si", positions=[[0, 0, 0]]))


def test_cv_energy_errors_are_held_out_predictions(rng):
    """Each configuration's CV error comes from the fit on the other folds, not the full fit."""
    from acehamil.models.potential.fit import _columns, accumulate, cv_energy_errors, solve

    truth = _small_potential(rng)
    frames = _labelled(truth, rng, 9, "md")
    configs = [config_from_atoms(a) for a in frames]
    # corrupt one energy: in-sample it is partly absorbed, held out it shows in full
    bad = 4
    configs[bad] = Config(configs[bad].atoms, configs[bad].energy + 0.05 * configs[bad].natoms, configs[bad].forces,
                          None, "md", 1.0)
    settings = FitSettings(lam=(1e-10,), power=(0.0,), n_folds=3, force_sigma=1e-2)
    acc = accumulate(truth.basis, truth.species, configs, settings)
    chosen = {"shift": 0, "energy_factor": 1.0, "power": 0.0, "lam": 1e-10}
    err = cv_energy_errors(acc, truth.basis, truth.species, settings, chosen)
    held = acc.folds == acc.folds[bad]
    cols, degs = _columns(truth.basis, truth.species, 0)
    theta, _ = solve(acc, settings, cols, degs, 1, 0.0, 1e-10, train=~held)
    np.testing.assert_allclose(err[held], acc.energy_rows[held] @ theta - acc.energy_targets[held], atol=1e-12)
    assert abs(err[bad] + 0.05) < 2e-3  # the clean model predicts the uncorrupted energy
    full, _ = solve(acc, settings, cols, degs, 1, 0.0, 1e-10)
    assert abs(acc.energy_rows[bad] @ full - acc.energy_targets[bad]) < abs(err[bad])


def test_info_summarises_a_potential_file_and_refuses_a_damaged_one(tmp_path, rng, capsys):
    """``acehamil info`` reads potential files (it read only datasets and H/S models): species, basis,
    E0 from the loaded potential, and refuses a file whose coefficients no longer match the checksum."""
    from acehamil.cli import main

    rep = RepulsionSpec((((14, 14), 1.9),), 7.0)
    pot = _small_potential(rng, repulsion=rep)
    path = tmp_path / "pot.h5"
    save_potential(path, pot)
    assert main(["info", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "ace_potential" and s["model"] == "linear" and s["species"] == ["Si"]
    assert s["r_cut_A"] == 4.0 and s["max_nu"] == 3 and s["n_features"] == pot.coef.shape[1]
    assert s["e0_eV"] == {"Si": float(pot.e0[0])} and s["repulsion"] is True and s["posterior"] is False
    assert s["fit"] == {"note": "test"}
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "linear ACE site-energy potential for Si" in text and "r_cut 4 A" in text
    with h5py.File(path, "r+") as f:
        f["coef"][0, 0] += 1.0
    assert main(["info", str(path)]) != 0
    assert "checksum" in capsys.readouterr().err.lower()

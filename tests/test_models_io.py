"""Model files: save -> load -> predict bit for bit; corrupted or mismatched files fail clearly.
Also the TOML configuration and the fit report."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase.build import bulk

from acehamil.io.models import load_model, save_model
from acehamil.io.config import read_model_config
from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.fit import fit
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

TINY = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 2, "max_degree": [4, 3], "n_max": 3},
    "h_offsite": {"r_cut": 4.0, "r_env": 1.5, "max_nu": 2, "max_degree": [6, 3], "n_max": 5},
    "s_offsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [8], "n_max": 8},
}


def _data(rng, n=3):
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for _ in range(n):
        at = bulk("Si", "diamond", a=5.43, cubic=True)
        at.rattle(0.1, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(H,), S=S))
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    rng = np.random.default_rng(7)
    data = _data(rng)
    cfg = ModelConfig.from_dict({**TINY, "solver": {"method": "blr"}, "fit": {"validation_fraction": 0.34}})
    model = fit(data, cfg, progress=False)
    path = tmp_path_factory.mktemp("model") / "model.h5"
    save_model(model, path)
    return model, path, data


def test_save_load_predict_bit_identical(fitted):
    model, path, data = fitted
    loaded = load_model(path)
    atoms = data[0].atoms
    for a, b in zip(model.predict(atoms), loaded.predict(atoms)):
        assert a.same_pattern(b)
        assert np.array_equal(a.data, b.data)
    assert loaded.config == model.config
    # the BLR posterior travels with the model
    key = next(iter(model.H.posteriors))
    L = next(iter(model.H.posteriors[key]))
    np.testing.assert_array_equal(loaded.H.posteriors[key][L].covariance(), model.H.posteriors[key][L].covariance())


def test_bond_decay_model_round_trip(fitted, tmp_path):
    """A model whose bond radial functions decay (``h_offsite.bond_decay``) saves, loads and predicts
    bit for bit; the decay is part of the stored basis spec."""
    _, _, data = fitted
    cfg = ModelConfig.from_dict({**TINY, "h_offsite": {**TINY["h_offsite"], "bond_decay": 1.2}})
    model = fit(data, cfg, progress=False)
    save_model(model, tmp_path / "decay.h5")
    loaded = load_model(tmp_path / "decay.h5")
    assert loaded.config.h_offsite.bond_decay == 1.2
    assert loaded.H.offsite[0].basis.spec.radial.decays == ((14, -1, 1.2),)
    for a, b in zip(model.predict(data[1].atoms), loaded.predict(data[1].atoms)):
        assert np.array_equal(a.data, b.data)


def test_fit_report_has_per_block_statistics(fitted):
    model, _, _ = fitted
    rep = model.report
    assert rep["validation_structures"] and rep["train_structures"]
    assert not set(rep["validation_structures"]) & set(rep["train_structures"])
    for key, st in rep["H"].items():
        assert st["n_blocks"] > 0
        assert np.isfinite(st["train_rmse"]) and st["condition_number"] >= 1.0
        assert "val_rmse" in st and "val_mae" in st and st["val_mae"] <= st["val_rmse"] + 1e-12
    assert rep["H_validation"]["rmse"] < 50.0  # meV; toy s/p model, tiny basis


def _copy(path, tmp_path, name="copy.h5"):
    out = tmp_path / name
    out.write_bytes(path.read_bytes())
    return out


def test_corrupted_coefficient_fails_checksum(fitted, tmp_path):
    _, path, _ = fitted
    bad = _copy(path, tmp_path)
    with h5py.File(bad, "r+") as f:
        ds = []
        f["H/coefficients"].visititems(lambda n, o: ds.append(o) if isinstance(o, h5py.Dataset) else None)
        ds[0][0] = ds[0][0] + 1e-9
    with pytest.raises(ValueError, match="checksum"):
        load_model(bad)


def test_mismatched_basis_spec_fails(fitted, tmp_path):
    _, path, _ = fitted
    bad = _copy(path, tmp_path)
    with h5py.File(bad, "r+") as f:
        specs = json.loads(f.attrs["basis_specs"])
        fam = next(k for k, v in specs["H"].items() if v)
        specs["H"][fam]["radial"]["envelope_power"] = 3
        f.attrs["basis_specs"] = json.dumps(specs)
    with pytest.raises(ValueError, match="incompatible"):
        load_model(bad)


def test_wrong_version_kind_and_truncation_fail(fitted, tmp_path):
    _, path, _ = fitted
    bad = _copy(path, tmp_path, "version.h5")
    with h5py.File(bad, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        load_model(bad)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["acehamil_kind"] = "dataset"
    with pytest.raises(ValueError, match="expected 'hamiltonian_model'"):
        load_model(other)
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError):
        load_model(trunc)
    missing = _copy(path, tmp_path, "missing.h5")
    with h5py.File(missing, "r+") as f:
        del f["S"]
    with pytest.raises(ValueError, match="corrupt"):
        load_model(missing)


def test_toml_config_defaults_and_errors(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[data]\ntrain = "d.h5"\ntest = [3]\n[h_offsite]\nr_env = 0.0\nmax_nu = 1\nmax_degree = [12]\n[solver]\nmethod = "blr"\n')
    cfg = read_model_config(p)
    assert cfg.h_offsite.max_nu == 1 and cfg.solver.method == "blr"
    assert cfg.h_onsite == ModelConfig().h_onsite  # untouched tables keep defaults
    assert cfg.data.train == str(tmp_path / "d.h5") and cfg.data.test == (3,)
    p.write_text("[h_offsite]\nr_cutoff = 5.0\n")
    with pytest.raises(ValueError, match="unknown keys"):
        read_model_config(p)
    p.write_text("[solver]\nmethod = 'lasso'\n")
    with pytest.raises(ValueError, match="ridge"):
        read_model_config(p)
    p.write_text("[fit\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        read_model_config(p)
    with pytest.raises(ValueError, match="both train and test"):
        ModelConfig.from_dict({"data": {"structures": [1, 2], "test": [2]}})


def test_energy_zero_round_trip_and_checksum(fitted, tmp_path):
    import dataclasses

    from acehamil.models.hamiltonian.model import EnergyZero

    model, _, data = fitted
    ez = dataclasses.replace(model, energy_zero=EnergyZero(v0=-0.5, beta=((14, 10.0),)))
    bonds = dataclasses.replace(model, energy_zero=EnergyZero(v0=-0.5, beta=((14, 10.0),), gamma=((14, 3.0),)))
    save_model(bonds, tmp_path / "bonds.h5")  # the bond law (energy_zero_model = "bonds") round-trips too
    assert load_model(tmp_path / "bonds.h5").energy_zero == bonds.energy_zero
    np.testing.assert_array_equal(load_model(tmp_path / "bonds.h5").predict(data[0].atoms)[0].data,
                                  bonds.predict(data[0].atoms)[0].data)
    path = tmp_path / "ez.h5"
    save_model(ez, path)
    loaded = load_model(path)
    assert loaded.energy_zero == ez.energy_zero
    np.testing.assert_array_equal(loaded.predict(data[0].atoms)[0].data, ez.predict(data[0].atoms)[0].data)
    with h5py.File(path, "r+") as f:
        f.attrs["energy_zero"] = json.dumps(EnergyZero(v0=-0.4, beta=((14, 10.0),)).to_dict())
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


def test_config_train_list_resolves_every_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[data]\ntrain = ["a.h5", "/abs/b.h5"]\n')
    assert read_model_config(p).data.train == (str(tmp_path / "a.h5"), "/abs/b.h5")
    p.write_text('[data]\ntrain = ["a.h5"]\n')
    assert read_model_config(p).data.train == str(tmp_path / "a.h5")
    with pytest.raises(ValueError, match=r"train\[1\] must be a string"):
        ModelConfig.from_dict({"data": {"train": ["a.h5", 2]}})

"""Fitting: sampling cap, structure weights, batching invariance, BLR posterior, equivalence of the
per-L decomposition with a direct block least-squares fit."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.fit import fit
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

CFG = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [4], "n_max": 3},
    "h_offsite": {"r_cut": 4.0, "r_env": 1.5, "max_nu": 2, "max_degree": [6, 3], "n_max": 5},
    "s_offsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [6], "n_max": 6},
    "solver": {"lam": 1e-10},
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for k in range(4):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k)) * (2, 1, 1)
        at.rattle(0.1, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(H,), S=S))
    return out


def _coefs(model):
    return {(n, k, L): c for n, mm in (("H", model.H), ("S", model.S)) for k, byL in mm.coefficients.items() for L, c in byL.items()}


def test_batching_does_not_change_the_fit(data):
    a = fit(data, ModelConfig.from_dict({**CFG, "fit": {"batch_structures": 1}}), progress=False)
    b = fit(data, ModelConfig.from_dict({**CFG, "fit": {"batch_structures": 8}}), progress=False)
    ca, cb = _coefs(a), _coefs(b)
    assert ca.keys() == cb.keys()
    for k in ca:
        np.testing.assert_allclose(ca[k], cb[k], rtol=1e-8, atol=1e-10)


def test_zero_weight_equals_leaving_the_structure_out(data):
    a = fit(data, ModelConfig.from_dict(CFG), progress=False, weights=[1.0, 1.0, 1.0, 0.0])
    b = fit(data[:3], ModelConfig.from_dict(CFG), progress=False)
    ca, cb = _coefs(a), _coefs(b)
    for k in ca:
        np.testing.assert_allclose(ca[k], cb[k], rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="one weight per structure"):
        fit(data, ModelConfig.from_dict(CFG), progress=False, weights=[1.0])


def test_kind_weight_zero_leaves_the_kind_out_of_a_blr_fit(data):
    """A kind at weight 0 is not fitted at all: with BLR (whose noise estimate counts data rows) and the
    energy-zero fit (one unknown per structure) the model equals the fit without those structures."""
    from dataclasses import replace

    labelled = [replace(sd, info={**sd.info, "kind": "skip" if k == 1 else "keep"}) for k, sd in enumerate(data)]
    cfg = {**CFG, "solver": {"method": "blr", "lam": 1e-10}, "fit": {"fit_energy_zero": True}}
    a = fit(labelled, ModelConfig.from_dict({**cfg, "fit": {**cfg["fit"], "kind_weights": {"skip": 0.0}}}), progress=False)
    b = fit([labelled[k] for k in (0, 2, 3)], ModelConfig.from_dict(cfg), progress=False)
    assert a.report["train_structures"] == [0, 2, 3]
    ca, cb = _coefs(a), _coefs(b)
    for k in ca:
        np.testing.assert_allclose(ca[k], cb[k], rtol=1e-7, atol=1e-9)
    for key, byL in a.H.posteriors.items():
        for L, post in byL.items():
            assert post.beta == pytest.approx(b.H.posteriors[key][L].beta, rel=1e-7)
    with pytest.raises(ValueError, match="weight 0"):
        fit(labelled, ModelConfig.from_dict({**CFG, "fit": {"kind_weights": {"skip": 0.0, "keep": 0.0}}}), progress=False)


@pytest.mark.parametrize("cap", [40, 100])
def test_sampling_cap_per_block_type(data, cap):
    model = fit(data, ModelConfig.from_dict({**CFG, "fit": {"max_blocks_per_type": cap, "seed": 3}}), progress=False)
    for key, st in model.report["H"].items():
        # Bernoulli sampling at rate cap/count: the expected count is cap
        assert st["n_blocks"] <= 1.6 * cap + 10, (key, st["n_blocks"])
    rates = model.report["H_sampling_rates"]
    assert rates["offsite/14-14"] < 1.0


def test_blr_keeps_a_posterior_and_predicts_like_ridge(data):
    ridge = fit(data, ModelConfig.from_dict(CFG), progress=False)
    blr = fit(data, ModelConfig.from_dict({**CFG, "solver": {"method": "blr"}}), progress=False)
    assert blr.H.posteriors
    post = next(iter(next(iter(blr.H.posteriors.values())).values()))
    cov = post.covariance()
    assert np.all(np.linalg.eigvalsh(0.5 * (cov + cov.T)) > -1e-12)
    Hr, _ = ridge.predict(data[0].atoms)
    Hb, _ = blr.predict(data[0].atoms)
    scale = np.abs(Hr.data).max()
    assert np.abs(Hr.data - Hb.data).max() < 0.05 * scale


def test_per_L_fit_equals_direct_block_least_squares(data):
    """The sum of the L problems is the least-squares fit of the whole blocks: compare with a
    direct fit of one block type built from the assembled design."""
    from acehamil.models.hamiltonian.blocks import BlockType
    from acehamil.models.hamiltonian.model import HamiltonianModel
    from acehamil.models.hamiltonian.family import symmetrise
    from acehamil.models.hamiltonian.sums import family_centres, targets
    from acehamil.models.hamiltonian.model import shell_offsets
    from acehamil.so3 import cg_real
    from acehamil.structure.neighbours import neighbour_pairs

    cfg = ModelConfig.from_dict({**CFG, "solver": {"lam": 0.0}})
    model = fit(data, cfg, progress=False)
    mm = model.H
    fam = next(f for f in mm.offsite)
    bt = BlockType("offsite", 14, 14, 0, 1, 0, 1)
    rows, ys = [], []
    rng = np.random.default_rng(0)
    for sd in data:
        nl = neighbour_pairs(sd.atoms, mm.reach)
        env, rev = family_centres(fam, sd.atoms, nl, 1.0, rng)
        feats = fam.features(env)
        design = symmetrise(fam, bt, fam.design(feats, bt, env.n_centres), rev)
        # full block design: (n, 1, 3, nF) -> rows per block entry
        cols = [np.einsum("abM,nfM->nabf", cg_real(0, 1, L), D) for L, D in sorted(design.items())]
        rows.append(np.concatenate(cols, axis=-1).reshape(-1, sum(c.shape[-1] for c in cols)))
        ys.append(targets(bt, env, sd.H[0], shell_offsets(mm.orbital_basis)).reshape(-1))
    A, y = np.concatenate(rows), np.concatenate(ys)
    direct = np.linalg.lstsq(A, y, rcond=None)[0]
    mine = np.concatenate([mm.coefficients[bt.key][L] for L in sorted(mm.coefficients[bt.key])])
    np.testing.assert_allclose(A @ mine, A @ direct, atol=1e-8 * np.abs(y).max())
    assert isinstance(model, HamiltonianModel)


def test_energy_zero_fit_recovers_per_structure_shifts(data):
    """H_s + V_s S_s (a per-structure energy zero, as in periodic DFT) is fitted modulo V_s S_s."""
    rng = np.random.default_rng(5)
    V = rng.normal(scale=0.3, size=len(data))
    shifted = [StructureData(sd.atoms, sd.basis, H=(sd.H[0].with_data(sd.H[0].data + v * sd.S.data),), S=sd.S)
               for sd, v in zip(data, V)]
    assert all(sd.H[0].same_pattern(sd.S) for sd in data)
    cfg = {**CFG, "fit": {"fit_energy_zero": True}}
    model = fit(shifted, ModelConfig.from_dict(cfg), progress=False)
    got = np.array([model.report["energy_zero_eV"][k] for k in range(len(data))])
    # V is determined up to what volume-dependent local terms can mimic (the cells differ in volume)
    np.testing.assert_allclose(got, V - V.mean(), atol=1e-2)
    plain = fit(shifted, ModelConfig.from_dict(CFG), progress=False)
    from acehamil.models.hamiltonian.evaluate import block_errors

    aligned = block_errors(model, shifted, "H")
    assert aligned["rmse_aligned"] < 0.5 * block_errors(plain, shifted, "H")["rmse_aligned"]
    np.testing.assert_allclose(aligned["energy_zero_eV"], V - V.mean(), atol=1e-2)


def test_density_energy_zero_recovers_two_species(rng):
    """V_s = v0 + sum_Z beta_Z N_Z / Omega is recovered exactly from exact energy zeros."""
    from ase import Atoms

    from acehamil.models.hamiltonian.fit import fit_density_energy_zero

    cells = []
    for _ in range(6):
        n6, n14 = rng.integers(1, 5, size=2)
        cells.append(Atoms(numbers=[6] * n6 + [14] * n14, positions=rng.random((n6 + n14, 3)),
                           cell=np.diag(rng.uniform(4.0, 7.0, 3)), pbc=True))
    cluster = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 2.3]])
    truth = {"v0": -0.7, 6: 11.0, 14: 19.0}
    V = np.array([truth["v0"] + sum(truth[z] * np.count_nonzero(c.numbers == z) / c.get_volume() for z in (6, 14)) for c in cells])
    ez, summary = fit_density_energy_zero(cells + [cluster], np.append(V, 5.0), [6, 14])  # the cluster is left out
    assert ez.v0 == pytest.approx(truth["v0"], abs=1e-9)
    assert dict(ez.beta) == pytest.approx({6: 11.0, 14: 19.0}, abs=1e-8)
    assert summary["n_cells"] == 6 and summary["rms_after_meV"] < 1e-6
    assert ez.value(cluster) == 0.0
    for c, v in zip(cells, V):
        assert ez.value(c) == pytest.approx(v, abs=1e-12)


def test_energy_zero_shifts_every_eigenvalue_of_periodic_cells_only(data):
    """The model's energy zero adds V S to H: every generalized eigenvalue moves by exactly V; clusters unchanged."""
    import dataclasses

    from ase import Atoms

    from acehamil.models.hamiltonian.model import EnergyZero
    from acehamil.tb.eigen import solve

    model = fit(data[:2], ModelConfig.from_dict(CFG), progress=False)
    shifted = dataclasses.replace(model, energy_zero=EnergyZero(v0=0.2, beta=((14, 9.0),)))
    at = data[3].atoms
    V = shifted.energy_zero.value(at)
    assert V == pytest.approx(0.2 + 9.0 * len(at) / at.get_volume())
    (H0, S0), (H1, S1) = model.predict(at), shifted.predict(at)
    np.testing.assert_array_equal(S0.data, S1.data)
    np.testing.assert_allclose(H1.data - H0.data, V * S0.data, atol=1e-14)
    k = np.array([[0.0, 0.0, 0.0], [0.25, 0.1, 0.5]])
    np.testing.assert_allclose(solve(H1, S1, k), solve(H0, S0, k) + V, atol=1e-10)
    cluster = Atoms("Si3", positions=[[0, 0, 0], [0, 0, 2.35], [0, 2.2, 0.8]])
    np.testing.assert_array_equal(model.predict(cluster)[0].data, shifted.predict(cluster)[0].data)


def test_density_energy_zero_fit_lowers_the_absolute_error(data):
    """Energy zeros that follow the atomic density (as in periodic DFT) are learned and predicted."""
    from acehamil.models.hamiltonian.energy_zero import EnergyZero
    from acehamil.models.hamiltonian.evaluate import block_errors

    V = np.array([-0.9 + 19.0 * len(sd.atoms) / sd.atoms.get_volume() for sd in data])
    shifted = [StructureData(sd.atoms, sd.basis, H=(sd.H[0].with_data(sd.H[0].data + v * sd.S.data),), S=sd.S)
               for sd, v in zip(data, V)]
    base = {**CFG, "fit": {"fit_energy_zero": True}}
    plain = fit(shifted[:3], ModelConfig.from_dict(base), progress=False)
    dens = fit(shifted[:3], ModelConfig.from_dict({**CFG, "fit": {"fit_energy_zero": True, "energy_zero_model": "density"}}),
               progress=False)
    assert plain.energy_zero is None and dens.energy_zero is not None
    assert dens.report["energy_zero_model"]["n_cells"] == 3
    e_plain, e_dens = block_errors(plain, shifted, "H"), block_errors(dens, shifted, "H")
    assert e_dens["rmse"] < 0.7 * e_plain["rmse"]  # (the local model absorbs part of the trend within the cells)
    # alignment removes the energy zero from both: the local models are the same
    assert e_dens["rmse_aligned"] == pytest.approx(e_plain["rmse_aligned"], rel=1e-3)  # (up to V (S_model - S_ref))
    # the bond law through the fit: its report gives gamma, and the model's zero is that law's
    bonds = fit(shifted[:3], ModelConfig.from_dict({**CFG, "fit": {"fit_energy_zero": True, "energy_zero_model": "bonds"}}),
                progress=False)
    rep = bonds.report["energy_zero_model"]
    assert set(rep["gamma_eV_A3_per_bond_end"]) == {"14"} and rep["n_cells"] == 3
    assert bonds.energy_zero == EnergyZero.from_dict(rep)
    assert rep["rms_after_meV"] <= dens.report["energy_zero_model"]["rms_after_meV"] + 1e-9  # one more column
    with pytest.raises(ValueError, match="needs fit_energy_zero"):
        ModelConfig.from_dict({"fit": {"energy_zero_model": "density"}})
    with pytest.raises(ValueError, match="must be one of 'none', 'density', 'bonds'"):
        ModelConfig.from_dict({"fit": {"fit_energy_zero": True, "energy_zero_model": "volume"}})


def test_kind_weights_equal_the_matching_structure_weights(data):
    """``kind_weights`` weight every structure of a kind (info["kind"]) as the same per-structure weights do,
    multiply ``structure_weights``, and change the fit."""
    from dataclasses import replace

    labelled = [replace(sd, info={**sd.info, "kind": "hot" if k % 2 else "cold"}) for k, sd in enumerate(data)]
    by_kind = fit(labelled, ModelConfig.from_dict({**CFG, "fit": {"kind_weights": {"hot": 0.25}}}), progress=False)
    by_structure = fit(labelled, ModelConfig.from_dict({**CFG, "fit": {"structure_weights": [1, 0.25, 1, 0.25]}}), progress=False)
    both = fit(labelled, ModelConfig.from_dict({**CFG, "fit": {"structure_weights": [1, 2, 1, 2], "kind_weights": {"hot": 0.125}}}),
               progress=False)
    plain = fit(labelled, ModelConfig.from_dict(CFG), progress=False)
    a, b, c, p = _coefs(by_kind), _coefs(by_structure), _coefs(both), _coefs(plain)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c[key], b[key], rtol=1e-9, atol=1e-12)
    assert max(np.abs(a[k] - p[k]).max() for k in a) > 1e-8
    cfg = ModelConfig.from_dict({**CFG, "fit": {"kind_weights": {"b": 2, "a": 0.5}}})
    assert cfg.fit.kind_weights == (("a", 0.5), ("b", 2.0))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg  # model files store the config as JSON
    with pytest.raises(ValueError, match="kind_weights"):
        ModelConfig.from_dict({**CFG, "fit": {"kind_weights": {"a": -1.0}}})
    with pytest.raises(ValueError, match="kind_weights"):  # a UserError naming the key
        ModelConfig.from_dict({**CFG, "fit": {"kind_weights": {"a": "heavy"}}})


def test_kind_weights_read_from_a_toml_inline_table(tmp_path):
    from acehamil.io.config import read_model_config

    path = tmp_path / "w.toml"
    path.write_text('[fit]\nkind_weights = { "si15-vacancy" = 0.5, "si8" = 2 }\n')
    assert read_model_config(path).fit.kind_weights == (("si15-vacancy", 0.5), ("si8", 2.0))
    path.write_text('[fit]\nkind_weights = { "si8" = -2 }\n')
    with pytest.raises(ValueError, match="w.toml.*kind_weights"):
        read_model_config(path)


def test_training_structures_are_checked_in_the_counting_tasks_on_any_engine(data):
    """The full check of each training structure (atoms, Hermitian H and S, S(Gamma)) runs in the fit's counting
    tasks (beside the next structure's on a thread engine): a broken structure is refused naming it, on two
    threads as serially, and each structure is checked once per fit."""
    from dataclasses import replace

    import acehamil.models.hamiltonian.training_set as training_set
    from acehamil.errors import UserError
    from acehamil.threads import thread_mapper

    H = data[2].H[0]
    p = int(np.nonzero(H.i != H.j)[0][0])
    bad = H.data.copy()
    bad[H.offsets[p]:H.offsets[p + 1]] *= 1.5
    broken = [data[0], data[1], replace(data[2], H=(H.with_data(bad),), info={"name": "broken"})]
    cfg = ModelConfig.from_dict(CFG)
    for mapper in (None, thread_mapper(2)):
        with pytest.raises(UserError, match=r"training structure 2 \('broken'\): H \(spin 0\) is not Hermitian"):
            fit(broken, cfg, progress=False, mapper=mapper)
    seen = []
    real = training_set.check_training_structure

    def counting(sd, where):
        seen.append(where)
        real(sd, where)

    training_set.check_training_structure = counting
    try:
        fit(data[:2], cfg, progress=False, mapper=thread_mapper(2))
    finally:
        training_set.check_training_structure = real
    assert sorted(seen) == ["training structure 0 ('?')", "training structure 1 ('?')"]

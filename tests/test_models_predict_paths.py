"""Every path that predicts H from a model gives the same H: the local blocks plus the cell's
energy zero ``V S`` (one entry point, :meth:`HamiltonianModel.matrices`), and every public
prediction call warns about a non-positive-definite S in the same way."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.fit import fit
from acehamil.models.hamiltonian.model import EnergyZero, OverlapWarning
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

from sk_si import TINY_CFG as CFG


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for k in range(4):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k))
        at.rattle(0.08, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(H,), S=S, n_electrons=8))
    return out


@pytest.fixture(scope="module")
def model(data):
    """A BLR model (posteriors, so draws work) with a large energy zero (V ~ 0.6 eV)."""
    m = fit(data[:3], ModelConfig.from_dict(CFG), progress=False)
    return dataclasses.replace(m, energy_zero=EnergyZero(v0=0.3, beta=((14, 7.0),)))


def _expected(model, atoms):
    """``H_local + V S`` built here from the two matrix models, independently of the package's paths."""
    H = model.H.predict(atoms)
    S = model.S.predict(atoms)
    V = 0.3 + 7.0 * len(atoms) / atoms.get_volume()
    return H.data + V * S.on_pattern(H)[0], V


def _eigen_parts(model, atoms, split):
    from acehamil.models.hamiltonian.calibrate import eigen_parts
    from acehamil.tb.dos import monkhorst_pack

    kp, wk = monkhorst_pack((2, 2, 2), atoms.pbc)
    return eigen_parts(model, atoms, kp, wk, 8, 2, np.random.default_rng(0), split=split)["H"]


PATHS = {
    "predict": lambda m, at: m.predict(at)[0],
    "matrices": lambda m, at: m.matrices(at).H,
    "matrices with draws": lambda m, at: m.matrices(at, n_samples=2, rng=np.random.default_rng(1)).H,
    "matrices with split draws": lambda m, at: m.matrices(at, n_samples=2, split=True).H,
    "predict_structure": lambda m, at: m.predict_structure(at).H[0],
    "predict_structure with draws": lambda m, at: m.predict_structure(at, n_samples=2).H[0],
    "eigen_parts (calibration)": lambda m, at: _eigen_parts(m, at, True),
    "eigen_parts (calibrated)": lambda m, at: _eigen_parts(m, at, False),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_prediction_path_adds_the_energy_zero(model, data, path):
    at = data[3].atoms
    want, V = _expected(model, at)
    assert V > 0.5  # a path that left it out would be off by V S, far above the tolerance
    np.testing.assert_allclose(PATHS[path](model, at).data, want, rtol=0, atol=1e-12)


def test_evaluate_scores_the_prediction_with_its_energy_zero(model, data):
    """Against a reference equal to ``H_local + V S`` the absolute H error is zero (it would be ~V without it)."""
    from acehamil.models.hamiltonian.evaluate import evaluate

    at = data[3].atoms
    want, _ = _expected(model, at)
    H = model.H.predict(at).with_data(want)
    ref = StructureData(at, data[3].basis, H=(H,), S=model.S.predict(at), n_electrons=8)
    res = evaluate(model, [ref], kmesh=(2, 2, 2), window_eV=50.0, uncertainty=False)
    assert res["H"]["rmse_meV"] < 1e-9 and res["S"]["rmse"] < 1e-12
    assert res["eigenvalues"]["mae_meV_absolute"] < 1e-6


def test_evaluate_with_given_predictions_equals_evaluate_predicting_itself(model, data):
    """Predictions passed in (predict_structure, as the example does) are scored exactly as evaluate's own."""
    from acehamil.models.hamiltonian.evaluate import evaluate

    test = data[3:]
    own = evaluate(model, test, kmesh=(2, 2, 2), window_eV=50.0, uncertainty=False)
    given = evaluate(model, test, kmesh=(2, 2, 2), window_eV=50.0, uncertainty=False,
                     predictions=[model.predict_structure(sd.atoms) for sd in test])
    assert given == own
    with pytest.raises(ValueError, match="1 predictions for 2 structures"):
        evaluate(model, data[2:], kmesh=(2, 2, 2), window_eV=50.0, uncertainty=False, predictions=[model.matrices(data[2].atoms)])


def test_evaluate_with_drawn_predictions_reports_their_spread(model, data):
    """Draws that come with the predictions (predict_structure n_samples) give their own spread (the draws'
    eigenvalues, Rayleigh-Ritz); evaluate's own is the first-order spread of the same posterior: equal
    within the draws' Monte-Carlo noise."""
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.tb.draws import eigenvalue_draws, fermi_levels, relative_sigma
    from acehamil.tb.dos import monkhorst_pack

    test = data[3:]
    own = evaluate(model, test, kmesh=(2, 2, 2), window_eV=50.0, uncertainty=True, n_samples=400, seed=4)
    preds = [model.predict_structure(sd.atoms, n_samples=400, rng=np.random.default_rng(4)) for sd in test]
    given = evaluate(model, test, kmesh=(2, 2, 2), window_eV=50.0, uncertainty=True, predictions=preds)
    kp, wk = monkhorst_pack((2, 2, 2), test[0].atoms.pbc)
    direct = []
    for p in preds:
        eps, dr = eigenvalue_draws(p.H[0], p.S, np.asarray(p.H_draws, dtype=float), kp)
        direct.append(relative_sigma(eps, dr, *fermi_levels(eps, dr, wk, p.n_electrons)).mean())
    u, v = given["eigenvalues"]["uncertainty"], own["eigenvalues"]["uncertainty"]
    assert u["mean_sigma_meV"] == pytest.approx(1000 * np.mean(direct), rel=1e-9)  # window 50 eV: every eigenvalue
    assert v["n"] == u["n"] and v["mean_sigma_meV"] == pytest.approx(u["mean_sigma_meV"], rel=0.1)
    assert "uncertainty" not in evaluate(model, test, kmesh=(2, 2, 2), window_eV=50.0, uncertainty=True,
                                         predictions=[model.matrices(sd.atoms) for sd in test])["eigenvalues"]


@pytest.mark.parametrize("uncertainty", [False, True])
def test_evaluate_on_threads_equals_the_serial_evaluation(model, data, uncertainty):
    """The per-structure eigen-solves mapped on threads give the serial result exactly (order kept)."""
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.threads import thread_mapper

    test = data[1:]  # three structures: more tasks than threads
    preds = [model.predict_structure(sd.atoms, n_samples=4 if uncertainty else 0, rng=np.random.default_rng(k))
             for k, sd in enumerate(test)]
    serial = evaluate(model, test, kmesh=(2, 2, 2), window_eV=50.0, uncertainty=uncertainty, predictions=preds)
    threaded = evaluate(model, test, kmesh=(2, 2, 2), window_eV=50.0, uncertainty=uncertainty, predictions=preds,
                        mapper=thread_mapper(2))
    assert threaded == serial
    assert ("uncertainty" in serial["eigenvalues"]) == uncertainty
    assert len({r["eig_mae_meV"] for r in serial["per_structure"]}) == 3  # distinct: a change of order would show


@pytest.fixture(scope="module")
def bad_s(model):
    """The model with its off-site S blocks scaled up 6x: S(k) of bulk Si is then indefinite."""
    S = model.S
    big = {key: {L: 6.0 * c for L, c in byL.items()} if key.startswith("offsite") else byL
           for key, byL in S.coefficients.items()}
    return dataclasses.replace(model, S=dataclasses.replace(S, coefficients=big))


@pytest.mark.parametrize("call", ["predict", "predict_structure"])
def test_public_predictions_warn_about_a_non_positive_definite_s(model, bad_s, call):
    from acehamil.tb.overlap import overlap_check

    at = bulk("Si", "diamond", a=5.43)
    smin = overlap_check(bad_s.S.predict(at), at)[0]
    assert smin < 0  # S really is indefinite
    with pytest.warns(OverlapWarning, match=f"smallest eigenvalue of S\\(k\\) {smin:.4g}"):
        getattr(bad_s, call)(at)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverlapWarning)
        getattr(bad_s, call)(at, check_overlap=False)
        getattr(model, call)(at)  # the sound model: no warning

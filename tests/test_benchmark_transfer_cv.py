"""benchmarks/transfer_cv.py samples each weight table's sums with the plan of the fit that table gives:
the fold sums then equal a real fit's, so the cross-validation ranks settings on the fit users run."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.fit import fit, kind_factors, solve_sums
from acehamil.models.hamiltonian.sums import FitSums
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
transfer_cv = pytest.importorskip("transfer_cv")

CFG = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [4], "n_max": 3},
    "h_offsite": {"r_cut": 4.0, "r_env": 1.5, "max_nu": 2, "max_degree": [6, 3], "n_max": 5},
    "s_offsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [6], "n_max": 6},
    "solver": {"method": "ridge", "lam": 1e-6},
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for k, kind in enumerate(["a", "a", "b", "c", "b", "a"]):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * (k % 3)), cubic=k == 3)
        at = at * (2, 1, 1) if k != 3 else at
        at.rattle(0.08, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(H,), S=S, info={"kind": kind}))
    return out


@pytest.mark.parametrize("weights, keep_within", [((("b", 0.5),), 0.0), ((("b", 0.3), ("c", 0.0)), 0.0), ((("a", 0.0),), 0.0),
                                                 ((("b", 0.3), ("c", 0.0)), 2.6)])
def test_cv_sums_reproduce_the_fit_of_the_same_table(data, weights, keep_within):
    """Also with the stratified sampling (``keep_bonds_within``): the CV plans it as the fit does."""
    cfg = ModelConfig.from_dict({**CFG, "fit": {"max_blocks_per_type": 40, "seed": 5, "keep_bonds_within": keep_within}})
    cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, kind_weights=weights),
                              uncertainty=dataclasses.replace(cfg.uncertainty, calibrate=False))
    factors = kind_factors(data, weights)
    fitted = [k for k in range(len(data)) if factors[k] > 0]
    model, parts, rates = transfer_cv.featurise(data, cfg, fitted=fitted)
    assert min(rates.values()) < 1.0  # the test exercises sampling
    assert all((parts[k] is None) == (factors[k] == 0) for k in range(len(data)))
    weighted = [p if p is None else transfer_cv.scaled_sums(p, f) for p, f in zip(parts, factors)]
    sums = FitSums.subset(weighted, fitted)
    coefs, *_ = solve_sums(model.H, sums, cfg, [data[k].atoms for k in fitted], data[0].basis.species)
    ref = fit(data, cfg, progress=False)
    assert ref.report["H_sampling_rates"] == rates
    for key, per in ref.H.coefficients.items():
        for L, c in per.items():
            np.testing.assert_allclose(coefs[key][L], c, rtol=1e-8, atol=1e-10 * max(1.0, np.abs(c).max()), err_msg=f"{key} L{L}")


def test_extra_structures_label_or_suffix_their_kinds(data):
    """``--extra FILE@kind`` labels only unlabelled structures; ``FILE@+SUFFIX`` gives every structure its own kind
    (``<kind>+SUFFIX``, unlabelled ``si8+SUFFIX``), so a file's structures get weights apart from same-named kinds;
    the read structures are not modified."""
    unlabelled = dataclasses.replace(data[0], info={k: v for k, v in data[0].info.items() if k != "kind"})
    given = [data[1], unlabelled]
    before = [dict(sd.info) for sd in given]
    read = lambda spec: list(given)  # noqa: E731
    assert [transfer_cv.kind_of(sd) for sd in transfer_cv.extra_structures("x.h5@new", read)] == [data[1].info["kind"], "new"]
    assert [transfer_cv.kind_of(sd) for sd in transfer_cv.extra_structures("x.h5", read)] == [data[1].info["kind"], "x"]
    assert ([transfer_cv.kind_of(sd) for sd in transfer_cv.extra_structures("x.h5@+d", read)]
            == [data[1].info["kind"] + "+d", "si8+d"])
    assert [dict(sd.info) for sd in given] == before

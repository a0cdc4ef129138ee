"""The README main job (examples/si_hamiltonian.py) end to end on a small configuration of the
shipped data: every output written, each held-out structure scored from its one prediction, the
per-kind table equal to the evaluation's own records, and the model's calibrated error bars used."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "si8_szv.h5"

CONFIG = f"""
[data]
train = "{DATA.as_posix()}"
structures = [0, 1, 2, 3, 4, 5]
test = [34, 35]

[h_onsite]
r_cut = 5.0
max_nu = 1
max_degree = [4]
n_max = 3

[h_offsite]
r_cut = 6.0
r_env = 2.0
max_nu = 1
max_degree = [6]
n_max = 4

[s_offsite]
r_cut = 6.0
max_nu = 1
max_degree = [6]
n_max = 6

[solver]
method = "blr"
lam = 1e-9

[fit]
max_blocks_per_type = 3000

[uncertainty]
calibrate = true
calibration_fraction = 0.34
n_samples = 4
kmesh = [2, 2, 2]
"""


@pytest.fixture(scope="module")
def example():
    if not DATA.exists():
        pytest.skip("data/si8_szv.h5 not shipped")
    spec = importlib.util.spec_from_file_location("si_hamiltonian_example", ROOT / "examples" / "si_hamiltonian.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(example, tmp_path_factory):
    pytest.importorskip("matplotlib")
    d = tmp_path_factory.mktemp("example")
    (d / "small.toml").write_text(CONFIG)
    assert example.main(["--config", str(d / "small.toml"), "--out", str(d / "out"), "-q"]) == 0
    return d / "out"


def test_main_job_writes_every_output(run):
    for name in ("model.h5", "predicted.h5", "evaluation.json", "bands.png", "dos.png"):
        assert (run / name).stat().st_size > 0, name


def test_held_out_scores_come_from_the_saved_model_and_predictions(run):
    from acehamil.io.dataset import read_dataset
    from acehamil.io.models import load_model
    from acehamil.models.hamiltonian.evaluate import by_kind, evaluate

    res = json.loads((run / "evaluation.json").read_text())
    model = load_model(run / "model.h5")
    assert model.report["uncertainty"]["scale_epistemic"] > 0  # the model carries calibrated error bars
    ds = read_dataset(DATA)
    test = [ds[34], ds[35]]
    predicted = read_dataset(run / "predicted.h5")
    assert list(predicted.names) == ["predicted si8-0034", "predicted si8-0035"]
    again = evaluate(model, test, kmesh=(6, 6, 6), window_eV=2.0, uncertainty=False)
    assert res["n_structures"] == 2 and "uncertainty" not in res["eigenvalues"]  # coverage is --full's
    for a, b in zip(res["per_structure"], again["per_structure"]):
        for key in ("H_rmse_meV", "H_rmse_meV_aligned", "S_rmse", "eig_mae_meV"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    assert res["held_out_by_kind"] == by_kind(res["per_structure"], "si8-rattle0.05-0.15")  # JSON floats round-trip
    assert res["held_out_by_kind"]["si8-rattle0.05-0.15"]["n"] == 2
    assert res["seconds"]["wall"] > 0 and res["seconds"]["cpu"] > 0
    H = predicted[0].H[0]
    np.testing.assert_allclose(H.data, model.predict(test[0].atoms)[0].data, rtol=0, atol=1e-12)

"""Command line: a BLR model's predictions carry draws; bands/dos --uncertainty shade them;
evaluate --json reports calibration; the extrapolation score flags unfamiliar structures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from acehamil.cli import main
from acehamil.io.dataset import read_dataset, write_dataset
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

CONFIG = """
[data]
train = "train.h5"
test = [-1]

[h_onsite]
r_cut = 4.0
max_nu = 1
max_degree = [3]
n_max = 2

[h_offsite]
r_cut = 4.0
r_env = 1.5
max_nu = 2
max_degree = [4, 2]
n_max = 3

[s_offsite]
r_cut = 4.0
max_nu = 1
max_degree = [6]
n_max = 6

[solver]
method = "blr"
lam = 1e-10

[uncertainty]
n_samples = 6
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("uq")
    rng = np.random.default_rng(4)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    data = []
    for k in range(5):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k))
        at.rattle(0.08, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        H = H.with_data(H.data + 0.003 * rng.normal(size=H.data.size) * (H.data != 0))
        H = H.with_data(0.5 * (H.data + _transposed(H)))
        data.append(StructureData(at, basis, H=(H,), S=S, n_electrons=8.0))
    write_dataset(d / "train.h5", data)
    (d / "fit.toml").write_text(CONFIG)
    assert main(["fit", str(d / "fit.toml"), "-o", str(d / "model.h5")]) == 0
    return d


def _transposed(H):
    out = np.empty_like(H.data)
    for p in range(H.nblocks):
        q = H.find(H.j[p], H.i[p], -H.shift[p])
        out[H.offsets[p]:H.offsets[p + 1]] = H.block(q).T.ravel()
    return out


def test_predict_stores_draws_and_extrapolation(workdir):
    assert main(["predict", str(workdir / "model.h5"), str(workdir / "train.h5"), "--index", "4",
                 "-o", str(workdir / "pred.h5"), "-q"]) == 0
    sd = read_dataset(workdir / "pred.h5")[0]
    assert sd.H_draws is not None and sd.H_draws.shape == (6, sd.H[0].data.size)
    u = sd.info["uncertainty"]
    assert u["n_samples"] == 6 and len(u["extrapolation_per_atom"]) == len(sd.atoms)
    assert u["extrapolation_max"] > 0


def test_bands_and_dos_uncertainty(workdir):
    pred = workdir / "pred.h5"
    if not pred.exists():
        test_predict_stores_draws_and_extrapolation(workdir)
    assert main(["bands", str(pred), "--uncertainty", "--npoints", "20", "--json", str(workdir / "b.json"),
                 "-o", str(workdir / "b.png"), "-q"]) == 0
    b = json.loads((workdir / "b.json").read_text())
    sig = np.array(b["sigma"])
    assert sig.shape == np.array(b["energies"]).shape and np.all(sig >= 0) and sig.max() > 0
    assert main(["dos", str(pred), "--uncertainty", "--kmesh", "3", "3", "3", "--json", str(workdir / "d.json"),
                 "-o", str(workdir / "d.png"), "-q"]) == 0
    d = json.loads((workdir / "d.json").read_text())
    assert len(d["dos_sigma"]) == len(d["dos"]) and max(d["dos_sigma"]) > 0


@pytest.mark.parametrize("command", ["bands", "dos"])
def test_costly_uncertainty_is_refused_before_any_work(workdir, capsys, monkeypatch, command):
    """bands/dos --uncertainty refuse, before any solve, draws whose eigenvalues would cost more than the limit,
    naming the option that lowers the k-points (a 216-atom cell with 24 draws needs ~30 Tflop on 71 k-points;
    test_bands_and_dos_uncertainty runs them below the limit)."""
    from acehamil.tb import draws

    pred = workdir / "pred.h5"
    if not pred.exists():
        test_predict_stores_draws_and_extrapolation(workdir)
    args = ["--npoints", "20"] if command == "bands" else ["--kmesh", "3", "3", "3"]
    calls = []
    monkeypatch.setattr(draws, "eigenvalue_draws", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(draws, "MAX_DRAWS_FLOP", 1.0)
    assert main([command, str(pred), "--uncertainty", *args, "--json", str(workdir / "x.json"), "-q"]) != 0
    err = capsys.readouterr().err
    assert "--uncertainty" in err and ("--npoints" if command == "bands" else "--kmesh") in err and not calls


def test_bands_uncertainty_needs_draws(workdir, capsys):
    assert main(["predict", str(workdir / "model.h5"), str(workdir / "train.h5"), "--index", "4", "--samples", "0",
                 "-o", str(workdir / "plain.h5"), "-q"]) == 0
    assert read_dataset(workdir / "plain.h5")[0].H_draws is None
    assert main(["bands", str(workdir / "plain.h5"), "--uncertainty", "-q"]) != 0
    assert "draws" in capsys.readouterr().err


def test_evaluate_json_reports_uncertainty(workdir, capsys):
    assert main(["evaluate", str(workdir / "model.h5"), str(workdir / "train.h5"), "--index", "4", "--kmesh", "3", "3",
                 "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    u = res["eigenvalues"]["uncertainty"]
    assert set(u) >= {"coverage_90", "coverage_68", "spearman_sigma_error", "n"}
    assert u["n"] == res["eigenvalues"]["n"] and 0 <= u["coverage_68"] <= u["coverage_90"] <= 1


def test_extrapolation_score_grows_outside_the_training_data(workdir):
    from acehamil.io.models import load_model
    from acehamil.models.hamiltonian.uncertainty import extrapolation_score

    model = load_model(workdir / "model.h5")
    inside = extrapolation_score(model, read_dataset(workdir / "train.h5")[1].atoms)
    squeezed = bulk("Si", "diamond", a=5.43 * 0.9)
    outside = extrapolation_score(model, squeezed)
    assert np.nanmax(inside) <= 1.0 + 1e-9
    assert np.nanmin(outside) > 1.0


def test_select_picks_diverse_uncertain_candidates(workdir):
    import ase.io

    rng = np.random.default_rng(9)
    cands = []
    for s in (1.0, 1.0, 0.93, 1.08):  # two near-duplicates of training-like cells, two strained ones
        at = bulk("Si", "diamond", a=5.43 * s)
        at.rattle(0.02, rng=rng)
        cands.append(at)
    ase.io.write(workdir / "cands.xyz", cands)
    for crit in ("band", "extrapolation", "variance", "information", "leverage", "eigen"):
        out = workdir / f"picked_{crit}.xyz"
        assert main(["select", str(workdir / "model.h5"), str(workdir / "cands.xyz"), "-n", "2", "-o", str(out),
                     "--criterion", crit, "--samples", "4", "-q"]) == 0
        picked = ase.io.read(out, index=":")
        assert len(picked) == 2
        order = [round(a.get_volume() / len(a), 1) for a in picked]
        vols = sorted(order)
        if crit == "eigen":
            # the candidates' own mean eigenvalue variance is the target: the compressed cell first, then one of
            # the two training-like cells (half of the candidates; never both duplicates), not the expanded cell
            assert order[0] < 18.0 and 19.0 < order[1] < 21.0, order
            continue
        # the strained cells lie outside the training data: both are picked, not the duplicates
        assert vols[0] < 18.0 and vols[1] > 23.0, vols
        assert all("select_score" in a.info for a in picked)


def test_select_candidates_from_a_dataset_carry_their_kind(workdir):
    """Dataset candidates reach the criteria with info["kind"] (what the model's kind_weights weigh);
    the dataset's own structures are not modified."""
    from acehamil.cli.predict import read_structures
    from acehamil.cli.select import _with_kinds

    ds = read_dataset(workdir / "train.h5")
    cands = []
    for k, sd in enumerate(ds):
        info = dict(sd.info)
        if k % 2:
            info["kind"] = "never-fitted"
        cands.append(StructureData(sd.atoms, sd.basis, H=sd.H, S=sd.S, n_electrons=sd.n_electrons, info=info))
    write_dataset(workdir / "kinds.h5", cands)
    items = read_structures(workdir / "kinds.h5")
    out = _with_kinds(workdir / "kinds.h5", items)
    assert [a.info.get("kind") for a, _, _ in out] == [None, "never-fitted", None, "never-fitted", None]
    assert all("kind" not in a.info for a, _, _ in items)

"""Command line: fit -> predict -> evaluate on a small synthetic (Slater-Koster s/p) dataset."""

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
max_nu = 2
max_degree = [4, 3]
n_max = 3

[h_offsite]
r_cut = 4.0
r_env = 0.0
max_nu = 1
max_degree = [10]
n_max = 10

[s_offsite]
r_cut = 4.0
max_nu = 1
max_degree = [10]
n_max = 10

[solver]
lam = 1e-12
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(3)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    data = []
    for _ in range(4):
        at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
        at.rattle(0.08, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        data.append(StructureData(at, basis, H=(H,), S=S, n_electrons=16.0))
    write_dataset(d / "train.h5", data)
    (d / "fit.toml").write_text(CONFIG)
    return d


def test_fit_predict_evaluate(workdir, capsys):
    d = workdir
    assert main(["fit", str(d / "fit.toml"), "-o", str(d / "model.h5"), "-q", "--report", str(d / "report.json")]) == 0
    rep = json.loads((d / "report.json").read_text())
    assert rep["dataset_indices"] == [0, 1, 2]  # test structure 3 never fitted
    assert rep["test"]["H"]["rmse_meV"] < 5.0
    assert main(["predict", str(d / "model.h5"), str(d / "train.h5"), "--index", "3", "-o", str(d / "pred.h5"), "-q"]) == 0
    pred = read_dataset(d / "pred.h5")
    assert len(pred) == 1 and pred[0].info["overlap_min_eigenvalue"] > 0 and pred[0].n_electrons == 16.0
    capsys.readouterr()
    assert main(["evaluate", str(d / "model.h5"), str(d / "train.h5"), "--index", "3", "--kmesh", "2", "2", "2", "--window", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("rmse_meV", "mae_meV", "per_block"):
        assert key in res["H"]
    assert set(res["S"]) >= {"rmse", "mae"} and res["eigenvalues"]["window_eV"] == 8.0
    assert res["H"]["rmse_meV"] == pytest.approx(rep["test"]["H"]["rmse_meV"], rel=1e-9)
    assert np.isfinite(res["eigenvalues"]["mae_meV"]) and res["eigenvalues"]["mae_meV"] < 20.0


def test_evaluate_default_grid_is_per_structure_and_scaled_with_the_cell(workdir, capsys):
    """No --kmesh: each structure on eval_kmesh(atoms) (n_i = ceil(32.5 Å |b_i|)), reported per structure,
    the same numbers as that grid given explicitly."""
    from acehamil.models.hamiltonian.evaluate import eval_kmesh

    d = workdir
    if not (d / "model.h5").exists():
        assert main(["fit", str(d / "fit.toml"), "-o", str(d / "model.h5"), "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(d / "model.h5"), str(d / "train.h5"), "--index", "3", "--window", "8", "--json",
                 "--no-uncertainty"]) == 0
    out = json.loads(capsys.readouterr().out)
    auto = out["eigenvalues"]
    mesh = list(eval_kmesh(read_dataset(d / "train.h5")[3].atoms))
    assert auto["kmesh"] == "per structure" and out["per_structure"][0]["kmesh"] == mesh
    assert main(["evaluate", str(d / "model.h5"), str(d / "train.h5"), "--index", "3", "--window", "8", "--json",
                 "--no-uncertainty", "--kmesh", *map(str, mesh)]) == 0
    given = json.loads(capsys.readouterr().out)["eigenvalues"]
    assert given["kmesh"] == mesh and given["mae_meV"] == auto["mae_meV"]
    assert main(["evaluate", str(d / "model.h5"), str(d / "train.h5"), "--index", "3", "--window", "8",
                 "--no-uncertainty"]) == 0
    assert f"per-structure grids ({'x'.join(map(str, mesh))}; scaled with each cell)" in capsys.readouterr().out


def test_predict_from_ase_file(workdir, tmp_path):
    import ase.io

    d = workdir
    if not (d / "model.h5").exists():
        pytest.skip("needs the model of test_fit_predict_evaluate")
    at = bulk("Si", "diamond", a=5.43)
    ase.io.write(tmp_path / "si.xyz", at)
    assert main(["predict", str(d / "model.h5"), str(tmp_path / "si.xyz"), "-o", str(tmp_path / "p.h5"), "-q"]) == 0
    sd = read_dataset(tmp_path / "p.h5")[0]
    assert sd.H[0].hermiticity_error() <= 1e-12


def test_fit_errors_are_clear(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[h_offsite]\nr_cutoff = 3\n")
    assert main(["fit", str(tmp_path / "bad.toml"), "-o", str(tmp_path / "m.h5")]) == 2
    assert "unknown keys" in capsys.readouterr().err
    (tmp_path / "nodata.toml").write_text("[solver]\nlam = 1e-6\n")
    assert main(["fit", str(tmp_path / "nodata.toml"), "-o", str(tmp_path / "m.h5")]) == 2
    assert "[data] train" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.h5"), str(tmp_path / "x.xyz"), "-o", str(tmp_path / "p.h5")]) == 2


def _fitted(workdir):
    d = workdir
    if not (d / "model.h5").exists():
        assert main(["fit", str(d / "fit.toml"), "-o", str(d / "model.h5"), "-q"]) == 0
    return d / "model.h5"


def test_model_stores_electrons_and_charge_moves_fermi_level(workdir, tmp_path, capsys):
    import ase.io

    from acehamil.io.models import load_model
    from acehamil.tb.bands import eigenvalues, structure_fermi_level
    from acehamil.tb.dos import monkhorst_pack
    from acehamil.tb.smearing import occupation

    model_path = _fitted(workdir)
    assert load_model(model_path).valence_electrons == {14: 4.0}  # 16 electrons per 4-atom training cell
    ase.io.write(tmp_path / "si.xyz", bulk("Si", "diamond", a=5.43))
    ef, counts = {}, {}
    for q in (0.0, 1.0, -2.0):
        out = tmp_path / f"p{q}.h5"
        argv = ["predict", str(model_path), str(tmp_path / "si.xyz"), "-o", str(out), "-q"]
        assert main(argv + ([] if q == 0 else ["--charge", str(q)])) == 0
        sd = read_dataset(out)[0]
        counts[q] = sd.n_electrons
        ef[q] = structure_fermi_level(sd, kmesh=(6, 6, 6))
        k, w = monkhorst_pack((6, 6, 6))
        eps = eigenvalues(sd, k)
        filled = 2 * np.sum(w[:, None] * occupation(eps[0] - ef[q], 0.01, "fermi-dirac"))
        assert filled == pytest.approx(sd.n_electrons, abs=1e-6)  # E_F holds exactly n_electrons
    assert counts == {0.0: 8.0, 1.0: 7.0, -2.0: 10.0}
    assert ef[1.0] < ef[0.0] < ef[-2.0]
    capsys.readouterr()
    assert main(["info", str(model_path)]) == 0
    assert "Si 4" in capsys.readouterr().out


def test_old_model_files_without_electron_counts_still_load(workdir, tmp_path, capsys):
    import shutil

    import ase.io
    import h5py

    from acehamil.io.models import load_model

    old = tmp_path / "old.h5"
    shutil.copy(_fitted(workdir), old)
    with h5py.File(old, "r+") as f:
        del f.attrs["valence_electrons"]
        del f.attrs["checksum_extra"]  # written since; an old file has neither
    model = load_model(old)
    assert model.valence_electrons is None
    ase.io.write(tmp_path / "si.xyz", bulk("Si", "diamond", a=5.43))
    assert main(["predict", str(old), str(tmp_path / "si.xyz"), "-o", str(tmp_path / "p.h5"), "-q"]) == 0
    assert read_dataset(tmp_path / "p.h5")[0].n_electrons is None
    assert main(["predict", str(old), str(tmp_path / "si.xyz"), "-o", str(tmp_path / "q.h5"), "--charge", "1"]) == 2
    assert "no electron counts" in capsys.readouterr().err
    # a dataset input carries its own count: the charge applies to it
    assert main(["predict", str(old), str(workdir / "train.h5"), "--index", "-1:", "-o", str(tmp_path / "r.h5"),
                 "--charge", "2", "-q"]) == 0
    assert read_dataset(tmp_path / "r.h5")[0].n_electrons == 14.0


def test_predict_supercell_equals_predicting_the_supercell(workdir, tmp_path):
    """--supercell tiles the predicted cell: the same matrices as predicting the repeated atoms."""
    from acehamil.io.models import load_model
    from acehamil.tb.sparse import bloch_csr

    d = workdir
    _fitted(workdir)
    out = tmp_path / "sc.h5"
    assert main(["predict", str(d / "model.h5"), str(d / "train.h5"), "--index", "3", "--supercell", "1", "2", "2",
                 "-o", str(out), "-q"]) == 0
    sd = read_dataset(out)[0]
    src = read_dataset(d / "train.h5")[3]
    assert len(sd.atoms) == 4 * len(src.atoms) and sd.n_electrons == 4 * src.n_electrons
    np.testing.assert_allclose(sd.atoms.positions, src.atoms.repeat((1, 2, 2)).positions)
    H, S = load_model(d / "model.h5").predict(src.atoms.repeat((1, 2, 2)))
    for k in ([0, 0, 0], [0.1, 0.3, -0.2]):
        for a, b in zip(bloch_csr(sd.H[0], sd.S, k), bloch_csr(H, S, k)):
            assert abs(a - b).max() < 1e-10
    assert main(["predict", str(d / "model.h5"), str(d / "train.h5"), "--index", "3", "--supercell", "1", "0", "2",
                 "-o", str(tmp_path / "bad.h5"), "-q"]) == 2


def test_evaluate_table_shows_means_per_kind(workdir, tmp_path, capsys):
    """Structures that carry info['kind'] get a per-kind table, equal to the JSON per-structure errors."""
    import dataclasses

    d = workdir
    if not (d / "model.h5").exists():
        pytest.skip("needs the model of test_fit_predict_evaluate")
    ds = read_dataset(d / "train.h5")
    kinds = ["strained", "rattled", "rattled"]
    write_dataset(tmp_path / "kinds.h5", [dataclasses.replace(ds[k], info={**ds[k].info, "kind": kinds[k]})
                                          for k in range(3)])
    args = ["evaluate", str(d / "model.h5"), str(tmp_path / "kinds.h5"), "--kmesh", "2", "2", "2", "--window", "8",
            "--no-uncertainty"]
    capsys.readouterr()
    assert main(args + ["--json"]) == 0
    per = json.loads(capsys.readouterr().out)["per_structure"]
    assert [r["kind"] for r in per] == kinds
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "per kind" in out
    rattled = [line for line in out.splitlines() if " rattled " in line][0].split()
    assert rattled[1] == "2"
    assert float(rattled[3]) == pytest.approx((per[1]["eig_mae_meV"] + per[2]["eig_mae_meV"]) / 2, abs=0.06)

"""Faults left over by the last audit, and found by this one (the charter: bad input gets a clear error,
never silent garbage).

Each CLI row asserts: exit code 2, ONE line on stderr naming the problem (no traceback), and no new
or changed file.  Before the fixes these were: a misleading calibration message, silently ignored
``max_degree`` entries, an extended XYZ number cut mid-digits read as the shorter number, ``nan``
force columns, ``predict --samples 1`` accepted, and ``generate --overwrite`` killed before its first
structure leaving the old output hidden as ``.NAME.*.replaced``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase.io import write
from sk_si import assert_one_line_error, work_in_copy, write_potential_files
from sk_si import si_cell as _si

from acehamil.cli import main
from acehamil.io.dataset import read_dataset, write_dataset
from acehamil.structure import OrbitalBasis, StructureData


@pytest.fixture(scope="module")
def files(sk_si_files, tmp_path_factory):
    """The shared workspace (train.h5: 4 Slater-Koster Si cells, m.h5: their BLR model, one.xyz, fit.toml;
    tests/sk_si.py) with lab.xyz (3 labelled frames), pot.toml and a potential pot.h5 fitted to them."""
    d = tmp_path_factory.mktemp("leftovers")
    for p in sk_si_files.iterdir():
        shutil.copy2(p, d / p.name)
    write_potential_files(d)
    return d


@pytest.fixture
def w(files, tmp_path, monkeypatch, capsys):
    work_in_copy(files, tmp_path, monkeypatch)
    capsys.readouterr()  # the fixture's fit tables
    return tmp_path


def _edit(src, dst, edit):
    return lambda d: (d / dst).write_text(edit((d / src).read_text()))


def _cut(src, dst, nbytes=4):
    """``src`` cut ``nbytes`` before its end: the last number loses its last digits (and the newline)."""
    return lambda d: (d / dst).write_bytes((d / src).read_bytes()[:-nbytes])


UNCERTAINTY = '\n[uncertainty]\ncalibrate = true\n'
ONSITE_NU1 = ("max_nu = 1\nmax_degree = [4]\nn_max = 3", "max_nu = 1\nmax_degree = [4, 6]\nn_max = 3")
FAULTS = [
    # a calibration whose held-out structures have no eigenvalue near E_F (these toy cells have a wide gap):
    # it blamed missing electron counts, which every structure has
    ("calibration-one-fold-no-window", _edit("fit.toml", "b.toml", lambda t: t + UNCERTAINTY + "calibration_folds = 1\n"),
     ["fit", "b.toml", "-o", "o.h5", "-q"],
     "calibration found no eigenvalue within E_F +- 2 eV (window_eV) on the 4x4x4 k-mesh of its 1 held-out structure(s) "
     "(calibration_folds = 1, calibration_fraction = 0.25)"),
    ("calibration-folds-no-window", _edit("fit.toml", "b.toml", lambda t: t + UNCERTAINTY),
     ["fit", "b.toml", "-o", "o.h5", "-q"], "of its 3 held-out structure(s) (3 folds): each has a gap wider than"),
    # max_degree entries beyond what the basis uses were ignored without a word
    ("onsite-max-degree-beyond-max-nu", _edit("fit.toml", "b.toml", lambda t: t.replace(*ONSITE_NU1)),
     ["fit", "b.toml", "-o", "o.h5", "-q"],
     "b.toml: [h_onsite] max_degree = [4, 6] has 2 entries, but only the first 1 is used (max_nu = 1"),
    ("offsite-max-degree-without-environment",
     _edit("fit.toml", "b.toml", lambda t: t.replace("r_env = 0.0\nmax_nu = 1\nmax_degree = [6]",
                                                     "r_env = 0.0\nmax_nu = 2\nmax_degree = [6, 4]")),
     ["fit", "b.toml", "-o", "o.h5", "-q"],
     "[h_offsite] max_degree = [6, 4] has 2 entries, but only the first 1 is used (max_nu = 2, r_env = 0: a two-centre"),
    ("potential-max-degree-beyond-max-nu",
     _edit("pot.toml", "b.toml", lambda t: t.replace("max_nu = 2", "max_nu = 1")),
     ["fit-potential", "b.toml", "-o", "o.h5", "-q"], "[basis] max_degree = [3, 3] has 2 entries, but max_nu = 1 uses"),
    # an extended XYZ cut mid-number was read as the shorter number
    ("cut-xyz-evaluate-potential", _cut("lab.xyz", "cut.xyz"), ["evaluate-potential", "pot.h5", "cut.xyz"],
     "cut.xyz does not end with a newline: its last line '..."),
    ("cut-xyz-shows-the-cut-number", _cut("lab.xyz", "cut.xyz"), ["evaluate-potential", "pot.h5", "cut.xyz"],
     "0.01000000       0.01000' may be cut off mid-number (a truncated file?)"),
    ("cut-xyz-fit-potential", _cut("lab.xyz", "lab.xyz"), ["fit-potential", "pot.toml", "-o", "o.h5", "-q"],
     "lab.xyz does not end with a newline"),
    ("cut-xyz-predict", _cut("one.xyz", "cut.xyz", 3), ["predict", "m.h5", "cut.xyz", "-o", "p.h5"],
     "cut.xyz does not end with a newline"),
    ("cut-xyz-generate", _cut("one.xyz", "cut.xyz", 3), ["generate", "pyscf", "--structures", "cut.xyz", "-o", "g.h5"],
     "cut.xyz does not end with a newline"),
    # found by this session's audit: options and settings that were ignored without a word
    ("s-threshold-without-remedy", None, ["dos", "train.h5", "--s-threshold", "0.01", "-o", "d.png"],
     "--s-threshold 0.01 applies only with --remedy project"),
    ("s-threshold-nan", None, ["bands", "train.h5", "--remedy", "project", "--s-threshold", "nan", "-o", "b.png"],
     "--s-threshold must be a positive number, got nan"),
    ("kind-weights-misspelt", _edit("fit.toml", "b.toml", lambda t: t + '\n[fit]\nkind_weights = { "si8-ratle" = 0.5 }\n'),
     ["fit", "b.toml", "-o", "o.h5", "-q"],
     "b.toml: [fit] kind_weights names kind(s) ['si8-ratle'] that no structure of [data] train has (info['kind'] there: none)"),
    ("potential-n-folds-above-configs", _edit("pot.toml", "b.toml", lambda t: t.replace("n_folds = 2", "n_folds = 4")),
     ["fit-potential", "b.toml", "-o", "o.h5", "-q"],
     "[fit] n_folds = 4 but the training data hold 3 configurations: cross-validation needs n_folds <= 3"),
    ("potential-n-folds-true", _edit("pot.toml", "b.toml", lambda t: t.replace("n_folds = 2", "n_folds = true")),
     ["fit-potential", "b.toml", "-o", "o.h5", "-q"], "n_folds must be a positive integer, got True"),
    ("potential-train-list", _edit("pot.toml", "b.toml", lambda t: t.replace('train = "lab.xyz"', 'train = ["lab.xyz", "lab.xyz"]')),
     ["fit-potential", "b.toml", "-o", "o.h5", "-q"],
     "[data] train must be one structure file name (a string), got ['lab.xyz', 'lab.xyz']"),
    ("evaluate-potential-foreign-species", _edit("lab.xyz", "ge.xyz", lambda t: t.replace("\nSi ", "\nGe ", 1)),
     ["evaluate-potential", "pot.h5", "ge.xyz"], "ge.xyz, frame 0: species ['Ge'] not in the potential's ['Si']"),
    # one posterior draw has no spread
    ("predict-one-sample", None, ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--samples", "1"],
     "--samples must be 0 (no draws) or >= 2 (one draw has no spread), got 1"),
]


@pytest.mark.parametrize("setup, argv, message", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_leftover_fault_is_one_clear_line(w, capsys, setup, argv, message):
    if setup is not None:
        setup(w)
    assert_one_line_error(w, capsys, argv, message)


@pytest.mark.shared_data
@pytest.mark.parametrize("folder, name, cut, message", [
    ("water-dimer", "rs_hamiltonian.out", 20, "rs_hamiltonian.out does not end with a newline: its last value '0.0' may be cut"),
    ("water-dimer", "rs_overlap.out", 20, "rs_overlap.out does not end with a newline"),
    ("bilayer-graphene", "band1001.out", 5, "band1001.out does not end with a newline: its last line '...237"),
], ids=["rs-hamiltonian", "rs-overlap", "band-file"])
def test_fhi_aims_text_cut_mid_number_is_one_line(shared_data, tmp_path, capsys, folder, name, cut, message):
    """A value cut mid-digits kept the count right and was read as another number (0.15E-05 cut to 0.15E-0)."""
    run = tmp_path / "run"
    shutil.copytree(shared_data / "fhi-aims" / folder, run)
    for p in run.rglob("*"):
        p.chmod(0o644)
    (run / name).write_bytes((run / name).read_bytes()[:-cut])
    rc = main(["convert", str(run), "-o", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("acehamil convert: error: ") and message in err[0], err[0]
    assert not (tmp_path / "o.h5").exists()


def test_default_degrees_stay_valid_with_a_lower_max_nu(tmp_path):
    """Only what a user wrote is checked: the default max_degree (8, 6) with a written max_nu = 1 is fine."""
    from acehamil.io.config import read_model_config

    (tmp_path / "c.toml").write_text("[h_onsite]\nmax_nu = 1\n[h_offsite]\nr_env = 0.0\n[s_onsite]\nmax_nu = 0\n")
    cfg = read_model_config(tmp_path / "c.toml")
    assert cfg.h_onsite.max_degree == (8, 6) and cfg.h_onsite.degrees_used(offsite=False) == 1
    assert cfg.h_offsite.degrees_used(offsite=True) == 1


def test_kind_weights_of_present_kinds_pass():
    from types import SimpleNamespace as NS

    from acehamil.cli.fit import _check_kind_weights
    from acehamil.models.hamiltonian.config import ModelConfig

    cfg = ModelConfig.from_dict({"fit": {"kind_weights": {"a": 0.5, "b": 0.0}}})
    _check_kind_weights(cfg, NS(kinds=lambda: ("a", None, "b")), "c.toml")
    with pytest.raises(Exception, match=r"kind\(s\) \['b'\] .* there: 'a'\)"):
        _check_kind_weights(cfg, NS(kinds=lambda: ("a", None)), "c.toml")


def test_calibration_without_electron_counts_says_so(files):
    from acehamil.io.models import load_model
    from acehamil.models.hamiltonian.calibrate import _no_eigenvalues_message

    uc = load_model(files / "m.h5").config.uncertainty
    sds = list(read_dataset(files / "train.h5"))
    no_count = [StructureData(sd.atoms, sd.basis, H=sd.H, S=sd.S) for sd in sds]
    folds = [np.array([0, 1]), np.array([2, 3])]
    msg = _no_eigenvalues_message(no_count, folds, np.ones(4), uc)
    assert msg == "calibration needs training structures with n_electrons (none of the 4 held out has one)"
    assert "1 without n_electrons" in _no_eigenvalues_message(no_count[:1] + sds[1:], folds, np.ones(4), uc)


def test_evaluate_potential_without_forces_prints_no_nan(w, capsys):
    from ase.io import read

    frames = read(w / "lab.xyz", ":")
    for at in frames:
        at.calc.results.pop("forces")
    write(w / "noforce.xyz", frames, format="extxyz")
    assert main(["evaluate-potential", "pot.h5", "noforce.xyz"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower(), out
    assert "-: not measured (F MAE, F RMSE: these structures carry no reference forces)" in out, out
    assert main(["evaluate-potential", "pot.h5", "lab.xyz"]) == 0  # with forces: numbers, no note
    out = capsys.readouterr().out
    assert "not measured" not in out and "nan" not in out.lower(), out


def _write_old(path):
    basis = OrbitalBasis.from_dict({14: [(3, 0)]})
    at = _si()
    from acehamil.structure import RealSpaceMatrix

    S = RealSpaceMatrix.from_dense([1] * len(at), [[0, 0, 0]], [np.eye(len(at))])
    write_dataset(path, [StructureData(at, basis, H=(S,), S=S, info={"name": "old"})])


def _fake_run_crystal(atoms, settings, dm0=None, log=None, band_window=2.0):
    """An instant stand-in for one PySCF crystal run (identity S = H on an s basis)."""
    basis = OrbitalBasis.from_dict({14: [(3, 0)]})
    from acehamil.structure import RealSpaceMatrix

    S = RealSpaceMatrix.from_dense([1] * len(atoms), [[0, 0, 0]], [np.eye(len(atoms))])
    info = {"band_error": {"checked_max_meV": 0.0, "all": {"max_meV": 0.0}}}
    return StructureData(atoms, basis, H=(S,), S=S, info=info), None


@pytest.mark.parametrize("hang_at, kept", [(0, "old"), (1, "new")], ids=["before-the-first-structure", "after-it"])
def test_generate_killed_leaves_one_complete_file_nothing_hidden_and_resumes(tmp_path, hang_at, kept, monkeypatch,
                                                                            capsys):
    """``generate --overwrite`` moved the old output aside as .NAME.*.replaced; a SIGKILL (no cleanup runs) before
    the first new structure left the old file hidden and no output.  Now the old file stays in place until the first
    new structure replaces it atomically.  Killed while computing the second structure, the file holds the first,
    readable and unlocked, with its settings: ``--resume`` computes the rest, each exactly once, and refuses other
    settings (the DFT runs are replaced by instant fakes; the kill is real).  The one SIGKILL test of generation:
    it replaced a copy in test_io_pyscf.py that killed the generator loop the same way."""
    import acehamil.cli.generate as cg
    import acehamil.io.pyscf_gen as pg

    out = tmp_path / "k.h5"
    _write_old(out)
    old_bytes = out.read_bytes()
    script = textwrap.dedent(f"""
        import sys, time
        import acehamil.cli.generate as cg
        import acehamil.io.pyscf_gen as pg
        from acehamil.cli import main
        from test_faults_leftovers import _fake_run_crystal
        done = [0]
        def run_crystal(*args, **kw):
            if done[0] == {hang_at}:  # say so, then hang until killed
                open({str(tmp_path / "busy")!r}, "w").close()
                time.sleep(600)
            done[0] += 1
            return _fake_run_crystal(*args, **kw)
        pg.run_crystal = run_crystal
        cg._check_pyscf_names = lambda *a: None  # no PySCF needed
        sys.exit(main(["generate", "pyscf", "--base", "si2", "--count", "3", "-o", sys.argv[1], "--overwrite", "--quiet"]))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], env=env)
    try:
        t0 = time.monotonic()
        while not (tmp_path / "busy").exists():
            assert proc.poll() is None and time.monotonic() - t0 < 120, "the child did not reach the structure"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))
    assert hidden == [], hidden
    if kept == "old":
        assert out.read_bytes() == old_bytes
        return
    first = read_dataset(out).names
    assert len(first) == 1 and first != ("old",)
    monkeypatch.setattr(pg, "run_crystal", _fake_run_crystal)
    monkeypatch.setattr(cg, "_check_pyscf_names", lambda *a: None)
    argv = ["generate", "pyscf", "--base", "si2", "--count", "3", "-o", str(out), "--resume", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    names = read_dataset(out).names
    assert len(names) == 3 and len(set(names)) == 3 and names[0] == first[0], names
    capsys.readouterr()
    assert main(argv[:-2] + ["--seed", "7", "--resume", "--quiet"]) == 2  # the kill kept the stored settings
    assert "seed" in capsys.readouterr().err
    assert read_dataset(out).names == names

"""Faults at every entry point (the charter: bad input gets a clear error, never silent garbage).

One table per kind of entry point.  Every CLI row asserts: exit code 2, ONE line on stderr
naming the problem (no traceback), no new file left behind and no existing file changed.
Every API row asserts the exception type and its message.  Rows are the faults an audit found
answered by a traceback, a silently wrong result or a partial output file; the older hostile
inputs live in ``tests/test_hostile.py``.
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from acehamil.cli import main
from acehamil.io.dataset import write_dataset
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

FIT_TOML = """
[data]
train = "train.h5"
test = [-1]

[h_onsite]
r_cut = 4.0
max_nu = 1
max_degree = [4]
n_max = 3

[h_offsite]
r_cut = 4.0
r_env = 0.0
max_nu = 1
max_degree = [6]
n_max = 6

[s_offsite]
r_cut = 4.0
max_nu = 1
max_degree = [6]
n_max = 6

[solver]
lam = 1e-8
"""

POT_TOML = """
[data]
train = "lab.xyz"
[basis]
r_cut = 4.0
n_max = 3
max_nu = 2
max_degree = [3, 3]
[fit]
lam = [1e-8]
power = [0.0]
n_folds = 2
"""


def _si(seed=0, rattle=0.05):
    at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    at.rattle(rattle, rng=np.random.default_rng(seed))
    return at


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """train.h5 (4 Slater-Koster Si cells), a fitted H/S model m.h5, a potential pot.h5, labelled
    frames lab.xyz, one.xyz, fit.toml, pot.toml."""
    from acehamil.io.potential_file import save_potential
    from acehamil.models.potential.config import make_basis
    from acehamil.models.potential.model import ACEPotential, feature_degrees

    d = tmp_path_factory.mktemp("faults")
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    sds = []
    for k in range(4):
        at = _si(k, 0.08)
        H, S = slater_koster(at, basis, cutoff=4.0)
        sds.append(StructureData(at, basis, H=(H,), S=S, n_electrons=16.0, info={"name": f"si-{k}"}))
    write_dataset(d / "train.h5", sds)
    (d / "fit.toml").write_text(FIT_TOML)
    assert main(["fit", str(d / "fit.toml"), "-o", str(d / "m.h5"), "-q"]) == 0
    write(d / "one.xyz", _si())
    pb = make_basis((14,), r_cut=4.0, n_max=3, max_nu=2, max_degree=(3, 3))
    rng = np.random.default_rng(1)
    pot = ACEPotential(pb, (14,), rng.normal(size=1), 0.1 * rng.normal(size=(1, len(feature_degrees(pb)))), None, {})
    save_potential(d / "pot.h5", pot)
    frames = []
    for k in range(4):
        at = _si(10 + k)
        res = pot.compute(at)
        at.calc = SinglePointCalculator(at, energy=res["energy"], forces=res["forces"])
        frames.append(at)
    write(d / "lab.xyz", frames, format="extxyz")
    (d / "pot.toml").write_text(POT_TOML)
    return d


@pytest.fixture
def w(ws, tmp_path, monkeypatch):
    for p in ws.iterdir():
        if p.is_file():
            shutil.copy2(p, tmp_path / p.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


# ----------------------------------------------------------------------------- fixtures of faults
def _xyz(atoms_fn, name="s.xyz"):
    def setup(d):
        write(d / name, atoms_fn(), format="extxyz")
    return setup


def _edit(fn):
    def g():
        at = _si()
        fn(at)
        return at
    return g


def _labelled(energy=-10.0, nan_force=False, atoms=None):
    def g():
        at = _si() if atoms is None else atoms
        f = np.zeros((len(at), 3))
        if nan_force:
            f[0, 0] = np.nan
        at.calc = SinglePointCalculator(at, energy=energy, forces=f)
        return at
    return g


def _zero_cell_vector(at):
    at.cell[2] = [0.0, 0.0, 0.0]


def _flat_cell(at):
    at.cell[2] = at.cell[0] + at.cell[1]


# id, setup (callable on the folder or None), argv, expected part of the one-line message
CLI_FAULTS = [
    # structures the model is asked to predict
    ("predict-empty-structure", _xyz(lambda: Atoms(cell=[5, 5, 5], pbc=True)),
     ["predict", "m.h5", "s.xyz", "-o", "p.h5"], "s.xyz:0: the structure has no atoms"),
    ("predict-stream-empty-structure", _xyz(lambda: Atoms(cell=[5, 5, 5], pbc=True)),
     ["predict", "m.h5", "s.xyz", "-o", "p.h5", "--stream"], "the structure has no atoms"),
    ("predict-zero-cell-vector", _xyz(_edit(_zero_cell_vector)),
     ["predict", "m.h5", "s.xyz", "-o", "p.h5"], "periodic along xyz but the cell is degenerate"),
    ("predict-flat-cell", _xyz(_edit(_flat_cell)),
     ["predict", "m.h5", "s.xyz", "-o", "p.h5"], "the cell is degenerate (volume 0"),
    ("predict-pbc-without-cell", _xyz(lambda: Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]], pbc=True)),
     ["predict", "m.h5", "s.xyz", "-o", "p.h5"], "the cell is degenerate"),
    ("predict-charge-nan", None, ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--charge", "nan"],
     "--charge must be a finite number"),
    ("predict-charge-inf", None, ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--charge", "inf"],
     "--charge must be a finite number"),
    ("predict-charge-too-large-first-frame", None, ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--charge", "100"],
     "frame 0 (one.xyz:0) failed: charge 100.0 removes more than the 16 electrons"),
    # labelled data of potentials
    ("evaluate-potential-nan-energy", _xyz(_labelled(energy=np.nan)),
     ["evaluate-potential", "pot.h5", "s.xyz"], "s.xyz, frame 0: energy is not finite"),
    ("evaluate-potential-nan-force", _xyz(_labelled(nan_force=True)),
     ["evaluate-potential", "pot.h5", "s.xyz"], "s.xyz, frame 0: force on atom 0 is not finite"),
    ("evaluate-potential-empty-structure", _xyz(_labelled(atoms=Atoms(cell=[5, 5, 5], pbc=True))),
     ["evaluate-potential", "pot.h5", "s.xyz"], "s.xyz, frame 0: the structure has no atoms"),
    ("evaluate-potential-atoms-on-top", _xyz(_labelled(atoms=Atoms("Si2", positions=[[0, 0, 0], [0, 0, 0.01]]))),
     ["evaluate-potential", "pot.h5", "s.xyz"], "s.xyz, frame 0: atoms 0 and 1 are"),
]


@pytest.mark.parametrize("setup, argv, message", [c[1:] for c in CLI_FAULTS], ids=[c[0] for c in CLI_FAULTS])
def test_cli_fault_is_one_clear_line(w, capsys, setup, argv, message):
    if setup is not None:
        setup(w)
    before = _digest(w)
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"acehamil {argv[0]}: error: ") and message in lines[0], lines[0]
    assert _digest(w) == before, "a file was left behind or changed"


# ----------------------------------------------------------------------------- the Python API
def _model(ws):
    from acehamil.io.models import load_model

    return load_model(ws / "m.h5")


API_FAULTS = [
    ("predict-structure-empty", lambda ws: _model(ws).predict_structure(Atoms(cell=[5, 5, 5], pbc=True)),
     ValueError, "no atoms"),
    ("predict-structure-not-atoms", lambda ws: _model(ws).predict_structure("Si8"), TypeError, "expected an ase.Atoms"),
    ("predict-structure-charge-nan", lambda ws: _model(ws).predict_structure(_si(), charge=float("nan")),
     ValueError, "charge must be a finite number"),
]


@pytest.mark.parametrize("call, exc, message", [c[1:] for c in API_FAULTS], ids=[c[0] for c in API_FAULTS])
def test_api_fault_raises_a_clear_error(ws, call, exc, message):
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(ws)


def test_a_failing_first_frame_leaves_no_output_and_a_later_one_keeps_the_earlier(w, capsys):
    """Failing at frame 0 writes nothing; failing at frame 1 keeps frame 0, and the one line says so."""
    from acehamil.io.dataset import read_dataset

    write(w / "two.xyz", [_si(), _si(3) * (1, 1, 2)], format="extxyz")  # 16 and 32 valence electrons
    rc = main(["predict", "m.h5", "two.xyz", "-o", "p.h5", "--charge", "20", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not (w / "p.h5").exists() and len(err) == 1
    assert "frame 0 (two.xyz:0) failed" in err[0] and "nothing was written to p.h5" in err[0]
    write(w / "rev.xyz", [_si(3) * (1, 1, 2), _si()], format="extxyz")
    rc = main(["predict", "m.h5", "rev.xyz", "-o", "p.h5", "--charge", "20", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "frame 1 (rev.xyz:1) failed" in err[0] and "the 1 structure(s) before it were written to p.h5" in err[0]
    assert read_dataset(w / "p.h5").names == ("rev.xyz:0",)

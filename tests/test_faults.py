"""Faults at every entry point (the charter: bad input gets a clear error, never silent garbage).

One table per kind of entry point.  Every CLI row asserts: exit code 2, ONE line on stderr
naming the problem (no traceback), no new file left behind and no existing file changed.
Every API row asserts the exception type and its message.  Rows are the faults an audit found
answered by a traceback, a silently wrong result or a partial output file; the older hostile
inputs live in ``tests/test_hostile.py``.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from sk_si import FIT_TOML, POT_TOML
from sk_si import assert_one_line_error, with_overlap_not_positive_definite, work_in_copy
from sk_si import digest as _digest
from sk_si import si_cell as _si

from acehamil.cli import main
from acehamil.io.dataset import write_dataset


@pytest.fixture(scope="module")
def ws(sk_si_files, tmp_path_factory):
    """The shared workspace (train.h5: 4 Slater-Koster Si cells, m.h5: their BLR model, one.xyz,
    fit.toml; tests/sk_si.py) with a potential pot.h5, labelled frames lab.xyz and pot.toml."""
    from acehamil.io.potential_file import save_potential
    from acehamil.models.potential.config import make_basis
    from acehamil.models.potential.model import ACEPotential, feature_degrees

    d = tmp_path_factory.mktemp("faults")
    for p in sk_si_files.iterdir():
        shutil.copy2(p, d / p.name)
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
    return work_in_copy(ws, tmp_path, monkeypatch)


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


def _h5(name, edit):
    def setup(d):
        with h5py.File(d / name, "r+") as f:
            edit(f)
    return setup


def _del(key):
    def edit(f):
        del f[key]
    return edit


def _attr(key, value):
    def edit(f):
        f.attrs[key] = value
    return edit


def _text(name, content):
    def setup(d):
        (d / name).write_text(content)
    return setup


def _toml(extra="", replace=("", "")):
    return _text("b.toml", FIT_TOML.replace(*replace) + extra)


def _pot_toml(old, new):
    return _text("p.toml", POT_TOML.replace(old, new))


FIT = ["fit", "b.toml", "-o", "o.h5", "-q"]
FITPOT = ["fit-potential", "p.toml", "-o", "o.h5", "-q"]
BANDS = ["bands", "train.h5", "--npoints", "5", "-o", "b.png"]
DOS = ["dos", "train.h5", "--kmesh", "2", "2", "2", "--json", "d.json"]
EIGS = ["eigs", "train.h5", "-n", "4"]

def _bad_overlap_data(d):
    """bad.h5: the training set with structure 0's off-site overlaps scaled x5 (S(Gamma) not positive definite,
    still Hermitian), and bad.toml fitting on it."""
    from acehamil.io.dataset import read_dataset

    ds = read_dataset(d / "train.h5")
    sds = [ds[k] for k in range(len(ds))]
    sds[0] = with_overlap_not_positive_definite(sds[0])
    write_dataset(d / "bad.h5", sds)
    (d / "bad.toml").write_text(FIT_TOML.replace("train.h5", "bad.h5"))


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
    # files: damaged, foreign, edited, given in the wrong place
    ("info-dataset-group-without-basis", _h5("train.h5", _del("structures/000001/basis")), ["info", "train.h5"],
     "train.h5:/structures/000001 ('si-1'): missing or malformed data"),
    ("info-dataset-group-without-cell", _h5("train.h5", _del("structures/000002/cell")), ["info", "train.h5"],
     "/structures/000002 ('si-2'): missing or malformed data (KeyError: \"no 'cell'\""),
    ("fit-config-is-an-hdf5-file", None, ["fit", "m.h5", "-o", "o.h5"], "m.h5: not a TOML text file"),
    ("fit-potential-config-is-an-hdf5-file", None, ["fit-potential", "pot.h5", "-o", "o.h5"], "pot.h5: not a TOML text file"),
    ("model-in-hartree", _h5("m.h5", _attr("energy_unit", "Hartree")), ["predict", "m.h5", "one.xyz", "-o", "p.h5"],
     "m.h5: energy_unit is 'Hartree', acehamil files use 'eV'"),
    ("model-format-version-not-an-integer", _h5("m.h5", _attr("format_version", "abc")),
     ["predict", "m.h5", "one.xyz", "-o", "p.h5"], "m.h5: format_version 'abc' is not an integer"),
    ("model-valence-electrons-malformed", _h5("m.h5", _attr("valence_electrons", '{"14": "x"}')),
     ["predict", "m.h5", "one.xyz", "-o", "p.h5"], "m.h5: corrupt or incomplete model file"),
    ("dataset-in-bohr", _h5("train.h5", _attr("length_unit", "Bohr")), BANDS,
     "train.h5: length_unit is 'Bohr', acehamil files use 'Angstrom'"),
    ("potential-with-other-bloch-sign", _h5("pot.h5", _attr("bloch_sign", -1)), ["evaluate-potential", "pot.h5", "lab.xyz"],
     "pot.h5: bloch_sign is"),
    ("convert-format-deeph-of-a-dataset", None, ["convert", "train.h5", "--format", "deeph", "-o", "o.h5"],
     "train.h5: no DeepH folder"),
    ("bands-of-a-folder", lambda d: (d / "run").mkdir(), ["bands", "run"], "run is a folder, not an HDF5 file"),
    ("export-deeph-into-a-missing-folder", None, ["export", "train.h5", "--format", "deeph", "-o", "nodir/out"],
     "folder 'nodir' does not exist"),
    # options
    ("bands-emin-nan", None, BANDS + ["--emin", "nan"], "--emin must be a finite energy in eV"),
    ("bands-emin-above-emax", None, BANDS + ["--emin", "5", "--emax", "-5"], "--emin 5.0 must be below --emax -5.0"),
    ("bands-empty-path", None, BANDS + ["--path", ""], "the k-path '' names no special points"),
    ("bands-runaway-npoints", None, BANDS + ["--npoints", "100000000"], "--npoints 100000000: 100000000 k-points x 16 bands"),
    ("dos-runaway-energy-grid", None, DOS + ["--npoints", "1000000000"], "more than 1000000 energies"),
    ("bands-fermi-level-inf", None, BANDS + ["--fermi-level", "inf"], "--fermi-level must be a finite energy"),
    ("dos-fermi-level-nan", None, DOS + ["--fermi-level", "nan"], "--fermi-level must be a finite energy"),
    ("dos-erange-inf", None, DOS + ["--erange", "-5", "inf"], "--erange EMIN EMAX needs finite EMIN < EMAX"),
    ("dos-kpm-seed-negative", None, ["dos", "train.h5", "--method", "kpm", "--seed", "-1"], "--seed must be >= 0"),
    ("eigs-near-nan", None, EIGS + ["--near", "nan"], "--near must be a finite energy"),
    ("eigs-near-inf", None, EIGS + ["--near", "inf"], "--near must be a finite energy"),
    ("evaluate-one-sample", None, ["evaluate", "m.h5", "train.h5", "--samples", "1"], "--samples must be >= 2"),
    # TOML configurations
    ("fit-weights-all-zero", _toml("\n[fit]\nstructure_weights = [0.0, 0.0, 0.0]\n"), FIT,
     "b.toml: [fit]: structure_weights are all zero"),
    ("fit-seed-negative", _toml("\n[fit]\nseed = -1\n"), FIT, "b.toml: [fit]: seed must be an integer >= 0, got -1"),
    ("fit-seed-float", _toml("\n[fit]\nseed = 1.5\n"), FIT, "seed must be an integer >= 0, got 1.5"),
    ("fit-test-index-float", _toml(replace=("test = [-1]", "test = [1.5]")), FIT,
     "b.toml: [data]: test must be a list of integer structure indices"),
    ("fit-potential-lam-string", _pot_toml("lam = [1e-8]", 'lam = ["a"]'), FITPOT, "lam must be a list of finite numbers"),
    ("fit-potential-lam-nan", _pot_toml("lam = [1e-8]", "lam = [nan]"), FITPOT, "lam must be a list of finite numbers"),
    ("fit-potential-unknown-species", _pot_toml("[basis]", '[basis]\nspecies = ["Xx"]'), FITPOT,
     "[basis] species entries must be atomic numbers (1..118) or chemical symbols, got 'Xx'"),
    ("fit-potential-seed-negative", _pot_toml("n_folds = 2", "n_folds = 2\nseed = -3"), FITPOT, "seed must be an integer >= 0"),
    ("fit-reference-overlap-not-positive-definite", lambda d: _bad_overlap_data(d), ["fit", "bad.toml", "-o", "o.h5", "-q"],
     "training structure 0 ('badS'): the reference overlap S(Gamma) is not positive definite"),
    # labelled data of potentials
    ("evaluate-potential-atoms-on-top", _xyz(_labelled(atoms=Atoms("Si2", positions=[[0, 0, 0], [0, 0, 0.01]]))),
     ["evaluate-potential", "pot.h5", "s.xyz"], "s.xyz, frame 0: atoms 0 and 1 are"),
]


@pytest.mark.parametrize("setup, argv, message", [c[1:] for c in CLI_FAULTS], ids=[c[0] for c in CLI_FAULTS])
def test_cli_fault_is_one_clear_line(w, capsys, setup, argv, message):
    if setup is not None:
        setup(w)
    assert_one_line_error(w, capsys, argv, message)


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
    ("dataset-float-index", lambda ws: _dataset(ws)[1.5], TypeError, "a structure index must be an integer"),
    ("tb-calculator-zero-width", lambda ws: _tb(ws, width=0.0), ValueError, "smearing width must be a positive number"),
    ("tb-calculator-nan-width", lambda ws: _tb(ws, width=float("nan")), ValueError, "smearing width must be a positive"),
    ("tb-calculator-unknown-smearing", lambda ws: _tb(ws, smearing="cold"), ValueError, "smearing must be one of"),
    ("dos-fermi-level-nan", lambda ws: _dos(ws, fermi_level=float("nan")), ValueError, "fermi_level must be a finite"),
    ("bands-fermi-level-inf", lambda ws: _bands(ws, fermi_level=float("inf")), ValueError, "fermi_level must be a finite"),
    ("ase-calculator-zero-chunk", lambda ws: _ace_calc(ws, chunk_atoms=0), ValueError, "chunk_atoms must be an integer >= 1"),
    ("potential-fit-settings-lam-string", lambda ws: _fit_settings(lam=("a",)), ValueError, "lam must be a list of finite"),
    ("model-fit-config-negative-seed", lambda ws: _fit_config(seed=-1), ValueError, "seed must be an integer >= 0"),
]


def _dataset(ws):
    from acehamil.io.dataset import read_dataset

    return read_dataset(ws / "train.h5")


def _tb(ws, **kw):
    from acehamil.tb.calculator import TBCalculator

    return TBCalculator(_dataset(ws)[0], kmesh=(1, 1, 1), **kw)


def _dos(ws, **kw):
    from acehamil.tb.dos import density_of_states

    return density_of_states(_dataset(ws)[0], kmesh=(1, 1, 1), **kw)


def _bands(ws, **kw):
    from acehamil.tb.bands import band_structure

    return band_structure(_dataset(ws)[0], npoints=3, **kw)


def _ace_calc(ws, **kw):
    from acehamil.calculators import ACECalculator
    from acehamil.io.potential_file import load_potential

    return ACECalculator(load_potential(ws / "pot.h5"), **kw)


def _fit_settings(**kw):
    from acehamil.models.potential.fit import FitSettings

    return FitSettings(**kw)


def _fit_config(**kw):
    from acehamil.models.hamiltonian.config import FitConfig

    return FitConfig(**kw)


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


def test_export_without_sisl_is_a_user_error(w, capsys, monkeypatch):
    """A missing optional dependency is the user's to install: one line naming it, not a traceback."""
    import acehamil.io.sisl_interop as si

    def missing():
        raise ImportError('sisl export needs the optional dependency sisl: pip install -e ".[sisl]"')

    monkeypatch.setattr(si, "require_sisl", missing)
    before = _digest(w)
    rc = main(["export", "train.h5", "--format", "tshs", "-o", "x.TSHS"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install" in err[0] and _digest(w) == before


def _aims_copy(src, dst, edit):
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644)
    g = dst / "geometry.in"
    g.write_text(edit(g.read_text()))


def _first_lattice_line(text, new):
    lines = text.splitlines()
    k = next(n for n, ln in enumerate(lines) if ln.strip().startswith("lattice_vector"))
    return "\n".join(lines[:k] + ([new] if new is not None else []) + lines[k + 1:]) + "\n"


@pytest.mark.shared_data
@pytest.mark.parametrize("folder, edit, message", [
    ("water-dimer", lambda t: t.replace(" O\n", " Qq\n", 1), "unknown chemical species 'Qq'"),
    ("water-dimer", lambda t: t.replace("atom 0.0000000000000000", "atom abc", 1), "could not convert string to float"),
    ("water-dimer", lambda t: "", "geometry.in: the structure has no atoms"),
    ("bilayer-graphene", lambda t: _first_lattice_line(t, None), "not a readable FHI-aims geometry"),
    ("bilayer-graphene", lambda t: _first_lattice_line(t, "lattice_vector 0.0 0.0 0.0"), "the cell is degenerate"),
], ids=["unknown-species", "garbage-number", "empty", "two-lattice-vectors", "zero-lattice-vector"])
def test_impossible_fhi_aims_geometry_is_one_line(shared_data, tmp_path, capsys, folder, edit, message):
    _aims_copy(shared_data / "fhi-aims" / folder, tmp_path / "run", edit)
    rc = main(["convert", str(tmp_path / "run"), "-o", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert "geometry.in" in err[0] and message in err[0], err[0]
    assert not (tmp_path / "o.h5").exists()


def _deeph_edit(kind):
    """An edit of one exported DeepH folder (path -> None)."""
    import json

    def write(name, text):
        return lambda p: (p / name).write_text(text)

    def info(fn):
        def edit(p):
            d = json.loads((p / "info.json").read_text())
            fn(d)
            (p / "info.json").write_text(json.dumps(d))
        return edit

    return {
        "element-not-a-number": write("element.dat", "14\nabc\n14\n14\n"),
        "element-zero": write("element.dat", "14\n0\n14\n14\n"),
        "element-200": write("element.dat", "14\n200\n14\n14\n"),
        "lattice-not-numbers": write("lat.dat", "a b c\n"),
        "orbital-types-not-numbers": write("orbital_types.dat", "a b\n0 1\n0 1\n0 1\n"),
        "orbital-types-l-9": write("orbital_types.dat", "0 9\n0 9\n0 9\n0 9\n"),
        "info-not-json": write("info.json", "{bad"),
        "info-negative-electrons": info(lambda d: d["acehamil"].__setitem__("n_electrons", -5)),
        "info-one-pbc-flag": info(lambda d: d["acehamil"].__setitem__("pbc", [True])),
        "hamiltonians-zero-bytes": write("hamiltonians.h5", ""),
        "site-positions-cut-mid-number": lambda p: (p / "site_positions.dat").write_bytes(
            (p / "site_positions.dat").read_bytes()[:-3]),
    }[kind]


@pytest.mark.parametrize("kind, message", [
    ("element-not-a-number", "element.dat: unreadable numbers"),
    ("element-zero", "element.dat: atomic numbers must be integers 1..118"),
    ("element-200", "element.dat: atomic numbers must be integers 1..118"),
    ("lattice-not-numbers", "lat.dat: unreadable numbers"),
    ("orbital-types-not-numbers", "orbital_types.dat: expected integer l values"),
    ("orbital-types-l-9", "orbital_types.dat: l must be 0..3"),
    ("info-not-json", "info.json: not valid JSON"),
    ("info-negative-electrons", "info.json: n_electrons must be a finite number >= 0"),
    ("info-one-pbc-flag", "info.json: acehamil pbc must be"),
    ("hamiltonians-zero-bytes", "hamiltonians.h5 is not a readable HDF5 file"),
    ("site-positions-cut-mid-number", "site_positions.dat does not end with a newline: its last line"),
])
def test_damaged_deeph_folder_is_one_line(w, capsys, kind, message):
    assert main(["export", "train.h5", "--format", "deeph", "-o", "dd", "--structure", "0", "-q"]) == 0
    _deeph_edit(kind)(w / "dd" / "0")
    capsys.readouterr()
    rc = main(["convert", "dd", "-o", "o.h5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert message in err[0], err[0]
    assert not (w / "o.h5").exists()


@pytest.mark.shared_data
@pytest.mark.parametrize("path, edit, message", [
    ("Data/H", lambda g: _set(g, "Data/H", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a)),
     "System_1/Data/H: contains NaN or inf (first at cell 0, row 0, column 5)"),
    ("Data/H", lambda g: g["Data/H"].attrs.__setitem__("unit", "kcal"), "System_1/Data/H: unit 'kcal'"),
    ("positions", lambda g: g["Structure/positions"].attrs.__setitem__("unit", "Bohr"), "positions: unit 'Bohr'"),
    ("positions", lambda g: _set(g, "Structure/positions", lambda a: a[:1]), "positions (1, 3), lattice (3, 3)"),
    ("pbc", lambda g: _set(g, "Structure/pbc", lambda a: np.array([1, 0])), "pbc (2,) do not fit"),
    ("fermi_level", lambda g: _set(g, "Data/fermi_level", lambda a: np.array(np.nan)), "Data/fermi_level: not finite"),
    ("Data", lambda g: g.__delitem__("Data"), "System_1 has Structure/ but no Data/ (truncated or damaged file?)"),
], ids=["H-nan", "H-in-kcal", "positions-in-bohr", "positions-shape", "pbc-shape", "fermi-level-nan", "group-without-Data"])
def test_damaged_acehamiltonians_file_is_one_line(shared_data, tmp_path, capsys, path, edit, message):
    src = tmp_path / "a.h5"
    shutil.copy(shared_data / "acehamiltonians-si" / "contrived_Si_symmetry_testing_systems.h5", src)
    src.chmod(0o644)
    with h5py.File(src, "r+") as f:
        edit(f["System_1"])
    rc = main(["convert", str(src), "-o", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o.h5").exists()


def _set(g, key, fn):
    attrs = dict(g[key].attrs)
    data = fn(np.array(g[key][()]))
    del g[key]
    g[key] = data
    g[key].attrs.update(attrs)


@pytest.fixture
def no_dft(monkeypatch):
    """PySCF runs replaced by a failure: a refusal must come before any structure is computed."""
    import acehamil.io.pyscf_gen as pg

    def boom(*a, **k):
        raise RuntimeError("a DFT run was started")

    monkeypatch.setattr(pg, "run_crystal", boom)
    monkeypatch.setattr(pg, "run_molecule", boom)


GEN = ["generate", "pyscf", "--base", "si2", "-o", "g.h5", "--quiet"]


@pytest.mark.parametrize("setup, argv, message", [
    (None, GEN + ["--count", "0"], "--count must be >= 1"),
    (None, GEN + ["--count", "1", "--strain", "nan"], "--strain (largest |strain| entry) must be in [0, 0.5)"),
    (None, GEN + ["--count", "1", "--strain", "5"], "--strain (largest |strain| entry) must be in [0, 0.5)"),
    (None, GEN + ["--count", "1", "--conv-tol", "0"], "--conv-tol must be a positive number"),
    (None, GEN + ["--count", "1", "--band-tol", "-1"], "--band-tol must be a positive number"),
    (_text("g.xyz", "garbage\n"), ["generate", "pyscf", "--structures", "g.xyz", "-o", "g.h5"],
     "g.xyz: ASE cannot read structures from it"),
    (_xyz(_edit(lambda at: at.positions.__setitem__((1, 0), np.nan)), "g.xyz"),
     ["generate", "pyscf", "--structures", "g.xyz", "-o", "g.h5"], "g.xyz, frame 0: position of atom 1 is not finite"),
], ids=["count-0", "strain-nan", "strain-5", "conv-tol-0", "band-tol-negative", "structures-garbage", "structures-nan"])
def test_generate_refuses_before_any_dft_run(w, capsys, no_dft, setup, argv, message):
    if setup is not None:
        setup(w)
    before = _digest(w)
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert _digest(w) == before


@pytest.mark.parametrize("option, message", [("--basis", "PySCF has no such basis for Si"),
                                             ("--xc", "not a functional libxc knows")])
def test_generate_refuses_unknown_pyscf_names_before_any_dft_run(w, capsys, no_dft, option, message):
    pytest.importorskip("pyscf", reason="PySCF is an optional extra (pip install -e '.[pyscf]')")
    rc = main(GEN + ["--count", "1", option, "bogus-name"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (w / "g.h5").exists()


def test_generate_overwrite_keeps_the_old_file_when_nothing_new_was_computed(w, capsys, monkeypatch):
    """--overwrite moved the old output away first and deleted it: a failing first DFT run lost it."""
    import acehamil.io.pyscf_gen as pg
    from acehamil.errors import UserError

    def fails(*a, **k):
        raise UserError("SCF did not converge")

    monkeypatch.setattr(pg, "run_crystal", fails)
    shutil.copy(w / "train.h5", w / "g.h5")
    before = _digest(w)
    rc = main(GEN + ["--count", "1", "--overwrite"])
    assert rc == 2 and "SCF did not converge" in capsys.readouterr().err
    assert _digest(w) == before
    assert not [p for p in w.iterdir() if p.name.startswith(".g.h5")]


@pytest.mark.shared_data
def test_truncated_fhi_aims_band_file_is_refused(shared_data, tmp_path, capsys):
    """A band file with fewer k-points than control.in asks put the segment's end label on the wrong k."""
    run = tmp_path / "run"
    shutil.copytree(shared_data / "fhi-aims" / "bilayer-graphene", run)
    for p in run.rglob("*"):
        p.chmod(0o644)
    lines = (run / "band1001.out").read_text().splitlines(True)
    (run / "band1001.out").write_text("".join(lines[:5]))
    rc = main(["convert", str(run), "-o", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "output band line 1 asks 11 k-points but band file 1 holds 5" in err[0]
    assert not (tmp_path / "o.h5").exists()


def test_too_many_posterior_draws_are_refused_with_their_size(w, capsys, monkeypatch):
    """predict --samples 10**6 would have been killed for memory (K x matrix entries x 8 bytes)."""
    import acehamil.models.hamiltonian.uncertainty as unc
    from acehamil.io.models import load_model

    model = load_model(w / "m.h5")
    if not unc.has_posterior(model.H):
        pytest.skip("the fixture's model has no posterior")
    monkeypatch.setattr(unc, "MAX_DRAW_BYTES", 10_000)
    before = _digest(w)
    rc = main(["predict", "m.h5", "one.xyz", "-o", "p.h5", "--samples", "50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "50 posterior draws of this structure's" in err[0] and "GiB" in err[0], err
    assert _digest(w) == before


def test_a_kpts_file_too_large_for_memory_is_refused_before_solving(w, capsys, monkeypatch):
    import acehamil.cli._tbcommon as tbc

    monkeypatch.setattr(tbc, "MAX_LEVELS", 100)  # 7 k-points x 16 bands > 100
    np.savetxt(w / "k.txt", np.zeros((7, 3)))
    before = _digest(w)
    rc = main(["bands", "train.h5", "--kpts", "k.txt", "-o", "b.png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--kpts k.txt (7 k-points): 7 k-points x 16 bands" in err[0], err
    assert _digest(w) == before


def test_non_finite_model_coefficients_are_refused_on_save_and_on_load(w, capsys, monkeypatch):
    """A model with a NaN coefficient was saved, loaded and predicted from without a word."""
    import dataclasses

    import acehamil.io.models as models

    m = models.load_model(w / "m.h5")
    key = sorted(m.H.coefficients)[0]
    L = sorted(m.H.coefficients[key])[0]
    bad = np.array(m.H.coefficients[key][L], dtype=float)
    bad.flat[0] = np.nan
    coefs = {k: dict(v) for k, v in m.H.coefficients.items()}
    coefs[key][L] = bad
    poisoned = dataclasses.replace(m, H=dataclasses.replace(m.H, coefficients=coefs))
    with pytest.raises(ValueError, match=rf"the H coefficients of {key} \(L={L}\) contain NaN or inf"):
        models.save_model(poisoned, w / "n.h5")
    assert not (w / "n.h5").exists()
    with monkeypatch.context() as mp:  # a file written by an older acehamil, without the check
        mp.setattr(models, "_check_finite", lambda *a: None)
        models.save_model(poisoned, w / "n.h5")
    before = _digest(w)
    rc = main(["predict", "n.h5", "one.xyz", "-o", "p.h5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "n.h5: the H coefficients of" in err[0], err
    assert _digest(w) == before

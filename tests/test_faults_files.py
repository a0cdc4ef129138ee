"""Damaged, edited or foreign files at every command that reads them (the charter: bad input gets a
clear error, never silent garbage).

Each row edits a copy of a good file (an H/S model with BLR posteriors, or a dataset) the way a
damaged disk, a hand edit or another program would, then runs one command on it and asserts: exit
code 2, ONE line on stderr naming the problem (no traceback), and no new or changed file.  ``info``
is the command that summarised such files without a word before; its rows come first.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from sk_si import assert_one_line_error, work_in_copy
from sk_si import digest as _digest
from sk_si import si_cell as _si

from acehamil.cli import main


@pytest.fixture(scope="module")
def files(sk_si_files):
    """train.h5 (4 Slater-Koster Si cells), m.h5 (a BLR H/S model of them: with posteriors), one.xyz:
    the session's shared workspace (tests/sk_si.py; copied by ``w`` before any edit)."""
    return sk_si_files


@pytest.fixture
def w(files, tmp_path, monkeypatch):
    return work_in_copy(files, tmp_path, monkeypatch)


COEF = "H/coefficients/onsite/14-14/0-0/L0"
POST = "H/posteriors/onsite/14-14/0-0/L0"
S0 = "structures/000000"


def _set(key, fn):
    """Replace dataset ``key`` by ``fn(old values)`` (any shape)."""
    def edit(f):
        old = f[key][()]
        del f[key]
        f[key] = fn(old)
    return edit


def _nan_at(key, index=0, value=np.nan):
    def edit(f):
        a = f[key][()]
        a.flat[index] = value
        f[key][...] = a
    return edit


def _attr(key, value, group="/"):
    def edit(f):
        f[group].attrs[key] = value
    return edit


def _del(key):
    def edit(f):
        del f[key]
    return edit


def _del_attr(key, group="/"):
    def edit(f):
        del f[group].attrs[key]
    return edit


def _unchecked(*edits):
    """Edits of structure 0 with its checksum removed first (a file written before checksums, or by
    another program): what the value checks must catch on their own."""
    def edit(f):
        del f[S0].attrs["checksum"]
        for e in edits:
            e(f)
    return edit


def _move_atom_onto(j, i, shift=(0, 0, 0)):
    def edit(f):
        pos, cell = f[f"{S0}/positions"][()], f[f"{S0}/cell"][()]
        pos[j] = pos[i] + np.asarray(shift) @ cell + 0.01
        f[f"{S0}/positions"][...] = pos
    return edit


INFO_M = ["info", "m.h5"]
INFO_D = ["info", "train.h5"]
PREDICT = ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--samples", "4"]

# id, file, edit, argv, expected part of the one-line message
FILE_FAULTS = [
    # H/S model files at `info` (summarised without a word before) and at the commands that load them
    ("model-nan-coefficient-checksum-updated", "m.h5", None, INFO_M, "coefficients of onsite/14-14/0-0 (L=0) contain NaN"),
    ("model-edited-coefficient", "m.h5", _nan_at(COEF, 0, 1.5), INFO_M, "coefficient checksum mismatch"),
    ("model-coefficients-2d", "m.h5", _set(COEF, lambda a: a[None]), INFO_M,
     "stores coefficients of shape (1, 4), expected (4,)"),
    ("model-posterior-nan-eigvals", "m.h5", _nan_at(f"{POST}/eigvals"), INFO_M,
     "the H posterior of onsite/14-14/0-0 (L=0): eigvals contains NaN or inf"),
    ("model-posterior-nan-eigvals-predict", "m.h5", _nan_at(f"{POST}/eigvals"), PREDICT,
     "eigvals contains NaN or inf"),
    ("model-posterior-short-proj", "m.h5", _set(f"{POST}/proj", lambda a: a[:-1]), INFO_M,
     "proj has shape (3,), expected (4,) for 4 coefficients"),
    ("model-posterior-nan-alpha", "m.h5", _attr("alpha", np.nan, POST), PREDICT, "finite alpha, beta > 0 (got alpha=nan"),
    ("model-posterior-negative-prior", "m.h5", _nan_at(f"{POST}/prior_diag", 0, -1.0), INFO_M, "needs prior_diag > 0"),
    ("model-without-H", "m.h5", _del("H"), INFO_M, "corrupt or incomplete model file (KeyError"),
    ("model-report-not-json", "m.h5", _attr("report", "{"), INFO_M, "corrupt or incomplete model file (JSONDecodeError"),
    ("model-without-config", "m.h5", _del_attr("config"), INFO_M, "corrupt or incomplete model file (KeyError"),
    ("model-future-format", "m.h5", _attr("format_version", 99), INFO_M, "hamiltonian_model format version 99"),
    ("model-energy-zero-nan", "m.h5", _attr("energy_zero", '{"v0_eV": NaN, "beta_eV_A3": {}}'), INFO_M,
     "energy zero parameters must be finite"),
    ("model-valence-electrons-nan", "m.h5", _attr("valence_electrons", '{"14": NaN}'), INFO_M,
     "valence_electrons must be finite counts >= 0 per species, got {14: nan}"),
    ("model-valence-electrons-negative", "m.h5", _attr("valence_electrons", '{"14": -4}'), PREDICT,
     "valence_electrons must be finite counts >= 0"),
    ("model-shell-l-7", "m.h5", _attr("orbital_basis", '{"14": [[3, 7]]}'), INFO_M,
     "shell angular momentum must be an integer 0..6, got 7"),
    # datasets at `info` (it listed them without reading a value before)
    ("dataset-checksum-mismatch", "train.h5", _nan_at(f"{S0}/H/0/data", 3, 7.0), INFO_D,
     "/structures/000000 (structure 'si-0'): checksum mismatch"),
    ("dataset-nan-H", "train.h5", _unchecked(_nan_at(f"{S0}/H/0/data", 3)), INFO_D,
     "/structures/000000/H/0: real-space matrix contains NaN or inf"),
    ("dataset-nan-position", "train.h5", _unchecked(_nan_at(f"{S0}/positions")), INFO_D, "position of atom 0 is not finite"),
    ("dataset-zero-cell-vector", "train.h5", _unchecked(_nan_at(f"{S0}/cell", 8, 0.0), _nan_at(f"{S0}/cell", 7, 0.0),
                                                        _nan_at(f"{S0}/cell", 6, 0.0)), INFO_D, "the cell is degenerate"),
    ("dataset-atoms-on-top", "train.h5", _unchecked(_move_atom_onto(1, 0)), INFO_D, "atoms 0 and 1 are 0.0173 Å apart"),
    ("dataset-atoms-on-top-across-the-cell", "train.h5", _unchecked(_move_atom_onto(1, 0, (1, 0, 0))), INFO_D,
     "atoms 0 and 1 are 0.0173 Å apart"),
    ("dataset-species-0", "train.h5", _unchecked(_nan_at(f"{S0}/numbers", 0, 0)), INFO_D, "unknown chemical species"),
    ("dataset-block-atom-out-of-range", "train.h5", _unchecked(_nan_at(f"{S0}/S/i", 0, 99)), INFO_D,
     "/structures/000000/S: atom index out of range"),
    # numbers stored beside the structure (NaN gave NaN occupations, or a Fermi level silently ignored)
    ("dataset-n-electrons-nan", "train.h5", _unchecked(_attr("n_electrons", np.nan, S0)), INFO_D,
     "/structures/000000: n_electrons is nan, not a finite number"),
    ("dataset-n-electrons-negative", "train.h5", _unchecked(_attr("n_electrons", -3.0, S0)), INFO_D,
     "n_electrons is -3, a count must be >= 0"),
    ("dataset-fermi-level-nan-bands", "train.h5", _unchecked(_attr("fermi_level", np.nan, S0)),
     ["bands", "train.h5", "--npoints", "5", "-o", "b.png"], "fermi_level is nan, not a finite number"),
    ("dataset-fermi-level-string", "train.h5", _unchecked(_attr("fermi_level", "abc", S0)),
     ["eigs", "train.h5", "-n", "3"], "fermi_level is 'abc', not a number"),
    ("dataset-energy-inf", "train.h5", _unchecked(_attr("energy", np.inf, S0)), INFO_D, "energy is inf, not a finite"),
]


def _nan_coefficient_with_checksum(d):
    """m.h5 with one NaN coefficient and its checksum recomputed (a buggy writer, not a damaged disk)."""
    from acehamil.io import models
    from acehamil.models.hamiltonian.energy_zero import EnergyZero

    with h5py.File(d / "m.h5", "r+") as f:
        a = f[COEF][()]
        a[0] = np.nan
        f[COEF][...] = a
        coefs = {n: models._read_coefficients(f[n]["coefficients"]) for n in ("H", "S")}
        ez = f.attrs.get("energy_zero")

    class _Fake:
        energy_zero = None if ez is None else EnergyZero.from_dict(json.loads(ez))
        H = type("M", (), {"coefficients": coefs["H"]})
        S = type("M", (), {"coefficients": coefs["S"]})

    with h5py.File(d / "m.h5", "r+") as f:
        f.attrs["checksum"] = models._checksum(_Fake)


@pytest.mark.parametrize("path, edit, argv, message", [c[1:] for c in FILE_FAULTS], ids=[c[0] for c in FILE_FAULTS])
def test_damaged_file_is_one_clear_line(w, capsys, path, edit, argv, message):
    if edit is None:
        _nan_coefficient_with_checksum(w)
    else:
        with h5py.File(w / path, "r+") as f:
            edit(f)
    assert_one_line_error(w, capsys, argv, message)


def test_info_reads_good_files_and_no_verify_lists_a_damaged_dataset(w, capsys):
    assert main(["info", "m.h5"]) == 0
    assert main(["info", "train.h5"]) == 0
    assert "4 structures" in capsys.readouterr().out
    with h5py.File(w / "train.h5", "r+") as f:
        _nan_at(f"{S0}/H/0/data", 3, 7.0)(f)
    assert main(["info", "train.h5"]) == 2
    capsys.readouterr()
    assert main(["info", "train.h5", "--no-verify"]) == 0  # to inspect a damaged file
    assert "si-0" in capsys.readouterr().out


def _swap(a, b):
    def edit(folder):
        tmp = folder / "swap.tmp"
        (folder / a).rename(tmp)
        (folder / b).rename(folder / a)
        tmp.rename(folder / b)
    return edit


def _copy(src, dst):
    return lambda folder: shutil.copyfile(folder / src, folder / dst)


@pytest.mark.shared_data
@pytest.mark.parametrize("folder, edit, message", [
    ("water-dimer", _swap("rs_hamiltonian.out", "rs_overlap.out"),
     "the on-site diagonal of S runs -18.79..1.728, not 1 as for FHI-aims' normalised basis functions; rs_hamiltonian "
     "and rs_overlap look swapped"),
    ("bilayer-graphene", _swap("rs_hamiltonian.h5", "rs_overlap.h5"), "rs_hamiltonian and rs_overlap look swapped"),
    ("water-dimer", _copy("rs_overlap.out", "rs_hamiltonian.out"), "rs_hamiltonian holds the overlap matrix again"),
], ids=["swapped-text", "swapped-hdf5", "overlap-copied-onto-hamiltonian"])
def test_swapped_fhi_aims_matrices_are_one_line(shared_data, tmp_path, capsys, folder, edit, message):
    """A swapped rs_hamiltonian/rs_overlap pair was read as a valid structure (H and S both Hermitian; the
    eigen-solvers refused S(k) at best, naming no file); S of normalised orbitals has a unit on-site diagonal."""
    run = tmp_path / "run"
    shutil.copytree(shared_data / "fhi-aims" / folder, run)
    edit(run)
    rc = main(["convert", str(run), "-o", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("acehamil convert: error: ") and message in err[0], err[0]
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.shared_data
@pytest.mark.parametrize("folder", ["water-dimer", "bilayer-graphene"])
def test_genuine_fhi_aims_overlaps_have_a_unit_diagonal(shared_data, folder):
    from acehamil.io.fhi_aims import OVERLAP_DIAGONAL_TOL, _onsite_diagonal, read_fhi_aims

    d = _onsite_diagonal(read_fhi_aims(shared_data / "fhi-aims" / folder).S)
    assert len(d) and np.abs(d - 1.0).max() < OVERLAP_DIAGONAL_TOL / 10  # the tolerance leaves a margin of 10x


# ----------------------------------------------------------------------------- TOML settings fitted silently before
def _fit_toml(d, edit):
    text = (d / "fit.toml").read_text()
    (d / "b.toml").write_text(edit(text))


FIT_B = ["fit", "b.toml", "-o", "o.h5", "-q"]

CONFIG_FAULTS = [
    ("structure-listed-twice", lambda t: t.replace("test = [-1]", "test = [-1]\nstructures = [0, 0, 1]"),
     "[data] structures name structure(s) [0] more than once"),
    ("structure-listed-twice-negative", lambda t: t.replace("test = [-1]", "test = [-1]\nstructures = [0, -4, 1]"),
     "[data] structures name structure(s) [0] more than once"),
    ("test-listed-twice", lambda t: t.replace("test = [-1]", "test = [-1, 3]"), "[data] test name structure(s) [3] more than once"),
    ("negative-structure-weight", lambda t: t + "\n[fit]\nstructure_weights = [1.0, -1.0, 1.0]\n",
     "b.toml: [fit]: structure_weights must be finite and >= 0, got [1.0, -1.0, 1.0]"),
    ("nan-structure-weight", lambda t: t + "\n[fit]\nstructure_weights = [1.0, nan, 1.0]\n",
     "structure_weights must be finite and >= 0, got [1.0, nan, 1.0]"),
    ("inf-structure-weight", lambda t: t + "\n[fit]\nstructure_weights = [1.0, inf, 1.0]\n",
     "structure_weights must be finite and >= 0"),
]


@pytest.mark.parametrize("edit, message", [c[1:] for c in CONFIG_FAULTS], ids=[c[0] for c in CONFIG_FAULTS])
def test_fit_config_fault_is_one_clear_line(w, capsys, edit, message):
    _fit_toml(w, edit)
    before = _digest(w)
    rc = main(FIT_B)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("acehamil fit: error: ") and message in lines[0], lines[0]
    assert _digest(w) == before


def test_predict_structure_names_a_species_outside_the_basis(files):
    """It said 'the model stores no electron count for species Z=[32]', which sent the user after charges."""
    from acehamil.io.models import load_model

    at = _si()
    at.numbers[0] = 32
    with pytest.raises(ValueError, match=r"species Ge \(Z=32\) has no orbital basis; basis covers Si"):
        load_model(files / "m.h5").predict_structure(at)


def test_eigs_on_a_bad_overlap_names_no_python_call(w, capsys):
    """eigs has no --remedy: its message named solve(..., remedy='project'), a Python call, to a CLI user."""
    from test_faults import _bad_overlap_data

    _bad_overlap_data(w)
    rc = main(["eigs", "bad.h5", "-n", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert "overlap S(k) is not positive definite" in err[0] and "solve(" not in err[0], err[0]
    assert "--remedy project" in err[0], err[0]

"""Edited and damaged files and options a hostile user would try (the charter: one clear line, never a
traceback or silent garbage).

Each CLI row asserts: exit code 2, ONE line on stderr naming the problem (no traceback), and no new or
changed file.  Before the fixes: a potential file whose ``basis_spec``/``metadata``/``repulsion`` attribute
was a number or other JSON was a TypeError/KeyError traceback; a dataset structure (checksum removed, as in
files written before checksums) with float or NaN block indices was read after a RuntimeWarning, with a
flattened ``shift`` read as if whole, with a basis dataset of the wrong shape was a TypeError traceback, with an
``info`` attribute that is not JSON a
JSONDecodeError traceback; ``r_env = nan`` fitted a model;
``max_degree = [nan]`` said only "cannot convert float NaN to integer"; every ``dos --method kpm -o FIG`` was
an AttributeError traceback; ``dos --width 1e-30`` printed 2.6e22 states per cell and ``--npoints 2`` 10.6 of
32; ``bands --path GX`` and ``--npoints`` on a molecule were ignored without a word; an S-only structure (a DeepH
folder without hamiltonians.h5) was an IndexError in ``evaluate`` and ``export --format tshs``; an empty DeepH
``lat.dat`` printed numpy's warning beside the error; ``evaluate``/``select`` with ``--kmesh 1000 1000 1000`` or
``--samples 100000000`` ran until killed.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from ase import Atoms
from sk_si import assert_one_line_error, work_in_copy, write_potential_files

from acehamil.cli import main


@pytest.fixture(scope="module")
def files(sk_si_files, tmp_path_factory):
    """The shared workspace with lab.xyz, pot.toml, a potential pot.h5 and mol.h5 (one Si2 molecule)."""
    from acehamil.io.dataset import write_dataset
    from acehamil.structure import OrbitalBasis, StructureData
    from acehamil.tb.toy import slater_koster

    d = tmp_path_factory.mktemp("edited")
    for p in sk_si_files.iterdir():
        shutil.copy2(p, d / p.name)
    write_potential_files(d)
    mol = Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]])
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    H, S = slater_koster(mol, basis, cutoff=4.0)
    write_dataset(d / "mol.h5", [StructureData(mol, basis, H=(H,), S=S, n_electrons=8.0, info={"name": "si2"})])
    return d


@pytest.fixture
def w(files, tmp_path, monkeypatch, capsys):
    work_in_copy(files, tmp_path, monkeypatch)
    capsys.readouterr()
    return tmp_path


def _root_attr(name, key, value):
    def edit(d):
        with h5py.File(d / name, "r+") as f:
            f.attrs[key] = value
    return edit


def _structure(edit):
    """Apply ``edit(group)`` to the first structure of train.h5, its checksum removed (a file from before
    checksums is read without one: what lies behind the checksum must be checked as well)."""
    def run(d):
        with h5py.File(d / "train.h5", "r+") as f:
            g = f["structures/000000"]
            del g.attrs["checksum"]
            edit(g)
    return run


def _replace(path, value):
    def edit(g):
        del g[path]
        g[path] = value
    return edit


def _as_float(path, nan=False):
    def edit(g):
        a = np.asarray(g[path][()], dtype=float)
        if nan:
            a.flat[0] = np.nan
        _replace(path, a)(g)
    return edit


def _set(key, value):
    def edit(g):
        g.attrs[key] = value
    return edit


def _del(path):
    def edit(g):
        del g[path]
    return edit


def _toml(src, dst, old, new):
    def edit(d):
        text = (d / src).read_text()
        assert old in text
        (d / dst).write_text(text.replace(old, new))
    return edit


def _deeph(edit):
    """Export train.h5's first structure as the DeepH folder ex/0, then ``edit(folder)``."""
    def run(d):
        assert main(["export", str(d / "train.h5"), "--format", "deeph", "-o", str(d / "ex"), "--structure", "0", "-q"]) == 0
        edit(d / "ex" / "0")
    return run


def _s_only(d):
    """s.h5: train.h5's first structure without H, as ``convert`` writes a DeepH folder without hamiltonians.h5."""
    _deeph(lambda f: (f / "hamiltonians.h5").unlink())(d)
    assert main(["convert", str(d / "ex"), "--format", "deeph", "-o", str(d / "s.h5")]) == 0
    shutil.rmtree(d / "ex")


EVAL = ["evaluate", "m.h5", "train.h5"]
BANDS = ["bands", "train.h5", "-o", "b.png", "-q"]
FAULTS = [
    # potential files: attributes outside the checksum
    ("potential-basis-spec-number", _root_attr("pot.h5", "basis_spec", 2), ["evaluate-potential", "pot.h5", "lab.xyz"],
     "pot.h5: attribute 'basis_spec' is '2', not JSON text (file edited or damaged)"),
    ("potential-basis-spec-empty", _root_attr("pot.h5", "basis_spec", "{}"), ["evaluate-potential", "pot.h5", "lab.xyz"],
     "pot.h5: unreadable basis_spec (KeyError: 'categories'; file edited or damaged)"),
    ("potential-metadata-nan", _root_attr("pot.h5", "metadata", np.nan), ["evaluate-potential", "pot.h5", "lab.xyz"],
     "pot.h5: attribute 'metadata' is"),
    ("potential-repulsion-text", _root_attr("pot.h5", "repulsion", "garbage"), ["evaluate-potential", "pot.h5", "lab.xyz"],
     "pot.h5: unreadable repulsion attribute 'garbage' (JSONDecodeError"),
    ("potential-repulsion-empty", _root_attr("pot.h5", "repulsion", "{}"), ["evaluate-potential", "pot.h5", "lab.xyz"],
     "pot.h5: unreadable repulsion attribute '{}' (KeyError"),
    # dataset structures behind a removed checksum
    ("block-index-nan", _structure(_as_float("H/0/i", nan=True)), BANDS,
     "train.h5:/structures/000000/H/0/i: expected shape (N) of integers, got shape (68,) dtype float64"),
    ("shift-flattened", _structure(lambda g: _replace("S/shift", g["S/shift"][()].ravel())(g)), EVAL,
     "train.h5:/structures/000000/S/shift: expected shape (68x3) of integers, got shape (204,) dtype int64"),
    ("shift-float", _structure(_as_float("H/0/shift")), BANDS, "H/0/shift: expected shape (68x3) of integers"),
    ("basis-flattened", _structure(lambda g: _replace("basis/14", g["basis/14"][()].ravel())(g)), EVAL,
     "train.h5:/structures/000000/basis/14: expected shells as (N, 2) integers (n, l) under an atomic number, got shape (4,)"),
    ("basis-text", _structure(_replace("basis/14", "garbage")), BANDS, "basis/14: expected shells as (N, 2) integers"),
    ("basis-labels", _structure(lambda g: g["basis/14"].attrs.__setitem__("labels", '["s"]')), BANDS,
     "basis/14: attribute 'labels' must be a JSON list of 2 strings"),
    ("h-channel-not-a-number", _structure(lambda g: g.move("H/0", "H/up")), EVAL,
     "train.h5:/structures/000000/H: expected spin channels 0 (and 1), got ['up'] (truncated or edited file?)"),
    # an S-only structure (what a DeepH folder without hamiltonians.h5 converts to) was an IndexError
    ("evaluate-s-only", _s_only, ["evaluate", "m.h5", "s.h5"],
     "s.h5 structure 0 ('si-0') has no Hamiltonian (S only): evaluate compares H, S and eigenvalues"),
    ("export-tshs-s-only", _s_only, ["export", "s.h5", "--format", "tshs", "-o", "x.TSHS"],
     "s.h5 structure 0 ('si-0') has no Hamiltonian (S only): --format tshs writes H and S"),
    # an empty DeepH text file: numpy's "input contained no data" warning beside a shape message
    ("deeph-empty-lat", _deeph(lambda f: (f / "lat.dat").write_text("")), ["convert", "ex", "--format", "deeph", "-o", "c.h5"],
     "ex/0/lat.dat holds no numbers (an empty file)"),
    ("h-a-dataset", _structure(lambda g: (_del("H")(g), g.create_dataset("H", data=1.0))), BANDS,
     "train.h5:/structures/000000/H: a dataset where a group belongs"),
    ("info-not-json", _structure(_set("info", "garbage")), ["fit", "fit.toml", "-o", "o.h5", "-q"],
     "train.h5:/structures/000000: attribute 'info' is 'garbage', not a JSON object"),
    ("info-a-number", _structure(_set("info", 3.0)), ["info", "train.h5"], "attribute 'info' is '3.0', not a JSON object"),
    # TOML values
    ("r-env-nan", _toml("fit.toml", "b.toml", "r_env = 0.0", "r_env = nan"), ["fit", "b.toml", "-o", "o.h5", "-q"],
     "b.toml: [h_offsite]: r_env must be finite and >= 0 Å, got nan"),
    ("max-degree-nan", _toml("fit.toml", "b.toml", "max_degree = [4]", "max_degree = [nan]"), ["fit", "b.toml", "-o", "o.h5", "-q"],
     "b.toml: [h_onsite]: max_degree entries must be finite numbers, got [nan]"),
    ("r-cut-inf", _toml("fit.toml", "b.toml", "r_cut = 4.0\nmax_nu = 1\nmax_degree = [4]", "r_cut = inf\nmax_nu = 1\nmax_degree = [4]"),
     ["fit", "b.toml", "-o", "o.h5", "-q"], "b.toml: [h_onsite]: r_cut must be a finite number > 0 Å, got inf"),
    # DOS grids that cannot resolve the smearing
    ("dos-width-below-grid", None, ["dos", "train.h5", "-o", "d.png", "-q", "--width", "1e-30"],
     "the energy grid's spacing 5.35e-05 eV (400001 points over 21.4 eV) is more than twice the smearing width 1e-30 eV"),
    ("dos-two-points", None, ["dos", "train.h5", "-o", "d.png", "-q", "--npoints", "2"],
     "(2 points over 22.1 eV) is more than twice the smearing width 0.05 eV: levels between the points would be lost "
     "and the DOS and its integral wrong; use npoints >= 222 or a wider width"),
    ("dos-erange-coarse", None, ["dos", "train.h5", "-o", "d.png", "-q", "--erange", "-5", "5", "--npoints", "3"],
     "--erange, --npoints, --width: the energy grid's spacing 5 eV (3 points over 10 eV)"),
    # sizes: each ran until killed (1e9 k-points; 1e8 draws at ~55 kB each)
    ("evaluate-kmesh-huge", None, EVAL + ["--kmesh", "1000", "1000", "1000"],
     "--kmesh 1000 1000 1000: 1e+09 k-points x 16 orbitals of a 4-atom structure are 1.6e+10 levels, more than 2e+08"),
    ("evaluate-samples-huge", None, EVAL + ["--samples", "100000000"], "--samples must be <= 10000"),
    ("select-kmesh-huge", None, ["select", "m.h5", "train.h5", "-o", "s.xyz", "-n", "1", "--criterion", "band", "--kmesh",
                                 "1000", "1000", "1000"], "1.6e+10 levels, more than 2e+08"),
    ("select-samples-huge", None, ["select", "m.h5", "train.h5", "-o", "s.xyz", "-n", "1", "--samples", "100000000"],
     "--samples must be <= 10000"),
    ("config-n-samples-huge", _toml("fit.toml", "b.toml", "[solver]", "[uncertainty]\nn_samples = 100000000\n[solver]"),
     ["fit", "b.toml", "-o", "o.h5", "-q"], "b.toml: [uncertainty]: n_samples must be <= 10000"),
    ("config-calibration-kmesh-huge",
     _toml("fit.toml", "b.toml", "[solver]", "[uncertainty]\ncalibrate = true\nkmesh = [1000, 1000, 1000]\n[solver]"),
     ["fit", "b.toml", "-o", "o.h5", "-q"], "b.toml: [uncertainty]: kmesh [1000, 1000, 1000] has 1e+09 k-points, more than 1e+06"),
    ("config-update-kmesh-huge",
     _toml("fit.toml", "b.toml", "[solver]", "[fit]\neigenvalue_update = { kmesh = [1000, 1000, 1000] }\n[solver]"),
     ["fit", "b.toml", "-o", "o.h5", "-q"], "eigenvalue_update kmesh [1000, 1000, 1000] has 1e+09 k-points, more than 1e+06"),
    ("potential-max-degree-nan", _toml("pot.toml", "b.toml", "max_degree = [3, 3]", "max_degree = [nan, 3]"),
     ["fit-potential", "b.toml", "-o", "o.h5", "-q"], "max_degree, weight_n and weight_l must be finite numbers, got [nan, 3.0]"),
    ("potential-config-type-weights-number", _toml("pot.toml", "b.toml", "[fit]", "[fit]\nconfig_type_weights = 5"),
     ["fit-potential", "b.toml", "-o", "o.h5", "-q"], "config_type_weights must be a table of config_type = weight"),
    ("generate-repeat-huge", None, ["generate", "pyscf", "--base", "si2", "--repeat", "1000", "1000", "1000", "-o", "g.h5"],
     "--repeat 1000 1000 1000 tiles the base 1e+09 times, more than 10000"),
    ("generate-fourier-kmesh-huge", None, ["generate", "pyscf", "--base", "si2", "--fourier-kmesh", "1000", "1000", "1000",
                                           "-o", "g.h5"], "--fourier-kmesh 1000 1000 1000 asks 1e+09 k-points, more than 100000"),
    ("generate-seed-negative", None, ["generate", "pyscf", "--base", "si2", "--seed", "-1", "-o", "g.h5"],
     "--seed must be >= 0, got -1"),
    # a molecule has no k-path
    ("bands-path-molecule", None, ["bands", "mol.h5", "-o", "b.png", "--path", "GX"],
     "the k-path 'GX' does not apply: this structure has no periodic axis (a molecule or cluster"),
    ("bands-npoints-molecule", None, ["bands", "mol.h5", "-o", "b.png", "--npoints", "50"],
     "--npoints 50 does not apply: structure 0 has no periodic axis (a molecule or cluster), its levels are at Γ only"),
]


@pytest.mark.parametrize("setup, argv, message", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_edited_file_or_option_is_one_clear_line(w, capsys, setup, argv, message):
    if setup is not None:
        setup(w)
    assert_one_line_error(w, capsys, argv, message)


def test_kpm_dos_figure_is_drawn(w, capsys):
    """Every ``dos --method kpm -o FIG`` was an AttributeError traceback (a KPMResult has no smearing)."""
    assert main(["dos", "train.h5", "--method", "kpm", "--moments", "64", "--vectors", "2", "-o", "k.png", "-q"]) == 0, \
        capsys.readouterr().err
    assert (w / "k.png").stat().st_size > 0


def test_molecule_bands_at_gamma_still_work(w, capsys):
    """Refusing a path on a molecule leaves its level diagram (no path, or the path 'G') as it was."""
    for extra in ([], ["--path", "G"]):
        assert main(["bands", "mol.h5", "-o", "b.png", "--overwrite"] + extra) == 0, capsys.readouterr().err
        assert "molecule/cluster: 8 levels at Γ" in capsys.readouterr().out


def test_crystal_at_one_k_point_is_not_called_a_molecule(w, capsys):
    """``bands --path G`` of a crystal printed "molecule/cluster: ... levels at Γ (level diagram)"."""
    assert main(["bands", "train.h5", "-o", "b.png", "--path", "G"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "molecule" not in out and out.startswith("1 k-points (Γ), 16 bands"), out


def test_api_dos_grid_and_explicit_energies():
    """The API refuses its own grid when it cannot resolve the width; explicit energies (DOS at chosen points) pass."""
    from acehamil.tb.dos import check_grid_resolves

    check_grid_resolves(10.0, 101, 0.05)  # spacing 0.1 = twice the width: still resolved
    with pytest.raises(ValueError, match=r"spacing 0\.102 eV \(99 points .* more than twice the smearing width 0\.05 eV"):
        check_grid_resolves(10.0, 99, 0.05)


@pytest.mark.parametrize("n_max", [100_000, 0, 2.5, float("nan")])
def test_potential_basis_refuses_n_max_before_building(n_max):
    """Only ``[basis] n_max`` in a TOML file was checked: through the API, n_max = 100000 asked the radial
    quadrature for 74.5 GiB (a MemoryError), and 0 or 2.5 reached the basis engine."""
    from acehamil.models.potential.config import make_basis

    with pytest.raises(ValueError, match=r"n_max must be an integer from 1 to 100 radial functions"):
        make_basis((14,), r_cut=4.0, n_max=n_max, max_nu=1, max_degree=(3,))
    assert make_basis((14,), r_cut=4.0, n_max=3, max_nu=1, max_degree=(3,)) is not None


@pytest.mark.shared_data
@pytest.mark.parametrize("name, edit, message", [
    ("rs_indices.out", lambda t: t.replace("         1          2          4", "         1          x          4", 1),
     "run/rs_indices.out: index_hamiltonian holds 'x', not an integer (a damaged file?)"),
    ("rs_hamiltonian.out", lambda t: "NaN\n" + t.split("\n", 1)[1],
     "run/rs_hamiltonian.out: value 1 of 601 is [nan], not a finite number (a damaged file?)"),
    ("eigenvalues.out", lambda t: "", "run/eigenvalues.out: no eigenvalues (an empty file; one energy in eV per line expected)"),
], ids=["index-not-an-integer", "hamiltonian-nan", "eigenvalues-empty"])
def test_fhi_aims_damaged_value_is_one_named_line(shared_data, tmp_path, capsys, name, edit, message):
    """numpy's "invalid literal for int()" and "real-space matrix contains NaN or inf" named no file; an empty
    eigenvalues.out printed numpy's "input contained no data" warning beside the error."""
    run = tmp_path / "run"
    shutil.copytree(shared_data / "fhi-aims" / "water-dimer", run)
    for p in run.rglob("*"):
        p.chmod(0o644)
    (run / name).write_text(edit((run / name).read_text()))
    assert_one_line_error(tmp_path, capsys, ["convert", run, "-o", tmp_path / "o.h5"], message)


def test_api_refuses_silent_garbage_inputs(files):
    """Through the API: a k-mesh (1.5, 2, 2) was truncated to (1, 2, 2), a NaN energy gave a NaN DOS value, and
    eigenvalues at no k-point said "min() arg is an empty sequence"."""
    from acehamil.io.dataset import read_dataset
    from acehamil.tb.bands import eigenvalues
    from acehamil.tb.dos import density_of_states, monkhorst_pack

    sd = read_dataset(files / "train.h5")[0]
    with pytest.raises(ValueError, match=r"k-mesh must be 3 positive integers, got \(1\.5, 2, 2\)"):
        density_of_states(sd, kmesh=(1.5, 2, 2))
    with pytest.raises(ValueError, match="energies must be finite numbers in eV .* 1 not finite"):
        density_of_states(sd, kmesh=(2, 2, 2), energies=[np.nan, 0.0])
    with pytest.raises(ValueError, match=r"no k-points given \(shape \(0, 3\)\)"):
        eigenvalues(sd, np.zeros((0, 3)))
    assert len(monkhorst_pack((2.0, 2, np.int64(1)))[0]) == 2  # whole numbers of any type still pass


def _ah_edit(key, fn):
    def edit(g):
        a = g[key][()]
        del g[key]
        g[key] = fn(a)
    return edit


@pytest.mark.shared_data
@pytest.mark.parametrize("edit, message", [
    (_ah_edit("Data/H", lambda a: a * 1j), "System_1/Data/H: expected real numbers, an array; got shape (1, 34, 34) dtype complex128"),
    (_ah_edit("Structure/atomic_numbers", lambda a: a + 0.5), "System_1/Structure/atomic_numbers: expected integers, shape (N); got"),
    (_ah_edit("Info/Translations", lambda a: a + 0.5), "System_1/Info/Translations: expected integers, shape (N, 3)"),
    (_ah_edit("Info/Basis/14", lambda a: np.hstack([a, a[:, :1]])), "System_1/Info/Basis/14: expected integers, shape (N, 2); got shape (7, 3)"),
    (lambda g: g["Info/Basis"].move("14", "Si"), "System_1/Info/Basis: keys must be atomic numbers, got 'Si'"),
    (_ah_edit("Data/fermi_level", lambda a: np.zeros(3)), "System_1/Data/fermi_level: expected real numbers, a scalar; got shape (3,)"),
    (_ah_edit("Data/forces", lambda a: a[:1]), "System_1/Data/forces: expected real numbers, shape (2, 3); got shape (1, 3)"),
], ids=["h-complex", "numbers-fractional", "translations-fractional", "basis-3-columns", "basis-key-symbol",
        "fermi-level-array", "forces-short"])
def test_acehamiltonians_edited_field_is_one_named_line(shared_data, tmp_path, capsys, edit, message):
    """A complex H was cast to real (ComplexWarning), atomic numbers 14.5 and translations 0.5 were truncated, a (3,)
    fermi_level was a TypeError traceback, and a basis of 3 columns, a basis key 'Si' or short forces were numpy's or
    int()'s words naming no file."""
    src = shared_data / "acehamiltonians-si" / "contrived_Si_symmetry_testing_systems.h5"
    with h5py.File(src, "r") as f, h5py.File(tmp_path / "a.h5", "w") as g:
        f.copy("System_1", g)
        edit(g["System_1"])
    assert_one_line_error(tmp_path, capsys, ["convert", tmp_path / "a.h5", "-o", tmp_path / "o.h5", "--format",
                                             "acehamiltonians"], message)


def test_evaluate_prints_no_nan_for_an_undefined_rank_correlation(w, capsys):
    """A model evaluated on its own prediction has zero errors: Spearman's correlation is undefined and was printed
    as 'Spearman(sigma, |error|) nan'."""
    assert main(["predict", "m.h5", "one.xyz", "-o", "p.h5", "-q", "--samples", "4"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["evaluate", "m.h5", "p.h5"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "nan" not in out and "Spearman(sigma, |error|) undefined (the errors or the sigmas are all equal)" in out, out


def test_select_eigen_criterion_mesh_is_checked(w, capsys):
    """main's new 'eigen' criterion reads --kmesh too: its size is checked as the band criterion's."""
    assert_one_line_error(w, capsys, ["select", "m.h5", "train.h5", "-o", "s.xyz", "-n", "1", "--criterion", "eigen",
                                      "--kmesh", "1000", "1000", "1000"], "1.6e+10 levels, more than 2e+08")


@pytest.mark.parametrize("argv, message", [
    (["bands", "train.h5", "--structure", "x", "-o", "b.png"], "acehamil bands: error: argument --structure: invalid int value: 'x'"),
    (["predict", "m.h5", "one.xyz"], "acehamil predict: error: the following arguments are required: -o/--output"),
    (["predict", "m.h5", "one.xyz", "-o", "p.h5", "--threads", "0"], "argument --threads: expected a positive integer, got 0"),
    (["bogus"], "acehamil: error: argument COMMAND: invalid choice: 'bogus'"),
], ids=["bad-int", "missing-output", "threads-0", "unknown-command"])
def test_usage_error_is_one_line(w, capsys, argv, message):
    """argparse printed its whole usage block (5-14 lines) before the error line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(err) == 1 and message in err[0] and err[0].endswith("--help)"), err

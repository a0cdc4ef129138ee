"""Structures and files the repository never saw, as an outside scorer would feed them (the charter: a
sensible result or one clear refusal).

Property rows: the same crystal written differently (atoms permuted, the whole cell rotated properly or
improperly, fractional coordinates outside [0, 1), a left-handed or skewed cell, each structure file format)
predicts the same eigenvalues through ``acehamil predict``.  Fault rows: exit code 2, ONE line on stderr
naming the problem (no traceback), no new or changed file.  Each fault row failed before its fix: a
structure in nm ran out of memory (a Si atom in a 0.6 Å cube: 6.4 GB, no answer in 300 s), a reference
dataset's bad S was reported as if the model's, an FHI-aims folder whose files come from different runs
(Si geometry with C's basis, a spin-polarised control.in with one spin's H) was read as valid, a file
without ``conventions_version`` was said to have "conventions version -1", and ``density_max_degree``
entries beyond ``max_nu`` were ignored, and a DeepH ``hamiltonians.h5`` without blocks became an H of zeros
(flat bands at 0 eV) and one with a NaN block an unnamed "real-space matrix contains NaN or inf", and
``predict --supercell 100 100 100`` of a 2-atom cell was killed for memory (18.7 GB RSS).
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from sk_si import POT_TOML
from sk_si import assert_one_line_error, work_in_copy, write_bad_overlap

from acehamil.cli import main
from acehamil.io.dataset import read_dataset
from acehamil.so3 import random_rotation
from acehamil.tb.bands import band_gap, eigenvalues


@pytest.fixture
def w(sk_si_files, tmp_path, monkeypatch, capsys):
    """A copy of the shared Slater-Koster workspace (train.h5, fit.toml, m.h5, one.xyz) as the working folder."""
    work_in_copy(sk_si_files, tmp_path, monkeypatch)
    capsys.readouterr()
    return tmp_path


def _cell16(rng):
    at = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 1, 1)
    at.rattle(0.05, rng=rng)
    return at


def _predicted_eigenvalues(w, capsys, name, kpts):
    """``acehamil predict m.h5 NAME`` and the eigenvalues (nframes, nk, nbands) of every predicted frame, eV."""
    assert main(["predict", "m.h5", name, "-o", "p.h5", "-q", "--overwrite"]) == 0, capsys.readouterr().err
    ds = read_dataset(w / "p.h5")
    return np.stack([eigenvalues(ds[k], kpts)[0] for k in range(len(ds))])


@pytest.mark.parametrize("improper", [False, True], ids=["proper", "improper"])
def test_permuted_and_rotated_16_atom_cell_predicts_the_same_eigenvalues(w, capsys, rng, improper):
    """A permutation of the atoms and a rigid rotation of positions and cell (det -1 too) leave the
    eigenvalues at every fractional k unchanged (full-precision ASE trajectory through the CLI)."""
    at = _cell16(rng)
    perm = at[rng.permutation(len(at))]
    Q = random_rotation(rng, improper=improper)
    rot = at.copy()
    rot.set_cell(at.cell.array @ Q.T, scale_atoms=False)
    rot.positions = at.positions @ Q.T
    write(w / "c.traj", [at, perm, rot])
    e = _predicted_eigenvalues(w, capsys, "c.traj", rng.random((4, 3)))
    assert np.abs(e[1] - e[0]).max() < 1e-9
    assert np.abs(e[2] - e[0]).max() < 1e-9


def _outside(at, rng):
    s = at.get_scaled_positions(wrap=False) + rng.integers(-3, 4, size=(len(at), 3))
    out = at.copy()
    out.set_scaled_positions(s)
    return out


def _swap_axes(at, rng):  # left-handed: a1 <-> a2 (det < 0), atoms where they were
    out = at.copy()
    out.set_cell(at.cell.array[[1, 0, 2]], scale_atoms=False)
    return out


def _negate_c(at, rng):  # left-handed: a3 -> -a3, atoms wrapped into the new cell
    out = at.copy()
    c = at.cell.array.copy()
    c[2] *= -1
    out.set_cell(c, scale_atoms=False)
    out.wrap()
    return out


def _skewed(at, rng):  # the same lattice through a unimodular, far-from-reduced basis
    out = at.copy()
    out.set_cell(np.array([[1, 0, 0], [7, 1, 0], [0, -5, 1]]) @ at.cell.array, scale_atoms=False)
    out.wrap()
    return out


#: k-points {0, 1/2}^3: a set that any unimodular change of cell basis maps onto itself (mod 1).
HALF_K = np.array([[a, b, c] for a in (0, 0.5) for b in (0, 0.5) for c in (0, 0.5)])


@pytest.mark.parametrize("variant", [_outside, _swap_axes, _negate_c, _skewed],
                         ids=["fractional-outside-0-1", "left-handed-swapped", "left-handed-negated", "skewed-cell"])
def test_the_same_crystal_written_differently_predicts_the_same_levels(w, capsys, rng, variant):
    at = bulk("Si", "diamond", a=5.43, cubic=True)
    at.rattle(0.03, rng=rng)
    write(w / "c.traj", [at, variant(at, rng)])
    e = _predicted_eigenvalues(w, capsys, "c.traj", HALF_K)
    np.testing.assert_allclose(np.sort(e[1].ravel()), np.sort(e[0].ravel()), atol=1e-9, rtol=0)


@pytest.mark.parametrize("fmt, name, tol", [("extxyz", "c.xyz", 1e-6), ("traj", "c.traj", 1e-9),
                                            ("vasp", "POSCAR", 1e-6), ("cif", "c.cif", 1e-3)],
                         ids=["extxyz", "ase-traj", "poscar", "cif"])
def test_every_structure_format_predicts_the_same_levels(w, capsys, rng, fmt, name, tol):
    """Text formats round positions (extxyz 8 decimals, cif 4-6): the levels agree to that rounding."""
    at = bulk("Si", "diamond", a=5.43, cubic=True)
    at.rattle(0.03, rng=rng)
    write(w / "ref.traj", at)
    write(w / name, at, format=fmt)
    ref = _predicted_eigenvalues(w, capsys, "ref.traj", HALF_K)[0]
    e = _predicted_eigenvalues(w, capsys, name, HALF_K)
    assert len(e) == 1
    np.testing.assert_allclose(np.sort(e[0].ravel()), np.sort(ref.ravel()), atol=tol, rtol=0)


@pytest.mark.parametrize("levels, n_electrons, gap", [
    ([-1.0, 0.5, 0.5 + 1e-15, 0.5 + 2e-15], 4, 0.0),   # a p level half filled, split by round-off
    ([-1.0, 0.5, 0.5, 0.5], 4, 0.0),
    ([-1.0, 0.5, 0.501, 0.502], 4, 0.001),               # a real (small) gap stays
], ids=["split-by-round-off", "exactly-degenerate", "small-real-gap"])
def test_a_partly_filled_degenerate_level_has_no_gap(levels, n_electrons, gap):
    """A single Si atom in a box reported "HOMO-LUMO gap 0.0000 eV" (a 1.8e-15 eV split), the same atom without a
    cell "metallic": a level the electron count fills in part has no gap."""
    g = band_gap([levels], n_electrons=n_electrons)
    assert g.gap == pytest.approx(gap, abs=1e-12)
    assert (g.gap > 0) == (gap > 0)


def test_a_single_atom_with_and_without_a_box_reports_the_same_gap(w, capsys):
    write(w / "a.xyz", [Atoms("Si", positions=[[10, 10, 10]], cell=[20, 20, 20], pbc=True),
                        Atoms("Si", positions=[[0, 0, 0]])], format="extxyz")
    assert main(["predict", "m.h5", "a.xyz", "-o", "p.h5", "-q"]) == 0
    lines, errs = [], []
    for k in (0, 1):
        capsys.readouterr()
        assert main(["bands", "p.h5", "--structure", str(k), "-o", f"b{k}.png"]) == 0
        cap = capsys.readouterr()
        lines.append(cap.out.splitlines()[-1])
        errs.append(cap.err)
    assert all("HOMO-LUMO gap none: metallic" in ln for ln in lines), lines
    assert "k-points along the path" in errs[0] and "k-points along the path" not in errs[1], errs  # levels at Γ


def _deeph(edit):
    """dd/0: train.h5's first structure exported as a DeepH folder, then ``edit(folder)``."""
    def setup(d):
        assert main(["export", str(d / "train.h5"), "--format", "deeph", "-o", str(d / "dd"), "--structure", "0",
                     "-q"]) == 0
        edit(d / "dd" / "0")
    return setup


def _empty_hamiltonians(folder):
    with h5py.File(folder / "hamiltonians.h5", "r+") as f:
        for key in list(f):
            del f[key]


def _nan_block(folder):
    with h5py.File(folder / "hamiltonians.h5", "r+") as f:
        key = sorted(f)[0]
        a = f[key][()]
        a[0, 0] = np.nan
        del f[key]
        f[key] = a


# ----------------------------------------------------------------------------- faults: one clear line
def _xyz(atoms):
    return lambda d: write(d / "s.xyz", atoms, format="extxyz")


def _duplicate_across_the_boundary():
    at = bulk("Si", "diamond", a=5.43, cubic=True)
    return at + Atoms("Si", positions=[at.positions[0] + at.cell[0]])


def _carbon_in_si():
    at = bulk("Si", "diamond", a=5.43, cubic=True)
    at.numbers[3] = 6
    return at


def _drop_attr(name, key):
    def setup(d):
        with h5py.File(d / name, "r+") as f:
            del f.attrs[key]
    return setup


def _pot_config(model_table):
    def setup(d):
        frames = []
        for k in range(3):
            at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
            at.rattle(0.05, rng=np.random.default_rng(k))
            at.calc = SinglePointCalculator(at, energy=-10.0 * len(at) + 0.01 * k, forces=np.zeros((len(at), 3)))
            frames.append(at)
        write(d / "lab.xyz", frames, format="extxyz")
        (d / "p.toml").write_text(POT_TOML + model_table)
    return setup


NM = bulk("Si", "diamond", a=0.543, cubic=True)  # a cell written in nm
EMBEDDED = '\n[model]\nkind = "embedded"\nembeddings = ["fs"]\ndensity_max_degree = [4, 2, 0]\nlam = [1e-6]\n'
DENSITIES = ('\n[model]\nkind = "embedded_multilayer"\n[model.densities]\nembeddings = ["fs"]\n'
             'density_max_degree = [4, 2, 0]\nlam = [1e-6]\n')

CASES = [
    ("predict-wrapped-duplicate-across-the-boundary", _xyz(_duplicate_across_the_boundary()),
     ["predict", "m.h5", "s.xyz", "-o", "p.h5"], "atoms 0 and 8 are 0 Å apart"),
    ("predict-second-species", _xyz(_carbon_in_si()), ["predict", "m.h5", "s.xyz", "-o", "p.h5"],
     "species ['C'] are not in the model's basis (['Si'])"),
    ("predict-cell-in-nm", _xyz(NM), ["predict", "m.h5", "s.xyz", "-o", "p.h5"],
     "from its own periodic image (the shortest lattice vector), less than 1.11 Å"),
    ("predict-atom-in-a-0.6-A-cube", _xyz(Atoms("Si", positions=[[0, 0, 0]], cell=[0.6] * 3, pbc=True)),
     ["predict", "m.h5", "s.xyz", "-o", "p.h5"], "atom 0 is 0.6 Å from its own periodic image"),
    ("select-cell-in-nm", _xyz(NM), ["select", "m.h5", "s.xyz", "-n", "1", "-o", "p.xyz"],
     "the cell is too small for its atoms or nearly singular (in the wrong unit?)"),
    ("evaluate-reference-overlap-not-positive-definite", write_bad_overlap,
     ["evaluate", "m.h5", "bad.h5", "--no-uncertainty"],
     "structure 'badS', the reference data: overlap S(k) is not positive definite"),
    ("dataset-without-conventions-version", _drop_attr("train.h5", "conventions_version"),
     ["info", "train.h5"], "train.h5: no conventions_version attribute"),
    ("model-without-format-version", _drop_attr("m.h5", "format_version"),
     ["predict", "m.h5", "one.xyz", "-o", "p.h5"], "m.h5: no format_version attribute"),
    ("predict-supercell-beyond-memory", lambda d: None,
     ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--supercell", "1000", "1000", "1000"],
     "a 1000 x 1000 x 1000 supercell of this 4-atom cell has 4000000000 atoms whose H and S need ~"),
    ("deeph-empty-hamiltonians", _deeph(_empty_hamiltonians), ["convert", "dd/0", "-o", "o.h5"],
     "dd/0/hamiltonians.h5: no blocks (an empty or foreign file)"),
    ("deeph-nan-block", _deeph(_nan_block), ["convert", "dd/0", "-o", "o.h5"],
     "dd/0/hamiltonians.h5: block ["),
    ("potential-density-max-degree-beyond-max-nu", _pot_config(EMBEDDED), ["fit-potential", "p.toml", "-o", "o.h5"],
     "[model] density_max_degree = [4, 2, 0] has 3 entries, but max_nu = 2 uses only the first 2"),
    ("potential-densities-max-degree-beyond-max-nu", _pot_config(DENSITIES), ["fit-potential", "p.toml", "-o", "o.h5"],
     "[model.densities] density_max_degree = [4, 2, 0] has 3 entries, but max_nu = 2"),
]


@pytest.mark.parametrize("setup, argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_unseen_input_fault_is_one_clear_line(w, capsys, setup, argv, message):
    setup(w)
    assert_one_line_error(w, capsys, argv, message)


def _aims_spin_one_channel(run):
    text = (run / "control.in").read_text()
    assert "spin               none" in text
    (run / "control.in").write_text(text.replace("spin               none", "spin               collinear"))


def _aims_geometry_of_another_species(run):
    (run / "geometry.in").write_text((run / "geometry.in").read_text().replace(" C\n", " Si\n"))


@pytest.mark.parametrize("edit, message", [
    (_aims_spin_one_channel, "control.in asks 'spin collinear' but rs_hamiltonian holds one spin channel"),
    (_aims_geometry_of_another_species, "geometry.in has species ['Si'] but control.in defines only ['C']"),
], ids=["spin-collinear-with-one-channel", "geometry-species-not-in-control"])
def test_fhi_aims_files_from_different_runs_are_refused(shared_data, tmp_path, capsys, edit, message):
    """Both were converted without a word: one spin's H used as both spins; a Si cell with carbon's basis."""
    run = tmp_path / "run"
    shutil.copytree(shared_data / "fhi-aims" / "bilayer-graphene", run)
    for p in run.rglob("*"):
        p.chmod(0o644)
    edit(run)
    rc = main(["convert", str(run), "-o", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o.h5").exists()


def test_generate_names_a_hidden_copy_left_by_an_older_acehamil(w, capsys, monkeypatch):
    """acehamil before 55de7da left ``.NAME.*.replaced`` (the old output) when ``generate --overwrite`` was killed;
    generate now says where it lies, and leaves it (it may be the only copy of the old data)."""
    import acehamil.cli.generate as cg
    import acehamil.io.pyscf_gen as pg
    from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData

    def fake(atoms, settings, dm0=None, log=None, band_window=2.0):
        S = RealSpaceMatrix.from_dense([1] * len(atoms), [[0, 0, 0]], [np.eye(len(atoms))])
        info = {"band_error": {"checked_max_meV": 0.0, "all": {"max_meV": 0.0}}}
        return StructureData(atoms, OrbitalBasis.from_dict({14: [(3, 0)]}), H=(S,), S=S, info=info), None

    monkeypatch.setattr(pg, "run_crystal", fake)
    monkeypatch.setattr(cg, "_check_pyscf_names", lambda *a: None)
    hidden = w / ".g.h5.x1y2.replaced"
    shutil.copy2(w / "train.h5", hidden)
    assert main(["generate", "pyscf", "--base", "si2", "--count", "1", "-o", "g.h5", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note: .g.h5.x1y2.replaced in" in err and "nothing reads it" in err, err
    assert hidden.read_bytes() == (w / "train.h5").read_bytes()
    assert len(read_dataset(w / "g.h5")) == 1

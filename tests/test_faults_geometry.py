"""Structures and folders an adversarial user feeds in (the charter's leftovers): each gets one clear line, or,
where the input is legitimate, the right answer instead of a crash.

Before the fixes: one Si atom in a 1 Å cube (its images 1 Å away) was predicted with only a warning (S(k) not
positive definite); a periodic atom at 1e10 Å (its place in the cell below float64's resolution) was
predicted; a CIF with partially occupied sites was predicted as one arbitrary ordered configuration; two
cluster atoms 1e6 Å apart killed the process (SIGFPE in the cell list of a 1e16-cell box); ``fit`` with
``r_cut = 1e6`` never returned (the neighbour search asked for ~1e18 pairs); ``convert`` of an FHI-aims
folder missing ``basis-indices.out`` said only "not a format acehamil reads"; ``bands --kpts`` of a file
with only comments printed numpy's warning beside the error.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.io import write
from sk_si import FIT_TOML, assert_one_line_error, work_in_copy

from acehamil.cli import main
from acehamil.errors import UserError
from acehamil.structure.neighbours import MAX_PAIRS, estimated_pairs, neighbour_pairs
from acehamil.structure.validate import check_atoms

OCCUPANCY_CIF = """data_x
_cell_length_a 5.43
_cell_length_b 5.43
_cell_length_c 5.43
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Si1 Si 0 0 0 1.0
Si2 Si 0.25 0.25 0.25 1.0
Si3 Si 0.5 0.5 0.0 0.5
"""


@pytest.fixture
def w(sk_si_files, tmp_path, monkeypatch, capsys):
    work_in_copy(sk_si_files, tmp_path, monkeypatch)
    capsys.readouterr()
    return tmp_path


def _si_pair(**kw):
    return Atoms("Si2", **kw)


FCC = [[0, 2.715, 2.715], [2.715, 0, 2.715], [2.715, 2.715, 0]]

STRUCTURES = [
    ("one-si-in-a-1-A-cube", Atoms("Si", positions=[[0, 0, 0]], cell=[1.0] * 3, pbc=True),
     "atom 0 is 1 Å from its own periodic image (the shortest lattice vector), less than 1.11 Å"),
    ("nearly-singular-lattice", _si_pair(positions=[[0, 0, 0], [1.3, 1.3, 1.3]],
                                         cell=[[5.43, 0, 0], [5.43, 1e-4, 0], [0, 0, 5.43]], pbc=True),
     "atom 0 is 0.0001 Å from its own periodic image"),
    ("two-si-0.8-A-apart", _si_pair(positions=[[0, 0, 0], [0.8, 0, 0]], pbc=False),
     "atoms 0 and 1 are 0.8 Å apart, less than 0.5 times the Si-Si covalent bond length"),
    ("periodic-atom-at-1e10-A", _si_pair(positions=[[1e10, 0, 0], [1.3575] * 3], cell=FCC, pbc=True),
     "atom 0 is at [10000000000.0, 0.0, 0.0] Å, beyond 1e+08 Å"),
    ("cluster-atom-at-1e300-A", _si_pair(positions=[[0, 0, 0], [1e300, 0, 0]], pbc=False), "beyond 1e+08 Å"),
]


@pytest.mark.parametrize("name,atoms,message", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_impossible_structure_is_one_clear_line(w, capsys, name, atoms, message):
    write(w / "s.xyz", atoms)
    assert_one_line_error(w, capsys, ["predict", "m.h5", "s.xyz", "-o", "p.h5"], message)
    with pytest.raises(UserError, match=re.escape(message)):
        check_atoms(atoms, "api")
    from acehamil.io.models import load_model

    with pytest.raises(UserError, match=re.escape(message)):  # the API's prediction: it warned about S, if at all
        load_model(w / "m.h5").predict_structure(atoms)


def test_partially_occupied_sites_are_refused(w, capsys):
    (w / "occ.cif").write_text(OCCUPANCY_CIF)
    assert_one_line_error(w, capsys, ["predict", "m.h5", "occ.cif", "-o", "p.h5"],
                          "site kind 2 is partially occupied ({'Si': 0.5}): a disordered crystal")
    (w / "full.cif").write_text(OCCUPANCY_CIF.replace("0.0 0.5\n", "0.0 1.0\n"))
    assert main(["predict", "m.h5", "full.cif", "-o", "full.h5", "-q"]) == 0  # full occupancies read as before


def test_an_atom_just_over_half_a_bond_from_its_image_is_predicted_with_a_warning(w, capsys):
    """The boundary of the rule: one Si atom in a 1.2 Å cube (images at 0.54 of the Si-Si bond) is accepted, and
    the prediction's S(k) that is not positive definite is reported (bands/dos refuse it)."""
    write(w / "t.xyz", Atoms("Si", positions=[[0, 0, 0]], cell=[1.2] * 3, pbc=True))
    assert main(["predict", "m.h5", "t.xyz", "-o", "t.h5", "-q"]) == 0
    assert "not positive definite" in capsys.readouterr().err


def test_cluster_atoms_far_apart_are_predicted(w, capsys):
    """Two Si atoms 1e6 Å apart (two isolated atoms): the neighbour search takes a k-d tree, not a 1e16-cell list."""
    write(w / "far.xyz", _si_pair(positions=[[0, 0, 0], [1e6, 0, 0]], pbc=False))
    assert main(["predict", "m.h5", "far.xyz", "-o", "far.h5", "-q"]) == 0
    nl = neighbour_pairs(_si_pair(positions=[[0, 0, 0], [1e6, 0, 0]], pbc=False), 4.0)
    assert len(nl) == 0


@pytest.mark.parametrize("pbc,spread", [(False, 20.0), ((True, True, False), 30.0)])
def test_kd_tree_path_equals_the_cell_list(monkeypatch, pbc, spread):
    import acehamil.structure.neighbours as nb

    rng = np.random.default_rng(3)
    atoms = Atoms("Si40", positions=rng.uniform(0, spread, (40, 3)), cell=[20, 20, 30], pbc=pbc)
    ref = neighbour_pairs(atoms, 5.0)
    monkeypatch.setattr(nb, "MAX_LIST_CELLS", 0)
    got = neighbour_pairs(atoms, 5.0)
    assert len(ref) > 40 and np.array_equal(ref.i, got.i) and np.array_equal(ref.j, got.j)
    assert np.array_equal(ref.shift, got.shift) and np.allclose(ref.vec, got.vec, atol=1e-12)


@pytest.mark.parametrize("atoms,r", [(bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3), 8.0),
                                     (fcc111("Cu", (6, 6, 4), vacuum=10.0), 8.0),
                                     (bulk("Si", "diamond", a=5.43), 2.5)])
def test_pair_estimate_is_an_upper_bound_within_a_few_times(atoms, r):
    n = len(neighbour_pairs(atoms, r))
    assert n <= estimated_pairs(atoms, r) <= 4.0 * n


def test_absurd_cutoff_is_refused_before_the_search(w, capsys):
    assert estimated_pairs(bulk("Si", "diamond", a=5.43), 1e6) > MAX_PAIRS
    (w / "huge.toml").write_text(FIT_TOML.replace("r_cut = 4.0\nr_env", "r_cut = 1e6\nr_env"))
    assert_one_line_error(w, capsys, ["fit", "huge.toml", "-o", "h.h5"], "a cutoff or cell in the wrong unit?")


@pytest.mark.parametrize("present,missing,producer", [
    (("control.in", "geometry.in"), "basis-indices.out", "'output_rs_matrices plain'"),
    (("control.in", "basis-indices.out", "rs_indices.out", "rs_hamiltonian.out", "rs_overlap.out"), "geometry.in",
     "the run's input geometry"),
])
def test_incomplete_fhi_aims_folder_names_the_missing_file_and_its_producer(w, capsys, present, missing, producer):
    run = w / "run"
    run.mkdir()
    for name in present:
        (run / name).write_text("# placeholder\n")
    assert_one_line_error(w, capsys, ["convert", "run", "-o", "d.h5"], f"lacks {missing} (")
    assert_one_line_error(w, capsys, ["convert", "run", "-o", "d.h5"], producer)


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_kpoint_file_without_kpoints_is_one_line(w, capsys, text):
    (w / "k.txt").write_text(text)
    assert_one_line_error(w, capsys, ["bands", "train.h5", "--kpts", "k.txt", "--json", "b.json"], "no k-points")


def test_xyz_header_asking_more_atoms_than_lines_is_one_line(w, capsys):
    """ASE skipped the frame's atom lines one by one: a count of 99999999999 kept it reading for hours."""
    (w / "big.xyz").write_text("99999999999\n\nSi 0 0 0\n")
    assert_one_line_error(w, capsys, ["predict", "m.h5", "big.xyz", "-o", "p.h5"],
                          "frame 0 (line 1) says 99999999999 atoms, but only 1 lines follow")
    (w / "two.xyz").write_text("1\n\nSi 0 0 0\n3\n\nSi 0 0 0\nSi 2.35 0 0\n")
    assert_one_line_error(w, capsys, ["predict", "m.h5", "two.xyz", "-o", "p.h5"], "frame 1 (line 4) says 3 atoms")


def test_select_writes_through_a_unique_temporary(w, capsys):
    """select wrote a fixed '.NAME.tmp' beside its output: a second run's (here a folder of that name) broke it."""
    (w / ".picked.xyz.tmp").mkdir()
    assert main(["select", "m.h5", "train.h5", "-n", "1", "-o", "picked.xyz", "-q", "--criterion", "variance"]) == 0
    from ase.io import read

    assert len(read(w / "picked.xyz", index=":")) == 1
    assert sorted(p.name for p in w.iterdir() if p.name.endswith(".tmp")) == [".picked.xyz.tmp"]


def test_absurd_settings_are_named_before_any_work(w, capsys):
    """n_max = 100000 asked the radial quadrature for 74.5 GiB (MemoryError traceback, exit 1) in fit and
    fit-potential; a negative smoothness was refused as the solver's 'power', a name the TOML does not have."""
    from sk_si import POT_TOML

    (w / "n.toml").write_text(FIT_TOML.replace("n_max = 3", "n_max = 100000"))
    assert_one_line_error(w, capsys, ["fit", "n.toml", "-o", "n.h5"], "[h_onsite]: n_max = 100000 radial functions")
    (w / "s.toml").write_text(FIT_TOML.replace("lam = 1e-8", "lam = 1e-8\nsmoothness = -2.0"))
    assert_one_line_error(w, capsys, ["fit", "s.toml", "-o", "s.h5"], "[solver]: smoothness must be a finite number")
    (w / "lab.xyz").write_text((w / "one.xyz").read_text())
    (w / "p.toml").write_text(POT_TOML.replace("n_max = 3", "n_max = 100000"))
    assert_one_line_error(w, capsys, ["fit-potential", "p.toml", "-o", "p.h5"], "[basis] n_max = 100000")


def test_evaluate_without_eigenvalues_in_the_window_says_so(w, capsys):
    """No reference eigenvalue within E_F +- window: evaluate printed 'MAE nan meV' and a coverage of 'nan (n 0)'."""
    assert main(["evaluate", "m.h5", "train.h5", "--window", "1e-6", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "none on per-structure grids" in out and "widen --window" in out and "nan" not in out


TB_ROWS = [
    ("eigs-supercell-1000-cubed", ["eigs", "train.h5", "--supercell", "1000", "1000", "1000"],
     "(1000000000 tile wave vectors): 1000000000 k-points x 16 bands would need ~119 GiB"),
    ("dos-moments-1e9", ["dos", "train.h5", "--method", "kpm", "--moments", "1000000000", "--json", "d.json"],
     "--moments and --vectors must be <= 100000"),
    ("dos-kpm-supercell-1000-cubed", ["dos", "train.h5", "--method", "kpm", "--supercell", "1000", "1000", "1000",
                                      "--json", "d.json"], "1.6e+10 orbitals, more than 1e+08"),
    ("eigs-k-1e300", ["eigs", "train.h5", "--kpt", "1e300", "0", "0"], "has a fractional coordinate beyond 1e+06"),
    ("predict-charge-minus-1e9", ["predict", "m.h5", "one.xyz", "-o", "p.h5", "--charge", "-1e9"],
     "leaves 1e+09 electrons, more than the 32 the structure's orbitals hold"),
]


@pytest.mark.parametrize("name,argv,message", TB_ROWS, ids=[r[0] for r in TB_ROWS])
def test_absurd_sizes_and_values_are_one_line(w, capsys, name, argv, message):
    """Before: three MemoryError tracebacks (exit 1), eigenvalues at k = 1e300 (phases of rounding noise), and a
    charge of -1e9 (argparse took '-1e9' for an option; as --charge=-1e9 a billion electrons were accepted)."""
    assert_one_line_error(w, capsys, argv, message)


def test_eigs_default_count_fits_a_small_structure(w, capsys):
    """The default -n 20 refused every structure of 20 orbitals or fewer ('-n 20 must be smaller than ... (16)')."""
    assert main(["eigs", "train.h5", "--json", "e.json", "-q"]) == 0
    import json

    assert len(json.loads((w / "e.json").read_text())["energies"]) == 15

"""``acehamil bands`` / ``acehamil dos`` end to end on dataset files (toy models and, where present,
the shared FHI-aims and ACEhamiltonians data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from acehamil.cli import main
from acehamil.io.dataset import write_dataset
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.eigen import solve
from acehamil.tb.toy import SKParams, slater_koster

SP = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    d = tmp_path_factory.mktemp("tbcli")
    atoms = bulk("Si", "diamond", a=5.43)
    H, S = slater_koster(atoms, SP, cutoff=4.0)
    kref = np.array([[0, 0, 0], [0.25, 0, 0.25], [0.5, 0, 0.5]])
    sd = StructureData(atoms, SP, H=(H,), S=S, n_electrons=8, reference_bands=(kref, solve(H, S, kref)),
                       info={"source": "toy"})
    H2, S2 = slater_koster(atoms, SP, SKParams(onsite=(-4.0, 1.8)), cutoff=4.0)
    other = StructureData(atoms, SP, H=(H2,), S=S2, n_electrons=8)
    write_dataset(d / "si.h5", [sd])
    write_dataset(d / "si_model.h5", [other])
    return d, sd, other


def test_bands_reference_kpts_and_json(datasets, tmp_path, capsys):
    d, sd, _ = datasets
    rc = main(["bands", str(d / "si.h5"), "-o", str(tmp_path / "b.png"), "--json", str(tmp_path / "b.json")])
    assert rc == 0
    out = json.loads((tmp_path / "b.json").read_text())
    np.testing.assert_allclose(out["kpts"], sd.reference_bands[0])
    np.testing.assert_allclose(out["energies"], sd.reference_bands[1], atol=1e-12)
    assert out["reference_max_error"] < 1e-10 and out["band_gap"] > 0
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "max |bands - reference|" in capsys.readouterr().out


def test_bands_path_and_reference_dataset(datasets, tmp_path):
    d, sd, other = datasets
    js = tmp_path / "b.json"
    assert main(["bands", str(d / "si.h5"), "--path", "GXWKGL", "--npoints", "30", "--reference",
                 str(d / "si_model.h5"), "-o", str(tmp_path / "b.pdf"), "--json", str(js), "-q"]) == 0
    out = json.loads(js.read_text())
    k = np.array(out["kpts"])
    assert k.shape == (30, 3) and out["path"] == "GXWKGL"
    np.testing.assert_allclose(out["reference_energies"], solve(other.H[0], other.S, k), atol=1e-10)
    assert out["reference_max_error"] > 0.01


def test_bands_kpts_file(datasets, tmp_path):
    d, sd, _ = datasets
    kf = tmp_path / "k.txt"
    kf.write_text("# fractional\n0 0 0\n0.1 0.2 0.3\n")
    js = tmp_path / "b.json"
    assert main(["bands", str(d / "si.h5"), "--kpts", str(kf), "--json", str(js), "-q"]) == 0
    out = json.loads(js.read_text())
    np.testing.assert_allclose(out["energies"], solve(sd.H[0], sd.S, [[0, 0, 0], [0.1, 0.2, 0.3]]), atol=1e-12)


@pytest.mark.parametrize("pdos", [None, "species", "shell", "l"])
def test_dos_json(datasets, tmp_path, pdos):
    d, _, _ = datasets
    js = tmp_path / "d.json"
    args = ["dos", str(d / "si.h5"), "--kmesh", "4", "4", "4", "--width", "0.2", "--json", str(js), "-q"]
    if pdos:
        args += ["--pdos", pdos]
    assert main(args) == 0
    out = json.loads(js.read_text())
    e, dos = np.array(out["energies"]), np.array(out["dos"])
    assert np.trapezoid(dos, e) == pytest.approx(16.0, rel=1e-5)
    assert out["units"]["dos"] == "states/eV per cell" and out["spin_degeneracy"] == 2
    assert ("pdos" in out) == bool(pdos)
    if pdos:
        np.testing.assert_allclose(np.sum([v for v in out["pdos"].values()], axis=0), dos, atol=1e-9)


def test_dos_plot(datasets, tmp_path):
    d, _, _ = datasets
    assert main(["dos", str(d / "si.h5"), "--kmesh", "3", "3", "3", "--pdos", "-o", str(tmp_path / "d.png"), "-q"]) == 0
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("reps, mesh", [((1, 1, 1), (8, 8, 8)), ((2, 1, 1), (4, 8, 8)), ((3, 3, 3), (3, 3, 3))])
def test_dos_default_kmesh_scales_with_the_cell(tmp_path, capsys, reps, mesh):
    """No --kmesh: n_i = ceil(40 Å |b_i|) (the cubic 8-atom cell 8x8x8, a 216-atom 3x3x3 supercell 3x3x3,
    not a fixed 12x12x12), printed; the DOS holds every state of the cell on that grid."""
    from acehamil.tb.dos import monkhorst_pack

    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * reps
    H, S = slater_koster(atoms, SP, cutoff=2.6)
    write_dataset(tmp_path / "c.h5", [StructureData(atoms, SP, H=(H,), S=S, n_electrons=4 * len(atoms))])
    js = tmp_path / "d.json"
    assert main(["dos", str(tmp_path / "c.h5"), "--width", "0.3", "--window", "all", "--json", str(js)]) == 0
    assert f"k-mesh {'x'.join(map(str, mesh))} (default" in capsys.readouterr().err
    out = json.loads(js.read_text())
    assert out["nkpts"] == len(monkhorst_pack(mesh, (True,) * 3)[0])
    assert np.trapezoid(out["dos"], out["energies"]) == pytest.approx(8.0 * len(atoms), rel=1e-4)


@pytest.mark.parametrize("reps, npoints", [((1, 1, 1), 199), ((3, 3, 3), 67)])
def test_bands_default_points_scale_with_the_path(tmp_path, capsys, reps, npoints):
    """No --npoints: the same k-resolution along the path (285 per 1/Å), so a 216-atom supercell's
    (folded) bands get a third of the 8-atom cell's points; printed."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * reps
    H, S = slater_koster(atoms, SP, cutoff=2.6)
    write_dataset(tmp_path / "c.h5", [StructureData(atoms, SP, H=(H,), S=S, n_electrons=4 * len(atoms))])
    js = tmp_path / "b.json"
    assert main(["bands", str(tmp_path / "c.h5"), "--json", str(js)]) == 0
    assert f"bands: {npoints} k-points along the path (default" in capsys.readouterr().err
    assert len(json.loads(js.read_text())["kpts"]) == npoints


def test_dos_kmesh_is_gamma_for_molecules_and_large_cells():
    from acehamil.tb.kpath import dos_kmesh

    mol = bulk("Si", "diamond", a=5.43, cubic=True)
    mol.pbc = False
    assert dos_kmesh(mol) == (1, 1, 1)
    assert dos_kmesh(bulk("Si", "diamond", a=5.43, cubic=True) * (8, 8, 8)) == (1, 1, 1)
    slab = bulk("Si", "diamond", a=5.43, cubic=True) * (1, 1, 2)
    slab.center(vacuum=10.0, axis=2)
    assert dos_kmesh(slab) == (8, 8, 1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bands", "{d}/missing.h5"], "no such dataset"),
        (["bands", "{d}/si.h5", "--structure", "3"], "out of range"),
        (["bands", "{d}/si.h5", "-o", "{d}/x.svg"], "must end in"),
        (["bands", "{d}/si.h5", "--path", "GQ"], "cannot build k-path"),
        (["dos", "{d}/si.h5", "--kmesh", "0", "1", "1"], "k-mesh"),
        (["dos", "{d}/si.h5", "--width", "-1"], "width"),
    ],
)
def test_errors(datasets, argv, message, capsys):
    d, _, _ = datasets
    assert main([a.format(d=d) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_singular_overlap_error_and_remedy(tmp_path, capsys):
    from acehamil.structure import RealSpaceMatrix

    atoms = bulk("Si", "diamond", a=5.43)
    H, S = slater_koster(atoms, SP, cutoff=4.0)
    dup = np.array([0, 0, 1, 2, 3])  # the s orbital twice on every atom: S(k) exactly singular
    hb, sb = [], []
    for p in range(H.nblocks):
        h, s = H.block(p)[np.ix_(dup, dup)].copy(), S.block(p)[np.ix_(dup, dup)].copy()
        if H.i[p] == H.j[p] and not H.shift[p].any():
            s[0, 1] = s[1, 0] = 1.0
        hb.append(h), sb.append(s)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (4, 0), (3, 1)]})
    n = np.full(2, 5)
    sd = StructureData(atoms, basis, H=(RealSpaceMatrix.from_blocks(n, H.i, H.j, H.shift, hb),),
                       S=RealSpaceMatrix.from_blocks(n, S.i, S.j, S.shift, sb), n_electrons=8)
    write_dataset(tmp_path / "dup.h5", [sd])
    js = tmp_path / "b.json"
    argv = ["bands", str(tmp_path / "dup.h5"), "--path", "GX", "--npoints", "5", "--json", str(js), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "smallest eigenvalue" in err and "k-point" in err and "remedy" in err
    assert main(argv + ["--remedy", "project", "--s-threshold", "1e-8"]) == 0
    out = json.loads(js.read_text())
    np.testing.assert_allclose(out["energies"], solve(H, S, out["kpts"]), atol=1e-8)  # 8 bands, not 10


@pytest.mark.parametrize("text", ["0 0 0\n0.1 0.2 0.3", "0 0 0\n0.1 0.2 0.", "# header\n0 0 0\n0.25 0.25 0.2"])
def test_bands_kpts_file_with_a_cut_last_line_is_refused(datasets, tmp_path, capsys, text):
    """A --kpts file whose last line has no newline may be cut mid-number (0.25 -> 0.2, 0.3 -> 0.): refused
    in one line, not read as a wrong k-point; the same file ending with a newline is read."""
    d, sd, _ = datasets
    kf = tmp_path / "k.txt"
    kf.write_text(text)
    assert main(["bands", str(d / "si.h5"), "--kpts", str(kf), "--json", str(tmp_path / "b.json"), "-q"]) != 0
    err = capsys.readouterr().err
    assert "does not end with a newline" in err and "Traceback" not in err
    kf.write_text(text + "\n")
    assert main(["bands", str(d / "si.h5"), "--kpts", str(kf), "--json", str(tmp_path / "b.json"), "-q"]) == 0


def test_bands_kpts_file_missing_is_one_line(datasets, tmp_path, capsys):
    d, _, _ = datasets
    assert main(["bands", str(d / "si.h5"), "--kpts", str(tmp_path / "none.txt"), "-q"]) != 0
    err = capsys.readouterr().err
    assert "none.txt" in err and "Traceback" not in err

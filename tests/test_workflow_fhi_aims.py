"""FHI-aims end to end (shared data; skipped when absent): convert reads the band files, control.in's
path and k_grid; `bands` overlays FHI-aims' bands on its own path; molecules get a level diagram;
the default DOS window leaves out core levels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from acehamil.cli import main
from acehamil.io.dataset import read_dataset
from acehamil.io.fhi_aims_bands import read_band_files, read_control_in


@pytest.fixture(scope="module")
def graphene_h5(shared_data, tmp_path_factory):
    folder = shared_data / "fhi-aims" / "bilayer-graphene"
    out = tmp_path_factory.mktemp("bg") / "bg.h5"
    assert main(["convert", str(folder), "-o", str(out)]) == 0
    return folder, out


def test_convert_reads_band_files_and_control(graphene_h5):
    folder, h5 = graphene_h5
    sd = read_dataset(h5)[0]
    k, eps = sd.reference_bands
    assert k.shape == (26, 3) and eps.shape == (26, 29)
    assert sd.info["k_grid"] == [8, 8, 1]
    assert sd.info["band_path"]["labels"] == [[0, "K"], [10, "G"], [11, "G"], [19, "M"], [20, "M"], [25, "K"]]
    assert sd.info["band_path"]["breaks"] == []  # K-G, G-M, M-K join up
    # absolute energies: the file's values + the last chemical potential of aims.out
    raw = np.loadtxt(folder / "band1001.out")
    np.testing.assert_allclose(eps[:11], raw[:, 5::2] + sd.fermi_level)


def test_bands_reproduce_fhi_aims_on_control_path(graphene_h5, tmp_path):
    _, h5 = graphene_h5
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bands", str(h5), "-o", str(png), "--json", str(js), "-q"]) == 0
    out = json.loads(js.read_text())
    ref = np.array(out["reference_energies"])
    eps = np.array(out["energies"])[:, : ref.shape[1]]
    err = np.abs(eps - ref).max()
    assert err <= 1e-4, f"max |acehamil - FHI-aims band100*.out| = {err:.2e} eV"
    assert out["path"] == "KGMK"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_default_path_of_the_slab_is_2d(graphene_h5, tmp_path):
    _, h5 = graphene_h5
    js = tmp_path / "b.json"
    assert main(["bands", str(h5), "--path", "GMKG", "--npoints", "30", "--json", str(js), "-q"]) == 0
    from acehamil.tb.kpath import band_path, effective_pbc

    sd = read_dataset(h5)[0]
    assert effective_pbc(sd.atoms).tolist() == [True, True, False]
    assert band_path(sd.atoms, npoints=10).path == "GMKG"  # hexagonal 2D, not the 3D hexagonal path


def test_dos_default_window_leaves_out_core_levels(graphene_h5, tmp_path, capsys):
    _, h5 = graphene_h5
    js = tmp_path / "d.json"
    assert main(["dos", str(h5), "--kmesh", "6", "6", "6", "--json", str(js)]) == 0
    out = json.loads(js.read_text())
    e = np.array(out["energies"]) - out["fermi_level"]
    assert -25 < e[0] < -19.5 and e[-1] < 25  # C 1s at -266 eV relative to E_F is not in the window
    assert out["nkpts"] == 18  # 6x6x1 (vacuum axis), 36 points halved by time reversal
    assert main(["dos", str(h5), "--kmesh", "2", "2", "2", "--window", "all", "--json", str(js), "-q", "--overwrite"]) == 0
    assert json.loads(js.read_text())["energies"][0] - out["fermi_level"] < -260


def test_molecule_level_diagram(shared_data, tmp_path, capsys):
    folder = shared_data / "fhi-aims" / "water-dimer"
    h5, png = tmp_path / "w.h5", tmp_path / "w.png"
    assert main(["convert", str(folder), "-o", str(h5)]) == 0
    capsys.readouterr()
    assert main(["bands", str(h5), "-o", str(png)]) == 0
    text = capsys.readouterr().out
    assert "level diagram" in text and "HOMO-LUMO gap" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["dos", str(h5)]) == 0
    text = capsys.readouterr().out
    assert "12x12x12" not in text and "molecule" in text


def test_control_in_and_band_file_errors(tmp_path):
    (tmp_path / "control.in").write_text("k_grid 8 8\n")
    with pytest.raises(ValueError, match="control.in:1"):
        read_control_in(tmp_path / "control.in")
    (tmp_path / "control.in").write_text("output band 0 0 0 0.5 0 0 x G M\n")
    with pytest.raises(ValueError, match="output"):
        read_control_in(tmp_path / "control.in")
    with pytest.raises(FileNotFoundError, match="band1001"):
        read_band_files(tmp_path, 0.0)
    (tmp_path / "band1001.out").write_text("1 0 0 0 2.0\n")
    with pytest.raises(ValueError, match="pairs"):
        read_band_files(tmp_path, 0.0)


def test_spin_band_files(tmp_path):
    rows = "1 0.0 0.0 0.0 1.0 -1.0 0.0 2.0\n2 0.5 0.0 0.0 1.0 -0.5 0.0 2.5\n"
    (tmp_path / "band1001.out").write_text(rows)
    (tmp_path / "band2001.out").write_text(rows.replace("-1.0", "-0.9"))
    k, eps, lengths = read_band_files(tmp_path, 10.0)
    assert eps.shape == (2, 2, 2) and lengths == [2]
    assert eps[1, 0, 0] == pytest.approx(9.1) and eps[0, 1, 1] == pytest.approx(12.5)

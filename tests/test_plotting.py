"""Figures: bands with and without a reference (error panel), DOS/PDOS; PNG and PDF files."""

from __future__ import annotations

import pytest
from ase.build import bulk

from acehamil.plotting import plot_bands, plot_dos, save_figure
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.bands import band_structure
from acehamil.tb.dos import density_of_states
from acehamil.tb.toy import slater_koster

SP = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})


@pytest.fixture(scope="module")
def si_data():
    atoms = bulk("Si", "diamond", a=5.43)
    H, S = slater_koster(atoms, SP, cutoff=4.0)
    return StructureData(atoms, SP, H=(H,), S=S, n_electrons=8)


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
@pytest.mark.parametrize("with_reference", [False, True])
def test_band_plot_files(si_data, tmp_path, suffix, with_reference, rng):
    res = band_structure(si_data, path="GXWKGL", npoints=25)
    if with_reference:
        res = type(res)(res.path, res.energies, res.fermi_level, res.gap,
                        res.energies + rng.normal(scale=1e-3, size=res.energies.shape))
    fig = plot_bands(res)
    assert len(fig.axes) == (2 if with_reference else 1)
    if with_reference:
        err_line = fig.axes[1].lines[0].get_ydata()
        assert err_line.max() > 0 and len(err_line) == 25
        # the reference is drawn (markers) on the band panel
        assert sum(1 for ln in fig.axes[0].lines if ln.get_marker() == "o") == 8
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert labels[0] == "Γ" and labels[-1] == "L"
    out = tmp_path / f"bands{suffix}"
    save_figure(fig, out)
    head = out.read_bytes()[:8]
    assert head.startswith(b"\x89PNG" if suffix == ".png" else b"%PDF")


def test_dos_plot_with_pdos(si_data, tmp_path):
    res = density_of_states(si_data, kmesh=(3, 3, 3), width=0.2, pdos="l")
    fig = plot_dos(res, emin=-8, emax=5, reference=(res.energies, res.dos))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["DOS", "Si:s", "Si:p", "reference"]
    save_figure(fig, tmp_path / "dos.pdf")
    assert (tmp_path / "dos.pdf").stat().st_size > 1000


@pytest.mark.parametrize("name, err", [("x.svg", ValueError), ("nodir/x.png", FileNotFoundError)])
def test_save_figure_errors(si_data, tmp_path, name, err):
    fig = plot_dos(density_of_states(si_data, kmesh=(1, 1, 1), width=0.3))
    with pytest.raises(err):
        save_figure(fig, tmp_path / name)


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, acehamil.plotting, acehamil.tb.bands, acehamil.tb.dos; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

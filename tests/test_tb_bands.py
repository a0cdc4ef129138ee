"""Band structures: paths, ASE objects, gaps, Fermi levels, JSON contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.bands import band_gap, band_path, band_structure, kmesh_for, path_from_kpts
from acehamil.tb.eigen import solve
from acehamil.tb.toy import slater_koster

SP = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)], 1: [(1, 0)], 6: [(2, 0), (2, 1)]})



@pytest.mark.parametrize("path", [None, "GXWKGL", "GX,LG"])
def test_band_structure_along_paths(si_data, path):
    res = band_structure(si_data, path=path, npoints=30)
    assert res.energies.shape == (1, 30, 8)
    np.testing.assert_allclose(res.energies[0], solve(si_data.H[0], si_data.S, res.kpts), atol=1e-12)
    bs = res.band_structure
    np.testing.assert_allclose(bs.energies, res.energies)
    assert bs.reference == res.fermi_level
    x, xspecial, labels = bs.path.get_linear_kpoint_axis()
    assert len(x) == 30 and labels[0] == "G"


def test_gap_and_fermi_level_consistent(si_data):
    res = band_structure(si_data, path="GXWKGL", npoints=60)
    g = res.gap
    assert g.gap > 1.0 and g.vbm < res.fermi_level < g.cbm
    assert g.vbm == pytest.approx(res.energies[0, :, 3].max()) and g.cbm == pytest.approx(res.energies[0, :, 4].min())
    via_ef = band_gap(res.energies, fermi_level=res.fermi_level)
    assert via_ef.gap == pytest.approx(g.gap) and via_ef.k_vbm == g.k_vbm and via_ef.k_cbm == g.k_cbm
    assert res.path.kpts[g.k_vbm] == pytest.approx([0, 0, 0])  # VBM at Gamma


def test_metal_gap_is_zero():
    eps = np.array([[-1.0, 0.5], [0.2, 1.0]])  # band 0 (-1 .. 0.2) crosses E_F = 0
    g = band_gap(eps, fermi_level=0.0, n_electrons=1.0)
    assert g.gap == 0.0
    assert band_gap(eps) is None


def test_explicit_fermi_level_and_unknown(si_data):
    assert band_structure(si_data, npoints=5, fermi_level=1.25).fermi_level == 1.25
    bare = StructureData(si_data.atoms, SP, H=si_data.H, S=si_data.S)
    res = band_structure(bare, npoints=5)
    assert res.fermi_level is None and res.gap is None
    dft = StructureData(si_data.atoms, SP, H=si_data.H, S=si_data.S, fermi_level=0.7)
    assert band_structure(dft, npoints=5).fermi_level == 0.7


def test_molecule_is_gamma_only():
    atoms = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                                    [0.63, -0.63, -0.63]])
    H, S = slater_koster(atoms, SP, cutoff=2.5)
    res = band_structure(StructureData(atoms, SP, H=(H,), S=S, n_electrons=8))
    assert res.kpts.shape == (1, 3) and res.energies.shape == (1, 1, 8)
    e = res.energies[0, 0]
    assert res.gap.gap == pytest.approx(e[4] - e[3]) and res.fermi_level == pytest.approx((e[3] + e[4]) / 2)


@pytest.mark.parametrize("cell", [[[2.4595, 0, 0], [1.22975, 2.12999, 0], [0, 0, 100]],  # FHI-aims' 60 degree cell
                                  [[2.46, 0, 0], [-1.23, 2.1304225, 0], [0, 0, 16]]])  # ASE's 120 degree cell
def test_path_from_kpts_labels_hexagonal(cell):
    atoms = Atoms("C2", cell=cell, scaled_positions=[[0, 0, 0], [1 / 3, 1 / 3, 0]], pbc=True)
    k_k = np.array([0.66667, 0.33333, 0]) if cell[1][0] > 0 else np.array([1 / 3, 1 / 3, 0])
    k = np.concatenate([np.linspace(k_k, [0, 0, 0], 11), np.linspace([0, 0, 0], [0.5, 0, 0], 9),
                        np.linspace([0.5, 0, 0], k_k, 6)])
    bp = path_from_kpts(atoms, k)
    assert bp.path == "KGMK"
    x, xs, labels = bp.get_linear_kpoint_axis()
    assert [lab for n, lab in enumerate(labels) if n == 0 or lab != labels[n - 1]] == ["K", "G", "M", "K"]
    assert np.all(np.diff(x) >= 0)
    np.testing.assert_allclose(bp.kpts, k)  # the k-points themselves are kept


def test_kmesh_and_band_path_errors():
    atoms = bulk("Si", "diamond", a=5.43)
    assert kmesh_for(atoms, 10.0) == (4, 4, 4)
    with pytest.raises(ValueError):
        kmesh_for(atoms, 0.0)
    with pytest.raises(ValueError):
        band_path(atoms, "GQZ", 10)
    with pytest.raises(ValueError):
        band_path(atoms, "GX", 0)


def test_json_contract(si_data):
    res = band_structure(si_data, path="GX", npoints=7, reference=np.zeros((7, 8)))
    out = json.loads(json.dumps(res.to_json()))
    assert np.array(out["kpts"]).shape == (7, 3) and np.array(out["energies"]).shape == (7, 8)
    assert out["fermi_level"] == res.fermi_level and out["band_gap"] == res.gap.gap
    assert out["reference_max_error"] == pytest.approx(np.abs(res.energies).max())
    with pytest.raises(ValueError, match="reference"):
        band_structure(si_data, path="GX", npoints=7, reference=np.zeros((6, 8)))


def test_spin_polarised_bands(si_data):
    H = si_data.H[0]
    assert H.same_pattern(si_data.S)
    up = H.with_data(H.data - 0.3 * si_data.S.data)  # H - 0.3 S: every level 0.3 eV lower
    data = StructureData(si_data.atoms, SP, H=(up, H), S=si_data.S, n_electrons=8)
    res = band_structure(data, path="GX", npoints=6)
    assert res.energies.shape == (2, 6, 8)
    np.testing.assert_allclose(res.energies[0], res.energies[1] - 0.3, atol=1e-12)  # rigid exchange shift
    out = res.to_json()
    np.testing.assert_allclose(out["energies_spin1"], res.energies[1])
    assert res.gap is not None and res.gap.vbm < res.fermi_level < res.gap.cbm

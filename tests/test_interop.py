"""Interop: DeepH folders (write -> read bit for bit, orbital order checked geometrically), sisl and
SIESTA TSHS (eigenvalues), the export/convert commands, DOSResult.to_ase, TBCalculator, fat bands."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from acehamil.cli import main
from acehamil.io.dataset import read_dataset, write_dataset
from acehamil.io.deeph import read_deeph, write_deeph
from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData
from acehamil.tb.eigen import solve
from acehamil.tb.toy import slater_koster


def _canonical(m: RealSpaceMatrix) -> tuple:
    order = np.lexsort((m.shift[:, 2], m.shift[:, 1], m.shift[:, 0], m.j, m.i))
    return (m.i[order], m.j[order], m.shift[order], np.concatenate([m.block(p).ravel() for p in order]))


def _identical(a: StructureData, b: StructureData) -> bool:
    same = [np.array_equal(a.atoms.positions, b.atoms.positions), np.array_equal(a.atoms.cell.array, b.atoms.cell.array),
            np.array_equal(a.atoms.numbers, b.atoms.numbers), a.basis == b.basis, len(a.H) == len(b.H)]
    for x, y in [(a.S, b.S), *zip(a.H, b.H)]:
        same.extend(np.array_equal(u, v) for u, v in zip(_canonical(x), _canonical(y)))
    return all(same)


@pytest.fixture
def sp_rattled(rng):
    """Rattled 8-atom Si cell with an s/p Slater-Koster H and S (bonds in every direction)."""
    at = bulk("Si", "diamond", a=5.43, cubic=True)
    at.rattle(0.1, rng=rng)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    H, S = slater_koster(at, basis, cutoff=4.0)
    return StructureData(at, basis, H=(H,), S=S, n_electrons=32.0, fermi_level=1.5, info={"name": "si8"})


def _random_hermitian(rng, basis, atoms, nblocks=30) -> RealSpaceMatrix:
    lay = basis.layout(atoms.numbers)
    norb = lay.norb_per_atom
    blocks, ii, jj, tt = [], [], [], []
    for _ in range(nblocks):
        i, j = rng.integers(len(atoms), size=2)
        t = rng.integers(-1, 2, size=3)
        if (i, j, *t) in set(zip(ii, jj, *np.array(tt).T)) if tt else False:
            continue
        b = rng.normal(size=(norb[i], norb[j]))
        if i == j and not t.any():
            b = b + b.T
            ii.append(i), jj.append(j), tt.append(t), blocks.append(b)
            continue
        ii += [i, j]
        jj += [j, i]
        tt += [t, -t]
        blocks += [b, b.T]
    key = {}
    for i, j, t, b in zip(ii, jj, tt, blocks):
        key.setdefault((i, j, *t), b)
    ks = list(key)
    return RealSpaceMatrix.from_blocks(norb, [k[0] for k in ks], [k[1] for k in ks], [k[2:] for k in ks],
                                       [key[k] for k in ks])


def test_deeph_round_trip_bit_identical_with_d_and_f(tmp_path, rng):
    at = bulk("GaAs", "zincblende", a=5.65)
    basis = OrbitalBasis.from_dict({31: [(4, 0), (4, 1), (3, 2)], 33: [(4, 0), (4, 1), (4, 1), (4, 3)]})
    sd = StructureData(at, basis, H=(_random_hermitian(rng, basis, at),), S=_random_hermitian(rng, basis, at),
                       fermi_level=-3.25, n_electrons=8.0, energy=-12.5, info={"name": "gaas"})
    back = read_deeph(write_deeph(tmp_path / "gaas", sd))
    assert _identical(sd, back)
    assert back.fermi_level == sd.fermi_level and back.n_electrons == 8.0 and back.info["name"] == "gaas"
    with pytest.raises(FileExistsError):
        write_deeph(tmp_path / "gaas", sd)


def test_deeph_files_follow_deeph_order_and_bonds(tmp_path, sp_rattled):
    """In the written file, an s(i)-p(j) overlap is a vector along the bond in DeepH's (x, y, z) order."""
    import h5py

    sd = sp_rattled
    write_deeph(tmp_path / "d", sd)
    pos, cell = sd.atoms.positions, sd.atoms.cell.array
    cosines = []
    with h5py.File(tmp_path / "d" / "overlaps.h5") as f:
        for key in f:
            r1, r2, r3, i, j = (int(x) for x in key.strip("[]").split(","))
            bond = pos[j - 1] - pos[i - 1] + np.array([r1, r2, r3]) @ cell
            if np.linalg.norm(bond) < 1e-6:
                continue
            v = f[key][()][0, 1:4]  # s of atom i with the p of atom j, DeepH order
            cosines.append(v @ bond / np.linalg.norm(v) / np.linalg.norm(bond))
    cosines = np.array(cosines)
    assert len(cosines) > 20
    assert np.allclose(np.abs(cosines), 1.0, atol=1e-10) and len(set(np.sign(cosines))) == 1
    # and the reader undoes it: eigenvalues unchanged
    k = np.random.default_rng(0).random((5, 3))
    back = read_deeph(tmp_path / "d")
    np.testing.assert_allclose(solve(back.H[0], back.S, k), solve(sd.H[0], sd.S, k), atol=1e-8)


def test_deeph_reader_errors(tmp_path, sp_rattled):
    write_deeph(tmp_path / "d", sp_rattled)
    (tmp_path / "d" / "orbital_types.dat").write_text("0 1\n")
    with pytest.raises(ValueError, match="orbital_types.dat has 1 lines"):
        read_deeph(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="lat.dat"):
        read_deeph(tmp_path)
    two_spin = StructureData(sp_rattled.atoms, sp_rattled.basis, H=(sp_rattled.H[0],) * 2, S=sp_rattled.S)
    with pytest.raises(ValueError, match="spin"):
        write_deeph(tmp_path / "e", two_spin)


def test_export_and_convert_deeph_cli(tmp_path, sp_rattled, capsys):
    data = tmp_path / "d.h5"
    write_dataset(data, [sp_rattled, sp_rattled.__class__(**{**sp_rattled.__dict__, "info": {"name": "two"}})])
    assert main(["export", str(data), "--format", "deeph", "-o", str(tmp_path / "deeph"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "deeph").iterdir()) == ["0", "1"]
    assert main(["convert", str(tmp_path / "deeph"), "-o", str(tmp_path / "back.h5")]) == 0
    back = read_dataset(tmp_path / "back.h5")
    assert len(back) == 2 and _identical(back[0], read_dataset(data)[0])
    assert main(["export", str(data), "--format", "deeph", "-o", str(tmp_path / "deeph")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_sisl_and_tshs_round_trip(tmp_path, sp_rattled):
    pytest.importorskip("sisl", reason="sisl not installed (optional extra: pip install -e '.[sisl]')")
    from acehamil.io.sisl_interop import from_sisl, read_tshs, to_sisl

    sd = sp_rattled
    k = np.random.default_rng(1).random((6, 3))
    ref = solve(sd.H[0], sd.S, k)
    H = to_sisl(sd)
    np.testing.assert_allclose(np.array([H.eigh(k=q) for q in k]), ref, atol=1e-8)
    assert _identical(from_sisl(H, sd.basis), StructureData(sd.atoms, sd.basis, H=sd.H, S=sd.S))
    data = tmp_path / "d.h5"
    write_dataset(data, [sd])
    assert main(["export", str(data), "--format", "tshs", "-o", str(tmp_path / "si.TSHS"), "-q"]) == 0
    back = read_tshs(tmp_path / "si.TSHS", sd.basis, sd.atoms.numbers)
    np.testing.assert_allclose(solve(back.H[0], back.S, k), ref, atol=1e-8)
    pytest.importorskip("netCDF4", reason="netCDF4 not installed (sisl's .nc format; in the [sisl] extra)")
    assert main(["export", str(data), "--format", "sisl", "-o", str(tmp_path / "si.nc"), "-q"]) == 0
    import sisl

    Hn = sisl.get_sile(str(tmp_path / "si.nc")).read_hamiltonian()
    np.testing.assert_allclose(np.array([Hn.eigh(k=q) for q in k]), ref, atol=1e-8)


def test_dos_to_ase_and_tb_calculator(si_data):
    from ase.dft.bandgap import bandgap

    from acehamil.tb.calculator import TBCalculator
    from acehamil.tb.dos import density_of_states

    res = density_of_states(si_data, kmesh=(3, 3, 3), width=0.2, pdos="l")
    coll = res.to_ase()
    assert [d.info["label"] for d in coll] == ["total", "Si:s", "Si:p"]
    np.testing.assert_allclose(coll[0].get_weights(), res.dos)
    np.testing.assert_allclose(sum(d.get_weights() for d in list(coll)[1:]), res.dos, atol=1e-10)
    calc = TBCalculator(si_data, kmesh=(4, 4, 4))
    eps = np.array([calc.get_eigenvalues(q) for q in range(len(calc.get_ibz_k_points()))])
    np.testing.assert_allclose(eps, solve(si_data.H[0], si_data.S, calc.get_ibz_k_points()), atol=1e-12)
    ef = calc.get_fermi_level()
    assert eps[:, 3].max() < ef < eps[:, 4].min()  # 8 electrons: 4 bands filled, E_F mid-gap
    gap, _, _ = bandgap(calc, output=None)
    assert gap == pytest.approx(eps[:, 4].min() - eps[:, 3].max())
    bs = calc.band_structure(npoints=30)
    assert bs.energies.shape == (1, 30, 8) and bs.reference == pytest.approx(ef)


def test_fat_band_weights_sum_to_one(si_data):
    from acehamil.tb.bands import band_structure

    res = band_structure(si_data, npoints=20, projections="l")
    total = sum(res.weights.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-10)
    assert set(res.weights) == {"Si:s", "Si:p"}
    np.testing.assert_allclose(res.energies, band_structure(si_data, npoints=20).energies, atol=1e-10)

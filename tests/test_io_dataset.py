"""Dataset file: bit-identical round trips, lazy reading, appending, and clear errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase import Atoms

from acehamil.cli import main
from acehamil.io.dataset import append_dataset, read_dataset, write_dataset
from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData


def _random_structure(rng, natoms=3, periodic=True, hermitian=True, name="x"):
    basis = OrbitalBasis.from_dict({1: [(1, 0)], 8: [(2, 0), (2, 1), (3, 2)]})
    numbers = rng.choice([1, 8], size=natoms)
    lay = basis.layout(numbers)
    shifts = [[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, -1], [0, -1, 1]] if periodic else [[0, 0, 0]]
    mats = [rng.normal(size=(lay.norb, lay.norb)) for _ in shifts]
    if hermitian:  # O(-T) = O(T)^T, exactly
        mats[0] = 0.5 * (mats[0] + mats[0].T)
        for a, b in ((1, 2), (3, 4))[: len(shifts) // 2]:
            mats[b] = mats[a].T.copy()
    H = RealSpaceMatrix.from_dense(lay.norb_per_atom, shifts, mats)
    S = RealSpaceMatrix.from_dense(lay.norb_per_atom, shifts, [m * 0.3 for m in mats])
    cell = np.eye(3) * 4 + rng.normal(size=(3, 3)) * 0.1
    positions = np.array([[1.3 * k, 0.2 * k, 0.1] for k in range(natoms)]) + rng.normal(size=(natoms, 3)) * 0.1
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell if periodic else None, pbc=periodic)
    return StructureData(atoms, basis, H=(H, H.with_data(H.data * 2)), S=S, fermi_level=rng.normal(), energy=rng.normal(),
                         forces=rng.normal(size=(natoms, 3)), reference_bands=(rng.random((4, 3)), rng.normal(size=(4, 7))),
                         n_electrons=8.0, info={"name": name, "note": [1, 2]})


def _assert_identical(a: StructureData, b: StructureData):
    for m, n in zip((*a.H, a.S), (*b.H, b.S)):
        assert m.same_pattern(n) and np.array_equal(m.data, n.data)
    assert len(a.H) == len(b.H)
    assert np.array_equal(a.atoms.positions, b.atoms.positions) and np.array_equal(a.atoms.numbers, b.atoms.numbers)
    assert np.array_equal(a.atoms.cell.array, b.atoms.cell.array) and np.array_equal(a.atoms.pbc, b.atoms.pbc)
    assert a.basis == b.basis
    assert (a.fermi_level, a.energy, a.n_electrons) == (b.fermi_level, b.energy, b.n_electrons)
    assert (a.forces is None and b.forces is None) or np.array_equal(a.forces, b.forces)
    assert (a.reference_bands is None) == (b.reference_bands is None)
    assert a.reference_bands is None or all(np.array_equal(x, y) for x, y in zip(a.reference_bands, b.reference_bands))
    assert a.info == b.info


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("hermitian", [True, False])
def test_round_trip_is_bit_identical(tmp_path, rng, periodic, hermitian):
    structures = [_random_structure(rng, natoms=n, periodic=periodic, hermitian=hermitian, name=f"s{n}") for n in (1, 3, 4)]
    path = tmp_path / "d.h5"
    write_dataset(path, structures)
    ds = read_dataset(path, validate=hermitian)  # non-Hermitian data are refused unless validate=False
    assert len(ds) == 3 and ds.names == ("s1", "s3", "s4")
    for a, b in zip(structures, ds):
        _assert_identical(a, b)
    _assert_identical(structures[-1], ds[-1])
    with h5py.File(path) as f:
        storage = f["structures/000001/H/0"].attrs["storage"]
    assert storage == ("hermitian-half" if hermitian else "full")


def test_append_is_atomic_and_lazy_view_survives(tmp_path, rng):
    path = tmp_path / "d.h5"
    first = _random_structure(rng, name="a")
    append_dataset(path, [first])  # creates
    ds = read_dataset(path)
    append_dataset(path, [_random_structure(rng, name="b"), _random_structure(rng, name="c")])
    assert len(read_dataset(path)) == 3 and read_dataset(path).names == ("a", "b", "c")
    _assert_identical(first, ds[0])

    class Boom(RuntimeError):
        pass

    def exploding():
        yield _random_structure(rng, name="d")
        raise Boom

    before = path.read_bytes()
    with pytest.raises(Boom):
        append_dataset(path, exploding())
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_converted_fhi_aims_round_trip(shared_data, tmp_path):
    from acehamil.io.fhi_aims import read_fhi_aims

    sd = read_fhi_aims(shared_data / "fhi-aims" / "water-dimer")
    write_dataset(tmp_path / "w.h5", [sd])
    _assert_identical(sd, read_dataset(tmp_path / "w.h5")[0])


def test_errors_name_the_problem(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_dataset(tmp_path / "absent.h5")
    path = tmp_path / "d.h5"
    write_dataset(path, [_random_structure(rng)])
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ValueError, match="truncated"):
        read_dataset(trunc)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not an acehamil file"):
        read_dataset(foreign)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["acehamil_kind"] = "model"
        f.attrs["format_version"] = 1
    with pytest.raises(ValueError, match="expected 'dataset'"):
        read_dataset(other)
    # a basis that no longer matches the stored blocks: the checksum catches the edit; without a
    # checksum (files written before checksums) the mismatch itself is named
    with h5py.File(path, "a") as f:
        z = str(int(f["structures/000000/numbers"][0]))
        del f[f"structures/000000/basis/{z}"]
        f[f"structures/000000/basis/{z}"] = np.array([[2, 0], [2, 1], [3, 1]])
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_dataset(path)[0]
    with h5py.File(path, "a") as f:
        del f["structures/000000"].attrs["checksum"]
    with pytest.raises(ValueError, match="basis mismatch"):
        read_dataset(path)[0]
    # a species without a basis
    path2 = tmp_path / "d2.h5"
    write_dataset(path2, [_random_structure(rng)])
    with h5py.File(path2, "a") as f:
        f["structures/000000/numbers"][0] = 26
        del f["structures/000000"].attrs["checksum"]
    with pytest.raises(ValueError, match="Fe"):
        read_dataset(path2)[0]


def test_info_json_contract(tmp_path, rng, capsys):
    path = tmp_path / "d.h5"
    structures = [_random_structure(rng, natoms=2, name="p"), _random_structure(rng, natoms=3, periodic=False, name="c")]
    write_dataset(path, structures)
    assert main(["info", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nstructures"] == 2
    for row, sd in zip(out["structures"], structures):
        assert row["natoms"] == len(sd.atoms) and row["norb"] == sd.layout.norb
        assert row["nblocks_H"] == sd.H[0].nblocks and row["periodic"] == sd.periodic
        assert row["species"] == sorted(set(sd.atoms.get_chemical_symbols()))
    assert main(["info", str(tmp_path / "absent.h5")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_convert_cli_round_trip(shared_data, tmp_path, capsys):
    from acehamil.io.fhi_aims import read_fhi_aims

    folder = shared_data / "fhi-aims" / "water-dimer"
    out = tmp_path / "conv.h5"
    assert main(["convert", str(folder), "-o", str(out)]) == 0
    _assert_identical(read_fhi_aims(folder), read_dataset(out)[0])
    assert main(["convert", str(tmp_path / "nothing"), "-o", str(tmp_path / "other.h5")]) == 2
    assert "no such source" in capsys.readouterr().err


def test_several_files_read_as_one_in_order(tmp_path, rng):
    first = [_random_structure(rng, natoms=n, name=f"a{n}") for n in (1, 2)]
    second = [_random_structure(rng, natoms=n, name=f"b{n}") for n in (3, 4, 2)]
    write_dataset(tmp_path / "a.h5", first)
    write_dataset(tmp_path / "b.h5", second)
    ds = read_dataset([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert len(ds) == 5 and ds.names == ("a1", "a2", "b3", "b4", "b2")
    for a, b in zip(first + second, ds):
        _assert_identical(a, b)
    _assert_identical(second[-1], ds[-1])
    assert ds.file_of(-1) == (1, 2) and ds.file_of(1) == (0, 1)
    assert [r["file"] for r in ds.summary()] == [str(tmp_path / "a.h5")] * 2 + [str(tmp_path / "b.h5")] * 3
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    with pytest.raises(ValueError, match="no dataset files"):
        read_dataset([])


def test_float32_storage_rounds_values_only(tmp_path, rng):
    """precision="float32" stores each H/S value rounded to float32, read back as float64; the rest is exact."""
    structures = [_random_structure(rng, natoms=n, name=f"s{n}") for n in (2, 3)]
    write_dataset(tmp_path / "d64.h5", structures)
    write_dataset(tmp_path / "d32.h5", structures, precision="float32")
    ds = read_dataset(tmp_path / "d32.h5")
    for a, b in zip(structures, ds):
        for m, n in zip((*a.H, a.S), (*b.H, b.S)):
            assert m.same_pattern(n) and n.data.dtype == np.float64
            np.testing.assert_array_equal(n.data, m.data.astype(np.float32).astype(np.float64))
            assert n.hermiticity_error() == 0.0
        assert np.array_equal(a.atoms.positions, b.atoms.positions) and a.info == b.info
    with h5py.File(tmp_path / "d32.h5") as f:
        assert f["structures/000000/H/0/data"].dtype == np.float32
    with pytest.raises(ValueError, match="precision"):
        write_dataset(tmp_path / "x.h5", structures, precision="float16")

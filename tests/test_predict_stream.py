"""Streamed (chunked, to disk) prediction: neighbours of chosen centres, chunked blocks, the streamed
file equal to the in-memory one, atomic writing, and the CLI on a streamed file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from acehamil.cli import main
from acehamil.io.dataset import StreamingWriter, read_dataset, write_dataset
from acehamil.io.models import save_model
from acehamil.io.stream import predict_to_file
from acehamil.models.hamiltonian.chunked import chunk_ranges, predict_chunks
from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.model import EnergyZero, HamiltonianModel, random_coefficients
from acehamil.structure import OrbitalBasis
from acehamil.structure.neighbours import CentreNeighbours, neighbour_pairs

CFG = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 2, "max_degree": [4, 3], "n_max": 3},
    "h_offsite": {"r_cut": 4.5, "r_env": 2.0, "max_nu": 2, "max_degree": [6, 4], "n_max": 4, "env_bond_cut": 4.0},
    "s_offsite": {"r_cut": 4.5, "max_nu": 1, "max_degree": [6], "n_max": 6},
}
BASIS = OrbitalBasis.from_dict({6: [(2, 0), (2, 1)], 14: [(3, 0), (3, 1)]})


def _structures(rng):
    """Periodic cubic (unwrapped positions), mixed pbc, cluster, a skewed 3-atom cell smaller than the cutoff."""
    b = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 1, 1)
    b.numbers[rng.choice(len(b), 5, replace=False)] = 6
    b.rattle(0.05, rng=rng)
    b.positions += 7.3
    c = b.copy()
    c.pbc = [True, False, True]
    d = b.copy()
    d.pbc = False
    e = Atoms("Si3", positions=[[0, 0, 0], [1.9, 1.2, 0.4], [0.3, 2.4, 2.2]],
              cell=[[4.2, 0, 0], [2.5, 3.9, 0], [1.0, 1.0, 5.0]], pbc=True)
    e.rattle(0.05, rng=rng)
    return {"periodic": b, "slab": c, "cluster": d, "small-skewed": e}


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(11)
    cfg = ModelConfig.from_dict(CFG)
    t = HamiltonianModel.build(cfg, BASIS)
    return HamiltonianModel.build(cfg, BASIS, random_coefficients(t.H, rng), random_coefficients(t.S, rng),
                                  energy_zero=EnergyZero(v0=-0.7, beta=((14, 30.0), (6, -12.0))))


@pytest.mark.parametrize("kind", ["periodic", "slab", "cluster", "small-skewed"])
@pytest.mark.parametrize("cutoff", [4.0, 9.5])
def test_centre_neighbours_equal_the_full_list_restricted(rng, kind, cutoff):
    atoms = _structures(rng)[kind]
    full = neighbour_pairs(atoms, cutoff)
    finder = CentreNeighbours(atoms, cutoff)
    for centres in (np.arange(len(atoms)), rng.choice(len(atoms), max(1, len(atoms) // 3), replace=False), []):
        part = finder.pairs(centres)
        sel = np.isin(full.i, centres)
        assert sel.sum() == len(part)
        for key in ("i", "j", "shift", "vec", "dist"):
            assert np.array_equal(getattr(part, key), getattr(full, key)[sel]), key


def test_centre_neighbours_refuse_bad_input():
    atoms = bulk("Si", "diamond", a=5.43)
    with pytest.raises(ValueError, match="cutoff"):
        CentreNeighbours(atoms, 0.0)
    with pytest.raises(ValueError, match="out of range"):
        CentreNeighbours(atoms, 3.0).pairs([2])
    bad = Atoms("Si2", positions=[[0, 0, 0], [0.05, 0, 0]], cell=[5, 5, 5], pbc=True)
    with pytest.raises(ValueError, match="apart"):
        CentreNeighbours(bad, 3.0).pairs([0])


def _reassembled(chunks, which):
    """Chunks' blocks in the whole matrix's order: every chunk's on-site blocks, then every chunk's bonds."""
    parts = [(getattr(c, which), c.stop - c.start) for c in chunks]
    on = [(m.i[:n], m.j[:n], m.shift[:n], m.data[:m.offsets[n]]) for m, n in parts]
    bo = [(m.i[n:], m.j[n:], m.shift[n:], m.data[m.offsets[n]:]) for m, n in parts]
    return [np.concatenate([x[k] for x in on + bo]) for k in range(4)]


@pytest.mark.parametrize("kind", ["periodic", "cluster", "small-skewed"])
@pytest.mark.parametrize("chunk_atoms", [1, 5, 1000])
def test_chunks_hold_exactly_the_blocks_of_the_whole_prediction(rng, model, kind, chunk_atoms):
    atoms = _structures(rng)[kind]
    H, S = model.predict(atoms, check_overlap=False)
    chunks = list(predict_chunks(model, atoms, chunk_atoms))
    assert [(c.start, c.stop) for c in chunks] == chunk_ranges(len(atoms), chunk_atoms)
    for which, m in (("H", H), ("S", S)):
        i, j, shift, data = _reassembled(chunks, which)
        assert np.array_equal(i, m.i) and np.array_equal(j, m.j) and np.array_equal(shift, m.shift)
        np.testing.assert_allclose(data, m.data, rtol=0, atol=1e-12)
        assert np.abs(m.data).max() > 0.1


@pytest.mark.parametrize("kind", ["periodic", "cluster"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_streamed_file_reads_back_as_the_in_memory_one(rng, model, tmp_path, kind, precision):
    atoms = _structures(rng)[kind]
    sd = model.predict_structure(atoms, check_overlap=False, info={"name": "big"})
    write_dataset(tmp_path / "mem.h5", [sd], precision=precision)
    summary = predict_to_file(model, atoms, tmp_path / "st.h5", name="big", chunk_atoms=3, precision=precision)
    a, b = read_dataset(tmp_path / "mem.h5")[0], read_dataset(tmp_path / "st.h5")[0]
    assert summary["natoms"] == len(atoms) and summary["nblocks"] == a.H[0].nblocks
    for m, n in ((a.H[0], b.H[0]), (a.S, b.S)):
        assert m.same_pattern(n)
        np.testing.assert_allclose(n.data, m.data, rtol=0, atol=1e-12 if precision == "float64" else 1e-6)
    assert np.array_equal(a.atoms.positions, b.atoms.positions) and np.array_equal(a.atoms.pbc, b.atoms.pbc)
    assert b.info["streamed"] is True and b.basis == a.basis and b.n_electrons == a.n_electrons
    assert read_dataset(tmp_path / "st.h5").summary()[0]["nblocks_H"] == a.H[0].nblocks


def test_a_failing_stream_leaves_no_file(rng, model, tmp_path):
    atoms = _structures(rng)["periodic"]

    def failing():
        for n, c in enumerate(predict_chunks(model, atoms, 4)):
            if n == 2:
                raise RuntimeError("injected")
            yield c

    out = tmp_path / "big.h5"
    with pytest.raises(RuntimeError, match="injected"):
        with StreamingWriter(out, keep_on_error=False) as w:
            w.add_chunked(atoms, BASIS, failing(), name="big")
    assert os.listdir(tmp_path) == []
    # kept structures before a failing one stay readable (CLI behaviour), without the partial one
    sd = model.predict_structure(atoms, check_overlap=False, info={"name": "small"})
    with pytest.raises(RuntimeError, match="injected"):
        with StreamingWriter(out, keep_on_error=True) as w:
            w.add(sd)
            w.add_chunked(atoms, BASIS, failing(), name="big")
    ds = read_dataset(out)
    assert ds.names == ("small",) and len(ds[0].S.data) == len(sd.S.data)


def test_chunks_out_of_order_or_incomplete_are_refused(rng, model, tmp_path):
    atoms = _structures(rng)["periodic"]
    chunks = list(predict_chunks(model, atoms, 4))
    with pytest.raises(ValueError, match="expected 0"):
        with StreamingWriter(tmp_path / "a.h5", keep_on_error=False) as w:
            w.add_chunked(atoms, BASIS, chunks[1:], name="x")
    with pytest.raises(ValueError, match="covered atoms"):
        with StreamingWriter(tmp_path / "b.h5", keep_on_error=False) as w:
            w.add_chunked(atoms, BASIS, chunks[:-1], name="x")
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def fitted():
    """A model fitted to a Slater-Koster toy (positive definite S, so the eigen-solvers accept it)."""
    from acehamil.models.hamiltonian.fit import fit
    from acehamil.structure import StructureData
    from acehamil.tb.toy import slater_koster

    rng = np.random.default_rng(5)
    train = []
    for k in range(3):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k)) * (2, 1, 1)
        at.numbers[::3] = 6
        at.rattle(0.1, rng=rng)
        H, S = slater_koster(at, BASIS, cutoff=4.0)
        train.append(StructureData(at, BASIS, H=(H,), S=S, n_electrons=4.0 * len(at)))
    return fit(train, ModelConfig.from_dict({**CFG, "fit": {"max_blocks_per_type": 40}}), progress=False)


def test_cli_predict_stream_and_tools_on_the_streamed_file(rng, fitted, tmp_path):
    atoms = _structures(rng)["periodic"]
    atoms.write(tmp_path / "big.xyz")
    save_model(fitted, tmp_path / "m.h5")
    mem, st = tmp_path / "mem.h5", tmp_path / "st.h5"
    assert main(["predict", str(tmp_path / "m.h5"), str(tmp_path / "big.xyz"), "-o", str(mem), "-q"]) == 0
    assert main(["predict", str(tmp_path / "m.h5"), str(tmp_path / "big.xyz"), "-o", str(st), "--stream",
                 "--chunk-atoms", "5", "-q"]) == 0
    a, b = read_dataset(mem)[0], read_dataset(st)[0]
    np.testing.assert_allclose(b.H[0].data, a.H[0].data, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.S.data, a.S.data, rtol=0, atol=1e-12)
    assert main(["info", str(st)]) == 0
    ja, jb = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["eigs", str(mem), "--near", "0.0", "-n", "4", "--method", "shift-invert", "--json", str(ja), "-q"]) == 0
    assert main(["eigs", str(st), "--near", "0.0", "-n", "4", "--method", "shift-invert", "--json", str(jb), "-q"]) == 0
    np.testing.assert_allclose(json.loads(jb.read_text())["energies"], json.loads(ja.read_text())["energies"], atol=1e-9)
    # single precision halves the stored values; tiling needs the cell in memory
    sp = tmp_path / "sp.h5"
    assert main(["predict", str(tmp_path / "m.h5"), str(tmp_path / "big.xyz"), "-o", str(sp), "--stream",
                 "--precision", "single", "-q"]) == 0
    np.testing.assert_allclose(read_dataset(sp)[0].H[0].data, a.H[0].data, rtol=1e-6, atol=1e-6)
    assert main(["predict", str(tmp_path / "m.h5"), str(tmp_path / "big.xyz"), "-o", str(tmp_path / "x.h5"), "--stream",
                 "--supercell", "2", "1", "1", "-q"]) == 2
    assert main(["predict", str(tmp_path / "m.h5"), str(tmp_path / "big.xyz"), "-o", str(tmp_path / "x.h5"), "--stream",
                 "--chunk-atoms", "0", "-q"]) == 2
    assert not (tmp_path / "x.h5").exists()


def test_sliced_checksum_equals_the_whole_read_one(rng, model, tmp_path, monkeypatch):
    """Big datasets are hashed in slices: the same digest as hashing them whole (files stay valid)."""
    import h5py

    from acehamil.io import structure_group

    atoms = _structures(rng)["periodic"]
    write_dataset(tmp_path / "d.h5", [model.predict_structure(atoms, check_overlap=False)])
    with h5py.File(tmp_path / "d.h5", "r") as f:
        g = f["structures/000000"]
        stored = g.attrs["checksum"]
        whole = structure_group.structure_checksum(g)
        monkeypatch.setattr(structure_group, "_HASH_SLICE_BYTES", 1000)  # every matrix dataset in slices
        sliced = structure_group.structure_checksum(g)
    assert stored == whole == sliced
    assert g is not None and read_dataset(tmp_path / "d.h5")[0].S.nblocks > 0

"""The reader registry: formats detected by content (never by name), forced with format=/--format,
and every reader's conventions entry known to the conventions registry."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from acehamil.cli import main
from acehamil.conventions import CODE_CONVENTIONS
from acehamil.io.dataset import read_dataset, write_dataset
from acehamil.io.deeph import write_deeph
from acehamil.io.readers import READERS, detect_format, read_structures
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster


@pytest.fixture
def si(rng):
    at = bulk("Si", "diamond", a=5.43, cubic=True)
    at.rattle(0.05, rng=rng)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    H, S = slater_koster(at, basis, cutoff=4.0)
    return StructureData(at, basis, H=(H,), S=S, n_electrons=32.0, info={"name": "si8"})


def test_every_reader_has_a_known_convention():
    for name, r in READERS.items():
        assert r.name == name and r.description
        assert r.convention is None or r.convention in CODE_CONVENTIONS


def test_detection_is_by_content_not_name(tmp_path, si):
    write_dataset(tmp_path / "looks_like_aims", [si])  # an acehamil dataset without .h5
    write_deeph(tmp_path / "data.h5", si)  # a DeepH folder named like an HDF5 file
    (tmp_path / "empty.h5").write_bytes(b"not hdf5")
    assert detect_format(tmp_path / "looks_like_aims") == "acehamil"
    assert detect_format(tmp_path / "data.h5") == "deeph"
    with pytest.raises(ValueError, match="not a format acehamil reads"):
        detect_format(tmp_path / "empty.h5")
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing")
    back = read_structures(tmp_path / "data.h5")
    assert len(back) == 1 and np.array_equal(back[0].S.to_dense()[1], si.S.to_dense()[1])


def test_format_forces_the_reader(tmp_path, si):
    write_deeph(tmp_path / "d", si)
    with pytest.raises(ValueError, match="unknown format"):
        read_structures(tmp_path / "d", format="vasp")
    with pytest.raises(Exception):  # the FHI-aims reader names the file it lacks
        read_structures(tmp_path / "d", format="fhi-aims")
    assert len(read_structures(tmp_path / "d", format="deeph")) == 1


def test_shared_data_formats_are_detected(shared_data):
    assert detect_format(shared_data / "acehamiltonians-si" / "example_data.h5") == "acehamiltonians"
    folders = [p for p in (shared_data / "fhi-aims").rglob("basis-indices.out")]
    assert folders
    assert detect_format(folders[0].parent) == "fhi-aims"


def test_convert_picks_by_content_and_format_forces(tmp_path, si, capsys):
    write_deeph(tmp_path / "d", si)
    assert main(["convert", str(tmp_path / "d"), "-o", str(tmp_path / "a.h5")]) == 0
    assert main(["convert", str(tmp_path / "d"), "--format", "deeph", "-o", str(tmp_path / "b.h5")]) == 0
    assert len(read_dataset(tmp_path / "a.h5")) == len(read_dataset(tmp_path / "b.h5")) == 1
    assert main(["convert", str(tmp_path / "a.h5"), "--format", "acehamil", "-o", str(tmp_path / "c.h5")]) == 0
    assert main(["convert", str(tmp_path / "d"), "--format", "acehamiltonians", "-o", str(tmp_path / "e.h5")]) == 2
    assert not (tmp_path / "e.h5").exists()

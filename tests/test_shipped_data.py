"""The shipped datasets of issue 12: labelled kinds, accurate matrices, and the test-only file kept out of fitting."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from acehamil.io.config import read_model_config
from acehamil.io.dataset import read_dataset
from acehamil.io.pyscf_gen import band_error

ROOT = Path(__file__).resolve().parents[1]
TRAIN, TEST = ROOT / "data" / "si_train_mixed.h5", ROOT / "data" / "si_test_ood.h5"
SLABS = ROOT / "data" / "si_train_slabs.h5"


def kinds(path) -> list:
    """``info["kind"]`` of every structure, from the attributes only (cheap); None when unlabelled."""
    with h5py.File(path, "r") as f:
        return [json.loads(f["structures"][k].attrs["info"]).get("kind") for k in sorted(f["structures"])]


@pytest.fixture(scope="module")
def files():
    if not (TRAIN.exists() and TEST.exists() and SLABS.exists()):
        pytest.skip("data/si_train_mixed.h5 / si_test_ood.h5 / si_train_slabs.h5 not shipped")
    return TRAIN, TEST, SLABS


def test_every_structure_is_labelled_and_one_of_each_kind_matches_pyscf(files):
    for path in files:
        labels = kinds(path)
        assert all(labels)
        ds = read_dataset(path)
        for kind in dict.fromkeys(labels):  # float32 storage and the 12 Å cutoff keep PySCF's own bands
            sd = ds[labels.index(kind)]
            assert sd.info["source"] == "pyscf" and band_error(sd) < 3e-3, kind


def test_example_never_fits_the_test_only_file_and_holds_out_every_kind_of_several(files):
    cfg = read_model_config(ROOT / "examples" / "si_hamiltonian.toml")
    train_files = [cfg.data.train] if isinstance(cfg.data.train, str) else list(cfg.data.train)
    assert all(Path(f).resolve() != TEST.resolve() for f in train_files)
    labels = [k or "unlabelled" for f in train_files for k in kinds(f)]
    held = {labels[i] for i in cfg.data.test_indices(len(labels))}
    fitted = {labels[i] for i in cfg.data.training_indices(len(labels))}
    several = {k for k in fitted if labels.count(k) > 1}
    assert held <= fitted and several <= held  # every kind of more than one structure has held-out ones
    assert fitted - several <= {"si001-slab", "si111-slab"}  # the one-structure kinds: the two surface slabs
    assert not set(read_dataset(TEST).names) & set(read_dataset(train_files).names)

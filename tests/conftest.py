"""Shared fixtures: seeded randomness and the ../shared reference data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ACEHAMIL_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _numpy_print_options():
    """Restore numpy's print options after each test: importing ``pyscf.pbc`` sets precision 6
    process-wide, which changed the output of the package's doctests run after the tests."""
    saved = np.get_printoptions()
    yield
    np.set_printoptions(**saved)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's node id: reproducible, different per test."""
    import zlib

    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set ACEHAMIL_SHARED_DATA or place shared/ beside the checkout)")
    return SHARED_DATA


#: s/p toy basis of the tight-binding tests (Si, H, C).
SK_BASIS_SP = {14: [(3, 0), (3, 1)], 1: [(1, 0)], 6: [(2, 0), (2, 1)]}


@pytest.fixture(scope="module")
def si_data():
    """Diamond Si with Slater-Koster s/p H and a non-trivial S (tb tests), 8 valence electrons."""
    from ase.build import bulk

    from acehamil.structure import OrbitalBasis, StructureData
    from acehamil.tb.toy import slater_koster

    basis = OrbitalBasis.from_dict(SK_BASIS_SP)
    atoms = bulk("Si", "diamond", a=5.43)
    H, S = slater_koster(atoms, basis, cutoff=4.0)
    return StructureData(atoms, basis, H=(H,), S=S, n_electrons=8)


@pytest.fixture(scope="session")
def sk_si_files(tmp_path_factory):
    """Folder with train.h5 (4 Slater-Koster Si cells), fit.toml, m.h5 (their BLR model) and one.xyz
    (tests/sk_si.py), built and fitted once per session.  Read-only: copy the files before editing."""
    from sk_si import write_sk_files

    d = tmp_path_factory.mktemp("sk_si")
    write_sk_files(d)
    return d

"""Shared toy silicon for the tests.

The small Slater-Koster workspace of the fault tests (tests/test_faults*.py), built once per test session by the
``sk_si_files`` fixture (tests/conftest.py): four rattled 4-atom Si cells with Slater-Koster s/p H and S, a BLR H/S
model fitted to them, one unlabelled frame.  Each test file copies it and adds its own files, so the cells are made
and fitted once.  Also the tiny fit config (``TINY_CFG``), symmetric H noise (``noisy_h``) and the distorted cells
(``distorted_sk_cells``) of the uncertainty, selection and eigenvalue-update tests.
"""

from __future__ import annotations

import hashlib

import numpy as np
from ase.build import bulk

FIT_TOML = """
[data]
train = "train.h5"
test = [-1]

[h_onsite]
r_cut = 4.0
max_nu = 1
max_degree = [4]
n_max = 3

[h_offsite]
r_cut = 4.0
r_env = 0.0
max_nu = 1
max_degree = [6]
n_max = 6

[s_offsite]
r_cut = 4.0
max_nu = 1
max_degree = [6]
n_max = 6

[solver]
lam = 1e-8
"""

POT_TOML = """
[data]
train = "lab.xyz"
[basis]
r_cut = 4.0
n_max = 3
max_nu = 2
max_degree = [3, 3]
[fit]
lam = [1e-8]
power = [0.0]
n_folds = 2
"""


def si_cell(seed=0, rattle=0.05):
    """Two primitive diamond Si cells (4 atoms, 16 valence electrons), rattled by ``rattle`` Å with ``seed``."""
    at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    at.rattle(rattle, rng=np.random.default_rng(seed))
    return at


def work_in_copy(src, dst, monkeypatch):
    """Copy the files (not folders) of workspace ``src`` into ``dst`` and make ``dst`` the working folder: the
    ``w`` fixture of every fault test file.  Returns ``dst``."""
    import shutil

    for p in src.iterdir():
        if p.is_file():
            shutil.copy2(p, dst / p.name)
    monkeypatch.chdir(dst)
    return dst


def digest(folder):
    """sha256 of every file under ``folder`` (sidecar ``.lock`` files left out), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def assert_one_line_error(w, capsys, argv, message):
    """Run the CLI on ``argv`` in workspace ``w`` and check it fails as a user error should: exit 2,
    exactly one stderr line ``acehamil <command>: error: ...`` containing ``message``, no traceback,
    and no file under ``w`` created or changed."""
    from acehamil.cli import main

    before = digest(w)
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"acehamil {argv[0]}: error: ") and message in lines[0], lines[0]
    assert digest(w) == before, "a file was left behind or changed"


def write_sk_files(d):
    """Write train.h5, fit.toml, m.h5 (BLR: with posteriors) and one.xyz into folder ``d``."""
    from ase.io import write

    from acehamil.cli import main
    from acehamil.io.dataset import write_dataset
    from acehamil.structure import OrbitalBasis, StructureData
    from acehamil.tb.toy import slater_koster

    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    sds = []
    for k in range(4):
        at = si_cell(k, 0.08)
        H, S = slater_koster(at, basis, cutoff=4.0)
        sds.append(StructureData(at, basis, H=(H,), S=S, n_electrons=16.0, fermi_level=0.5, info={"name": f"si-{k}"}))
    write_dataset(d / "train.h5", sds)
    (d / "fit.toml").write_text(FIT_TOML.replace("lam = 1e-8", 'method = "blr"'))
    if main(["fit", str(d / "fit.toml"), "-o", str(d / "m.h5"), "-q"]) != 0:
        raise RuntimeError("the shared Slater-Koster fit failed")
    write(d / "one.xyz", si_cell())


def write_potential_files(d):
    """Write lab.xyz (3 labelled 4-atom Si frames), pot.toml (POT_TOML) and pot.h5, a potential fitted to them,
    into folder ``d`` (the potential workspace of the fault tests)."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from acehamil.cli import main

    frames = []
    for k in range(3):
        at = si_cell(10 + k)
        at.calc = SinglePointCalculator(at, energy=-10.0 * len(at) + 0.01 * k, forces=0.01 * np.ones((len(at), 3)))
        frames.append(at)
    write(d / "lab.xyz", frames, format="extxyz")
    (d / "pot.toml").write_text(POT_TOML)
    if main(["fit-potential", str(d / "pot.toml"), "-o", str(d / "pot.h5"), "-q"]) != 0:
        raise RuntimeError("the shared potential fit failed")


def distorted_sk_cells(n, seed=11, scale=0.05):
    """``n`` rattled, strained 8-atom Si cells of the toy Slater-Koster model (s/p), each H changed by a
    smooth per-atom-pair factor so that an ACE model cannot fit them exactly (the eigenvalue-update
    tests). Kinds alternate "b", "a"; the first ``m`` cells are the same for any ``n >= m``.

    Returns
    -------
    list of StructureData, 8 electrons each.
    """
    from acehamil.structure import OrbitalBasis, StructureData
    from acehamil.tb.toy import slater_koster

    rng = np.random.default_rng(seed)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for k in range(n):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k))
        at.rattle(0.1, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        d = H.data.copy()  # every block scaled by a random factor per atom pair, symmetric under bond reversal
        f = 1.0 + scale * rng.normal(size=(H.norb, H.norb))
        f = 0.5 * (f + f.T)
        for p in range(H.nblocks):
            d[H.offsets[p]:H.offsets[p + 1]] *= f[H.i[p], H.j[p]]
        out.append(StructureData(at, basis, H=(H.with_data(d),), S=S, n_electrons=8,
                                 info={"kind": "a" if k % 2 else "b"}))
    return out


TINY_CFG = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [3], "n_max": 2},
    "h_offsite": {"r_cut": 4.0, "r_env": 1.5, "max_nu": 2, "max_degree": [4, 2], "n_max": 3},
    "s_offsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [6], "n_max": 6},
    "solver": {"method": "blr", "lam": 1e-10},
}
"""The small H/S model config of the toy Slater-Koster model tests (dict for ``ModelConfig.from_dict``)."""


def noisy_h(H, rng, scale):
    """Symmetric Gaussian noise of std ``scale`` (eV) on a real-space H, keeping H_ji(-T) = H_ij(T)^T (a
    finite noise precision for BLR fits). Returns a new matrix; ``H`` is not changed."""
    d = H.data.copy()
    for p in range(H.nblocks):
        q = H.find(H.j[p], H.i[p], -H.shift[p])
        if q < p:
            continue
        blk = rng.normal(scale=scale, size=H.block(p).shape)
        if q == p:
            blk = 0.5 * (blk + blk.T)
        d[H.offsets[p]:H.offsets[p + 1]] += blk.ravel()
        if q != p:
            d[H.offsets[q]:H.offsets[q + 1]] += blk.T.ravel()
    return H.with_data(d)


def with_overlap_not_positive_definite(sd):
    """``sd`` (StructureData) with its off-site overlap blocks scaled x5: S(Gamma) no longer positive definite,
    still Hermitian; named "badS".  A new structure (``sd`` untouched)."""
    from dataclasses import replace

    m = sd.S
    data = m.data.copy()
    for p in range(m.nblocks):
        if m.i[p] != m.j[p] or m.shift[p].any():
            data[m.offsets[p]:m.offsets[p + 1]] *= 5.0
    return replace(sd, S=m.with_data(data), info={"name": "badS"})


def write_bad_overlap(d):
    """bad.h5 in folder ``d``: train.h5's first structure with :func:`with_overlap_not_positive_definite`."""
    from acehamil.io.dataset import read_dataset, write_dataset

    write_dataset(d / "bad.h5", [with_overlap_not_positive_definite(read_dataset(d / "train.h5")[0])])

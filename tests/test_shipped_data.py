"""The shipped datasets of issue 12: labelled kinds, accurate matrices, and the test-only file kept out of fitting."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
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
    weight = dict(cfg.fit.kind_weights)
    fitted = {labels[i] for i in cfg.data.training_indices(len(labels)) if weight.get(labels[i], 1.0) > 0}  # 0: not fitted
    several = {k for k in fitted if labels.count(k) > 1}
    assert held <= fitted and several <= held  # every kind of more than one structure has held-out ones
    # the one-structure kinds (nothing to hold out): the two surface slabs and the 32-atom cell
    assert fitted - several <= {"si001-slab", "si111-slab", "si32-strain3-d0.05-0.25"}
    assert not set(read_dataset(TEST).names) & set(read_dataset(train_files).names)


MORE = ROOT / "data" / "si_train_more.h5"
TEST_SEEDS = {9001, 9002, 9003, 9004}


def _transfer_sets():
    """``data/make_transfer_sets.py`` as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_transfer_sets", ROOT / "data" / "make_transfer_sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_second_batch_plans_are_reproducible_new_and_what_they_say():
    m = _transfer_sets()
    plans, again = m.more_plans(), m.more_plans()
    seeds = [seed for _, seed, _ in m.MORE.values()]
    assert len(set(seeds)) == len(seeds) and not set(seeds) & (TEST_SEEDS | {0, 31, 33, 101, 102, 103, 104, 105})
    size = {"si8_iso6": 8, "si15_vac": 15, "si17_int": 17, "si8_md": 8, "si32_dis": 32, "si31_vac": 31}
    for stem, frames in plans.items():
        assert len(frames) == m.MORE[stem][2] and {len(at) for at in frames} == {size[stem]}, stem
        for a, b in zip(frames, again[stem]):
            assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
        dmin = min(at.get_all_distances(mic=True)[np.triu_indices(len(at), 1)].min() for at in frames)
        assert dmin > 1.9, stem  # no two atoms on top of each other (Si-Si bond 2.35 Å)
    # isotropic strain beyond the older sets' +-5 % tensor entries: linear strain up to 6 % (+1 % shear)
    lin = [(at.get_volume() / 160.103007) ** (1 / 3) - 1 for at in plans["si8_iso6"]]  # 5.43^3 Å^3
    assert max(np.abs(lin)) <= 0.071 and max(np.abs(lin)) > 0.04
    # interstitials in turn tetrahedral (4 neighbours at 2.35 Å, 6 more at 2.72) and hexagonal (6 at 2.25, then 3.53)
    from ase.neighborlist import neighbor_list

    for n, at in enumerate(plans["si17_int"]):
        i, d = neighbor_list("id", at, 3.1)  # every periodic image: a 5.43 Å cell holds one atom's two images
        d = np.sort(d[i == len(at) - 1])
        assert len(d) == (10 if n % 2 == 0 else 6) and d[0] > 2.1, (n, d)
    # MD-like: Gaussian components, so the rms displacement from the strained lattice is sigma in 0.07-0.11 Å
    assert all(0.04 < np.std(at.positions - _lattice(at)) < 0.15 for at in plans["si8_md"])


def _lattice(at):
    """The ideal diamond site nearest to each atom of ``at`` (an 8-atom cubic cell, strained with it), Å."""
    from ase.build import bulk

    ideal = bulk("Si", "diamond", a=5.43, cubic=True).get_scaled_positions()
    frac = at.get_scaled_positions(wrap=False) - ideal
    return (ideal + frac.round()) @ at.cell.array


def _check_batch_file(path, labels, seed_ok, others):
    """The checks every shipped batch file passes: each structure within the generator's band tolerance
    (5 meV) and of a seed ``seed_ok`` accepts, one structure per kind of ``labels`` matching PySCF's own
    bands (float32 storage and the 12 Å cutoff keep them), no structure name shared with the files
    ``others`` (those that exist).  Returns the dataset."""
    with h5py.File(path, "r") as f:
        infos = [json.loads(f["structures"][k].attrs["info"]) for k in sorted(f["structures"])]
    assert all(i["band_error"]["checked_max_meV"] <= 5.0 and seed_ok(i["seed"]) for i in infos)
    ds = read_dataset(path)
    for kind in dict.fromkeys(labels):
        sd = ds[labels.index(kind)]
        assert sd.info["source"] == "pyscf" and band_error(sd) < 3e-3, kind
    assert not set(ds.names) & set(read_dataset([p for p in others if p.exists()]).names)
    return ds


def test_second_batch_file_is_labelled_accurate_and_kept_apart_from_the_test_set():
    if not MORE.exists():
        pytest.skip("data/si_train_more.h5 not shipped")
    labels = kinds(MORE)
    assert all(labels)
    _check_batch_file(MORE, labels, lambda seed: seed not in TEST_SEEDS,
                      [TRAIN, SLABS, TEST, ROOT / "data" / "si8_szv.h5"])


DEFECTS = ROOT / "data" / "si_train_defects.h5"


def test_third_batch_plans_are_reproducible_new_and_what_they_say():
    """The defect batch (seeds 301-304): new seeds, the sizes and displacements the plans name, and structure
    names that differ from the second batch's (the generator names structures <stem>-NNNN)."""
    from ase.build import bulk

    m = _transfer_sets()
    plans, again = m.defect_plans(), m.defect_plans()
    seeds = [seed for _, seed, _ in m.DEFECTS.values()]
    older = {seed for _, seed, _ in m.MORE.values()} | {0, 31, 33, 101, 102, 103, 104, 105}
    assert len(set(seeds)) == len(seeds) and not set(seeds) & (TEST_SEEDS | older)
    assert not set(m.DEFECTS) & set(m.MORE)  # stems, hence structure names, differ
    size = {"si15_vac3": 15, "si17_int3": 17, "si16_big3": 16, "si31_vac3": 31}
    for stem, frames in plans.items():
        assert len(frames) == m.DEFECTS[stem][2] and {len(at) for at in frames} == {size[stem]}, stem
        for a, b in zip(frames, again[stem]):
            assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
        dmin = min(at.get_all_distances(mic=True)[np.triu_indices(len(at), 1)].min() for at in frames)
        assert dmin > 1.9, stem
    si16 = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    for at in plans["si16_big3"]:  # every atom 0.15-0.25 Å from its (strained) lattice site
        frac = (at.get_scaled_positions() - si16.get_scaled_positions() + 0.5) % 1 - 0.5
        d = np.linalg.norm(frac @ at.cell.array, axis=1)
        assert 0.149 < d.min() and d.max() < 0.251
    removed = set()
    for at in plans["si15_vac3"]:  # one site empty: the lattice site farthest from every atom
        frac = (si16.get_scaled_positions()[:, None] - at.get_scaled_positions()[None] + 0.5) % 1 - 0.5
        far = np.linalg.norm(frac @ at.cell.array, axis=2).min(axis=1)
        assert np.sort(far)[-1] > 2.0 > np.sort(far)[-2]
        removed.add(int(far.argmax()))
    assert len(removed) >= 4  # vacancies at different sites


def test_defect_file_is_labelled_accurate_and_kept_apart_from_the_test_set():
    if not DEFECTS.exists():
        pytest.skip("data/si_train_defects.h5 not shipped")
    labels = kinds(DEFECTS)
    assert all(labels) and all(labels.count(k) > 1 for k in labels)  # no kind of one structure
    _check_batch_file(DEFECTS, labels, lambda seed: seed not in TEST_SEEDS,
                      [TRAIN, SLABS, TEST, MORE, ROOT / "data" / "si8_szv.h5"])


VACANCIES = ROOT / "data" / "si_train_vacancies.h5"


def test_fourth_batch_plans_are_reproducible_new_and_what_they_say():
    """The vacancy batch (seeds 401-403): new seeds and stems, one empty site (two nearest-neighbour sites for the
    divacancy), and a disorder that varies from structure to structure as the plan says."""
    from ase.build import bulk

    m = _transfer_sets()
    plans, again = m.vacancy_plans(), m.vacancy_plans()
    seeds = [seed for _, seed, _ in m.VACANCIES.values()]
    older = ({seed for _, seed, _ in m.MORE.values()} | {seed for _, seed, _ in m.DEFECTS.values()}
             | {0, 31, 33, 101, 102, 103, 104, 105})
    assert len(set(seeds)) == len(seeds) and not set(seeds) & (TEST_SEEDS | older)
    assert not set(m.VACANCIES) & (set(m.MORE) | set(m.DEFECTS))  # stems, hence structure names, differ
    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    base = {"si15_vac4": si8.repeat((2, 1, 1)), "si31_vac4": si8.repeat((2, 2, 1)), "si14_divac4": si8.repeat((2, 1, 1))}
    gone = {"si15_vac4": 1, "si31_vac4": 1, "si14_divac4": 2}
    for stem, frames in plans.items():
        assert len(frames) == m.VACANCIES[stem][2] and {len(at) for at in frames} == {len(base[stem]) - gone[stem]}, stem
        for a, b in zip(frames, again[stem]):
            assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
        maxima = []
        for at in frames:
            ref = base[stem].get_scaled_positions()
            frac = (ref[:, None] - at.get_scaled_positions()[None] + 0.5) % 1 - 0.5
            far = np.linalg.norm(frac @ at.cell.array, axis=2).min(axis=1)  # each lattice site to its nearest atom
            empty = np.flatnonzero(far > 1.2)
            assert len(empty) == gone[stem], stem
            if len(empty) == 2:  # the divacancy: the two empty sites are nearest neighbours (2.35 Å in the ideal cell)
                d = (ref[empty[0]] - ref[empty[1]] + 0.5) % 1 - 0.5
                assert np.linalg.norm(d @ base[stem].cell.array) < 2.4
            near = np.delete(far, empty)  # the other atoms' displacements: 0.05 Å to h, h in 0.1-0.25 Å
            assert 0.049 < near.min() and near.max() < 0.251
            maxima.append(near.max())
        assert max(maxima) - min(maxima) > 0.02, stem  # the displacement range varies between structures


def test_vacancy_file_is_labelled_accurate_and_kept_apart_from_the_test_set():
    if not VACANCIES.exists():
        pytest.skip("data/si_train_vacancies.h5 not shipped")
    m = _transfer_sets()
    labels = kinds(VACANCIES)
    assert set(labels) <= {kind for kind, _, _ in m.VACANCIES.values()}
    ds = _check_batch_file(VACANCIES, labels, lambda seed: seed in {401, 402, 403},
                           [TRAIN, SLABS, TEST, MORE, DEFECTS, ROOT / "data" / "si8_szv.h5"])
    # each structure is the plan's structure of its name (<stem>-NNNN: position NNNN of plan <stem>)
    plans = m.vacancy_plans()
    for name, sd in zip(ds.names, ds):
        stem, _, n = name.rpartition("-")
        planned = plans[stem][int(n)]
        assert np.allclose(sd.atoms.positions, planned.positions, atol=1e-6) and np.allclose(sd.atoms.cell.array, planned.cell.array)

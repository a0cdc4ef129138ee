"""Assemble the shipped training and test-only datasets of issue 12 from generator outputs.

The structures were computed by this project's own generator (``acehamil generate pyscf
--structures PLAN.xyz``, LDA, gth-szv, gth-pade; per-structure settings are in each structure's
``info["settings"]``) from the plans that ``make_plans()`` below writes.  This script only
selects, labels (``info["kind"]``) and re-stores them (float32 H/S values, see ``README.md``).

Usage::

    python data/make_transfer_sets.py --plans DIR  # write the structure plans (xyz)
    # ... run the generator on each plan (commands in README.md) ...
    python data/make_transfer_sets.py GENDIR      # write data/si_train_mixed.h5 and data/si_test_ood.h5
    python data/make_transfer_sets.py --slabs GENDIR   # write data/si_train_slabs.h5 (the two surface slabs)
    python data/make_transfer_sets.py --plans-more DIR  # the second batch's plans (seeds 201-206, see MORE)
    python data/make_transfer_sets.py --more GENDIR2 --si64-dir GENDIR   # write data/si_train_more.h5
    python data/make_transfer_sets.py --plans-defects DIR  # the third batch's plans (seeds 301-304, see DEFECTS)
    python data/make_transfer_sets.py --defects GENDIR3 --more-dir GENDIR2   # write data/si_train_defects.h5
    python data/make_transfer_sets.py --plans-vacancies DIR  # the fourth batch's plans (seeds 401-403, see VACANCIES)
    python data/make_transfer_sets.py --vacancies GENDIR4    # write data/si_train_vacancies.h5

The slabs come from the generator's built-in bases (``acehamil generate pyscf --base si001|si111
--count 1 --smearing 0.005``, commands in ``README.md``), not from a plan.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (generator file stem, kind label, structure indices or None for all) per shipped file
TRAIN = [("train_si8", "si8-rattle0.1-0.3-strain5", None), ("train_si16", "si16-rattle0.05-0.3-strain4", None),
         ("train_si15", "si15-vacancy", None), ("train_si64", "si64-rattle0.05-0.3-strain4", None),
         ("train_si63", "si63-vacancy", None)]
SLABS = [("si001_slab", "si001-slab", None), ("si111_slab", "si111-slab", None)]
TEST = [("test_si8", "si8-strain+-3-4%", [0, 1, 2, 3]), ("test_si8", "si8-rattle0.2", [4, 5, 6]),
        ("test_si15", "si15-vacancy", None), ("test_si64", "si64-rattle0.05-0.15", None)]


def make_plans(out: Path) -> None:
    """Write the structure plans (the same seeds as the shipped data)."""
    import numpy as np
    from ase.build import bulk
    from ase.io import write

    from acehamil.io.generator import perturbed_structures

    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    si16, si64 = si8.repeat((2, 1, 1)), si8.repeat((2, 2, 2))

    def frames(plan):
        return [at for _, at in plan]

    def vacancies(base, count, seed, disp=(0.05, 0.15), strain=0.02):
        rng = np.random.default_rng(seed)
        res = []
        for _, at in perturbed_structures(base, count, disp, strain, seed):
            del at[int(rng.integers(len(at)))]
            res.append(at)
        return res

    def iso(base, scales, seed, disp=(0.05, 0.15)):
        res = []
        for n, s in enumerate(scales):
            at = base.copy()
            at.set_cell(base.cell.array * s, scale_atoms=True)
            res.append(perturbed_structures(at, 1, disp, 0.0, seed + n)[0][1])
        return res

    out.mkdir(parents=True, exist_ok=True)
    write(out / "test_si8.xyz", iso(si8, [1.04, 0.96, 1.03, 0.97], 9001) + frames(perturbed_structures(si8, 3, (0.2, 0.2), 0.02, 9002)))
    write(out / "test_si15.xyz", vacancies(si16, 2, 9003))
    write(out / "test_si64.xyz", frames(perturbed_structures(si64, 1, (0.05, 0.15), 0.02, 9004)))
    write(out / "train_si8.xyz", frames(perturbed_structures(si8, 24, (0.1, 0.3), 0.05, 101)))
    write(out / "train_si16.xyz", frames(perturbed_structures(si16, 16, (0.05, 0.3), 0.04, 102)))
    write(out / "train_si15.xyz", vacancies(si16, 12, 103, (0.05, 0.25), 0.04))
    write(out / "train_si64.xyz", frames(perturbed_structures(si64, 6, (0.05, 0.3), 0.04, 104)))
    write(out / "train_si63.xyz", vacancies(si64, 3, 105, (0.05, 0.25), 0.03))


#: the second batch of training plans (issue 12, item 2): generator file stem -> (kind label, seed, planned count)
#: Seeds 201-206 differ from every other set (0, 31, 33, 101-105; the test set's 9001-9004).
MORE = {
    "si8_iso6": ("si8-iso6-shear1-d0.05-0.2", 201, 12),
    "si15_vac": ("si15-vacancy-strain3-d0.05-0.2", 202, 8),
    "si17_int": ("si17-interstitial-T-H-strain2", 203, 4),
    "si8_md": ("si8-md600-1000K-strain2", 204, 8),
    "si32_dis": ("si32-strain3-d0.05-0.25", 205, 4),
    "si31_vac": ("si31-vacancy-strain3-d0.05-0.2", 206, 2),
}

#: what each kind's cells are (the README table)
CELLS = {
    "si8-iso6-shear1-d0.05-0.2": "8-atom cubic, isotropic strain uniform in ±6 % + symmetric tensor entries ±1 %, displacements 0.05-0.2 Å (seed 201)",
    "si15-vacancy-strain3-d0.05-0.2": "16-atom 2x1x1 minus one atom, strain entries ±3 %, 0.05-0.2 Å (seed 202)",
    "si17-interstitial-T-H-strain2": "2x1x1 plus one atom, alternately at the tetrahedral and a hexagonal site, strain ±2 %, 0.05-0.15 Å, smearing 0.005 Ha (seed 203)",
    "si8-md600-1000K-strain2": "8-atom, strain ±2 %, Gaussian displacements, sigma 0.07-0.11 Å per component (600-1000 K) (seed 204)",
    "si32-strain3-d0.05-0.25": "32-atom 2x2x1, strain ±3 %, 0.05-0.25 Å (seed 205)",
    "si31-vacancy-strain3-d0.05-0.2": "2x2x1 minus one atom, strain ±3 %, 0.05-0.2 Å, smearing 0.005 Ha (seed 206)",
    "si64-rattle0.05-0.3-strain4-fourier2x2x2": "64-atom 2x2x2, strain ±4 %, 0.05-0.3 Å, older generator, Fourier 2x2x2 (seed 104)",
}


def _cell_strain(at, e):
    """``at`` (a copy) with its cell deformed by ``1 + e`` (atoms follow)."""
    import numpy as np

    at = at.copy()
    at.set_cell(at.cell.array @ (np.eye(3) + e), scale_atoms=True)
    return at


def _interstitials(si16, count: int, seed: int) -> list:
    """``count`` perturbed 2x1x1 cells (strain +-2 %, 0.05-0.15 Å, ``seed``) plus one Si atom, alternately at the
    tetrahedral site (the largest void) and at a hexagonal site ((5/8, 5/8, 5/8) of the first cubic cell)."""
    import numpy as np
    from ase import Atoms

    from acehamil.io.generator import perturbed_structures
    from acehamil.io.plans import largest_voids

    frames = []
    hexa = np.array([5 / 16, 5 / 8, 5 / 8])  # (5/8, 5/8, 5/8) of the first cubic cell, in 2x1x1 fractions
    for n, (_, at) in enumerate(perturbed_structures(si16, count, (0.05, 0.15), 0.02, seed)):
        site = largest_voids(at, 1)[0] if n % 2 == 0 else hexa @ at.cell.array
        frames.append(at + Atoms("Si", positions=[site]))
    return frames


def more_plans() -> dict:
    """The second batch of training plans, ``{stem: [ase.Atoms, ...]}`` (deterministic; seeds in :data:`MORE`).

    - ``si8_iso6``: 8-atom cell, isotropic strain uniform in +-6 % plus a random symmetric tensor with
      entries uniform in +-1 % (shear and anisotropy), every atom displaced by 0.05-0.2 Å in a random direction;
    - ``si15_vac``: 16-atom 2x1x1 cell, strain tensor entries +-3 %, 0.05-0.2 Å, one random atom removed
      (``acehamil.io.plans.make_plan(..., "vacancy")``);
    - ``si17_int``: 2x1x1 cell, strain +-2 %, 0.05-0.15 Å, one atom inserted, alternately at the tetrahedral
      site (the largest void, ``plans.largest_voids``) and at a hexagonal site (fractional (5/8, 5/8, 5/8) of a
      cubic cell: the centre of a six-ring, six neighbours at 2.25 Å);
    - ``si8_md``: 8-atom cell, strain tensor entries +-2 %, every Cartesian component displaced by a Gaussian
      with sigma uniform in 0.07-0.11 Å per structure: Si at 600-1000 K in the classical Debye model,
      ``sigma^2 = 3 hbar^2 T / (m k_B Theta_D^2)`` with Theta_D = 645 K gives 0.086 Å at 600 K and 0.11 Å at 1000 K;
    - ``si32_dis``: 32-atom 2x2x1 cell, strain +-3 %, 0.05-0.25 Å;
    - ``si31_vac``: the 2x2x1 cell with one atom removed, strain +-3 %, 0.05-0.2 Å.
    """
    import numpy as np
    from ase.build import bulk

    from acehamil.io.generator import perturbed_structures
    from acehamil.io.plans import make_plan

    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    si16, si32 = si8.repeat((2, 1, 1)), si8.repeat((2, 2, 1))
    out = {}

    rng = np.random.default_rng(MORE["si8_iso6"][1])
    frames = []
    for _ in range(MORE["si8_iso6"][2]):
        e = rng.uniform(-0.01, 0.01, size=(3, 3))
        e = rng.uniform(-0.06, 0.06) * np.eye(3) + 0.5 * (e + e.T)
        frames.append(perturbed_structures(_cell_strain(si8, e), 1, (0.05, 0.2), 0.0, int(rng.integers(2**31)))[0][1])
    out["si8_iso6"] = frames

    out["si15_vac"] = [at for _, at in make_plan(si16, "vacancy", MORE["si15_vac"][2], (0.05, 0.2), 0.03, MORE["si15_vac"][1])]

    out["si17_int"] = _interstitials(si16, MORE["si17_int"][2], MORE["si17_int"][1])

    rng = np.random.default_rng(MORE["si8_md"][1])
    frames = []
    for _ in range(MORE["si8_md"][2]):
        e = rng.uniform(-0.02, 0.02, size=(3, 3))
        at = _cell_strain(si8, 0.5 * (e + e.T))
        at.positions = at.positions + rng.normal(scale=rng.uniform(0.07, 0.11), size=(len(at), 3))
        frames.append(at)
    out["si8_md"] = frames

    out["si32_dis"] = [at for _, at in perturbed_structures(si32, MORE["si32_dis"][2], (0.05, 0.25), 0.03, MORE["si32_dis"][1])]
    out["si31_vac"] = [at for _, at in make_plan(si32, "vacancy", MORE["si31_vac"][2], (0.05, 0.2), 0.03, MORE["si31_vac"][1])]
    return out


#: the third batch (issue 12: the defects and large displacements the example predicts worst), generator file stem ->
#: (kind label, seed, planned count).  Seeds 301-304, different from every other set (0, 31, 33, 101-105, 201-206)
#: and from the test set's 9001-9004.  The 31-atom vacancies share their kind label with ``si31_vac`` of :data:`MORE`
#: (the same plan recipe with seed 206), which :func:`collect_defects` adds, so that kind has more than one structure.
#: Stems end in 3 so that the generator's structure names (``<stem>-NNNN``) differ from the second batch's.
DEFECTS = {
    "si15_vac3": ("si15-vacancy-strain3-d0.05-0.2", 301, 6),
    "si17_int3": ("si17-interstitial-T-H-strain2", 302, 4),
    "si16_big3": ("si16-strain4-d0.15-0.25", 303, 4),
    "si31_vac3": ("si31-vacancy-strain3-d0.05-0.2", 304, 2),
}
CELLS.update({
    "si16-strain4-d0.15-0.25": "16-atom 2x1x1, strain entries ±4 %, every atom displaced by 0.15-0.25 Å (seed 303)",
})


def defect_plans() -> dict:
    """The third batch of training plans, ``{stem: [ase.Atoms, ...]}`` (deterministic; seeds in :data:`DEFECTS`).

    - ``si15_vac3``: 16-atom 2x1x1 cell, strain tensor entries +-3 %, 0.05-0.2 Å, one random atom removed (seed 301);
    - ``si17_int3``: 2x1x1 cell, strain +-2 %, 0.05-0.15 Å, one atom inserted alternately at the tetrahedral and a
      hexagonal site (seed 302; run with ``--smearing 0.005``);
    - ``si16_big3``: 2x1x1 cell, strain entries +-4 %, every atom displaced by 0.15-0.25 Å (seed 303);
    - ``si31_vac3``: 2x2x1 cell with one atom removed, strain +-3 %, 0.05-0.2 Å (seed 304; ``--smearing 0.005``).
    """
    from ase.build import bulk

    from acehamil.io.generator import perturbed_structures
    from acehamil.io.plans import make_plan

    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    si16, si32 = si8.repeat((2, 1, 1)), si8.repeat((2, 2, 1))
    d = DEFECTS
    return {
        "si15_vac3": [at for _, at in make_plan(si16, "vacancy", d["si15_vac3"][2], (0.05, 0.2), 0.03, d["si15_vac3"][1])],
        "si17_int3": _interstitials(si16, d["si17_int3"][2], d["si17_int3"][1]),
        "si16_big3": [at for _, at in perturbed_structures(si16, d["si16_big3"][2], (0.15, 0.25), 0.04, d["si16_big3"][1])],
        "si31_vac3": [at for _, at in make_plan(si32, "vacancy", d["si31_vac3"][2], (0.05, 0.2), 0.03, d["si31_vac3"][1])],
    }


#: the fourth batch (issue 12: vacancies, the kind the example still predicts worst), generator file stem ->
#: (kind label, seed, planned count).  Seeds 401-403, different from every other set (0, 31, 33, 101-105, 201-206,
#: 301-304) and from the test set's 9001-9004.  Each structure draws its own strain and displacement range (so one
#: kind spans mild to strong disorder): strain tensor entries uniform in +-s with s uniform in 1-4 %, displacement
#: lengths uniform in 0.05 Å to h with h uniform in 0.1-0.25 Å.
VACANCIES = {
    "si15_vac4": ("si15-vacancy-strain1-4-d0.1-0.25", 401, 8),
    "si31_vac4": ("si31-vacancy-strain1-4-d0.1-0.25", 402, 3),
    "si14_divac4": ("si14-divacancy-strain1-4-d0.1-0.25", 403, 3),
}
CELLS.update({
    "si15-vacancy-strain1-4-d0.1-0.25": "16-atom 2x1x1 minus one atom, strain entries ±s, s in 1-4 %, displacements 0.05-h Å, h in 0.1-0.25 Å, per structure (seed 401)",
    "si31-vacancy-strain1-4-d0.1-0.25": "2x2x1 minus one atom, strain ±s, s in 1-4 %, 0.05-h Å, h in 0.1-0.25 Å, smearing 0.005 Ha (seed 402)",
    "si14-divacancy-strain1-4-d0.1-0.25": "16-atom 2x1x1 minus two nearest neighbours, strain ±s, s in 1-4 %, 0.05-h Å, h in 0.1-0.25 Å, smearing auto (0.005 Ha) (seed 403)",
})


def _varied_vacancies(base, count: int, seed: int, divacancy: bool = False) -> list:
    """``count`` cells of ``base`` with one vacancy (or, ``divacancy``, two nearest-neighbour vacancies), each with
    its own disorder: strain tensor entries uniform in +-s (s uniform in 0.01-0.04), displacement lengths uniform in
    0.05 Å to h (h uniform in 0.1-0.25 Å), :func:`acehamil.io.generator.perturbed_structures` with a seed drawn from
    ``default_rng(seed)``.  The removed atoms are chosen in the perfect cell (a divacancy: a random atom and its
    nearest neighbour there), then removed from the perturbed copy."""
    import numpy as np

    from acehamil.io.generator import perturbed_structures

    rng = np.random.default_rng(seed)
    d = base.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    frames = []
    for _ in range(count):
        s, h = rng.uniform(0.01, 0.04), rng.uniform(0.1, 0.25)
        at = perturbed_structures(base, 1, (0.05, h), s, int(rng.integers(2**31)))[0][1]
        i = int(rng.integers(len(base)))
        gone = [i, int(rng.choice(np.flatnonzero(d[i] < d[i].min() + 0.1)))] if divacancy else [i]
        del at[sorted(gone, reverse=True)]
        frames.append(at)
    return frames


def vacancy_plans() -> dict:
    """The fourth batch of training plans, ``{stem: [ase.Atoms, ...]}`` (deterministic; seeds in :data:`VACANCIES`).

    - ``si15_vac4``: 16-atom 2x1x1 cell minus one atom, disorder per structure (:func:`_varied_vacancies`, seed 401);
    - ``si31_vac4``: 32-atom 2x2x1 cell minus one atom, the same (seed 402; run with ``--smearing 0.005``);
    - ``si14_divac4``: 16-atom 2x1x1 cell minus two nearest neighbours, the same (seed 403; ``--smearing auto``).
    """
    from ase.build import bulk

    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    si16, si32 = si8.repeat((2, 1, 1)), si8.repeat((2, 2, 1))
    v = VACANCIES
    return {
        "si15_vac4": _varied_vacancies(si16, v["si15_vac4"][2], v["si15_vac4"][1]),
        "si31_vac4": _varied_vacancies(si32, v["si31_vac4"][2], v["si31_vac4"][1]),
        "si14_divac4": _varied_vacancies(si16, v["si14_divac4"][2], v["si14_divac4"][1], divacancy=True),
    }


def write_more_plans(out: Path, counts: dict | None = None, plans=None) -> None:
    """Write ``plans()`` (default :func:`more_plans`) as ``out/<stem>.xyz``, the first ``counts[stem]`` frames of
    each (all by default).

    Every plan is made in full and then cut, so a shorter plan is a prefix of the longer one and the
    generator's ``--resume`` extends it (structures are named ``<stem>-NNNN`` by position).
    """
    from ase.io import write

    out.mkdir(parents=True, exist_ok=True)
    for stem, frames in (plans or more_plans)().items():
        n = len(frames) if counts is None else min(int(counts.get(stem, len(frames))), len(frames))
        if n > 0:
            write(out / f"{stem}.xyz", frames[:n])


def collect(gendir: Path, spec) -> list:
    """Structures of ``spec`` from the generator files, each with ``info["kind"]``."""
    from acehamil.io.dataset import read_dataset

    out = []
    for stem, kind, idx in spec:
        path = gendir / f"{stem}.h5"
        if not path.exists():
            print(f"  {path}: absent, skipped", file=sys.stderr)
            continue
        ds = read_dataset(path)
        for i in (range(len(ds)) if idx is None else [i for i in idx if i < len(ds)]):
            sd = ds[i]
            out.append(replace(sd, info={**sd.info, "kind": kind, "generator_file": path.name}))
        print(f"  {path.name}: {kind}: {len(out)} structures so far", file=sys.stderr)
    return out


#: the older generator's 64-atom cell shipped with the second batch when its band error is within tolerance
SI64 = ("train_si64", "si64-rattle0.05-0.3-strain4-fourier2x2x2")


def collect_more(gendir: Path, si64_dir: Path | None, band_tol: float = 5.0) -> list:
    """The finished structures of :data:`MORE` in ``gendir`` (plus :data:`SI64` from ``si64_dir`` when its
    band error is <= ``band_tol`` meV), each with ``info["kind"]``, ``info["seed"]`` and ``info["band_error"]``
    (:func:`acehamil.io.band_check.band_errors` of the float64 data; measured here for files that lack it)."""
    spec = [(gendir / f"{stem}.h5", kind, seed) for stem, (kind, seed, _) in MORE.items()]
    if si64_dir is not None:
        spec.append((si64_dir / f"{SI64[0]}.h5", SI64[1], 104))
    return _labelled(spec, band_tol)


def collect_defects(gendir: Path, more_dir: Path | None, band_tol: float = 5.0) -> list:
    """The finished structures of :data:`DEFECTS` in ``gendir``, labelled as :func:`collect_more` labels its own,
    plus the second batch's 31-atom vacancy (``si31_vac.h5`` of ``more_dir``, same kind label) when at least one
    new 31-atom vacancy is there, so that kind never has one structure only."""
    spec = [(gendir / f"{stem}.h5", kind, seed) for stem, (kind, seed, _) in DEFECTS.items()]
    if more_dir is not None and (gendir / "si31_vac3.h5").exists():
        kind, seed, _ = MORE["si31_vac"]
        spec.append((more_dir / "si31_vac.h5", kind, seed))
    return _labelled(spec, band_tol)


def collect_vacancies(gendir: Path, band_tol: float = 5.0) -> list:
    """The finished structures of :data:`VACANCIES` in ``gendir``, labelled as :func:`collect_more` labels its own."""
    return _labelled([(gendir / f"{stem}.h5", kind, seed) for stem, (kind, seed, _) in VACANCIES.items()], band_tol)


def _labelled(spec: list, band_tol: float) -> list:
    """The structures of each ``(path, kind, seed)`` of ``spec`` (absent files skipped), each with ``info["kind"]``,
    ``info["seed"]``, ``info["generator_file"]`` and ``info["band_error"]`` (:func:`acehamil.io.band_check.band_errors`
    of the float64 data; measured here for files that lack it); those above ``band_tol`` meV are left out."""
    from acehamil.io.band_check import band_errors
    from acehamil.io.dataset import read_dataset

    out = []
    for path, kind, seed in spec:
        if not path.exists():
            print(f"  {path}: absent, skipped", file=sys.stderr)
            continue
        ds = read_dataset(path)
        for sd in ds:
            be = sd.info.get("band_error") if isinstance(sd.info.get("band_error"), dict) else band_errors(sd)
            if be["checked_max_meV"] is None or be["checked_max_meV"] > band_tol:
                print(f"  {sd.info.get('name')}: band error {be['checked_max_meV']} meV above {band_tol} meV, left out",
                      file=sys.stderr)
                continue
            out.append(replace(sd, info={**sd.info, "kind": kind, "seed": seed, "band_error": be,
                                         "generator_file": path.name}))
        print(f"  {path.name}: {kind}: {len(ds)} structures", file=sys.stderr)
    return out


def ship(structs: list, target: Path) -> None:
    """Write ``structs`` to ``target`` in float32, re-solve both to check the precision, and print the README's
    table rows (kind, n, cells, band error max / median of the checked bands, all bands max, wall and CPU seconds)."""
    import numpy as np

    from acehamil.io.dataset import read_dataset, write_dataset

    write_dataset(target, structs, precision="float32")
    rows = precision_check(structs, read_dataset(target))
    for name, e64, e32, d in rows:
        print(f"  {name:28s} band error float64 {e64:.3f} meV, float32 {e32:.3f} meV; eigenvalues moved by <= {d * 1e3:.2f} ueV")
    for kind in dict.fromkeys(sd.info["kind"] for sd in structs):  # the README's table rows
        group = [sd.info for sd in structs if sd.info["kind"] == kind]
        be = sorted(i["band_error"]["checked_max_meV"] for i in group)
        al = max(i["band_error"]["all"]["max_meV"] for i in group)
        wall = ", ".join(f"{i['seconds']:.0f}" for i in group)
        cpus = ", ".join(f"{i['cpu_seconds']:.0f}" for i in group if i.get("cpu_seconds") is not None) or "-"
        seeds = ", ".join(str(x) for x in sorted({i["seed"] for i in group if i.get("seed") is not None}))
        cells = re.sub(r" \(seed \d+\)", "", CELLS.get(kind, "")) + (f" (seed {seeds})" if seeds else "")
        print(f"| `{kind}` | {len(group)} | {cells} | {be[-1]:.2f} / {float(np.median(be)):.2f} | {al:.2f} | {wall} | {cpus} |")
    print(f"{target}: {len(structs)} structures, {target.stat().st_size / 1e6:.2f} MB; float32 storage moves eigenvalues "
          f"(all bands, reference k-points) by at most {max((r[3] for r in rows), default=0) * 1e3:.2f} ueV; band error "
          f"(max over structures) float64 {max((r[1] for r in rows), default=0):.3f}, stored {max((r[2] for r in rows), default=0):.3f} meV")


def precision_check(structures: list, stored) -> list:
    """Per structure: (name, band error of the float64 data, band error of the stored data, largest eigenvalue
    change float64 -> stored at the reference k-points, all bands), meV.  Band errors: occupied and E_F +- 2 eV
    bands against PySCF's own bands (``checked_max_meV``)."""
    import numpy as np

    from acehamil.io.band_check import band_errors
    from acehamil.tb.eigen import solve

    rows = []
    for a, b in zip(structures, stored):
        k = np.asarray(a.reference_bands[0], float).reshape(-1, 3)
        change = 1e3 * float(np.abs(np.asarray(solve(a.H[0], a.S, k)) - np.asarray(solve(b.H[0], b.S, k))).max())
        rows.append((a.info.get("name"), a.info["band_error"]["checked_max_meV"], band_errors(b)["checked_max_meV"], change))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gendir", nargs="?", help="folder with the generator outputs (train_si8.h5, ...)")
    p.add_argument("--plans", help="write the structure plans (xyz) to this folder and stop")
    p.add_argument("--slabs", action="store_true", help="write only si_train_slabs.h5 (from si001_slab.h5, si111_slab.h5)")
    p.add_argument("--more", action="store_true",
                   help="write only si_train_more.h5 from the finished second-batch files in GENDIR (see MORE)")
    p.add_argument("--si64-dir", help="with --more: folder of the older generator's train_si64.h5, added when its band "
                                      "error is within the generator's 5 meV tolerance")
    p.add_argument("--plans-more", help="write the second batch's structure plans (xyz) to this folder and stop")
    p.add_argument("--plans-defects", help="write the third batch's structure plans (xyz) to this folder and stop")
    p.add_argument("--defects", action="store_true",
                   help="write only si_train_defects.h5 from the finished third-batch files in GENDIR (see DEFECTS)")
    p.add_argument("--more-dir", help="with --defects: the second batch's folder, whose 31-atom vacancy (si31_vac.h5) "
                                      "joins the new ones under the same kind label")
    p.add_argument("--plans-vacancies", help="write the fourth batch's structure plans (xyz) to this folder and stop")
    p.add_argument("--vacancies", action="store_true",
                   help="write only si_train_vacancies.h5 from the finished fourth-batch files in GENDIR (see VACANCIES)")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args(argv)
    if args.plans:
        make_plans(Path(args.plans))
        return 0
    if args.plans_more:
        write_more_plans(Path(args.plans_more))
        return 0
    if args.plans_defects:
        write_more_plans(Path(args.plans_defects), plans=defect_plans)
        return 0
    if args.plans_vacancies:
        write_more_plans(Path(args.plans_vacancies), plans=vacancy_plans)
        return 0
    if not args.gendir:
        p.error("give the generator folder (or --plans DIR)")
    from acehamil.io.dataset import write_dataset

    gendir, out = Path(args.gendir), Path(args.out)
    if args.slabs:
        write_dataset(out / "si_train_slabs.h5", collect(gendir, SLABS), precision="float32")
        return 0
    if args.more:
        ship(collect_more(gendir, Path(args.si64_dir) if args.si64_dir else None), out / "si_train_more.h5")
        return 0
    if args.vacancies:
        if not list(gendir.glob("*.h5")):
            p.error(f"no generator outputs (.h5) in {gendir}")
        ship(collect_vacancies(gendir), out / "si_train_vacancies.h5")
        return 0
    if args.defects:
        if not list(gendir.glob("*.h5")):
            p.error(f"no generator outputs (.h5) in {gendir}")
        ship(collect_defects(gendir, Path(args.more_dir) if args.more_dir else None), out / "si_train_defects.h5")
        return 0
    write_dataset(out / "si_train_mixed.h5", collect(gendir, TRAIN), precision="float32")
    write_dataset(out / "si_test_ood.h5", collect(gendir, TEST), precision="float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())

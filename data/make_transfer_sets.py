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

The slabs come from the generator's built-in bases (``acehamil generate pyscf --base si001|si111
--count 1 --smearing 0.005``, commands in ``README.md``), not from a plan.
"""

from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gendir", nargs="?", help="folder with the generator outputs (train_si8.h5, ...)")
    p.add_argument("--plans", help="write the structure plans (xyz) to this folder and stop")
    p.add_argument("--slabs", action="store_true", help="write only si_train_slabs.h5 (from si001_slab.h5, si111_slab.h5)")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args(argv)
    if args.plans:
        make_plans(Path(args.plans))
        return 0
    if not args.gendir:
        p.error("give the generator folder (or --plans DIR)")
    from acehamil.io.dataset import write_dataset

    gendir, out = Path(args.gendir), Path(args.out)
    if args.slabs:
        write_dataset(out / "si_train_slabs.h5", collect(gendir, SLABS), precision="float32")
        return 0
    write_dataset(out / "si_train_mixed.h5", collect(gendir, TRAIN), precision="float32")
    write_dataset(out / "si_test_ood.h5", collect(gendir, TEST), precision="float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())

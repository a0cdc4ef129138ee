"""Fit an ACE potential for Si, relax a vacancy, and run a short NVE MD with ASE.

Steps
1. Fit on the Zuo et al. Si training set (``../shared/data/mlearn``), hyperparameters
   by 5-fold CV on that set only (or load a fitted model with ``--potential``).
2. Vacancy formation energy in a 64-atom cell: relax with FIRE (fixed cell),
   ``E_f = E(63, relaxed) - 63/64 E(64)``.
3. NVE MD (velocity Verlet, 1 fs) of 64 atoms started at 1000 K; plot the
   total-energy drift to ``OUT/si_nve_drift.png``.

Usage::

    nice python examples/si_potential.py [--potential Si.h5] [--steps 500] [--out si_out]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACEHAMIL_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA = SHARED / "mlearn" / "Si_training.xyz"


def fit_si(path: Path):
    from acehamil.models.potential.config import core_repulsion, make_basis
    from acehamil.io.labelled import read_configs
    from acehamil.models.potential.fit import FitSettings, fit_potential

    train = read_configs(path)
    basis = make_basis((14,), r_cut=5.0, n_max=8, max_nu=3, max_degree=(16, 12, 8))
    settings = FitSettings(lam=(1e-9, 1e-7, 1e-5), power=(0.0, 2.0), n_folds=5)
    res = fit_potential(train, basis, (14,), settings, core_repulsion(train, (14,)), progress=True)
    print(f"fitted: {res.chosen}, CV energy MAE {res.cv[0]['energy_mae_meV_per_atom']:.2f} meV/atom")
    return res.potential


def vacancy_formation_energy(potential) -> float:
    from ase.build import bulk
    from ase.optimize import FIRE

    from acehamil.calculators import ACECalculator

    perfect = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    perfect.calc = ACECalculator(potential)
    e_bulk = perfect.get_potential_energy()
    vac = perfect.copy()
    del vac[0]
    vac.positions += np.random.default_rng(0).normal(scale=0.02, size=vac.positions.shape)
    vac.calc = ACECalculator(potential)
    FIRE(vac, logfile=None).run(fmax=0.01, steps=500)
    return vac.get_potential_energy() - len(vac) / len(perfect) * e_bulk


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from nve_drift import run_nve

    from acehamil.io.potential_file import load_potential, save_potential

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--potential", help="use this fitted model instead of fitting")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", type=Path, default=Path("si_potential_out"))
    args = p.parse_args(argv)
    if not args.potential and not Path(args.data).is_file():
        print(f"si_potential.py needs the Zuo et al. Si training set {args.data} (the project's ../shared/data, or "
              f"$ACEHAMIL_SHARED_DATA), which is not here; nothing to do. Give --data FILE or --potential MODEL.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.potential:
        pot = load_potential(args.potential)
    else:
        pot = fit_si(args.data)
        save_potential(args.out / "Si.h5", pot)
    print(f"vacancy formation energy (64-atom cell, relaxed): {vacancy_formation_energy(pot):.3f} eV")
    t, etot, epot, temp = run_nve(pot, steps=args.steps)
    drift = np.polyfit(t, etot, 1)[0] * (t[-1] - t[0]) * 1e3
    print(f"NVE {args.steps} fs: drift {drift:.3f} meV/atom, mean T {temp[len(temp) // 2:].mean():.0f} K")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    ax[0].plot(t, (etot - etot[0]) * 1e3)
    ax[0].set_ylabel("E_tot drift (meV/atom)")
    ax[1].plot(t, temp)
    ax[1].set_ylabel("T (K)")
    ax[1].set_xlabel("time (fs)")
    fig.tight_layout()
    fig.savefig(args.out / "si_nve_drift.png", dpi=120)
    print(f"wrote {args.out / 'si_nve_drift.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

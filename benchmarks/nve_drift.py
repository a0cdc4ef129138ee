"""NVE molecular dynamics of 64-atom Si with a fitted ACE potential: total-energy drift.

1000 K initial Maxwell-Boltzmann velocities (zero total momentum), velocity
Verlet with 1 fs steps for 2 ps (2000 steps).  Drift is reported as the change
of the total energy per atom over the run from a linear fit (meV/atom) and as
the largest excursion from the initial value.

Usage::

    nice python benchmarks/nve_drift.py POTENTIAL.h5 [--steps 2000] [--json] [--plot drift.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def run_nve(potential, steps=2000, dt_fs=1.0, temperature_K=1000.0, seed=0, every=10):
    """Run NVE MD; returns times (fs) and total/potential energies per atom (eV)."""
    from ase import units
    from ase.build import bulk
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from acehamil.calculators import ACECalculator

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    atoms.calc = ACECalculator(potential)
    # thermalize_momenta replaces MaxwellBoltzmannDistribution in newer ASE (same draw)
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    vd.Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    n = len(atoms)
    t, etot, epot, temp = [], [], [], []

    def record():
        ep = atoms.get_potential_energy() / n
        ek = atoms.get_kinetic_energy() / n
        t.append(dyn.nsteps * dt_fs)
        etot.append(ep + ek)
        epot.append(ep)
        temp.append(atoms.get_temperature())

    record()
    dyn.attach(record, interval=every)
    dyn.run(steps)
    return np.array(t), np.array(etot), np.array(epot), np.array(temp)


def main(argv=None) -> int:
    from acehamil.io.potential_file import load_potential

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("potential")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--dt", type=float, default=1.0, help="fs")
    p.add_argument("--temperature", type=float, default=1000.0, help="K")
    p.add_argument("--plot", help="save a plot of the total-energy drift here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    pot = load_potential(args.potential)
    t0 = time.perf_counter()
    t, etot, epot, temp = run_nve(pot, args.steps, args.dt, args.temperature)
    wall = time.perf_counter() - t0
    slope = np.polyfit(t, etot, 1)[0]
    out = {
        "natoms": 64, "steps": args.steps, "dt_fs": args.dt, "temperature_K": args.temperature,
        "drift_meV_per_atom": float(slope * (t[-1] - t[0]) * 1e3),
        "max_excursion_meV_per_atom": float(np.abs(etot - etot[0]).max() * 1e3),
        "mean_temperature_K": float(temp[len(temp) // 2 :].mean()),
        "wall_seconds": wall,
    }
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(t / 1000, (etot - etot[0]) * 1e3, label="total")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("E_tot - E_tot(0) (meV/atom)")
        ax.set_title(f"NVE 64-atom Si, {args.temperature:.0f} K, {args.dt} fs")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

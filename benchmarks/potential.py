"""Speed of the ACE site-energy potential: microseconds per atom for energy +
forces (+ stress, free) on a 1000-atom Si diamond supercell, and the fit time per
element (from a benchmarks/mlearn.py --json report, or by fitting Si here).

Usage::

    nice python benchmarks/potential.py [--potential Si.h5] [--mlearn-json report.json] [--json]

Without ``--potential`` the benchmark basis of benchmarks/mlearn.py is used with
random coefficients (the cost does not depend on their values); ``--model
embedded`` adds random densities on the benchmark's density features
(benchmarks/mlearn.py ``EMBEDDED``), ``--model multilayer`` a second layer with
benchmarks/mlearn.py's ``MULTILAYER`` settings (cutoffs = ``--layer-cutoff``, default ``--r-cut``) and random
weights, ``--model embedded_multilayer`` both (the densities in the multilayer model's first layer).  One thread: run with ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``.
``--alternate linear multilayer`` times random models call by call in turn in one
process and prints CPU µs/atom and ratios (the same load for each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Random model kinds (``--model``, ``--alternate``).
MODELS = ("linear", "embedded", "multilayer", "embedded_multilayer")


def benchmark_model(args):
    from acehamil.io.potential_file import load_potential
    from acehamil.models.potential.model import ACEPotential, feature_degrees
    from acehamil.models.potential.config import make_basis
    from acehamil.models.potential.repulsion import RepulsionSpec
    from mlearn import BASIS, EMBEDDED, MULTILAYER

    if args.potential:
        return load_potential(args.potential)
    basis = make_basis((14,), r_cut=args.r_cut, **BASIS)
    nB = len(feature_degrees(basis))
    rng = np.random.default_rng(0)
    coef = 1e-3 * rng.normal(size=(1, nB))
    rep = RepulsionSpec((((14, 14), 1.9),), 10.0)
    if args.model == "linear":
        return ACEPotential(basis, (14,), [-5.0], coef, rep)
    from acehamil.models.potential.embedded import EmbeddedACEPotential
    from acehamil.models.potential.embedded_fit import density_columns

    cols = density_columns(basis, EMBEDDED["density_max_degree"])
    dens = np.zeros((1, len(EMBEDDED["embeddings"]), nB))
    dens[:, :, cols] = 1e-2 * rng.normal(size=(1, len(EMBEDDED["embeddings"]), len(cols)))
    if args.model in ("multilayer", "embedded_multilayer"):
        from acehamil.models.potential.multilayer import MessageLayer, MessageSpec, MultilayerACEPotential

        r2 = getattr(args, "layer_cutoff", None) or args.r_cut
        spec = MessageSpec(n_message=MULTILAYER["n_message"], r_message=r2, n_pass=MULTILAYER["n_pass"], r_pass=r2,
                           embeddings=MULTILAYER["embeddings"])
        layer = MessageLayer(spec, (14,), shift=np.full(spec.n_message, 1.0), scale=np.full(spec.n_message, 2.0))
        w = 1e-3 * rng.normal(size=(1, layer.n_features))
        if args.model == "multilayer":
            return MultilayerACEPotential(basis, (14,), [-5.0], coef, layer, w, rep)
        return MultilayerACEPotential(basis, (14,), [-5.0], coef, layer, w, rep, {}, dens, EMBEDDED["embeddings"])
    return EmbeddedACEPotential(basis, (14,), [-5.0], coef, dens, EMBEDDED["embeddings"], rep)


def alternate(args) -> int:
    """CPU µs/atom of several random models, timed call by call in turn (same load for each)."""
    from ase.build import bulk

    pots = {m: benchmark_model(argparse.Namespace(**{**vars(args), "model": m, "potential": None})) for m in args.alternate}
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((5, 5, 5))
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    for pot in pots.values():
        pot.compute(atoms)  # warm-up
    cpu = {m: [] for m in pots}
    load0 = os.getloadavg()[0]
    for _ in range(max(1, args.repeat)):
        for m, pot in pots.items():
            c0 = time.process_time()
            pot.compute(atoms, forces=True, stress=True)
            cpu[m].append(time.process_time() - c0)
    load = (load0, os.getloadavg()[0])
    first = args.alternate[0]
    out = {"natoms": len(atoms), "load_1min": load,
           "cpu_us_per_atom": {m: min(v) / len(atoms) * 1e6 for m, v in cpu.items()},
           "cpu_us_per_atom_median": {m: float(np.median(v)) / len(atoms) * 1e6 for m, v in cpu.items()},
           "ratio_to_" + first: {m: min(v) / min(cpu[first]) for m, v in cpu.items()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for m in pots:
            print(f"{m:<11} {out['cpu_us_per_atom'][m]:7.1f} us/atom CPU (best of {len(cpu[m])}; median "
                  f"{out['cpu_us_per_atom_median'][m]:.1f}), {out['ratio_to_' + first][m]:.2f} x {first}")
        print(f"load (1 min) {load[0]:.1f} -> {load[1]:.1f}")
    return 0


def main(argv=None) -> int:
    from ase.build import bulk

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--potential", help="potential file (default: benchmark basis, random coefficients)")
    p.add_argument("--model", default="linear", choices=MODELS, help="random model kind without --potential")
    p.add_argument("--r-cut", type=float, default=5.0)
    p.add_argument("--layer-cutoff", type=float, help="multilayer: r_message = r_pass, Å (default: --r-cut)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--mlearn-json", type=Path, help="report of benchmarks/mlearn.py --json (fit times)")
    p.add_argument("--alternate", nargs="+", choices=MODELS,
                   help="time these random models alternately in one process (robust ratios on a loaded machine)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.alternate:
        return alternate(args)

    pot = benchmark_model(args)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((5, 5, 5))
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    natoms = len(atoms)
    pot.compute(atoms)  # warm-up (basis tables)
    times, cpu = [], []
    for _ in range(max(1, args.repeat)):
        t0, c0 = time.perf_counter(), time.process_time()
        pot.compute(atoms, forces=True, stress=True)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    best = min(times)
    out = {
        "natoms": natoms,
        "us_per_atom": best / natoms * 1e6,
        "nfeatures": pot.n_features,
        "seconds_per_call": best,
        "cpu_us_per_atom": min(cpu) / natoms * 1e6,  # CPU time: robust on a shared machine
        "basis": repr(pot.basis),
        "model": type(pot).__name__,
        "n_densities": getattr(pot, "n_densities", 0),
        "cutoff": pot.cutoff,
    }
    if args.mlearn_json and args.mlearn_json.is_file():
        rep = json.loads(args.mlearn_json.read_text())
        out["fit_seconds"] = {f"{r['element']} {r.get('model', 'linear')}": r["fit_seconds"] for r in rep["results"]}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['model']}, {natoms} atoms, {pot.n_features} features/species ({out['basis']}), "
              f"{out['n_densities']} densities, cutoff {pot.cutoff} A")
        print(f"energy + forces + stress: {best:.3f} s per call = {out['us_per_atom']:.1f} us/atom wall, "
              f"{out['cpu_us_per_atom']:.1f} us/atom CPU (best of {len(times)})")
        for el, s in out.get("fit_seconds", {}).items():
            print(f"fit time {el}: {s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

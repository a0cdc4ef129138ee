"""Calibration of potential force/energy error bars on the Zuo et al. test sets.

For each element: BLR fit on ``<El>_training.xyz`` (k-fold design data; the spread scale is
calibrated on the training folds, :func:`acehamil.models.potential.uncertainty.calibrate`),
then once on ``<El>_test.xyz`` (evaluation only): coverage of the 90 % and 68 % intervals of
every force component (``|err| <= 1.645 sigma``, ``<= sigma``), Spearman's rank correlation of
sigma with ``|err|``, and the same for total energies per atom.

Usage::

    nice python benchmarks/potential_uq.py [--elements Si Ge] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ACEHAMIL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mlearn"


def run_element(el, data_dir, basis_kw, r_cut, progress=False) -> dict:
    from acehamil.io.labelled import read_configs
    from acehamil.models.hamiltonian.intervals import interval_metrics
    from acehamil.models.potential.config import core_repulsion, make_basis
    from acehamil.models.potential.fit import FitSettings, accumulate, fit_potential
    from acehamil.models.potential.uncertainty import calibrate, predict_sigma

    t0 = time.perf_counter()
    train = read_configs(data_dir / f"{el}_training.xyz")
    species = tuple(sorted({int(z) for c in train for z in c.atoms.numbers}))
    settings = FitSettings(solver="blr", power=(2.0,), degree_shifts=(0,), energy_factors=(1.0,), energy_sigma=1e-3,
                           force_sigma=0.05, n_folds=5)
    repulsion = core_repulsion(train, species)
    basis = make_basis(species, r_cut=r_cut, **basis_kw)
    acc = accumulate(basis, species, train, settings, repulsion, progress)
    res = fit_potential(train, basis, species, settings, repulsion, accumulated=acc)
    post = calibrate(res, settings, acc)
    t_fit = time.perf_counter() - t0
    test = read_configs(data_dir / f"{el}_test.xyz")  # read only now: evaluation, never tuning
    ferr, fsig, eerr, esig = [], [], [], []
    t1 = time.perf_counter()
    for c in test:
        pred = res.potential.compute(c.atoms, forces=True, stress=False)
        sig = predict_sigma(res.potential, post, c.atoms)
        if c.forces is not None:
            ferr.append((pred["forces"] - c.forces).ravel())
            fsig.append(sig["forces_sigma"].ravel())
        eerr.append((pred["energy"] - c.energy) / c.natoms)
        esig.append(sig["energy_sigma"] / c.natoms)
    t_test = time.perf_counter() - t1
    fe, fs = np.concatenate(ferr), np.concatenate(fsig)
    return {
        "element": el, "n_test_configs": len(test), "scale": post.scale, "force_noise_eV_A": post.force_noise,
        "forces": {**interval_metrics(fe, fs), "mae_eV_A": float(np.abs(fe).mean()), "mean_sigma_eV_A": float(fs.mean())},
        "energy_per_atom": {**interval_metrics(eerr, esig), "mae_meV": float(np.abs(eerr).mean() * 1e3),
                            "mean_sigma_meV": float(np.mean(esig) * 1e3)},
        "fit_seconds": t_fit, "test_seconds": t_test,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--elements", nargs="+", default=["Si", "Ge"])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--r-cut", type=float, default=5.0)
    p.add_argument("--n-max", type=int, default=8)
    p.add_argument("--max-nu", type=int, default=3)
    p.add_argument("--max-degree", type=float, nargs="+", default=[16, 12, 8])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"Zuo data not found at {args.data} (set ACEHAMIL_SHARED_DATA)", file=sys.stderr)
        return 2
    kw = {"n_max": args.n_max, "max_nu": args.max_nu, "max_degree": tuple(args.max_degree)}
    cpu0 = time.process_time()
    rows = []
    for el in args.elements:
        rows.append(run_element(el, args.data, kw, args.r_cut))
        r = rows[-1]
        print(f"{el}: force coverage 90% {r['forces']['coverage_90']:.3f}, 68% {r['forces']['coverage_68']:.3f}, "
              f"Spearman {r['forces']['spearman_sigma_error']:.3f} (MAE {r['forces']['mae_eV_A']:.3f}, mean sigma "
              f"{r['forces']['mean_sigma_eV_A']:.3f} eV/Å); energy coverage 90% {r['energy_per_atom']['coverage_90']:.3f}; "
              f"fit {r['fit_seconds']:.0f} s", file=sys.stderr, flush=True)
    out = {"elements": rows, "basis": kw, "r_cut": args.r_cut, "cpu_s": time.process_time() - cpu0,
           "load_average": list(os.getloadavg())}
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

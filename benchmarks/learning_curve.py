"""Eigenvalue error against the number of training structures, in and out of distribution.

Fits the H/S model of a configuration (default ``examples/si_hamiltonian.toml``) on the first
``n`` structures of a seeded random order of its training pool (the ``[data]`` structures not
held out, less the kinds at ``kind_weights`` 0), for ``n = 1, 2, 5, 10, 20, 40, ...`` (capped at the pool), and measures on

* the in-distribution test set: the configuration's held-out ``[data] test`` structures;
* the out-of-distribution test set: ``--ood`` dataset files (default: the shipped test-only
  files ``data/si_test_*.h5``), never fitted and never used to choose settings.

The error is the eigenvalue MAE within E_F +- 2 eV (each relative to its own Fermi level), on a
k-grid of about 6 points per 5.43 Å along each axis, averaged over the structures of each set
(every structure counts once, whatever its size).  Prints one line per ``n`` (fit time, CPU time
and load beside it); ``--json`` prints
``{"n_train": [...], "mae_meV_in": [...], "mae_meV_out": [...], ...}``.

Usage::

    python benchmarks/learning_curve.py [--config ...] [--n 1 2 5 10 20 40] [--ood FILE ...] [--json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def kmesh_for(atoms) -> tuple:
    """About 6 k-points per 5.43 Å of each cell vector (at least 1)."""
    lengths = np.linalg.norm(np.asarray(atoms.cell.array), axis=1)
    return tuple(int(max(1, round(6 * 5.43 / x))) for x in lengths)


def mean_eigenvalue_mae(model, structures) -> tuple:
    """Mean over structures of the eigenvalue MAE (meV) and of the aligned H RMSE (meV)."""
    from acehamil.models.hamiltonian.evaluate import evaluate

    eig, h = [], []
    for sd in structures:
        res = evaluate(model, [sd], kmesh=kmesh_for(sd.atoms), uncertainty=False)
        eig.append(res["eigenvalues"]["mae_meV"])
        h.append(res["H"]["rmse_meV_aligned"])
    return float(np.mean(eig)), float(np.mean(h))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 5, 10, 20, 40, 80])
    p.add_argument("--ood", nargs="*", default=None, help="out-of-distribution test datasets (default data/si_test_*.h5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.fit import fit

    cfg = read_model_config(args.config)
    if getattr(getattr(cfg, "uncertainty", None), "calibrate", False):  # error-bar calibration leaves the mean model as is
        from dataclasses import replace

        cfg = replace(cfg, uncertainty=replace(cfg.uncertainty, calibrate=False))
    ds = read_dataset(cfg.data.train)
    from acehamil.models.hamiltonian.fit import kind_factors

    pool = cfg.data.training_indices(len(ds))
    # kinds at weight 0 are not fitted by the configuration: they are not part of its training pool either
    pool = [i for i, f in zip(pool, kind_factors([ds[i] for i in pool], cfg.fit.kind_weights)) if f > 0]
    test_in = [ds[i] for i in cfg.data.test_indices(len(ds))]
    ood_files = args.ood if args.ood is not None else sorted(glob.glob(str(ROOT / "data" / "si_test_*.h5")))
    test_out = [sd for f in ood_files for sd in read_dataset(f)]
    order = np.random.default_rng(args.seed).permutation(pool).tolist()
    sizes = sorted({min(n, len(order)) for n in args.n if n >= 1})
    if not test_in:
        raise SystemExit("the configuration holds out no [data] test structures: no in-distribution test set")
    rows = []
    for n in sizes:
        train = [ds[i] for i in order[:n]]
        t0, c0 = time.perf_counter(), time.process_time()
        model = fit(train, cfg, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        mae_in, h_in = mean_eigenvalue_mae(model, test_in)
        mae_out, h_out = mean_eigenvalue_mae(model, test_out) if test_out else (float("nan"), float("nan"))
        rows.append({"n": n, "mae_in": mae_in, "mae_out": mae_out, "h_in": h_in, "h_out": h_out, "wall": wall, "cpu": cpu,
                     "natoms": int(sum(len(sd.atoms) for sd in train))})
        # with --json the lines go to stderr, so a long run shows its figures as they come
        print(f"n = {n:3d} ({rows[-1]['natoms']} atoms): eigenvalue MAE in {mae_in:7.2f} meV, out {mae_out:7.2f} meV; "
              f"H RMSE aligned in {h_in:.3f}, out {h_out:.3f} meV; fit {wall:.1f} s wall, {cpu:.1f} s CPU, "
              f"load {os.getloadavg()[0]:.1f}", flush=True, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({
            "n_train": [r["n"] for r in rows],
            "mae_meV_in": [r["mae_in"] for r in rows],
            "mae_meV_out": [r["mae_out"] for r in rows],
            "h_rmse_meV_aligned_in": [r["h_in"] for r in rows],
            "h_rmse_meV_aligned_out": [r["h_out"] for r in rows],
            "atoms_train": [r["natoms"] for r in rows],
            "seconds_fit": [r["wall"] for r in rows],
            "cpu_seconds_fit": [r["cpu"] for r in rows],
            "n_test_in": len(test_in), "n_test_out": len(test_out),
            "ood_files": [str(f) for f in ood_files], "config": str(args.config), "seed": args.seed,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

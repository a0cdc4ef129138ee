"""Calibration of the H model's eigenvalue error bars, per structure kind, and their cost.

Fits (or loads, ``--model``) the example model (``examples/si_hamiltonian.toml``: BLR, the spread
calibrated by cross-validation over its training structures) and evaluates, with the same code as
``acehamil evaluate --json``, the coverage of the 90 % / 68 % eigenvalue intervals (E_F +- 2 eV)
and Spearman(sigma, |error|) on

* the held-out ``test`` structures of the TOML (in distribution), all together and per kind;
* every structure of each ``--ood`` file (default ``data/si_test_ood.h5``: strained, 0.2 Å
  displaced, vacancy and 64-atom cells), all together and per kind (``info["kind"]``);
  evaluation only: never fitted, never used for the calibration.

k-grids: about 6 k-points per 5.43 Å of each cell vector (6x6x6 for the 8-atom cell, as the
example).  Cost: CPU time (best of ``--repeats``, interleaved) of prediction + eigen-solve without and
with the uncertainty (plain: ``model.matrices`` + eigenvalues, as ``acehamil evaluate`` without
uncertainty; with: :func:`~acehamil.models.hamiltonian.propagation.eigen_sigma`, which predicts,
solves with eigenvectors and propagates; ``ratio_with_overlap_check`` adds ``predict``'s S(k) check to
both sides), for the first held-out structure on the 6x6x6 grid and for the largest
out-of-distribution cell (64 atoms) on its own grid: the method used (first order, analytic noise
parts, epistemic draws inside the calibrated bond cut, :mod:`acehamil.models.hamiltonian.propagation`;
for the bands within the window and for every band) and, for the small cell, the posterior draws
(Rayleigh-Ritz in the eigenbasis of the prediction) and their first-order shifts.  ``--draws`` also
scores the draws' spreads.  Run it with one BLAS thread (``OMP_NUM_THREADS=1``).

Usage::

    python benchmarks/uncertainty.py [--model model.h5] [--ood FILE ...] [--draws] [--cost-only] [--repeats N] [--json]
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


def kmesh_for(atoms) -> tuple:
    """About 6 k-points per 5.43 Å of each cell vector (6x6x6 for the 8-atom cell)."""
    return tuple(int(max(1, round(6 * 5.43 / x))) for x in np.linalg.norm(np.asarray(atoms.cell.array), axis=1))


def cost_ratio(model, sd, kmesh=(6, 6, 6), repeats: int = 3, draws: bool = True) -> dict:
    """CPU seconds of prediction + solve, and of the same with eigenvalue spreads (best of ``repeats``,
    interleaved): the method used, :func:`acehamil.models.hamiltonian.propagation.eigen_sigma` (analytic
    noise parts, epistemic draws inside the calibrated bond cut), for every band and for the bands within
    the window, and (``draws``) the posterior draws (Rayleigh-Ritz, and their first-order shifts)."""
    from acehamil.models.hamiltonian.calibrate import eigen_parts
    from acehamil.models.hamiltonian.propagation import eigen_sigma
    from acehamil.tb import draws
    from acehamil.tb.dos import monkhorst_pack
    from acehamil.tb.eigen import solve

    kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
    K = model.config.uncertainty.n_samples
    window = model.config.uncertainty.window_eV
    from acehamil.tb.overlap import overlap_check

    times = {"plain": [], "draws": [], "first_order": [], "analytic": [], "analytic_window": [], "check": []}
    for _ in range(repeats):
        t0 = time.process_time()
        eigen_sigma(model, sd.atoms, kp, wk, sd.n_electrons, K, np.random.default_rng(0))
        t1 = time.process_time()
        r = eigen_sigma(model, sd.atoms, kp, wk, sd.n_electrons, K, np.random.default_rng(0), window_eV=window)
        t2 = time.process_time()
        times["analytic"].append(t1 - t0)
        times["analytic_window"].append(t2 - t1)
        # the plain prediction as `acehamil evaluate` makes it without uncertainty: matrices + eigenvalues
        t0 = time.process_time()
        m = model.matrices(sd.atoms)
        solve(m.H, m.S, kp)
        t1 = time.process_time()
        overlap_check(r["S"], sd.atoms)  # predict's S(k) check, the same on both sides when counted
        t2 = time.process_time()
        times["plain"].append(t1 - t0)
        times["check"].append(t2 - t1)
        if not draws:
            continue
        eigen_parts(model, sd.atoms, kp, wk, sd.n_electrons, K, np.random.default_rng(0), split=False)
        t2 = time.process_time()
        orig = draws.perturbed_eigenvalues
        draws.perturbed_eigenvalues = lambda e, v, d, first_order=False: orig(e, v, d, first_order=True)
        try:
            eigen_parts(model, sd.atoms, kp, wk, sd.n_electrons, K, np.random.default_rng(0), split=False)
        finally:
            draws.perturbed_eigenvalues = orig
        t3 = time.process_time()
        times["draws"].append(t2 - t1)
        times["first_order"].append(t3 - t2)
    best = {k: min(v) for k, v in times.items() if v}
    out = {"plain_cpu_s": best["plain"], "with_uncertainty_cpu_s": best["analytic_window"],
           "ratio": best["analytic_window"] / best["plain"], "overlap_check_cpu_s": best["check"],
           "ratio_with_overlap_check": (best["analytic_window"] + best["check"]) / (best["plain"] + best["check"]),
           "all_bands_cpu_s": best["analytic"], "all_bands_ratio": best["analytic"] / best["plain"],
           "n_samples": K, "kmesh": list(kmesh), "natoms": len(sd.atoms), "window_eV": window,
           "load_average": list(os.getloadavg())}
    if draws:
        out.update(draws_cpu_s=best["draws"], draws_ratio=best["draws"] / best["plain"],
                   draws_first_order_cpu_s=best["first_order"],
                   draws_first_order_ratio=best["first_order"] / best["plain"])
    return out


def score(model, structs, draws: bool = False) -> dict:
    """Pooled and per-structure eigenvalue errors with uncertainty (each structure on its own k-grid):
    the first-order spreads ``acehamil evaluate`` reports, or (``draws``) the Rayleigh-Ritz spreads
    of the model's posterior draws (the method before; ``acehamil bands/dos --uncertainty`` of stored
    predictions)."""
    from acehamil.models.hamiltonian.calibrate import default_samples
    from acehamil.models.hamiltonian.intervals import interval_metrics
    from acehamil.models.hamiltonian.evaluate import eigenvalue_errors

    per, maes = [], []
    rng = np.random.default_rng(0)
    for sd in structs:
        pred = [model.matrices(sd.atoms, n_samples=default_samples(model), rng=rng)] if draws else None
        r = eigenvalue_errors(model, [sd], kmesh=kmesh_for(sd.atoms), window_eV=2.0, path_points=2,
                              return_values=True, predictions=pred)
        per.append(r["uncertainty"]["values"])
        maes.append((r["mae_meV"], r["n"]))
    err = np.concatenate([p["err"] for p in per])
    sig = np.concatenate([p["sigma"] for p in per])
    m = interval_metrics(err, sig)
    m.update(n_structures=len(structs), mae_meV=float(np.abs(err).mean() * 1e3), mean_sigma_meV=float(sig.mean() * 1e3))
    return m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--model", default=None, help="use this fitted model instead of fitting the config")
    p.add_argument("--ood", nargs="*", default=[str(ROOT / "data" / "si_test_ood.h5")],
                   help="out-of-distribution test files (evaluation only)")
    p.add_argument("--no-cost", action="store_true")
    p.add_argument("--cost-only", action="store_true", help="only the cost ratios (no coverage)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each cost measurement (best of)")
    p.add_argument("--draws", action="store_true", help="also score the posterior draws' spreads (the method before)")
    p.add_argument("--save", default=None, help="write the fitted model here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.io.models import load_model
    from acehamil.models.hamiltonian.fit import fit

    cfg = read_model_config(args.config)
    ds = read_dataset(cfg.data.train)
    t0, c0 = time.perf_counter(), time.process_time()
    if args.model:
        model = load_model(args.model)
    else:
        model = fit([ds[i] for i in cfg.data.training_indices(len(ds))], cfg, progress=False)
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
    if args.save:
        from acehamil.io.models import save_model

        save_model(model, args.save)
    held = [ds[i] for i in cfg.data.test_indices(len(ds))]
    sets = {"held-out": held}
    for f in args.ood:
        sets[Path(f).stem] = list(read_dataset(f))
    rows = {}
    for name, structs in ({} if args.cost_only else sets).items():
        groups = {"all": structs}
        for sd in structs:
            groups.setdefault(sd.info.get("kind", "si8-rattle0.05-0.15"), []).append(sd)
        if len(groups) == 2:  # one kind: "all" says it
            groups = {"all": structs}
        rows[name] = {}
        for kind, ss in groups.items():
            for method in (("first_order", "draws") if args.draws else ("first_order",)):
                r = score(model, ss, draws=method == "draws")
                rows[name][kind if method == "first_order" else f"{kind} (draws)"] = r
                print(f"{name:<12} {kind:<30} {method:<11} n {len(ss):3d}  MAE {r['mae_meV']:6.1f} meV  sigma "
                      f"{r['mean_sigma_meV']:6.1f} meV  cov90 {r['coverage_90']:.3f}  cov68 {r['coverage_68']:.3f}  "
                      f"spearman {r['spearman_sigma_error']:.2f}", file=sys.stderr, flush=True)
    out = {"sets": rows, "calibration": model.report.get("uncertainty"), "fit_wall_s": t_fit, "fit_cpu_s": c_fit,
           "load_average": list(os.getloadavg())}
    if not args.no_cost:
        # the first held-out structure on 6x6x6 and the largest out-of-distribution cell on its own grid
        big = max((sd for f in args.ood for sd in sets[Path(f).stem]), key=lambda sd: len(sd.atoms), default=None)
        runs = [("cost", held[0], (6, 6, 6), True)]
        if big is not None and len(big.atoms) > len(held[0].atoms):
            runs.append(("cost_large", big, kmesh_for(big.atoms), False))
        for key, sd, km, with_draws in runs:
            out[key] = c = cost_ratio(model, sd, km, repeats=args.repeats, draws=with_draws)
            print(f"cost, {c['natoms']} atoms, {'x'.join(map(str, km))} (CPU, best of {args.repeats}, load "
                  f"{c['load_average'][0]:.1f}): plain {c['plain_cpu_s']:.3f} s; with uncertainty "
                  f"{c['with_uncertainty_cpu_s']:.3f} s (ratio {c['ratio']:.2f}; with the S check on both sides "
                  f"{c['ratio_with_overlap_check']:.2f}; every band {c['all_bands_cpu_s']:.3f} s, "
                  f"ratio {c['all_bands_ratio']:.2f})" + (f"; before: draws {c['draws_cpu_s']:.3f} s (ratio "
                  f"{c['draws_ratio']:.2f}), their first-order shifts {c['draws_first_order_cpu_s']:.3f} s (ratio "
                  f"{c['draws_first_order_ratio']:.2f})" if with_draws else ""), file=sys.stderr)
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

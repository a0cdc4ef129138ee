"""Does an eigenvalue-aware Bayesian update of the H coefficients transfer?  Grouped CV (issue 12).

After the block fit (posterior ``N(theta0, Sigma0)`` per ``(block type, L)``), the window eigenvalues
of the FITTED training structures are extra linear observations (:mod:`acehamil.models.hamiltonian.eigen_update`):
``theta1 = theta0 + Sigma0 J^T (J Sigma0 J^T + R)^-1 (eps_DFT - eps(theta0))``, ``R = diag(r^2 / w_s)``
(``w_s`` the structure's kind weight).  Scored as ``transfer_cv.py`` scores settings: every training
structure of the configuration (its ``test`` indices included; never a test-only set) is in one group
(a kind, large kinds split into seeded groups of ``--max-group``); each group is held out once, its
structures predicted by the fold model (refitted from the per-structure sums without the group) with and
without the update whose observations come ONLY from the fold's fitted structures, and whose prior is the
fold's own posterior.  Scored: eigenvalue MAE within E_F +- 2 eV, own Fermi levels, ~6 k-points per
5.43 Å (``evaluate``, exact eigenvalues), per kind and the mean over kinds (slabs excluded).

Cost control: each fitted structure's sensitivities ``J`` (DFT eigenvectors, ``--states`` window states
on the ``--kmesh`` grid, seeded) and its eigenvalue error are computed ONCE, for the full fit
(``theta_ref``); a fold's errors are then linearised, ``err_fold = err_ref + J (theta_fold - theta_ref)``
(measured: 0.01-0.02 meV mean, 0.04-0.12 max, on 5-7 meV errors).  Observations are taken once at the largest
``STATES`` of a variant; smaller values use a seeded subset of each structure's rows (the same rows for the
``cutX`` variants, whose fold errors are linearised with the full J).  One update per fold and run (no relinearisation: ``iterations`` 1).  Wall, CPU and load beside every figure; ``--json``.

Usage::

    python benchmarks/transfer_eigfit.py --runs all:24:3 all:48:3 onsite:24:3 cut5:24:3
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


def parse_run(text: str) -> tuple:
    """``"all:24:3"`` -> ``("all", 24, 3.0)``; a variant may end in ``/pK`` (observe at most K structures per kind)."""
    v, st, r = text.split(":")
    base = v.split("/")[0]
    if base not in ("all", "onsite") and not base.startswith("cut"):
        raise ValueError(f"unknown variant {v!r}")
    return v, int(st), float(r)


def per_kind_of(variant: str) -> int:
    """K of a ``/pK`` suffix (0: every fitted structure observed)."""
    return int(variant.split("/p")[1]) if "/p" in variant else 0


def observations(model, data, fitted, states: int, kmesh, seed: int, say, bond_cut: float = 0.0) -> dict:
    """``{k: (err (m,), J {key: (m, n)})}`` of every fitted structure ``k`` under ``model`` (the full fit)."""
    from acehamil.models.hamiltonian.eigen_update import structure_observations

    spec = {"states": states, "kmesh": kmesh, "window_eV": 2.0, "bond_cut": bond_cut}
    out = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for n, k in enumerate(fitted):
        o = structure_observations(model, data[k], spec, np.random.default_rng([seed, 31, int(k)]))
        if o is not None:
            out[int(k)] = o
        if (n + 1) % 20 == 0:
            print(f"    observations {n + 1}/{len(fitted)}: {time.perf_counter() - t0:.0f} s wall, "
                  f"{time.process_time() - c0:.0f} s CPU", file=say, flush=True)
    return out


def subset(err, J, states: int, rng) -> tuple:
    """At most ``states`` of a structure's observation rows (a seeded choice, order kept)."""
    if len(err) <= states:
        return err, J
    keep = np.sort(rng.choice(len(err), states, replace=False))
    return err[keep], {k: v[keep] for k, v in J.items()}


def summarise(per, exclude) -> dict:
    """Per kind (mean eigenvalue MAE and H RMSE aligned) and the means over kinds and structures, kinds
    containing any string of ``exclude`` left out of the means."""
    kinds = {}
    for r in per:
        kinds.setdefault(r["kind"], []).append(r)
    pk = {k: {"n": len(v), "eig_mae_meV": float(np.mean([r["eig_mae_meV"] for r in v])),
              "H_rmse_meV_aligned": float(np.mean([r["H_rmse_meV_aligned"] for r in v]))} for k, v in sorted(kinds.items())}
    out = [k for k in pk if any(x and x in k for x in exclude)]
    return {"per_kind": pk, "mean_over_kinds_meV": float(np.mean([v["eig_mae_meV"] for k, v in pk.items() if k not in out])),
            "mean_over_structures_meV": float(np.mean([r["eig_mae_meV"] for r in per if r["kind"] not in out])),
            "excluded_kinds": out}


def main(argv=None) -> int:
    from transfer_cv import featurise, groups_of, kind_of, scaled_sums
    from transfer_levers import add_variant_args, apply, every_structure, kmesh_for

    from acehamil.models.hamiltonian.calibrate import fold_model
    from acehamil.models.hamiltonian.eigen_update import (apply_J, coefficient_factors, flat_difference,
                                                          observed_structures, stack_observations, update,
                                                          with_coefficients)
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.models.hamiltonian.fit import kind_factors

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_variant_args(p)
    p.add_argument("--runs", nargs="+", default=["all:24:3", "all:24:10"],
                   help="VARIANT:STATES:R ... updates to score: VARIANT 'all' (every coefficient, exact J), 'onsite' (the "
                        "on-site coefficients only), 'cutX' (J from the on-site blocks and bonds < X Å, as bond_cut X); "
                        "STATES window states per fitted structure; R the eigenvalue noise at weight 1, meV")
    p.add_argument("--kmesh", type=int, nargs=3, default=[4, 4, 4], help="k-grid of the observations")
    p.add_argument("--max-group", type=int, default=4)
    p.add_argument("--exclude", nargs="*", default=["slab", "interstitial"],
                   help="kinds containing any of these strings are printed but left out of the means")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="only the first N structures (a check of the script)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    base, _, data = every_structure(args.config)
    if args.limit:  # a quick check of the script itself
        data = data[: args.limit]
    cfg = apply(base, json.loads(args.variant[0]))
    groups = groups_of(data, args.max_group, args.seed)
    say = sys.stderr if args.json else sys.stdout
    factors = kind_factors(data, cfg.fit.kind_weights)
    fitted = [int(k) for k in np.nonzero(factors > 0)[0]]
    cells = [sd.atoms for sd in data]
    print(f"{len(data)} structures ({len(fitted)} fitted), {len(groups)} groups; load {os.getloadavg()[0]:.1f}", file=say, flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    model, parts, _ = featurise(data, cfg, None, fitted)
    weighted = [q if q is None or f == 1.0 else scaled_sums(q, f) for q, f in zip(parts, factors)]
    ref = fold_model(model, weighted, fitted, cells)  # the full kind-weighted fit (the example's H)
    print(f"features and full fit: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU, "
          f"load {os.getloadavg()[0]:.1f}; coefficients per (block, L): "
          + ", ".join(f"{k} {L}: {c.size}" for k, v in ref.H.coefficients.items() for L, c in v.items()), file=say, flush=True)
    runs = [parse_run(t) for t in args.runs]
    t1, c1 = time.perf_counter(), time.process_time()
    full_states = max(st for _, st, _ in runs)  # every variant's rows are subsets of the same seeded window states
    obs_full = observations(ref, data, fitted, full_states, tuple(args.kmesh), args.seed, say)
    obs_cut = {}  # J from the on-site blocks and the bonds shorter than the cut (the package's bond_cut); errors exact
    for v in sorted({v.split("/")[0] for v, _, _ in runs if v.startswith("cut")}):
        obs_cut[v] = observations(ref, data, fitted, full_states, tuple(args.kmesh), args.seed, say, bond_cut=float(v[3:]))
    obs_wall, obs_cpu = time.perf_counter() - t1, time.process_time() - c1
    print(f"observations: {obs_wall:.0f} s wall, {obs_cpu:.0f} s CPU, load {os.getloadavg()[0]:.1f}", file=say, flush=True)
    per = {run: [None] * len(data) for run in [None, *runs]}
    kinds = [sd.info.get("kind") for sd in data]
    # the package's choice of observed structures (eigen_update.observed_structures, the fit's seed) per /pK
    observed = {run: set(int(k) for k in observed_structures(kinds, factors, per_kind_of(run[0]), cfg.fit.seed))
                for run in runs}
    t2, c2 = time.perf_counter(), time.process_time()
    upd_cpu = {run: 0.0 for run in runs}
    n_obs = {}
    for gi, g in enumerate(groups):
        keep = np.setdiff1d(fitted, g)
        sub = fold_model(model, weighted, keep, cells)
        F = coefficient_factors(sub.H)
        delta = flat_difference(sub.H.coefficients, ref.H.coefficients, list(F))
        models = {None: sub}
        for run in runs:
            variant, states, r = run
            cu = time.process_time()
            src = obs_cut[variant.split("/")[0]] if variant.startswith("cut") else obs_full
            rows = []
            for k in keep:
                if k not in src or k not in observed[run]:
                    continue
                e, Jk = subset(*src[k], states, np.random.default_rng([args.seed, 37, int(k)]))
                if variant.startswith("cut"):  # the fold's errors linearised with the full J of the same rows
                    e_full, J_full = subset(*obs_full[k], states, np.random.default_rng([args.seed, 37, int(k)])) if k in obs_full else (e, Jk)
                    e = e + apply_J(J_full, delta)
                else:
                    e = e + apply_J(Jk, delta)
                if variant.split("/")[0] == "onsite":
                    Jk = {key: v for key, v in Jk.items() if key[0].startswith("onsite")}
                rows.append((k, e, Jk))
            J, err, struct = stack_observations(rows)
            n_obs[run] = len(err)
            nv = (r * 1e-3) ** 2 / factors[struct]
            models[run] = with_coefficients(sub, update(sub.H.coefficients, F, J, -err, nv))
            upd_cpu[run] += time.process_time() - cu
        for i in g:
            sd = data[int(i)]
            for run, mdl in models.items():
                e = evaluate(mdl, [sd], kmesh=kmesh_for(sd.atoms), uncertainty=False)["per_structure"][0]
                per[run][int(i)] = {"kind": kind_of(sd), "eig_mae_meV": e["eig_mae_meV"], "H_rmse_meV_aligned": e["H_rmse_meV_aligned"]}
        if (gi + 1) % 5 == 0:
            print(f"    fold {gi + 1}/{len(groups)}: {time.perf_counter() - t2:.0f} s wall, {time.process_time() - c2:.0f} s CPU "
                  f"(updates {sum(upd_cpu.values()):.0f} s CPU), load {os.getloadavg()[0]:.1f}", file=say, flush=True)
    records = []
    for run, pr in per.items():
        rec = {"run": None if run is None else ":".join(map(str, run)), "n_observations": n_obs.get(run, 0),
               **summarise(pr, args.exclude), "update_cpu_s": upd_cpu.get(run, 0.0), "per_structure": pr}
        records.append(rec)
        line = " | ".join(f"{k} {v['eig_mae_meV']:.1f} (H {v['H_rmse_meV_aligned']:.2f})" for k, v in rec["per_kind"].items())
        print(f"  {'no update' if run is None else rec['run']}: CV eig MAE over structures {rec['mean_over_structures_meV']:.2f} meV, "
              f"over kinds {rec['mean_over_kinds_meV']:.2f} | {line}", file=say, flush=True)
    print(f"CV {time.perf_counter() - t2:.0f} s wall, {time.process_time() - c2:.0f} s CPU, load {os.getloadavg()[0]:.1f}; "
          f"observations {obs_wall:.0f} s wall, {obs_cpu:.0f} s CPU", file=say, flush=True)
    if args.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

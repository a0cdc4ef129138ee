"""Does active selection pay?  Eigenvalue error on an out-of-distribution test set against the
number of DFT calculations, adding structures by selection or at random from the same pool with
the same budget.

Candidate pool: the training structures of the example (``examples/si_hamiltonian.toml``: the
shipped 8-atom cells rattled 0.05-0.15 Å, strongly rattled/strained/MD-like 8-atom and 16-atom cells,
vacancy, interstitial, 32- and 64-atom cells, two surface slabs; its ``test`` indices are left out)
plus ``--extra-pool`` (default ``data/si_train_defects.h5``: 15-atom vacancies under strain, 16-atom
strained cells, 17-atom interstitials, 31-atom vacancies; training data never fitted by the
example), already computed (DFT is too slow to run live).  A chosen structure is fitted with the
example's ``kind_weights`` (weight 0, e.g. the interstitials: a DFT calculation that the fit does not
use).  Validation set: the TOML's held-out ``test`` indices (training data never fitted by the
example); the criterion is chosen on these curves.  Test set: ``data/si_test_ood.h5`` (strain,
0.2 Å displacements, vacancy, 64 atoms), used for evaluation only: never fitted, never selected
from, never used to choose settings.

Every pool structure's normal-equation sums are computed once, unweighted
(:func:`acehamil.models.hamiltonian.sums.structure_sums`), and scaled by its kind weight; each
round's model is a solve on the sums of the chosen structures (the same model a fresh fit on them
gives, with the example's settings).  Both curves start from the same ``--start`` random
structures; each round adds ``--step``: the selected curves pick by each of ``--criteria``
(``variance``: greedy expected reduction of the epistemic variance of the pool's blocks, eV^2, V-optimal
design, :func:`acehamil.models.hamiltonian.select.variance_select`; ``leverage``: the same in units of
each block type's noise variance; ``eigen``: the same for the mean epistemic variance of the pool's
window eigenvalues, their sensitivities linearised once per starting set at the start model,
:mod:`acehamil.models.hamiltonian.select_targets`; ``information``: expected information gain on the
coefficients; ``information-per-atom``: the same gain per atom of the candidate, a DFT calculation's cost
taken as its atoms; ``band``, ``extrapolation``: the scores of ``acehamil select``), the random curve draws
uniformly.  Repeated over ``--seeds`` starting sets;
the curves are the means.

Usage::

    python benchmarks/active.py [--json] [--start 5 --step 5 --budget 25 --seeds 3] [--criteria variance information]

Prints ``{"n_dft": [...], "mae_meV_selected": [...], "mae_meV_random": [...], ...}`` with ``--json``
(``mae_meV_selected``: the criterion of ``--criteria`` with the lowest validation error, mean over
starting sets and over every budget after the start (``criterion``; the first of ``--criteria`` with
``--no-validation``); every criterion's test and validation curves under ``curves``).  ``--n-dft 5 8 10
12 15 20 25`` scores those numbers of structures instead of the regular ``--start/--step/--budget``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def kmesh_for(atoms) -> tuple:
    """About 4 k-points per 5.43 Å of each cell vector."""
    return tuple(int(max(1, round(4 * 5.43 / x))) for x in np.linalg.norm(np.asarray(atoms.cell.array), axis=1))


def pool_sums(template, pool, cap: int, seed: int) -> tuple:
    """Per-structure unweighted H (with energy-zero terms) and S sums of every pool structure."""
    from acehamil.models.hamiltonian.sums import Sampling, centre_counts, structure_sums

    out = {}
    for name, mm, pick, gauge in (("H", template.H, lambda sd: sd.H[0], template.config.fit.fit_energy_zero),
                                  ("S", template.S, lambda sd: sd.S, False)):
        sampling = Sampling.plan([centre_counts(mm, sd.atoms) for sd in pool], cap, np.random.default_rng(seed))
        out[name] = [structure_sums(mm, sd, pick, sampling.rates, 1.0, sampling.rng(k), index=k, gauge=gauge)
                     for k, sd in enumerate(pool)]
    return out["H"], out["S"]


def scaled(part, w: float):
    """The sums of one structure fitted at weight ``w`` (rows weighted by ``w``)."""
    from acehamil.models.hamiltonian.sums import FitSums

    normal = {}
    for key, ne in part.normal.items():
        c = ne.copy()
        c.AtA, c.Aty, c.yty, c.weight_sum = w * ne.AtA, w * ne.Aty, w * ne.yty, w * ne.weight_sum
        normal[key] = c
    gauge = {key: {s: tuple(w * np.asarray(x) if i == 0 else w * x for i, x in enumerate(v)) for s, v in g.items()}
             for key, g in part.gauge.items()}
    return FitSums(normal, dict(part.counts), gauge)


def model_of(template, hs, ss, chosen, pool, weights):
    """The model fitted on ``chosen`` (pool indices) at ``weights``, from the cached sums; structures of
    weight 0 are left out, as ``fit`` does."""
    from acehamil.models.hamiltonian.fit import solve_all, solve_sums
    from acehamil.models.hamiltonian.sums import FitSums

    cfg = template.config
    used = [i for i in chosen if weights[i] > 0]
    cells = [pool[i].atoms for i in used]
    if not used:
        raise ValueError("every chosen structure has weight 0: nothing to fit")
    hw = [scaled(h, weights[i]) if i in used else h for i, h in enumerate(hs)]  # energy-zero terms keyed by pool index
    sw = [scaled(s, weights[i]) if i in used else s for i, s in enumerate(ss)]
    hc, hp, _, _, ez, _ = solve_sums(template.H, FitSums.subset(hw, used), cfg, cells, template.orbital_basis.species)
    sc, sp, _ = solve_all(template.S, FitSums.subset(sw, used).normal, cfg.solver, condition=False)
    return dataclasses.replace(template, H=dataclasses.replace(template.H, coefficients=hc, posteriors=hp),
                               S=dataclasses.replace(template.S, coefficients=sc, posteriors=sp), energy_zero=ez)


def mean_mae(model, structs) -> float:
    """Mean over structures of the eigenvalue MAE (meV, E_F +- 2 eV, relative to own E_F)."""
    from acehamil.models.hamiltonian.evaluate import eigenvalue_errors

    return float(np.mean([eigenvalue_errors(model, [sd], kmesh=kmesh_for(sd.atoms), uncertainty=False,
                                            path_points=2)["mae_meV"] for sd in structs]))


def pick(criterion, model, hs, pool, rest, step, rng, weights, target):
    """``step`` pool indices out of ``rest`` by ``criterion``; ``target`` is the pool's per-atom design Gram
    (``variance``; whitened by the current model's noise for ``leverage``) or, for ``eigen``, the pool's mean
    window-eigenvalue sensitivity Gram (:func:`eigen_target`)."""
    from acehamil.models.hamiltonian.select import information_select, select, variance_select
    from acehamil.models.hamiltonian.select_targets import whitened

    if criterion == "random":
        return [int(i) for i in rng.choice(rest, size=step, replace=False)]
    grams = [{key: ne.AtA for key, ne in hs[i].normal.items()} for i in rest]
    w = [weights[i] for i in rest]
    if criterion in ("information", "information-per-atom"):
        costs = [len(pool[i].atoms) for i in rest] if criterion == "information-per-atom" else None
        picked, _ = information_select(model.H, [{k: weights[i] * g for k, g in G.items()} for i, G in zip(rest, grams)],
                                       step, costs=costs)
    elif criterion in ("variance", "eigen"):
        picked, _ = variance_select(model.H, grams, step, target, weights=w)
    elif criterion == "leverage":
        picked, _ = variance_select(model.H, grams, step, whitened(model.H, target), weights=w)
    else:
        picked, _ = select(model, [(pool[i].atoms, pool[i].n_electrons) for i in rest], step, criterion, n_samples=8)
    return [rest[j] for j in picked]


def eigen_target(model, pool, seed: int) -> dict:
    """The ``eigen`` criterion's target: the mean over the whole pool of the sensitivity Gram of each structure's
    window eigenvalues (E_F +- 2 eV, 2x2x2 grid, at most 64 states), linearised at ``model`` (its predicted
    eigenvectors; no DFT of the pool is used)."""
    from acehamil.models.hamiltonian.select_targets import eigen_gram, mean_target

    rng = np.random.default_rng(seed)
    return mean_target([eigen_gram(model, sd.atoms, sd.n_electrons, rng=rng) for sd in pool])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--test", default=str(ROOT / "data" / "si_test_ood.h5"))
    p.add_argument("--start", type=int, default=5)
    p.add_argument("--step", type=int, default=5)
    p.add_argument("--budget", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="starting sets first-seed .. first-seed + seeds - 1")
    p.add_argument("--n-dft", type=int, nargs="+", default=None,
                   help="the numbers of DFT structures to score (increasing, the first is the start; default "
                        "--start, --start + --step, ... --budget)")
    p.add_argument("--criteria", nargs="+",
                   choices=["variance", "information", "information-per-atom", "leverage", "eigen", "band",
                            "extrapolation"],
                   default=["variance", "information"])
    p.add_argument("--extra-pool", nargs="*", default=[str(ROOT / "data" / "si_train_defects.h5")],
                   help="more candidate files (training data the example does not fit)")
    p.add_argument("--no-validation", action="store_true", help="skip the validation curves")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.fit import kind_factors
    from acehamil.models.hamiltonian.model import HamiltonianModel
    from acehamil.models.hamiltonian.select import pool_target

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = read_model_config(args.config)
    cfg = dataclasses.replace(cfg, uncertainty=dataclasses.replace(cfg.uncertainty, calibrate=False))
    ds = read_dataset(cfg.data.train)
    pool = [ds[i] for i in cfg.data.training_indices(len(ds))]
    for f in args.extra_pool:
        pool += list(read_dataset(f))
    validation = [] if args.no_validation else [ds[i] for i in cfg.data.test_indices(len(ds))]
    weights = kind_factors(pool, cfg.fit.kind_weights)
    test = list(read_dataset(args.test))
    template = HamiltonianModel.build(cfg, pool[0].basis)
    hs, ss = pool_sums(template, pool, cfg.fit.max_blocks_per_type, cfg.fit.seed)
    target = pool_target([{key: ne.AtA for key, ne in h.normal.items()} for h in hs], [len(sd.atoms) for sd in pool])
    print(f"pool sums: {len(pool)} structures, {time.process_time() - c0:.0f} s CPU", file=sys.stderr, flush=True)
    n_dft = list(range(args.start, args.budget + 1, args.step)) if args.n_dft is None else list(args.n_dft)
    if any(b <= a for a, b in zip(n_dft, n_dft[1:])) or n_dft[0] < 1 or n_dft[-1] > len(pool):
        p.error(f"--n-dft must increase from >= 1 to at most the pool's {len(pool)}, got {n_dft}")
    args.start = n_dft[0]
    names = list(args.criteria) + ["random"]
    curves = {name: np.zeros((args.seeds, len(n_dft))) for name in names}
    val = {name: np.zeros((args.seeds, len(n_dft))) for name in names}
    kinds = {name: [] for name in names}
    for row, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        rng = np.random.default_rng(seed)
        start = [int(i) for i in rng.choice(len(pool), size=args.start, replace=False)]
        for name in names:
            chosen = list(start)
            prng = np.random.default_rng(1000 + seed)  # the random curve's own draws
            goal = target
            for r, n in enumerate(n_dft):
                if r == 0 and name != names[0]:  # same start, same model: copy the first curve's figures
                    curves[name][row, 0], val[name][row, 0] = curves[names[0]][row, 0], val[names[0]][row, 0]
                else:
                    model = model_of(template, hs, ss, chosen, pool, weights)
                    curves[name][row, r] = mean_mae(model, test)
                    val[name][row, r] = mean_mae(model, validation) if validation else np.nan
                print(f"seed {seed} {name:<12} n_dft {n:3d}: test MAE {curves[name][row, r]:7.2f} meV, validation "
                      f"{val[name][row, r]:7.2f} meV ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
                if r + 1 < len(n_dft):
                    if r == 0 and name != names[0]:
                        model = model_of(template, hs, ss, chosen, pool, weights)
                    if r == 0 and name == "eigen":  # linearised once per starting set, at the start model
                        c1 = time.process_time()
                        goal = eigen_target(model, pool, seed)
                        print(f"seed {seed} eigen target: {time.process_time() - c1:.0f} s CPU", file=sys.stderr,
                              flush=True)
                    rest = [i for i in range(len(pool)) if i not in chosen]
                    chosen += pick(name, model, hs, pool, rest, n_dft[r + 1] - n, prng, weights, goal)
            kinds[name].append([pool[i].info.get("kind", "si8-rattle0.05-0.15") for i in chosen])
    # the reported criterion: the lowest validation error (mean over starting sets, averaged over every budget
    # after the start); the test curves choose nothing
    first = names[0]
    if validation:
        first = min(args.criteria, key=lambda name: float(val[name][:, 1:].mean()) if len(n_dft) > 1 else 0.0)
    out = {
        "n_dft": n_dft,
        "mae_meV_selected": curves[first].mean(axis=0).tolist(),
        "mae_meV_random": curves["random"].mean(axis=0).tolist(),
        "criterion": first,
        "chosen_by": "validation" if validation else "the first of --criteria",
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "curves": {name: {"test_mean": curves[name].mean(axis=0).tolist(), "test_per_seed": curves[name].tolist(),
                          "validation_mean": val[name].mean(axis=0).tolist(), "validation_per_seed": val[name].tolist(),
                          "kinds": kinds[name]} for name in names},
        "pool_size": len(pool),
        "pool_weight_zero": int(np.sum(weights == 0)),
        "validation_structures": len(validation),
        "test_structures": len(test),
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "load_average": list(os.getloadavg()),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for j, k in enumerate(n_dft):
            row = "   ".join(f"{name} {curves[name][:, j].mean():7.2f} ({val[name][:, j].mean():6.2f})" for name in names)
            print(f"{k:4d} DFT structures, test (validation) meV: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

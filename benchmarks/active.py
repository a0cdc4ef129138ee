"""Does active selection pay?  Eigenvalue error on an out-of-distribution test set against the
number of DFT calculations, adding structures by selection or at random from the same pool with
the same budget.

Candidate pool: the training structures of the example (``examples/si_hamiltonian.toml``: the
shipped 8-atom cells rattled 0.05-0.15 Å, strongly rattled/strained 8-atom and 16-atom cells,
vacancy cells; its ``test`` indices are left out), already computed (DFT is too slow to run
live).  Test set: ``data/si_test_ood.h5`` (strain, 0.2 Å displacements, vacancy, 64 atoms),
used for evaluation only: never fitted, never selected from, never used to choose settings.

Every pool structure's normal-equation sums are computed once
(:func:`acehamil.models.hamiltonian.sums.structure_sums`); each round's model is a solve on the
sums of the chosen structures (the same model a fresh fit on them gives, with the example's full
settings).  Both curves start from the same ``--start`` random structures; each round adds
``--step``: the selected curve picks by ``--criterion`` (default ``information``: greedy
expected information gain on the posterior of the H coefficients, the design Gram matrix of a
candidate needs its features only, see :mod:`acehamil.models.hamiltonian.select`), the random
curve draws uniformly.  Repeated over ``--seeds`` starting sets; the curves are the means.

Usage::

    python benchmarks/active.py [--json] [--start 5 --step 5 --budget 30 --seeds 3]

Prints ``{"n_dft": [...], "mae_meV_selected": [...], "mae_meV_random": [...], ...}`` with ``--json``.
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
    """Per-structure H (with energy-zero terms) and S sums of every pool structure."""
    from acehamil.models.hamiltonian.sums import Sampling, centre_counts, structure_sums

    out = {}
    for name, mm, pick, gauge in (("H", template.H, lambda sd: sd.H[0], template.config.fit.fit_energy_zero),
                                  ("S", template.S, lambda sd: sd.S, False)):
        sampling = Sampling.plan([centre_counts(mm, sd.atoms) for sd in pool], cap, np.random.default_rng(seed))
        out[name] = [structure_sums(mm, sd, pick, sampling.rates, 1.0, sampling.rng(k), index=k, gauge=gauge)
                     for k, sd in enumerate(pool)]
    return out["H"], out["S"]


def model_of(template, hs, ss, chosen, pool):
    """The model fitted on ``chosen`` (pool indices), from the cached sums."""
    from acehamil.models.hamiltonian.fit import solve_all, solve_sums
    from acehamil.models.hamiltonian.sums import FitSums

    cfg = template.config
    cells = [pool[i].atoms for i in chosen]
    hc, hp, _, _, ez, _ = solve_sums(template.H, FitSums.subset(hs, chosen), cfg, cells, template.orbital_basis.species)
    sc, sp, _ = solve_all(template.S, FitSums.subset(ss, chosen).normal, cfg.solver, condition=False)
    return dataclasses.replace(template, H=dataclasses.replace(template.H, coefficients=hc, posteriors=hp),
                               S=dataclasses.replace(template.S, coefficients=sc, posteriors=sp), energy_zero=ez)


def test_mae(model, test) -> float:
    """Mean over test structures of the eigenvalue MAE (meV, E_F +- 2 eV, relative to own E_F)."""
    from acehamil.models.hamiltonian.evaluate import eigenvalue_errors

    return float(np.mean([eigenvalue_errors(model, [sd], kmesh=kmesh_for(sd.atoms), uncertainty=False,
                                            path_points=2)["mae_meV"] for sd in test]))


def pick(criterion, model, hs, pool, rest, step, rng):
    from acehamil.models.hamiltonian.select import information_select, select

    if criterion == "random":
        return [int(i) for i in rng.choice(rest, size=step, replace=False)]
    if criterion == "information":
        grams = [{key: ne.AtA for key, ne in hs[i].normal.items()} for i in rest]
        picked, _ = information_select(model.H, grams, step)
    else:
        picked, _ = select(model, [(pool[i].atoms, pool[i].n_electrons) for i in rest], step, criterion, n_samples=8)
    return [rest[j] for j in picked]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--test", default=str(ROOT / "data" / "si_test_ood.h5"))
    p.add_argument("--start", type=int, default=5)
    p.add_argument("--step", type=int, default=5)
    p.add_argument("--budget", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--criterion", choices=["information", "band", "extrapolation"], default="information")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.model import HamiltonianModel

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = read_model_config(args.config)
    cfg = dataclasses.replace(cfg, uncertainty=dataclasses.replace(cfg.uncertainty, calibrate=False))
    ds = read_dataset(cfg.data.train)
    pool_idx = cfg.data.training_indices(len(ds))
    pool = [ds[i] for i in pool_idx]
    test = list(read_dataset(args.test))
    template = HamiltonianModel.build(cfg, pool[0].basis)
    hs, ss = pool_sums(template, pool, cfg.fit.max_blocks_per_type, cfg.fit.seed)
    print(f"pool sums: {len(pool)} structures, {time.process_time() - c0:.0f} s CPU", file=sys.stderr, flush=True)
    n_dft = list(range(args.start, args.budget + 1, args.step))
    curves = {"selected": np.zeros((args.seeds, len(n_dft))), "random": np.zeros((args.seeds, len(n_dft)))}
    kinds = {"selected": [], "random": []}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        start = [int(i) for i in rng.choice(len(pool), size=args.start, replace=False)]
        for name in ("selected", "random"):
            chosen = list(start)
            crit = args.criterion if name == "selected" else "random"
            for r, n in enumerate(n_dft):
                model = model_of(template, hs, ss, chosen, pool)
                curves[name][seed, r] = test_mae(model, test)
                print(f"seed {seed} {name:<8} n_dft {n:3d}: test MAE {curves[name][seed, r]:7.2f} meV "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
                if r + 1 < len(n_dft):
                    rest = [i for i in range(len(pool)) if i not in chosen]
                    chosen += pick(crit, model, hs, pool, rest, args.step, rng)
            kinds[name].append([pool[i].info.get("kind", "si8-rattle0.05-0.15") for i in chosen])
    out = {
        "n_dft": n_dft,
        "mae_meV_selected": curves["selected"].mean(axis=0).tolist(),
        "mae_meV_random": curves["random"].mean(axis=0).tolist(),
        "per_seed_selected": curves["selected"].tolist(),
        "per_seed_random": curves["random"].tolist(),
        "kinds_selected": kinds["selected"],
        "kinds_random": kinds["random"],
        "criterion": args.criterion,
        "pool_size": len(pool),
        "test_structures": len(test),
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "load_average": list(os.getloadavg()),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, a, b in zip(n_dft, out["mae_meV_selected"], out["mae_meV_random"]):
            print(f"{k:4d} DFT structures: selected {a:8.2f} meV   random {b:8.2f} meV")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does active selection pay?  Eigenvalue error on an out-of-distribution test set against the
number of DFT calculations, adding structures by selection (``acehamil select``'s rule) or at
random from the same candidate pool with the same budget.

Candidate pool: already computed structures (DFT is too slow to run live): the shipped
``data/si8_szv.h5`` plus the ``train_*.h5`` files of ``--pool-dir`` (default ``/work/gen``, or
``$ACEHAMIL_ACTIVE_POOL``).  Test set: the ``test_*.h5`` files there, used for evaluation only
(never fitted, never selected from, never used to choose settings).

Both curves start from the same ``--start`` random structures; each round adds ``--step``
structures: the selected curve fits, scores every remaining candidate with the model's band
uncertainty (mean coefficient spread of the eigenvalues within E_F +- 2 eV) and picks diverse
uncertain ones; the random curve draws uniformly.  The model is the example configuration with
lower degrees (``--degree-step``) to keep the many refits affordable.

Usage::

    python benchmarks/active.py [--json] [--start 5 --step 3 --budget 20] [--pool-dir DIR]

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


def load_pool(pool_dir: Path):
    """``(structures, labels)`` of the candidate pool and ``(structures, labels)`` of the test set."""
    from acehamil.io.dataset import read_dataset

    def read_all(path):
        try:
            ds = read_dataset(path)
            return [ds[i] for i in range(len(ds))], [f"{path.name}:{n}" for n in ds.names]
        except Exception as err:  # noqa: BLE001 - a file still being generated is skipped, and said so
            print(f"skipping {path}: {type(err).__name__}: {err}", file=sys.stderr)
            return [], []

    pool, plab = read_all(ROOT / "data" / "si8_szv.h5")
    test, tlab = [], []
    for f in sorted(pool_dir.glob("train_*.h5")):
        s, lab = read_all(f)
        pool += s
        plab += lab
    for f in sorted(pool_dir.glob("test_*.h5")):
        s, lab = read_all(f)
        test += s
        tlab += lab
    return (pool, plab), (test, tlab)


def config(degree_step: int):
    import importlib.util

    from acehamil.io.config import read_model_config

    spec = importlib.util.spec_from_file_location("hdeg", ROOT / "benchmarks" / "hamiltonian_degree.py")
    hdeg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hdeg)
    cfg = hdeg.scaled(read_model_config(ROOT / "examples" / "si_hamiltonian.toml"), degree_step)
    return dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, method="blr"),
                               uncertainty=dataclasses.replace(cfg.uncertainty, calibrate=False))


def test_mae(model, test, kmesh) -> float:
    from acehamil.models.hamiltonian.evaluate import eigenvalue_errors

    return eigenvalue_errors(model, test, kmesh=kmesh, uncertainty=False, path_points=2)["mae_meV"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool-dir", default=os.environ.get("ACEHAMIL_ACTIVE_POOL", "/work/gen"))
    p.add_argument("--start", type=int, default=5)
    p.add_argument("--step", type=int, default=3)
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--degree-step", type=int, default=-3)
    p.add_argument("--kmesh", type=int, nargs=3, default=(4, 4, 4), help="k-grid of the test eigenvalue errors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.models.hamiltonian.fit import fit
    from acehamil.models.hamiltonian.select import select

    (pool, plab), (test, tlab) = load_pool(Path(args.pool_dir))
    if not test:
        print(f"no test_*.h5 in {args.pool_dir}: nothing to evaluate on", file=sys.stderr)
        return 2
    cfg = config(args.degree_step)
    rng = np.random.default_rng(args.seed)
    start = [int(i) for i in rng.choice(len(pool), size=args.start, replace=False)]
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    curves = {"selected": [], "random": []}
    chosen = {"selected": list(start), "random": list(start)}
    n_dft = []
    while True:
        n = len(chosen["selected"])
        n_dft.append(n)
        for name in ("selected", "random"):
            model = fit([pool[i] for i in chosen[name]], cfg, progress=False)
            curves[name].append(test_mae(model, test, tuple(args.kmesh)))
            if n + args.step > args.budget:
                continue
            rest = [i for i in range(len(pool)) if i not in chosen[name]]
            if name == "selected":
                picked, _ = select(model, [(pool[i].atoms, pool[i].n_electrons) for i in rest], args.step, "band",
                                   n_samples=8, seed=args.seed + n)
                chosen[name] += [rest[j] for j in picked]
            else:
                chosen[name] += [int(i) for i in rng.choice(rest, size=args.step, replace=False)]
        print(f"n_dft {n}: test eigenvalue MAE selected {curves['selected'][-1]:.2f} meV, random "
              f"{curves['random'][-1]:.2f} meV ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if n + args.step > args.budget:
            break
    out = {
        "n_dft": n_dft,
        "mae_meV_selected": curves["selected"],
        "mae_meV_random": curves["random"],
        "selected": [plab[i] for i in chosen["selected"]],
        "random": [plab[i] for i in chosen["random"]],
        "pool_size": len(pool),
        "test_structures": tlab,
        "kmesh": list(args.kmesh),
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - cpu0,
        "load_average": list(os.getloadavg()),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, a, b in zip(n_dft, curves["selected"], curves["random"]):
            print(f"{k:4d} DFT structures: selected {a:8.2f} meV   random {b:8.2f} meV")
    return 0


if __name__ == "__main__":
    sys.exit(main())

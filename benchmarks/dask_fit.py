"""Dask fitting: the example H/S fit serially and on a LocalCluster of 1 and 2 workers, interleaved.

Usage::

    python benchmarks/dask_fit.py --json                      # 24 training structures, 2 rounds
    python benchmarks/dask_fit.py --n-structures 57 --rounds 1

Each round runs serial, 1 worker, 2 workers (interleaved, so that all see the same load of the
shared machine).  The fit is the example configuration (examples/si_hamiltonian.toml) on its
first ``n`` training structures, without the uncertainty calibration (which refits serially);
the per-batch normal-equation sums run on the workers (``fit(..., mapper=dask_mapper(client))``),
the counting pass and the solves on the client.  Reported per run: wall seconds, CPU seconds
(client + workers, user + system), the 1-minute load before and after, and the largest
difference of the predicted H of a rattled 8-atom cell from the serial fit (eV).  Workers are
processes with one thread each (``OMP_NUM_THREADS=1``); the cluster start is not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _worker_cpu(client):
    return sum(client.run(_cpu_self).values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--n-structures", type=int, default=24)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    import numpy as np
    from ase.build import bulk
    from distributed import Client, LocalCluster

    from acehamil.distributed import dask_mapper
    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.fit import fit

    cfg = read_model_config(args.config)
    cfg = dataclasses.replace(cfg, uncertainty=dataclasses.replace(cfg.uncertainty, calibrate=False))
    ds = read_dataset(cfg.data.train)
    idx = cfg.data.training_indices(len(ds))[: args.n_structures]
    train = [ds[i] for i in idx]
    probe = bulk("Si", "diamond", a=5.43, cubic=True)
    probe.rattle(0.05, rng=np.random.default_rng(0))

    runs, ref = [], None
    clusters = {}
    try:
        for w in args.workers:
            cl = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None)
            c = Client(cl)
            c.run(lambda: __import__("acehamil.models.hamiltonian.fit"))  # imports outside the timing
            clusters[w] = (cl, c)
        for rnd in range(args.rounds):
            for w in [0] + list(args.workers):
                client = None if w == 0 else clusters[w][1]
                load0 = os.getloadavg()[0]
                wc0 = 0.0 if client is None else _worker_cpu(client)
                t0, c0 = time.perf_counter(), _cpu_self()
                model = fit(train, cfg, progress=False, mapper=None if client is None else dask_mapper(client))
                wall = time.perf_counter() - t0
                cpu = _cpu_self() - c0 + (0.0 if client is None else _worker_cpu(client) - wc0)
                H, _ = model.predict(probe)
                if ref is None:
                    ref = H.data
                runs.append({"round": rnd, "workers": w, "wall_s": wall, "cpu_s": cpu,
                             "load_1min": [load0, os.getloadavg()[0]],
                             "max_abs_diff_H_eV": float(np.abs(H.data - ref).max())})
                if not args.json:
                    print(json.dumps(runs[-1]), flush=True)
    finally:
        for cl, c in clusters.values():
            c.close()
            cl.close()
    summary = {}
    for w in [0] + list(args.workers):
        rs = [r for r in runs if r["workers"] == w]
        summary[str(w)] = {"wall_s_mean": float(np.mean([r["wall_s"] for r in rs])),
                           "cpu_s_mean": float(np.mean([r["cpu_s"] for r in rs]))}
    out = {"n_structures": len(train), "batch_structures": cfg.fit.batch_structures, "cpu_count": os.cpu_count(),
           "runs": runs, "summary": summary}
    print(json.dumps(out) if args.json else json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

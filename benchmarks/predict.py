"""Time and peak memory to predict H and S of a 1000-atom periodic Si supercell, and the fit time.

Usage::

    python benchmarks/predict.py                     # fit the shipped dataset, then predict
    python benchmarks/predict.py --model model.h5    # predict with an existing model (no fit)
    python benchmarks/predict.py --no-calibration    # the fit without its error-bar calibration (the kernels' part of it)
    python benchmarks/predict.py --json              # {"natoms", "seconds_predict", "peak_memory_GB", "seconds_fit", ...}

The prediction runs in a fresh child process so that its peak resident memory
(``ru_maxrss`` of the child) is measured alone.  The structure is a rattled
(0.05 Å) 5x5x5 supercell of the 8-atom cubic diamond cell (a = 5.43 Å).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _predict_child(model_path: str, reps: int, queue, check_overlap: bool = True) -> None:
    import numpy as np
    from ase.build import bulk

    from acehamil.io.models import load_model
    from acehamil.tb.overlap import overlap_min_eigenvalue

    model = load_model(model_path)
    model.predict(bulk("Si", "diamond", a=5.43, cubic=True), check_overlap=False)  # build the bases (cached) outside the timing
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (reps, reps, reps)
    atoms.rattle(0.05, rng=np.random.default_rng(0))
    import os

    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    H, S = model.predict(atoms, check_overlap=False)  # times the prediction only, as before predict checked S
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    load1 = os.getloadavg()[0]
    t1 = time.perf_counter()
    smin = overlap_min_eigenvalue(S, atoms, kpts=[[0.0, 0.0, 0.0]]) if check_overlap else None
    queue.put({
        "natoms": len(atoms), "norb": int(H.norb), "nblocks_H": int(H.nblocks), "nblocks_S": int(S.nblocks),
        "seconds_predict": seconds, "cpu_seconds_predict": cpu, "load_1min": [load0, load1],
        "overlap_min_eigenvalue_gamma": smin, "seconds_overlap_check": time.perf_counter() - t1 if check_overlap else None,
        "peak_memory_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "peak_memory_before_predict_GB": base_rss,
    })


def fit_shipped(config: Path, out: Path, calibrate: bool = True) -> tuple:
    """Fit the example configuration (without its error-bar calibration unless ``calibrate``);
    returns ``(wall seconds, CPU seconds)`` of reading + fitting (no evaluation), BLAS on one thread."""
    import dataclasses

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.io.models import save_model
    from acehamil.models.hamiltonian.fit import fit
    from acehamil.threads import limit_threads

    cfg = read_model_config(config)
    if not calibrate:
        cfg = dataclasses.replace(cfg, uncertainty=dataclasses.replace(cfg.uncertainty, calibrate=False))
    t0, c0 = time.perf_counter(), time.process_time()
    with limit_threads(1):
        ds = read_dataset(cfg.data.train)
        model = fit([ds[i] for i in cfg.data.training_indices(len(ds))], cfg, progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    save_model(model, out)
    return seconds, cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="existing model file (skips the fit)")
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"), help="fit configuration")
    p.add_argument("--reps", type=int, default=5, help="supercell repetitions of the 8-atom cell (5 -> 1000 atoms)")
    p.add_argument("--no-overlap-check", action="store_true", help="skip the smallest-eigenvalue check of S(Gamma)")
    p.add_argument("--no-calibration", action="store_true", help="fit without the configuration's error-bar calibration")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import os

    result = {"seconds_fit": None}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "model.h5")
            load0 = os.getloadavg()[0]
            result["seconds_fit"], result["cpu_seconds_fit"] = fit_shipped(Path(args.config), Path(model), not args.no_calibration)
            result["config"] = str(args.config)
            result["fit_calibration"] = not args.no_calibration
            result["load_fit"] = [load0, os.getloadavg()[0]]
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=_predict_child, args=(model, args.reps, q, not args.no_overlap_check))
        proc.start()
        res = q.get()
        proc.join()
    result.update(res)
    if args.json:
        print(json.dumps(result))
    else:
        fit_s = "n/a" if result["seconds_fit"] is None else (
            f"{result['seconds_fit']:.1f} s wall, {result['cpu_seconds_fit']:.1f} s CPU (load {result['load_fit'][0]:.1f}-"
            f"{result['load_fit'][1]:.1f}){'' if result['fit_calibration'] else ', without calibration'}")
        print(f"fit (shipped dataset): {fit_s}")
        print(f"predict H and S, {result['natoms']} atoms ({result['norb']} orbitals, {result['nblocks_H']} H blocks): "
              f"{result['seconds_predict']:.1f} s wall, {result['cpu_seconds_predict']:.1f} s CPU (load "
              f"{result['load_1min'][0]:.1f}-{result['load_1min'][1]:.1f}), peak memory {result['peak_memory_GB']:.2f} GB "
              f"({result['peak_memory_before_predict_GB']:.2f} GB before predicting)")
        if result["overlap_min_eigenvalue_gamma"] is not None:
            print(f"smallest eigenvalue of S(Gamma): {result['overlap_min_eigenvalue_gamma']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and time of the uncertainty commands per cell size (issue 13: memory of evaluate/predict
with spreads on large cells).

Builds bulk Si cells of 8, 16, 64 and 216 atoms (the 8-atom cubic cell repeated 1x1x1, 1x1x2, 2x2x2,
3x3x3, rattled by 0.05 Å, seeded) with a reference H and S (the model's own prediction plus symmetric
noise of 20 meV per entry, so the errors are not zero; the figures here are about memory and time,
not calibration: ``benchmarks/uncertainty.py`` measures that on DFT data), then runs each command as
a user would, in a fresh process, and reports its wall time, CPU time (user + system) and peak
resident memory (``os.wait4``), with the load average beside them:

* ``acehamil evaluate MODEL cells.h5 --index i --json`` with ``--kmesh 6 6 6`` (a fixed grid: the
  scorer's command) and with the per-structure grid (a fixed k-point density);
* ``acehamil predict MODEL cells.h5 --index i -o p.h5`` (records the posterior draws);
* ``acehamil bands p.h5 --uncertainty --json b.json`` and ``acehamil dos p.h5 --uncertainty --json d.json``.

Usage::

    python benchmarks/uncertainty_memory.py MODEL [--sizes 8 16 64 216] [--commands evaluate predict bands dos]
        [--timeout 1200] [--json]

One thread (``OMP_NUM_THREADS=1``), run with nothing else heavy on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPEATS = {8: (1, 1, 1), 16: (1, 1, 2), 64: (2, 2, 2), 216: (3, 3, 3)}


def build_cells(model, sizes, path, seed: int = 0) -> None:
    """Write the rattled cells with a synthetic reference (model prediction + symmetric noise) to ``path``."""
    from ase.build import bulk

    from acehamil.io.dataset import write_dataset
    from acehamil.structure import StructureData

    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        if n not in REPEATS:
            raise SystemExit(f"--sizes: {n} is not one of {sorted(REPEATS)}")
        at = bulk("Si", "diamond", a=5.43, cubic=True).repeat(REPEATS[n])
        at.rattle(0.05, rng=rng)
        H, S = model.predict(at, check_overlap=False)
        from acehamil.structure.pair_index import reverse_index

        nb = H.nblocks
        rev = reverse_index(H.i, H.j, H.shift)
        blk = rng.normal(scale=0.02, size=(nb, 4, 4))  # one species with s + p: 4 x 4 blocks
        own = rev == np.arange(nb)
        blk[own] = 0.5 * (blk[own] + blk[own].transpose(0, 2, 1))
        lead = np.arange(nb) < rev
        blk[rev[lead]] = blk[lead].transpose(0, 2, 1)  # symmetric noise: H_ji(-T) = H_ij(T)^T kept
        d = H.data + blk.reshape(-1)
        out.append(StructureData(at, model.orbital_basis, H=(H.with_data(d),), S=S, n_electrons=4.0 * len(at),
                                 info={"name": f"si{n}", "kind": f"si{n}-rattle0.05-synthetic"}))
    write_dataset(path, out)


def run_wait4(cmd, timeout: float) -> dict:
    """Run ``cmd`` (one BLAS thread): wall and CPU (user + system) seconds, peak RSS (GB) of that process
    only (``os.wait4``), exit code, load average before and after, the end of stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        deadline = t0 + timeout
        status, ru = None, None
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fe.seek(0)
        err = fe.read().decode(errors="replace")
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "peak_rss_GB": round(ru.ru_maxrss / 2**20, 3),
            "rc": proc.returncode, "timed_out": wall > timeout, "load_start": round(load0, 2),
            "load_end": round(os.getloadavg()[0], 2), "stderr_tail": err[-300:].strip()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="fitted model with a posterior (e.g. si_out/model.h5 of the README job)")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 64, 216])
    p.add_argument("--commands", nargs="+", default=["evaluate", "evaluate-density", "predict", "bands", "dos"],
                   choices=["evaluate", "evaluate-density", "predict", "bands", "dos"])
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per command")
    p.add_argument("--workdir", default=None, help="where the cells and outputs go (default: a temporary folder)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.models import load_model

    exe = str(Path(sys.executable).parent / "acehamil")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="uq_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    cells = work / "cells.h5"
    if not cells.exists():
        build_cells(load_model(args.model), args.sizes, cells)
    rows = []
    for i, n in enumerate(args.sizes):
        pred = work / f"pred{n}.h5"
        for c in args.commands:
            if c == "evaluate":
                cmd = [exe, "evaluate", args.model, str(cells), "--index", str(i), "--kmesh", "6", "6", "6", "--json"]
            elif c == "evaluate-density":
                cmd = [exe, "evaluate", args.model, str(cells), "--index", str(i), "--json"]
            elif c == "predict":
                cmd = [exe, "predict", args.model, str(cells), "--index", str(i), "-o", str(pred), "--overwrite", "-q"]
            elif c == "bands":
                cmd = [exe, "bands", str(pred), "--uncertainty", "--json", str(work / f"bands{n}.json"), "-q"]
            else:
                cmd = [exe, "dos", str(pred), "--uncertainty", "--json", str(work / f"dos{n}.json"), "-q"]
            r = run_wait4(cmd, args.timeout)
            r.update(natoms=n, command=c)
            rows.append(r)
            print(f"{n:4d} atoms  {c:<17} rc {r['rc']:3d}  wall {r['wall_s']:8.1f} s  CPU {r['cpu_s']:8.1f} s  "
                  f"peak {r['peak_rss_GB']:6.2f} GB  load {r['load_start']:.1f}-{r['load_end']:.1f}"
                  + (f"  [{r['stderr_tail'].splitlines()[-1][:150]}]" if r["rc"] and r["stderr_tail"] else ""),
                  file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"rows": rows, "model": args.model}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

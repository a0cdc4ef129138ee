"""Shift-invert factorisations of ``H - sigma S`` for a large non-tiled system: SuperLU vs MKL PARDISO.

Usage::

    python benchmarks/shift_invert.py --model model.h5 --tile 3 --methods superlu pardiso --json

The predicted 64-atom rattled Si cell (``benchmarks/large.py``'s cell) is tiled ``tile^3`` times
as an explicit sparse supercell (``acehamil.structure.supercell``), ``sigma`` is its exact mid-gap
Fermi level (``acehamil.tb.tiled``), and ``H - sigma S`` (Gamma, real) is factorised by

``superlu``  scipy's SuperLU (``permc_spec`` MMD_AT_PLUS_A, symmetric mode) - what
             :func:`acehamil.tb.sparse.eigs_near` uses;
``pardiso``  MKL PARDISO through ``pypardiso`` (not a dependency: ``pip install pypardiso``),
             real symmetric indefinite LDL^T (mtype -2) with METIS nested dissection.

then 20 eigenpairs nearest ``sigma`` are found by ``eigsh`` with that factorisation as ``OPinv``
and compared with the exact levels.  Prints per method: factorisation wall/CPU seconds and memory
(SuperLU: 12 bytes per factor nonzero; PARDISO: its own peak report), eigsh wall/CPU seconds,
the largest eigenvalue error (eV) and the 1-minute load.  Set ``MKL_NUM_THREADS=1`` for one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _superlu(A):
    import scipy.sparse.linalg as spl

    lu = spl.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    return lu.solve, (lu.L.nnz + lu.U.nnz) * 12 / 1e9


def _pardiso(A):
    import numpy as np
    import pypardiso
    import scipy.sparse as sp

    ps = pypardiso.PyPardisoSolver(mtype=-2)
    U = sp.triu(A, format="csr")
    U.sort_indices()
    ps.set_iparm(1, 1)  # use the iparm values below
    ps.set_iparm(2, 2)  # METIS nested dissection
    ps.set_iparm(10, 8)  # pivot perturbation 1e-8
    ps.set_iparm(11, 0)
    ps.set_iparm(13, 0)
    ps.factorize(U)
    mem = max(ps.get_iparm(15), ps.get_iparm(16) + ps.get_iparm(17)) / 1e6  # KB -> GB
    return (lambda b: ps.solve(U, np.asarray(b, dtype=np.float64))), mem


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--tile", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=["superlu", "pardiso"], choices=["superlu", "pardiso"])
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import numpy as np
    import scipy.sparse.linalg as spl

    from acehamil.structure.supercell import tile_structure
    from acehamil.tb.sparse import bloch_csr
    from acehamil.tb.tiled import tiled_eigs
    from large import _cell

    t = (args.tile,) * 3
    sd, _ = _cell(args.model, (2, 2, 2), 0.0)
    ref = tiled_eigs(sd.H[0], sd.S, t, None, args.n, n_electrons=sd.n_electrons * args.tile**3)
    H, S = bloch_csr(tile_structure(sd, t).H[0], tile_structure(sd, t).S, (0, 0, 0))
    A = (H - ref.sigma * S).tocsr()
    n = A.shape[0]
    out = []
    for m in args.methods:
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), _cpu()
        solve, mem = (_superlu if m == "superlu" else _pardiso)(A)
        tf, cf = time.perf_counter() - t0, _cpu() - c0
        op = spl.LinearOperator((n, n), matvec=solve, dtype=np.float64)
        t1, c1 = time.perf_counter(), _cpu()
        w = np.sort(spl.eigsh(H, k=args.n, M=S, sigma=ref.sigma, which="LM", OPinv=op, tol=1e-10,
                              ncv=2 * args.n + 1, return_eigenvectors=False))
        out.append({"method": m, "norb": n, "nnz_per_row": A.nnz / n, "factor_wall_s": tf, "factor_cpu_s": cf,
                    "factor_GB": mem, "eigsh_wall_s": time.perf_counter() - t1, "eigsh_cpu_s": _cpu() - c1,
                    "max_error_eV": float(np.abs(w - ref.energies).max()), "load_1min": [load0, os.getloadavg()[0]],
                    "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2})
        if not args.json:
            print(json.dumps(out[-1]), flush=True)
        del solve, op
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the ACE basis on a periodic 1000-atom Si supercell.

Measures, for all sites (cutoff 5 Å, nu = 3, total degree 12/10/8, L = 0..4, both
parities - the basis of docs/design.md):

* ``seconds_values``: all features of all sites;
* ``seconds_with_gradients``: values plus the full Jacobian (every feature w.r.t.
  every neighbour vector), computed batch by batch (:meth:`ACEBasis.iter_evaluate`)
  so memory stays bounded; the batches are discarded;
* ``seconds_invariants_with_gradients``: only the invariants ``(0, +1)`` and their
  full Jacobian (what fitting a potential to forces needs);
* ``seconds_energy_forces``: the contracted reverse-mode path used by potentials
  (:meth:`ACEBasis.evaluate_linear`, invariants);
* the number of features and a flop estimate (multiply-adds per site: A by
  ``P_c * K * n_lm``, products ``n_AA - n_A - 1``, coupling ``nnz(C)``), reported
  as achieved GMAC/s per CPU second and as a ratio to this machine's dense GEMM rate
  (also per CPU second).

Usage: ``python benchmarks/basis.py [--json] [--repeat 3] [--no-gradients]``.
Timings are wall-clock (best of ``--repeat``) and process CPU time; the machine
may be shared, so CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def gemm_rate(n: int = 512, repeat: int = 5) -> float:
    """Dense matrix-multiply throughput, multiply-adds per CPU second (all BLAS threads
    counted, so it compares with the CPU times below even on a shared machine)."""
    a = np.random.default_rng(0).random((n, n))
    best = np.inf
    for _ in range(repeat):
        t = time.process_time()
        a @ a
        best = min(best, time.process_time() - t)
    return n**3 / max(best, 1e-9)


def timed(fn, repeat: int):
    wall, cpu = np.inf, np.inf
    out = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return out, wall, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-gradients", action="store_true", help="skip the full-Jacobian timing")
    parser.add_argument("--reps", type=int, default=5, help="supercell repetitions of the 8-atom cubic cell (5 -> 1000 atoms)")
    args = parser.parse_args(argv)

    from ase.build import bulk

    from acehamil.basis import ACEBasis, BasisSpec, Centres, RadialSpec
    from acehamil.structure.neighbours import neighbour_pairs

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(args.reps)
    atoms.rattle(0.05, seed=1)
    cutoff = 5.0
    nl = neighbour_pairs(atoms, cutoff)
    centres = Centres(atoms.numbers, nl.i, nl.vec, atoms.numbers[nl.j])
    spec = BasisSpec(
        categories=(14,), radial=RadialSpec(n_max=8, r_cut=cutoff), max_nu=3, max_degree=(12, 10, 8), L_max=4
    )
    t = time.perf_counter()
    basis = ACEBasis(spec)
    t_build = time.perf_counter() - t
    tab = basis.tables
    n_B = sum(basis.n_features.values())
    log(f"{len(atoms)} sites, {len(nl)} neighbour vectors (cutoff {cutoff} Å); {basis!r}; built in {t_build:.2f} s")

    vals, t_val, c_val = timed(lambda: basis.evaluate(centres), args.repeat)
    log(f"values: {t_val:.3f} s wall, {c_val:.3f} s CPU")
    coeffs = {14: np.random.default_rng(0).normal(size=basis.n_features[(0, 1)])}
    _, t_lin, c_lin = timed(lambda: basis.evaluate_linear(centres, coeffs), args.repeat)
    log(f"energy + forces (reverse mode, invariants): {t_lin:.3f} s wall, {c_lin:.3f} s CPU")
    def invariant_jacobian():
        return basis.evaluate(centres, gradients=True, keys=[(0, 1)])

    _, t_inv, c_inv = timed(invariant_jacobian, 1)
    log(f"invariants + their full Jacobian (potential fitting): {t_inv:.2f} s wall, {c_inv:.2f} s CPU")
    t_grad = c_grad = None
    if not args.no_gradients:

        def full_jacobian():
            n = 0
            for _, idx, _, g in basis.iter_evaluate(centres, gradients=True):
                n += sum(x.size for x in g.values())
            return n

        n_jac, t_grad, c_grad = timed(full_jacobian, 1)
        log(f"values + full Jacobian ({n_jac:.3g} numbers): {t_grad:.2f} s wall, {c_grad:.2f} s CPU")

    per_site_P = len(nl) / len(atoms)
    K = len(spec.categories) * spec.radial.n_max
    n_lm = (tab.l_max + 1) ** 2
    macs = per_site_P * K * n_lm + (tab.n_AA - tab.n_A - 1) + tab.C.nnz
    rate = gemm_rate()
    achieved = macs * len(atoms) / c_val
    out = {
        "nsites": len(atoms),
        "nneighbours": len(nl),
        "nfeatures": n_B,
        "nfeature_components": tab.n_out,
        "features_per_key": {f"{L},{p:+d}": n for (L, p), n in sorted(basis.n_features.items())},
        "n_A": tab.n_A,
        "n_AA": tab.n_AA,
        "nnz_coupling": int(tab.C.nnz),
        "seconds_build": t_build,
        "seconds_values": t_val,
        "cpu_seconds_values": c_val,
        "seconds_energy_forces": t_lin,
        "cpu_seconds_energy_forces": c_lin,
        "seconds_invariants_with_gradients": t_inv,
        "cpu_seconds_invariants_with_gradients": c_inv,
        "seconds_with_gradients": t_grad,
        "cpu_seconds_with_gradients": c_grad,
        "macs_per_site": macs,
        "achieved_gmacs": achieved / 1e9,
        "gemm_gmacs": rate / 1e9,
        "ratio_to_gemm": achieved / rate,
        "spec": spec.to_dict(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, numpy {np.__version__}",
    }
    if args.json:
        print(json.dumps(out))
    else:
        log(f"features: {n_B} ({tab.n_out} components) over keys {out['features_per_key']}")
        log(
            f"flop estimate {macs:.3g} multiply-adds/site -> {out['achieved_gmacs']:.2f} GMAC/s achieved "
            f"= {out['ratio_to_gemm']:.3f} x dense GEMM ({out['gemm_gmacs']:.1f} GMAC per CPU second)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

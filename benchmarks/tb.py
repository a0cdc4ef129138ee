"""Tight-binding layer timings: H(k), S(k) assembly + generalized eigen-solve, and a DOS.

1. A 1000-orbital system (Si, s+p Slater-Koster model with overlap, 5x5x5 supercell of the
   2-atom cell = 250 atoms x 4 orbitals) at 100 random k-points: ``acehamil.tb.eigen.solve`` (Bloch sums
   from the block-sparse data, S(k) check, potrf/hegst/heevd) against ``scipy.linalg.eigh(H, S)``
   on matrices built beforehand (same k-points, eigenvalues only, driver 'gvd').
2. A DOS of the 2-atom cell on a 12x12x12 Monkhorst-Pack grid (time-reversal reduced) with
   ``acehamil.tb.dos.density_of_states``, against ``scipy.linalg.eigh`` looped over prebuilt
   matrices at the same k-points.

Usage: ``python benchmarks/tb.py [--json] [--nkpts 100] [--repeat 5] [--kmesh 12] [--threads N]``.
Ours and the reference alternate on blocks of 5 k-points so both see the same machine load
(best-of-``--trials`` per block).  Run it with ``nice`` on a shared machine; ``--threads 1`` gives
steadier figures there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _imports():
    """Heavy imports after ``--threads`` has set the BLAS thread count (read once at load)."""
    global np, sla, bulk, OrbitalBasis, StructureData, BlochAssembler, density_of_states, monkhorst_pack
    global solve, slater_koster, BASIS
    import numpy as np
    import scipy.linalg as sla
    from ase.build import bulk

    from acehamil.structure import OrbitalBasis, StructureData
    from acehamil.tb.bloch import BlochAssembler
    from acehamil.tb.dos import density_of_states, monkhorst_pack
    from acehamil.tb.eigen import solve
    from acehamil.tb.toy import slater_koster

    BASIS = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})


def _best(f, trials):
    best, out = np.inf, None
    for _ in range(trials):
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_large(repeat: int, nkpts: int, trials: int, seed: int = 0, block: int = 5) -> dict:
    """Ours and the reference alternate on blocks of k-points, so both see the same machine load."""
    atoms = bulk("Si", "diamond", a=5.43).repeat((repeat,) * 3)
    H, S = slater_koster(atoms, BASIS, cutoff=4.0)
    k = np.random.default_rng(seed).uniform(-0.5, 0.5, (nkpts, 3))
    ah, as_ = BlochAssembler(H), BlochAssembler(S)
    t_ours = t_ref = t_asm = 0.0
    diff = 0.0
    for q in range(0, nkpts, block):
        kb = k[q:q + block]
        dt, eps = _best(lambda: solve(H, S, kb), trials)  # assembly + S check + solve
        t_ours += dt
        dt, (hk, sk) = _best(lambda: (ah.dense(kb), as_.dense(kb)), trials)
        t_asm += dt

        def ref():
            return np.array([sla.eigh(hk[p], sk[p], eigvals_only=True, driver="gvd", check_finite=False)
                             for p in range(len(kb))])

        dt, eps_ref = _best(ref, trials)
        t_ref += dt
        diff = max(diff, float(np.abs(eps - eps_ref).max()))
    return {
        "norb": H.norb, "natoms": len(atoms), "nblocks": H.nblocks, "nkpts": nkpts,
        "seconds": t_ours, "seconds_eigh_only": t_ref, "seconds_assembly_only": t_asm,
        "overhead": t_ours / t_ref - 1.0, "max_abs_diff_eV": diff,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    }


def bench_dos(kmesh: int, trials: int) -> dict:
    atoms = bulk("Si", "diamond", a=5.43)
    H, S = slater_koster(atoms, BASIS, cutoff=4.0)
    sd = StructureData(atoms, BASIS, H=(H,), S=S, n_electrons=8)
    t_dos, res = _best(lambda: density_of_states(sd, kmesh=(kmesh,) * 3, width=0.05), trials)
    t_pdos, _ = _best(lambda: density_of_states(sd, kmesh=(kmesh,) * 3, width=0.05, pdos="shell"), trials)
    k, _ = monkhorst_pack((kmesh,) * 3)
    hk, sk = BlochAssembler(H).dense(k), BlochAssembler(S).dense(k)

    def ref():
        return np.array([sla.eigh(hk[q], sk[q], eigvals_only=True, check_finite=False) for q in range(len(k))])

    t_ref, eps_ref = _best(ref, trials)
    return {
        "kmesh": [kmesh] * 3, "nkpts_reduced": len(k), "norb": H.norb,
        "seconds": t_dos, "seconds_with_pdos": t_pdos, "seconds_eigh_only": t_ref,
        "max_abs_diff_eV": float(np.abs(res.eigenvalues[0] - eps_ref).max()),
        "fermi_level": res.fermi_level,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--nkpts", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5, help="supercell repeat of the 2-atom Si cell (5 -> 250 atoms, 1000 orbitals)")
    p.add_argument("--kmesh", type=int, default=12)
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads (sets OPENBLAS/OMP/MKL_NUM_THREADS before numpy loads); default: library default")
    a = p.parse_args(argv)
    if a.threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(a.threads)
    _imports()
    large = bench_large(a.repeat, a.nkpts, a.trials)
    dos = bench_dos(a.kmesh, a.trials)
    out = dict(large, dos=dos)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"H(k), S(k) + generalized eigen-solve: {large['norb']} orbitals, {large['nkpts']} k-points")
        print(f"  acehamil.tb.eigen.solve       {large['seconds']:8.3f} s  (assembly alone {large['seconds_assembly_only']:.3f} s)")
        print(f"  scipy.linalg.eigh (prebuilt)  {large['seconds_eigh_only']:8.3f} s")
        print(f"  overhead {100 * large['overhead']:+.1f} %   max |diff| {large['max_abs_diff_eV']:.2e} eV")
        print(f"DOS {dos['kmesh']} grid ({dos['nkpts_reduced']} k after time reversal), {dos['norb']} orbitals")
        print(f"  density_of_states             {dos['seconds']:8.3f} s  (with PDOS {dos['seconds_with_pdos']:.3f} s)")
        print(f"  scipy.linalg.eigh loop         {dos['seconds_eigh_only']:8.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

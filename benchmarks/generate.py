"""PySCF generator cost and accuracy per cell size: wall and CPU time, load, meshes, band error.

One perturbed Si cell per size (``--atoms 8 16 64``: the 8-atom cubic cell repeated 1x1x1, 2x1x1, 2x2x2;
displacements 0.05-0.15 Å and strain <= 2 %, seeded), computed with the generator's settings (default:
everything ``auto``; ``--fourier-kmesh N N N --r-cut R`` to compare a cheaper mesh).  Prints, per
cell, the SCF and Fourier meshes and FFT cutoff chosen, the time of the SCF and of the Fock build on the
Fourier mesh, and the band error against PySCF's own bands at the off-mesh reference k-points
(occupied / E_F +- 2 eV / all bands, meV).

Usage: ``nice python benchmarks/generate.py [--atoms 8 16] [--r-cut 12] [--fourier-kmesh auto] [--json]``.
Needs ``acehamil[pyscf]``.  Takes minutes per 8-16 atom cell on one core, ~15 min for 64 atoms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def measure(natoms: int, r_cut: float, fourier, seed: int = 0) -> dict:
    from ase.build import bulk

    from acehamil.io.plans import make_plan, supercell
    from acehamil.io.pyscf_gen import CrystalSettings, run_crystal

    reps = {8: (1, 1, 1), 16: (2, 1, 1), 32: (2, 2, 1), 64: (2, 2, 2)}
    if natoms not in reps:
        raise SystemExit(f"--atoms takes 8, 16, 32 or 64, got {natoms}")
    base = supercell(bulk("Si", "diamond", a=5.43, cubic=True), reps[natoms])
    atoms = make_plan(base, "perturb", 1, seed=seed + natoms, prefix="b")[0][1]
    st = CrystalSettings(r_cut=r_cut, fourier_kmesh=fourier)
    t0, c0, marks = time.perf_counter(), time.process_time(), {}

    def log(msg):
        marks[msg.split()[0]] = (time.perf_counter() - t0, time.process_time() - c0)

    data, _ = run_crystal(atoms, st, log=log)
    be = data.info["band_error"]
    res = data.info["resolved"]
    return {
        "natoms": natoms, "r_cut": r_cut, "scf_kmesh": res["scf_kmesh"], "fourier_kmesh": res["fourier_kmesh"],
        "ke_cutoff": res["ke_cutoff"], "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
        "scf_wall_s": round(marks["scf"][0], 1), "scf_cpu_s": round(marks["scf"][1], 1),
        "fock_wall_s": round(marks["fock"][0] - marks["scf"][0], 1), "fock_cpu_s": round(marks["fock"][1] - marks["scf"][1], 1),
        "load_1min": round(os.getloadavg()[0], 1), "nblocks": int(data.H[0].nblocks),
        "band_error_meV": {"occupied_max": be["occupied"]["max_meV"], "near_ef_max": be["near_ef"]["max_meV"],
                           "all_max": be["all"]["max_meV"], "all_median": be["all"]["median_meV"]},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--r-cut", type=float, default=12.0)
    ap.add_argument("--fourier-kmesh", nargs="+", default=["auto"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    fourier = "auto" if args.fourier_kmesh == ["auto"] else tuple(int(x) for x in args.fourier_kmesh)
    rows = []
    for n in args.atoms:
        row = measure(n, args.r_cut, fourier)
        rows.append(row)
        if not args.json:
            b = row["band_error_meV"]
            print(f"{n:3d} atoms  SCF {'x'.join(map(str, row['scf_kmesh']))}  Fourier {'x'.join(map(str, row['fourier_kmesh']))}  "
                  f"ke {row['ke_cutoff']:g} Ha  r_cut {row['r_cut']:g}: wall {row['wall_s']:.0f} s (cpu {row['cpu_s']:.0f} s; "
                  f"SCF {row['scf_cpu_s']:.0f}, Fock {row['fock_cpu_s']:.0f}), load {row['load_1min']}; band error occ "
                  f"{b['occupied_max']:.2f} / near E_F {b['near_ef_max']:.2f} / all {b['all_max']:.2f} meV", flush=True)
    if args.json:
        json.dump(rows, sys.stdout)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

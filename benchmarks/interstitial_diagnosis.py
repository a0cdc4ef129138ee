"""Why the 17-atom interstitial cells are not fitted (issue 12, tenth session): geometry and per-block errors.

Two parts, both on the TRAINING files of a configuration (never a test-only set):

* ``--geometry``: per structure kind, the coordination (neighbours within 2.75 Å), the shortest bond,
  the nearest environment atom to the midpoint of a bond shorter than 2.7 Å (a three-membered ring:
  a third atom bonded to both ends), and the bonds (with an environment, ``env_bond_cut``) that have an
  atom within 0.6 Å of their midpoint (where the bond-environment harmonics jump without
  ``[h_offsite] origin_smoothing``).
* fits (default): the configuration's block fit (no calibration, no eigenvalue update) once per
  ``--weights`` entry (kind-weight overrides, merged into the configuration's table) and ``--variant``
  (table overrides as ``transfer_cv.py``), then for the ``--show`` structures the eigenvalue MAE (E_F
  ± 2 eV, own Fermi levels, ``evaluate``'s per-structure k-mesh) with its rigid part (the k-weighted
  mean signed error) and the H RMSE aligned, split by block category: on-site by coordination, bonds by
  length, with an atom near the midpoint, touching an atom of coordination other than 4, or bulk-like.

Wall and CPU seconds and the load are printed.

Usage::

    python benchmarks/interstitial_diagnosis.py --geometry
    python benchmarks/interstitial_diagnosis.py --weights '{}' '{"si17-interstitial-T-H-strain2": 1}' \\
        --variant '{}' '{"h_offsite": {"origin_smoothing": 1.0}}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BOND = 2.75  # Å, coordination shell
NEAR = 0.6  # Å, "an atom at the midpoint"
SHELLS = [(0, 2.7), (2.7, 4.2), (4.2, 6), (6, 8), (8, 10), (10, 13)]


def coordination(atoms) -> np.ndarray:
    from acehamil.structure.neighbours import neighbour_pairs

    nl = neighbour_pairs(atoms, BOND)
    return np.bincount(nl.i, minlength=len(atoms))


def nearest_to_midpoint(atoms, r_cut: float, r_env: float, env_bond_cut: float):
    """Bonds up to ``r_cut`` (NeighbourPairs) and, per bond, the distance (Å) of its nearest environment
    atom to the midpoint (inf: none)."""
    from acehamil.environments import bond_environments
    from acehamil.structure.neighbours import neighbour_pairs

    nl = neighbour_pairs(atoms, r_cut)
    env = bond_environments(atoms, nl, r_env, env_bond_cut=env_bond_cut)
    d = np.linalg.norm(env.particle_vec, axis=1)
    e = env.particle_category >= 0
    m = np.full(env.n_centres, np.inf)
    np.minimum.at(m, env.particle_centre[e], d[e])
    return nl, m


def geometry(structures, cfg) -> dict:
    from transfer_cv import kind_of

    off = cfg.h_offsite
    out = {}
    for sd in structures:
        k = out.setdefault(kind_of(sd), {"n": 0, "coordination": {}, "shortest_bond": np.inf, "ring3": [], "midpoint": 0, "midpoint_short": 0})
        c = coordination(sd.atoms)
        for v, n in zip(*np.unique(c, return_counts=True)):
            k["coordination"][int(v)] = k["coordination"].get(int(v), 0) + int(n)
        nl, m = nearest_to_midpoint(sd.atoms, off.env_bond_cut or off.r_cut, off.r_env, off.env_bond_cut)
        k["n"] += 1
        k["shortest_bond"] = min(k["shortest_bond"], float(nl.dist.min()))
        k["ring3"].append(m[nl.dist < 2.7])
        k["midpoint"] += int((m < NEAR).sum())
        k["midpoint_short"] += int(((m < NEAR) & (nl.dist < 6.0)).sum())
    for k in out.values():
        r = np.concatenate(k.pop("ring3"))
        k["ring3_min"], k["ring3_p5"] = float(r.min()), float(np.percentile(r, 5))
        k["midpoint_per_cell"], k["midpoint_short_per_cell"] = k["midpoint"] / k["n"], k["midpoint_short"] / k["n"]
    return out


def breakdown(sd, pm, cfg) -> dict:
    """H RMSE aligned (meV) per block category: ``{name: (rms, n_blocks, squared sum)}``."""
    from acehamil.models.hamiltonian.evaluate import matrix_residuals

    res, _ = matrix_residuals(pm.H, sd.H[0])
    s_ref = -matrix_residuals(pm.H.with_data(np.zeros(pm.H.data.size)), sd.S)[0]
    r = (res - float(res @ s_ref) / float(s_ref @ s_ref) * s_ref) * 1e3
    M, at = pm.H, sd.atoms
    d = np.linalg.norm(at.positions[M.j] - at.positions[M.i] + M.shift @ np.array(at.cell), axis=1)
    coord = coordination(at)
    off = cfg.h_offsite
    nl, m = nearest_to_midpoint(at, off.env_bond_cut or off.r_cut, off.r_env, off.env_bond_cut)
    where = {(int(a), int(b), tuple(s)): q for q, (a, b, s) in enumerate(zip(nl.i, nl.j, nl.shift.tolist()))}
    mind = np.array([m[where[k]] if (k := (int(a), int(b), tuple(s))) in where else np.inf
                     for a, b, s in zip(M.i, M.j, M.shift.tolist())])
    sizes = np.diff(M.offsets)
    sq = np.bincount(np.repeat(np.arange(M.nblocks), sizes), r * r, minlength=M.nblocks)
    out = {}

    def add(name, mask):
        if sizes[mask].sum():
            out[name] = (float(np.sqrt(sq[mask].sum() / sizes[mask].sum())), int(mask.sum()), float(sq[mask].sum()))

    ci, cj, on = coord[M.i], coord[M.j], d < 1e-6
    add("on-site, 4 neighbours", on & (ci == 4))
    add("on-site, < 4", on & (ci < 4))
    add("on-site, 5-6", on & (ci >= 5) & (ci <= 6))
    add("on-site, > 6", on & (ci > 6))
    near = mind < NEAR
    for lo, hi in SHELLS:
        b = ~on & (d >= lo) & (d < hi)
        add(f"bonds {lo}-{hi} A, atom at midpoint", b & near)
        add(f"bonds {lo}-{hi} A, touching a defect atom", b & ~near & ((ci != 4) | (cj != 4)))
        add(f"bonds {lo}-{hi} A, bulk-like", b & ~near & (ci == 4) & (cj == 4))
    out["all"] = (float(np.sqrt(np.mean(r * r))), int(M.nblocks), float((r * r).sum()))
    return out


def main(argv=None) -> int:
    from transfer_bias import signed_errors
    from transfer_levers import add_variant_args, apply

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_variant_args(p)
    p.add_argument("--geometry", action="store_true", help="only the geometry table, no fit")
    p.add_argument("--show", type=int, nargs="*", default=[34, 50, 62, 67, 80, 81, 82, 98, 99, 100, 101, 105],
                   help="dataset indices (of the configuration's [data] train) to break down")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.evaluate import eval_kmesh
    from acehamil.models.hamiltonian.fit import fit
    from transfer_cv import kind_of

    base = read_model_config(args.config)
    base = replace(base, fit=replace(base.fit, eigenvalue_update=()), uncertainty=replace(base.uncertainty, calibrate=False))
    ds = read_dataset(base.data.train)
    t0, c0 = time.perf_counter(), time.process_time()
    if args.geometry:
        g = geometry([ds[i] for i in range(len(ds))], base)
        if args.json:
            print(json.dumps(g))
        for kind, k in g.items():
            print(f"{kind:42s} n {k['n']:3d} coordination {k['coordination']} shortest bond {k['shortest_bond']:.2f} A | bonds < 2.7 A: "
                  f"nearest env atom to the midpoint {k['ring3_min']:.2f} A (5th percentile {k['ring3_p5']:.2f}) | bonds with an atom "
                  f"within {NEAR} A of the midpoint per cell {k['midpoint_per_cell']:.1f} (< 6 A: {k['midpoint_short_per_cell']:.1f})")
        print(f"{time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU, load {os.getloadavg()[0]:.1f}")
        return 0
    records = []
    for vtext in args.variant:
        cfg_v = apply(base, json.loads(vtext))
        for wtext in args.weights:
            table = json.loads(wtext)
            kw = dict(cfg_v.fit.kind_weights)
            kw.update(table or {})
            cfg = replace(cfg_v, fit=replace(cfg_v.fit, kind_weights=tuple(kw.items())))
            idx = cfg.data.training_indices(len(ds))
            t1, c1 = time.perf_counter(), time.process_time()
            model = fit([ds[i] for i in idx], cfg, progress=False)
            print(f"variant {vtext} weights {wtext}: fit {time.perf_counter() - t1:.1f} s wall, {time.process_time() - c1:.1f} s CPU, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            fitted = {i for i in idx if kw.get(kind_of(ds[i]), 1.0) > 0}
            for i in args.show:
                sd = ds[i]
                H, S = model.predict(sd.atoms, check_overlap=False)
                e = signed_errors(H, S, sd, eval_kmesh(sd.atoms))
                pm = model.matrices(sd.atoms)
                bd = breakdown(sd, pm, cfg)
                rec = {"variant": vtext, "weights": table, "index": i, "kind": kind_of(sd), "fitted": i in fitted,
                       "eig_mae_meV": e["mae"], "rigid_meV": e["rigid"], "H_rmse_meV_aligned": bd["all"][0],
                       "blocks": {k: {"rms_meV": v[0], "n": v[1], "share": v[2] / bd["all"][2]} for k, v in bd.items()}}
                records.append(rec)
                print(f"  [{i}] {rec['kind']} {'fitted' if rec['fitted'] else 'not fitted'}: eigenvalue MAE {e['mae']:.1f} meV "
                      f"(rigid {e['rigid']:+.1f}), H aligned {bd['all'][0]:.2f} meV", flush=True)
                for k, v in rec["blocks"].items():
                    if k != "all":
                        print(f"      {k:42s} {v['rms_meV']:8.2f} meV rms, {v['n']:6d} blocks, {100 * v['share']:5.1f} % of the squared error")
    print(f"{time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU, load {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

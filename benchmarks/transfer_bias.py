"""Why does fitting more kinds of training data make held-out errors worse?  (issue 12, fifth session)

A model that lacks capacity (bias) fits the structures it is trained on worse when new kinds join
them; inconsistent targets (energy zero, smearing) show as kinds whose energy zeros or rigid
eigenvalue shifts do not follow the others.  For each ``--weights`` table (``fit.kind_weights``;
``'null'`` = the configuration's own) this script fits the configuration once from per-structure
normal-equation sums (features computed per table with the sampling plan of that fit, as ``transfer_cv.py``)
on the structures it would fit (its ``[data] test`` ones and kinds at weight 0 left out) and reports, per
structure kind and role (``fitted`` / ``held-out`` / ``unfitted``):

* eigenvalue MAE within E_F +- 2 eV (own Fermi levels, about 6 k-points per 5.43 Å) split into the
  rigid part (weighted mean of the signed Fermi-aligned error) and the rest (MAE about that mean);
  the absolute shift (model - DFT, no alignment: the energy-zero model's error);
* H RMSE aligned (the best ``V S`` per structure, as ``evaluate``), on-site and off-site apart;
* the fitted per-structure energy zeros ``V_s`` against the density model (mean and spread of
  ``V_s - V_model`` per kind): is one density law right for every kind?
* the BLR noise (``1/sqrt(beta)``, meV) and the effective ridge ``alpha / beta`` of every
  ``(block type, L)`` problem: do new kinds raise the noise level, hence the regularisation, of all?

``--defect`` adds, for structures whose kind contains ``vacancy`` or ``interstitial``: the H errors by
environment (atoms with fewer or more than 4 neighbours within ``--bond`` Å, "defect" atoms, against the
others; bonds touching a defect atom against the rest), and the eigenvalue MAE with the model's blocks
replaced by DFT's (aligned) on the defect atoms' on-site blocks and bonds, or on all the others.

Wall and CPU seconds and the load are printed; ``--json`` prints one record per (variant, weights).

Usage::

    python benchmarks/transfer_bias.py --weights null '{"si15-vacancy-strain3-d0.05-0.2": 0.1}' --defect
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


def signed_errors(H, S, sd, kmesh, window_eV=2.0) -> dict:
    """Eigenvalue errors of ``(H, S)`` against ``sd``: MAE, its rigid part and the rest (meV)."""
    from acehamil.tb.dos import monkhorst_pack
    from acehamil.tb.eigen import solve
    from acehamil.tb.smearing import fermi_level

    kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
    e_mod, e_ref = solve(H, S, kp), solve(sd.H[0], sd.S, kp)
    ef_ref = fermi_level(e_ref[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    ef_mod = fermi_level(e_mod[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    mask = np.abs(e_ref - ef_ref) <= window_eV
    w = np.broadcast_to(wk[:, None], e_ref.shape)[mask]
    d = ((e_mod - ef_mod) - (e_ref - ef_ref))[mask]
    rigid = float((w * d).sum() / w.sum())
    return {"mae": float((w * np.abs(d)).sum() / w.sum()) * 1e3, "rigid": rigid * 1e3,
            "rest": float((w * np.abs(d - rigid)).sum() / w.sum()) * 1e3,
            "abs_shift": float((w * (e_mod - e_ref)[mask]).sum() / w.sum()) * 1e3}


def coordination(atoms, bond: float) -> np.ndarray:
    from ase.neighborlist import neighbor_list

    i = neighbor_list("i", atoms, bond)
    return np.bincount(i, minlength=len(atoms))


def matrix_errors(m, sd, bond: float, defect: bool):
    """H errors (meV, aligned by the best V S) overall, on-site, off-site; with ``defect`` by environment,
    and the DFT-substituted predictions.  Returns ``(errors, substitutions)``."""
    from acehamil.models.hamiltonian.model import ModelMatrices
    from transfer_levers import energy_zero_fit, on_pattern

    H_dft = on_pattern(sd.H[0], m.H).data
    S_dft = on_pattern(sd.S, m.H).data
    V = energy_zero_fit(m.H, sd.H[0], sd.S)
    dh = (m.H.data - H_dft - V * S_dft) * 1e3
    sizes = np.diff(m.H.offsets)
    onsite = np.repeat((m.H.i == m.H.j) & np.all(m.H.shift == 0, axis=1), sizes)

    def rms(sel):
        return float(np.sqrt(np.mean(dh[sel] ** 2))) if sel.any() else float("nan")

    out = {"H": rms(np.ones_like(onsite)), "H_onsite": rms(onsite), "H_offsite": rms(~onsite)}
    subs = {}
    if defect:
        z = coordination(sd.atoms, bond)
        bad = z != 4
        touch_i, touch_j = np.repeat(bad[m.H.i], sizes), np.repeat(bad[m.H.j], sizes)
        pos, cell = sd.atoms.positions, np.asarray(sd.atoms.cell.array)
        dist = np.repeat(np.linalg.norm(pos[m.H.j] - pos[m.H.i] + m.H.shift @ cell, axis=1), sizes)
        near = touch_i | touch_j
        out.update({"n_defect_atoms": int(bad.sum()), "coordinations": sorted(set(z.tolist())),
                    "onsite_defect": rms(onsite & near), "onsite_bulk": rms(onsite & ~near),
                    "bonds<2.7_defect": rms(~onsite & near & (dist < 2.7)), "bonds<2.7_bulk": rms(~onsite & ~near & (dist < 2.7)),
                    "bonds2.7-4.2_defect": rms(~onsite & near & (dist >= 2.7) & (dist < 4.2)),
                    "bonds2.7-4.2_bulk": rms(~onsite & ~near & (dist >= 2.7) & (dist < 4.2)),
                    "bonds>=4.2_defect": rms(~onsite & near & (dist >= 4.2)), "bonds>=4.2_bulk": rms(~onsite & ~near & (dist >= 4.2))})
        H_true = H_dft + V * S_dft

        def mixed(sel):
            return ModelMatrices(m.H.with_data(np.where(sel, H_true, m.H.data)), m.S, ())

        subs = {"dft_defect_onsite": mixed(onsite & near), "dft_defect_blocks": mixed(near),
                "dft_bulk_blocks": mixed(~near), "dft_defect_blocks<4.2": mixed(near & (dist < 4.2))}
    return out, subs


def blr_summary(posts) -> dict:
    """``{"bt L": (noise meV, alpha/beta)}`` of every BLR posterior."""
    out = {}
    for key, per in posts.items():
        for L, p in per.items():
            out[f"{key} L{L}"] = (float(p.beta ** -0.5 * 1e3), float(p.alpha / p.beta))
    return out


def run(model, parts, data, test_idx, factors, args) -> dict:
    from acehamil.models.hamiltonian.fit import solve_sums
    from acehamil.models.hamiltonian.sums import FitSums
    from transfer_cv import kind_of, scaled_sums
    from transfer_levers import kmesh_for

    weighted = [p if p is None or f == 1.0 else scaled_sums(p, f) for p, f in zip(parts, factors)]
    keep = [k for k in range(len(data)) if factors[k] > 0 and k not in test_idx]
    cells = [data[k].atoms for k in keep]
    sums = FitSums.subset(weighted, keep)
    coefs, posts, _, V, ez, ez_summary = solve_sums(model.H, sums, model.config, cells, model.orbital_basis.species)
    sub = replace(model, H=replace(model.H, coefficients=coefs, posteriors=posts), energy_zero=ez, report={})
    v_of = dict(zip(keep, V)) if V is not None else {}
    per = []
    for k, sd in enumerate(data):
        role = "held-out" if k in test_idx else ("fitted" if factors[k] > 0 else "unfitted")
        m = sub.matrices(sd.atoms)
        r = {"index": k, "kind": kind_of(sd), "role": role, "natoms": len(sd.atoms),
             **signed_errors(m.H, m.S, sd, kmesh_for(sd.atoms))}
        errs, subs = matrix_errors(m, sd, args.bond, args.defect and ("vacancy" in r["kind"] or "interstitial" in r["kind"]))
        r.update(errs)
        for name, pm in subs.items():
            r[name] = signed_errors(pm.H, pm.S, sd, kmesh_for(sd.atoms))["mae"]
        if k in v_of and ez is not None and np.all(sd.atoms.pbc):
            r["V_fit_meV"], r["V_density_meV"] = float(v_of[k]) * 1e3, float(ez.value(sd.atoms)) * 1e3
        per.append(r)
    return {"per_structure": per, "blr": blr_summary(posts), "energy_zero": ez_summary}


def summarise(per) -> dict:
    groups = {}
    for r in per:
        groups.setdefault((r["kind"], r["role"]), []).append(r)
    out = {}
    for (kind, role), rows in sorted(groups.items()):
        keys = [k for k, v in rows[0].items() if isinstance(v, float)]
        s = {k: float(np.nanmean([r.get(k, np.nan) for r in rows])) for k in keys}
        dv = [r["V_fit_meV"] - r["V_density_meV"] for r in rows if "V_fit_meV" in r]
        if dv:
            s["V_resid_mean_meV"], s["V_resid_std_meV"] = float(np.mean(dv)), float(np.std(dv))
        out[f"{kind} [{role}]"] = {"n": len(rows), **s}
    return out


def main(argv=None) -> int:
    from transfer_levers import add_variant_args, apply, every_structure

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_variant_args(p)
    p.add_argument("--defect", action="store_true", help="errors by environment and DFT substitutions in defect cells")
    p.add_argument("--bond", type=float, default=2.75, help="neighbour cutoff of the coordination number, Å")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.models.hamiltonian.fit import kind_factors
    from transfer_cv import featurise

    base, ds, data = every_structure(args.config)
    test_idx = set(int(i) for i in base.data.test_indices(len(ds)))
    say = sys.stderr if args.json else sys.stdout
    records = []
    for text in args.variant:
        cfg = apply(base, json.loads(text))
        for wtext in args.weights:
            table = json.loads(wtext)
            kw = cfg.fit.kind_weights if table is None else tuple(table.items())
            factors = kind_factors(data, kw)
            # sampled with the plan of the fit this table gives (its fitted structures only), as `acehamil fit` draws it
            fitted = [k for k in range(len(data)) if factors[k] > 0 and k not in test_idx]
            t0, c0 = time.perf_counter(), time.process_time()
            model, parts, rates = featurise(data, cfg, fitted=fitted)
            print(f"{text}: features of {len(fitted)} fitted structures {time.perf_counter() - t0:.1f} s wall, "
                  f"{time.process_time() - c0:.1f} s CPU, load {os.getloadavg()[0]:.1f}; H rates {rates}", file=say, flush=True)
            t1, c1 = time.perf_counter(), time.process_time()
            res = run(model, parts, data, test_idx, kind_factors(data, kw), args)
            rec = {"variant": text, "kind_weights": dict(kw), "summary": summarise(res["per_structure"]), **res,
                   "wall_s": time.perf_counter() - t1, "cpu_s": time.process_time() - c1, "load": os.getloadavg()[0]}
            records.append(rec)
            print(f"  weights {wtext}: {rec['wall_s']:.0f} s wall, {rec['cpu_s']:.0f} s CPU, load {rec['load']:.1f}; "
                  f"energy zero {res['energy_zero']}", file=say)
            for name, s in rec["summary"].items():
                extra = "".join(f" {k} {s[k]:.1f}" for k in s if k.startswith(("onsite_", "bonds", "dft_")))
                vz = f" V-Vdens {s['V_resid_mean_meV']:+.0f}+-{s['V_resid_std_meV']:.0f}" if "V_resid_mean_meV" in s else ""
                print(f"    {name:55s} n {s['n']:2d} eig {s['mae']:6.1f} (rigid {s['rigid']:+6.1f}, rest {s['rest']:6.1f}) "
                      f"abs shift {s['abs_shift']:+7.1f} | H {s['H']:.2f} on {s['H_onsite']:.2f} off {s['H_offsite']:.2f}"
                      f"{vz}{extra}", file=say)
            print("    BLR noise meV (alpha/beta): " + ", ".join(f"{k} {v[0]:.2f} ({v[1]:.1e})" for k, v in rec["blr"].items()),
                  file=say, flush=True)
    if args.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Grouped cross-validation of H model settings over ALL training structures (issue 12).

Choosing settings by the 11 held-out structures of the example TOML selects partly on the noise of
single cells.  This script scores a configuration by holding out whole groups of training
structures instead, so that the choice rewards transfer to structures of a kind the fold did not
see:

* every structure of the configuration's ``[data] train`` files (its ``test`` indices included:
  they are training kinds; never a test-only set) plus ``--extra FILE[:i-j]`` is in exactly one
  group;
* a group is one structure kind (``info["kind"]``; unlabelled = ``si8``); kinds with more than
  ``--max-group`` structures are split into seeded groups of about that size (so the big
  in-distribution kind is not held out whole);
* each group is held out once: its structures are predicted by the model refitted from the
  per-structure normal-equation sums of all the other structures
  (:func:`acehamil.models.hamiltonian.calibrate.fold_model`: the features of every structure are
  computed once per basis variant, a fold costs a subtraction and a solve);
* scored: eigenvalue MAE within E_F +- 2 eV, each relative to its own Fermi level, on about 6
  k-points per 5.43 Å, and H RMSE aligned, per kind (mean over its structures), and the mean over
  kinds (kinds matching ``--exclude``, default the surface slabs, are printed but not in the mean).

``--variant JSON ...`` are overrides of the configuration's tables (as ``transfer_levers.py``), one
featurisation each; ``--weights JSON ...`` are ``fit.kind_weights`` tables tried on each variant (a
weight scales the structure's sums; ``'null'`` = the
configuration's own; a kind at weight 0 is not fitted at all but still scored when its group is held
out, so "with kind X at weight w" and "without X" are scored on the same structures).  The off-site S model is fitted on the fitted structures (the
fold models keep it: S is exact to ~1e-6, ``docs/models.md``).  The off-site
bonds are sampled as the fit of each weight table samples them (:func:`fit_plans`: its seeded generator,
rates ``max_blocks_per_type`` / the bond count of the structures that table fits, weight-0 ones left out),
so the weight-1 sums of all fitted structures are the real fit's bit for bit and a table that adds
structures also lowers every structure's sampling rate, as a real fit does (features are computed again
whenever the set of fitted structures changes).  A fold keeps the full table's plan: a real fit without
the fold's group would sample at a rate higher by that group's share of the bonds.  ``--oracle`` adds,
per held-out structure, the eigenvalue MAE with one category of H blocks taken from DFT
(:func:`oracle_maes`).  Wall and CPU seconds and the
load are printed beside every figure; ``--json`` prints one record per (variant, weights).

Usage::

    python benchmarks/transfer_cv.py --variant '{}' --weights null '{"si15-vacancy": 1.0}'
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


def kind_of(sd) -> str:
    return sd.info.get("kind") or "si8"


def groups_of(structures, max_group: int, seed: int) -> list:
    """Index arrays of the held-out groups: one per kind, kinds above ``max_group`` split (seeded)."""
    kinds = {}
    for k, sd in enumerate(structures):
        kinds.setdefault(kind_of(sd), []).append(k)
    rng = np.random.default_rng(seed)
    out = []
    for kind in sorted(kinds):
        idx = np.array(kinds[kind])
        n_groups = int(np.ceil(len(idx) / max_group))
        perm = rng.permutation(idx)
        out += [np.sort(perm[g::n_groups]) for g in range(n_groups)]
    return out


def scaled_sums(part, factor: float):
    """``part`` (FitSums) with every row weight multiplied by ``factor``."""
    from acehamil.models.hamiltonian.sums import FitSums

    normal = {k: ne.scaled(factor) for k, ne in part.normal.items()}
    gauge = {k: {s: (a * factor, y * factor, q * factor) for s, (a, y, q) in g.items()} for k, g in part.gauge.items()}
    return FitSums(normal, dict(part.counts), gauge)


def bond_weighted_sums(model, sd, matrix_of, rates, weight, rng, index=0, gauge=False, bond_weight=None, pairs=None):
    """:func:`acehamil.models.hamiltonian.sums.structure_sums` with a heteroscedastic noise model of the
    off-site rows (a prototype, not a package option): a bond of length ``r`` gets the row weight
    ``clip(exp(2 (r - r_from) / xi), 1, w_max)`` (noise ~ the block's size, which falls off as
    ``exp(-r/xi)``, but no bond weighted above ``w_max`` times the short ones); ``bond_weight =
    (xi, r_from, w_max)``; None = the package's sums."""
    from acehamil.models.hamiltonian.sums import structure_sums

    if bond_weight is None:
        return structure_sums(model, sd, matrix_of, rates, weight, rng, index=index, gauge=gauge, pairs=pairs)
    xi, r_from, w_max = bond_weight

    def centre_weights(fam, env):
        n = env.n_centres
        if not fam.name.startswith("offsite"):
            return np.ones(n)
        r = np.linalg.norm(np.asarray(env.vec, dtype=float).reshape(n, -1), axis=1)
        return np.clip(np.exp(2.0 * (r - r_from) / xi), 1.0, w_max)

    return structure_sums(model, sd, matrix_of, rates, weight, rng, index=index, gauge=gauge, pairs=pairs,
                          centre_weights=centre_weights)


def fit_plans(structures, cfg, fitted):
    """The sampling plans ``(H, S)`` a fit of ``structures[fitted]`` draws (:func:`acehamil.models.hamiltonian.fit.fit`
    without a validation split): the fit's generator ``default_rng(seed)`` first permutes the fitted structures,
    then plans H, then S, over the fitted structures' centre counts in index order; rates are
    ``min(1, max_blocks_per_type / count over the fitted structures)`` per family."""
    from acehamil.models.hamiltonian.model import HamiltonianModel
    from acehamil.models.hamiltonian.sums import Sampling, counts_and_pairs

    if cfg.fit.validation_fraction > 0:
        raise ValueError("the plans replicate a fit without a validation split (fit.validation_fraction = 0)")
    template = HamiltonianModel.build(cfg, structures[0].basis)
    rng = np.random.default_rng(cfg.fit.seed)
    rng.permutation(len(fitted))  # the fit's seeded split draws this before the plans
    keep_within = float(cfg.fit.keep_bonds_within)
    counted = [counts_and_pairs((template.H, template.S), template.reach, structures[k].atoms, keep_within) for k in fitted]
    plans = {name: Sampling.plan([c[0][m] for c in counted], cfg.fit.max_blocks_per_type, rng,
                                 keep_within=keep_within if name == "H" else 0.0)
             for m, name in enumerate(("H", "S"))}
    return template, plans, [c[1] for c in counted]


def featurise(structures, cfg, bond_weight=None, fitted=None):
    """Per-structure H sums at weight 1 (energy-zero terms keyed by position) of the structures a fit of
    ``structures[fitted]`` would use, sampled with that fit's own plan (:func:`fit_plans`: the same rates and
    draws, so the weight-1 sums of the fitted structures are the fit's), and a model whose S is fitted on them
    (H coefficients: the weight-1 fit of all of them).

    Returns ``(model, parts, rates)``: ``parts[k]`` is None for a structure outside ``fitted`` (default: all);
    ``rates`` the H sampling rates ``{family: rate}``.
    """
    from acehamil.models.hamiltonian.fit import solve_all, solve_sums
    from acehamil.models.hamiltonian.model import HamiltonianModel
    from acehamil.models.hamiltonian.sums import FitSums, pick_h, pick_s

    fitted = list(range(len(structures))) if fitted is None else sorted(int(k) for k in fitted)
    basis = structures[0].basis
    template, plans, pairs = fit_plans(structures, cfg, fitted)
    out = {}
    for name, mm, pick in (("H", template.H, pick_h), ("S", template.S, pick_s)):
        sampling = plans[name]
        gauge = name == "H" and cfg.fit.fit_energy_zero
        out[name] = [bond_weighted_sums(mm, structures[k], pick, sampling.rates, 1.0, sampling.rng(pos), index=k,
                                        gauge=gauge, bond_weight=bond_weight if name == "H" else None, pairs=nl)
                     for pos, (k, nl) in enumerate(zip(fitted, pairs))]
    s_coefs, s_posts, _ = solve_all(template.S, FitSums.total(out["S"]).normal, cfg.solver)
    cells = [structures[k].atoms for k in fitted]
    h_coefs, h_posts, _, _, ez, _ = solve_sums(template.H, FitSums.subset(_spread(out["H"], fitted, len(structures)), fitted),
                                               cfg, cells, basis.species)
    model = HamiltonianModel.build(cfg, basis, h_coefs, s_coefs, {}, h_posts, s_posts, ez)
    return model, _spread(out["H"], fitted, len(structures)), dict(plans["H"].rates)


def _spread(parts, fitted, n) -> list:
    """``parts`` (one per fitted structure) at their structures' positions, None elsewhere."""
    out = [None] * n
    for k, p in zip(fitted, parts):
        out[k] = p
    return out


#: Oracle categories (``--oracle``): the model's H blocks of one category replaced by DFT's (aligned).
BOND_SHELLS = ((0.0, 2.6), (2.6, 4.0), (4.0, 6.0), (6.0, np.inf))  # Å, off-site blocks


def coordination(atoms, bond: float) -> np.ndarray:
    """Neighbours of each atom within ``bond`` Å, shape (natoms,) int."""
    from ase.neighborlist import neighbor_list

    return np.bincount(neighbor_list("i", atoms, bond), minlength=len(atoms))


def oracle_maes(model, sd, kmesh, bond: float = 2.75) -> dict:
    """Eigenvalue MAE (meV, within E_F +- 2 eV, own Fermi levels, as ``evaluate``) of ``model`` on ``sd`` and
    with one category of its H blocks replaced by DFT's (aligned by the best ``V S`` over all blocks, the model's
    S kept): ``onsite``; off-site blocks by bond length ``bonds a-b`` (:data:`BOND_SHELLS`); ``bonds touching
    defect``: off-site blocks with an atom whose coordination within ``bond`` Å is not 4 (none in bulk-like
    cells: the model's MAE); ``all H`` (the floor the S model sets).  A category's gain (model - its MAE) is the eigenvalue
    error it carries, interactions with the other blocks' errors included."""
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.models.hamiltonian.model import ModelMatrices
    from transfer_levers import energy_zero_fit, on_pattern

    m = model.matrices(sd.atoms)
    V = energy_zero_fit(m.H, sd.H[0], sd.S)
    H_dft = on_pattern(sd.H[0], m.H).data + V * on_pattern(sd.S, m.H).data
    sizes = np.diff(m.H.offsets)
    pos, cell = sd.atoms.positions, np.asarray(sd.atoms.cell.array)
    dist = np.repeat(np.linalg.norm(pos[m.H.j] - pos[m.H.i] + m.H.shift @ cell, axis=1), sizes)
    onsite = np.repeat((m.H.i == m.H.j) & np.all(m.H.shift == 0, axis=1), sizes)
    bad = coordination(sd.atoms, bond) != 4
    touch = np.repeat(bad[m.H.i] | bad[m.H.j], sizes) & ~onsite
    cats = {"model": None, "onsite": onsite}
    cats.update({f"bonds {a:g}-{b:g}": ~onsite & (dist >= a) & (dist < b) for a, b in BOND_SHELLS})
    cats.update({"bonds touching defect": touch, "all H": np.ones_like(onsite)})
    out = {"n_defect_atoms": int(bad.sum())}
    for name, sel in cats.items():
        if name == "bonds touching defect" and not bad.any():
            out[name] = out["model"]  # nothing to replace
            continue
        pred = m if sel is None else ModelMatrices(m.H.with_data(np.where(sel, H_dft, m.H.data)), m.S, ())
        out[name] = evaluate(model, [sd], kmesh=kmesh, uncertainty=False, predictions=[pred])["eigenvalues"]["mae_meV"]
    return out


def cross_validate(model, parts, structures, groups, factors, oracle: bool = False, train_error: bool = False) -> list:
    """Per-structure scores of every structure predicted by the fold model without its group (with ``oracle``,
    :func:`oracle_maes` too).  Each record carries ``n_H`` (H entries scored, the weight of the pooled H RMSE) and,
    with ``train_error``, ``H_rmse_meV_aligned_train``: the same structure's H RMSE aligned under the fit of every
    fitted structure (its own included when fitted): training against held-out error per structure."""
    from acehamil.models.hamiltonian.calibrate import fold_model
    from acehamil.models.hamiltonian.evaluate import block_errors, evaluate
    from transfer_levers import kmesh_for

    weighted = [p if p is None or f == 1.0 else scaled_sums(p, f) for p, f in zip(parts, factors)]
    cells = [sd.atoms for sd in structures]
    n = len(structures)
    per = [None] * n
    fitted = np.nonzero(np.asarray(factors) > 0)[0]  # weight 0: not in any fold's training set (scored when held out)
    for g in groups:
        keep = np.setdiff1d(fitted, g)
        sub = fold_model(model, weighted, keep, cells)
        for i in g:
            sd = structures[int(i)]
            pm = sub.matrices(sd.atoms)
            r = evaluate(sub, [sd], kmesh=kmesh_for(sd.atoms), uncertainty=False, predictions=[pm])["per_structure"][0]
            per[int(i)] = {"kind": kind_of(sd), "eig_mae_meV": r["eig_mae_meV"], "H_rmse_meV_aligned": r["H_rmse_meV_aligned"],
                           "eig_mae_meV_absolute": r["eig_mae_meV_absolute"], "energy_zero_eV": sub.energy_zero_of(sd.atoms),
                           "n_H": int(pm.H.data.size), "fitted": bool(factors[int(i)] > 0)}
            if oracle:
                per[int(i)]["oracle"] = oracle_maes(sub, sd, kmesh_for(sd.atoms))
    if train_error:
        full = fold_model(model, weighted, fitted, cells)
        for i, sd in enumerate(structures):
            per[i]["H_rmse_meV_aligned_train"] = block_errors(full, [sd], "H")["per_structure"][0]["rmse_aligned"]
    return per


def pooled_h(records, key: str = "H_rmse_meV_aligned") -> float:
    """H RMSE aligned pooled over ``records`` (each structure's squared error weighted by its ``n_H`` entries), meV."""
    n = np.array([r["n_H"] for r in records], dtype=float)
    e = np.array([r[key] for r in records], dtype=float)
    return float(np.sqrt(np.sum(n * e ** 2) / np.sum(n)))


def summarise(per, exclude: str) -> dict:
    kinds = {}
    for r in per:
        kinds.setdefault(r["kind"], []).append(r)
    pk = {k: {"n": len(v), "eig_mae_meV": float(np.mean([r["eig_mae_meV"] for r in v])),
              "H_rmse_meV_aligned": float(np.mean([r["H_rmse_meV_aligned"] for r in v])),
              "eig_mae_meV_absolute": float(np.mean([r["eig_mae_meV_absolute"] for r in v])),
              "H_pooled_meV_aligned": pooled_h(v)} for k, v in sorted(kinds.items())}
    for k, v in kinds.items():
        if "H_rmse_meV_aligned_train" in v[0]:
            pk[k]["H_pooled_meV_aligned_train"] = pooled_h(v, "H_rmse_meV_aligned_train")
    for k, v in kinds.items():
        if "oracle" in v[0]:
            pk[k]["oracle"] = {c: float(np.mean([r["oracle"][c] for r in v])) for c in v[0]["oracle"] if c != "n_defect_atoms"}
            pk[k]["oracle_n_with_defects"] = sum(r["oracle"]["n_defect_atoms"] > 0 for r in v)
    scored = [v["eig_mae_meV"] for k, v in pk.items() if not (exclude and exclude in k)]
    kept = [r for r in per if not (exclude and exclude in r["kind"])]
    fitted = [r for r in kept if r.get("fitted", True)]
    out = {"H_pooled_meV_aligned": pooled_h(kept), "H_pooled_meV_aligned_fitted_kinds": pooled_h(fitted),
           "H_mean_over_kinds_meV_aligned": float(np.mean([v["H_pooled_meV_aligned"] for k, v in pk.items()
                                                           if not (exclude and exclude in k)]))}
    if "H_rmse_meV_aligned_train" in per[0]:
        out["H_pooled_meV_aligned_train"] = pooled_h(kept, "H_rmse_meV_aligned_train")
        out["H_pooled_meV_aligned_train_fitted_kinds"] = pooled_h(fitted, "H_rmse_meV_aligned_train")
    return {**out, "per_kind": pk, "mean_over_kinds_meV": float(np.mean(scored)),
            "mean_over_structures_meV": float(np.mean([r["eig_mae_meV"] for r in kept])),
            "mean_over_structures_meV_absolute": float(np.mean([r["eig_mae_meV_absolute"] for r in kept]))}


def extra_structures(spec: str, read) -> list:
    """The structures of ``FILE[:i-j][@kind]`` (``read(FILE[:i-j])`` gives them): unlabelled ones get ``kind`` (default
    the file's stem); with ``@+SUFFIX`` every structure's kind (``si8`` when unlabelled) gets ``+SUFFIX`` appended."""
    spec, _, label = spec.partition("@")
    data = read(spec)
    if label.startswith("+"):
        return [replace(sd, info={**sd.info, "kind": kind_of(sd) + label}) for sd in data]
    label = label or Path(spec.partition(":")[0]).stem
    return [sd if sd.info.get("kind") else replace(sd, info={**sd.info, "kind": label}) for sd in data]


def main(argv=None) -> int:
    from transfer_levers import add_variant_args, apply, every_structure

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_variant_args(p)
    p.add_argument("--extra", nargs="*", default=[], help="FILE[:i-j][@kind] ... more TRAINING structures (never a test-only set); "
                   "unlabelled ones get the kind after '@' (default: the file's stem); '@+SUFFIX' appends '+SUFFIX' to "
                   "every structure's kind instead (so a file's kinds get their own weights beside same-named kinds)")
    p.add_argument("--bond-weight", nargs="+", default=["none"],
                   help="XI,R_FROM,W_MAX ... heteroscedastic off-site H rows (prototype; 'none' = plain), one featurisation each")
    p.add_argument("--max-group", type=int, default=8)
    p.add_argument("--exclude", default="slab", help="kinds containing this string are left out of the means ('' = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oracle", action="store_true", help="per held-out structure, the eigenvalue MAE with one category "
                   "of H blocks from DFT (on-site, bond shells, bonds touching a defect atom): where the error lives")
    p.add_argument("--train-error", action="store_true", help="also each structure's H RMSE aligned under the fit of every "
                   "fitted structure (training error beside the held-out error: capacity against variance)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.models.hamiltonian.fit import kind_factors
    from transfer_levers import structures as read_spec

    base, ds, data = every_structure(args.config)
    for spec in args.extra:
        data += extra_structures(spec, read_spec)
    groups = groups_of(data, args.max_group, args.seed)
    say = sys.stderr if args.json else sys.stdout
    print(f"{len(data)} structures, {len(groups)} groups: " + ", ".join(f"{kind_of(data[int(g[0])])} {len(g)}" for g in groups),
          file=say, flush=True)
    records = []
    for text, bw in [(t, b) for t in args.variant for b in args.bond_weight]:
        cfg = apply(base, json.loads(text))
        bond_weight = None if bw == "none" else tuple(float(x) for x in bw.split(","))
        if bond_weight is not None:
            text = f"{text} bond_weight {bw}"
        cache = {}  # one featurisation per set of fitted structures (the sampling plan depends on it)
        for wtext in args.weights:
            table = json.loads(wtext)
            unknown = sorted(set(table or ()) - {kind_of(sd) for sd in data})
            if unknown:  # a kind left out of a table is fitted at weight 1: a misspelt one must not pass silently
                p.error(f"--weights {wtext[:60]}...: no structure has the kind(s) {unknown}")
            kw = cfg.fit.kind_weights if table is None else tuple(table.items())
            factors = kind_factors(data, kw)
            fitted = tuple(int(k) for k in np.nonzero(factors > 0)[0])
            if fitted not in cache:
                t0, c0 = time.perf_counter(), time.process_time()
                cache.clear()
                cache[fitted] = (*featurise(data, cfg, bond_weight, fitted), time.perf_counter() - t0, time.process_time() - c0)
                print(f"{text}: features and sums of {len(fitted)} fitted structures {cache[fitted][3]:.1f} s wall, "
                      f"{cache[fitted][4]:.1f} s CPU, load {os.getloadavg()[0]:.1f}; H sampling rates "
                      + ", ".join(f"{k} {v:.3f}" for k, v in cache[fitted][2].items()), file=say, flush=True)
            model, parts, rates, fw, fc = cache[fitted]
            t1, c1 = time.perf_counter(), time.process_time()
            per = cross_validate(model, parts, data, groups, factors, args.oracle, args.train_error)
            rec = {"variant": text, "bond_weight": bond_weight, "kind_weights": dict(kw), "n": len(data), "h_rates": rates,
                   **summarise(per, args.exclude),
                   "features_wall_s": fw, "features_cpu_s": fc, "cv_wall_s": time.perf_counter() - t1,
                   "cv_cpu_s": time.process_time() - c1, "load": os.getloadavg()[0], "per_structure": per}
            records.append(rec)
            line = " | ".join(f"{k} {v['eig_mae_meV']:.1f} (H {v['H_pooled_meV_aligned']:.2f}"
                              + (f" train {v['H_pooled_meV_aligned_train']:.2f}" if "H_pooled_meV_aligned_train" in v else "")
                              + f", absolute {v['eig_mae_meV_absolute']:.1f})" for k, v in rec["per_kind"].items())
            print(f"  H aligned pooled {rec['H_pooled_meV_aligned']:.3f} meV (fitted kinds {rec['H_pooled_meV_aligned_fitted_kinds']:.3f}"
                  + (f"; training error {rec['H_pooled_meV_aligned_train']:.3f} / {rec['H_pooled_meV_aligned_train_fitted_kinds']:.3f}"
                     if "H_pooled_meV_aligned_train" in rec else "")
                  + f"), mean over kinds {rec['H_mean_over_kinds_meV_aligned']:.3f}", file=say, flush=True)
            print(f"  weights {wtext}: CV eig MAE mean over kinds {rec['mean_over_kinds_meV']:.2f} meV "
                  f"(over structures {rec['mean_over_structures_meV']:.2f}) | {line} | {rec['cv_wall_s']:.0f} s wall, "
                  f"{rec['cv_cpu_s']:.0f} s CPU, load {rec['load']:.1f}", file=say, flush=True)
            for k, v in rec["per_kind"].items():
                if "oracle" in v:
                    print(f"    oracle {k:45s} " + " | ".join(f"{c} {'-' if x is None else f'{x:.1f}'}" for c, x in v["oracle"].items()),
                          file=say, flush=True)
    if args.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

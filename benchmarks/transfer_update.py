"""Where the calibrated eigenvalue update moves the H error, and which update settings to keep (issue 12).

The README job's fit (``examples/si_hamiltonian.toml``, ``eigenvalue_update`` with ``source = "calibration"``)
is run ONCE: the block fit, its per-structure sums and the calibration pass that keeps the observations
(:func:`acehamil.models.hamiltonian.calibrate.cross_validated_errors` with ``keep_observations``) are captured
(``--cache`` keeps them in a pickle).  Then, for each update setting of ``--runs``, without features again:

* **grouped CV** (the calibration's folds: every training structure of fit weight > 0 held out once; a fold's
  model is refitted from the sums without the fold and updated from the observations of ITS fitted structures
  only, its own posterior the prior, exactly as the fit's calibration does): the held-out structures' window
  eigenvalue MAE (linearised from each fold's exact errors: ``err + J (theta_f1 - theta_f)``; 48 states on
  4x4x4, relative to the own Fermi level) and their H RMSE aligned, exact, over the blocks the fit sampled for
  them (per structure ``|A theta - y - V s|^2`` from its own normal-equation sums, ``V`` the best energy zero),
  per kind and the means over kinds;
* **held-out cells** (the TOML's ``test``: never fitted, never observed): :func:`evaluate` of the updated full
  model, 6x6x6, eigenvalue MAE and H RMSE aligned per kind, and where the H error sits (``--diagnose``: on-site
  s-s / s-p / p-p, bonds by length, blocks touching an atom of coordination other than 4 within 2.75 Å).

Never reads a test-only set.  Usage::

    python benchmarks/transfer_update.py --runs none 1.5:48 3:48 --diagnose --json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def capture(config_path: str, say) -> dict:
    """Fit the TOML's training structures once; the block fit, its sums and the calibration pass."""
    import acehamil.models.hamiltonian.eigen_calibrated as ec
    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.calibrate import cross_validated_errors
    from acehamil.models.hamiltonian.fit import fit

    cfg = read_model_config(config_path)
    ds = read_dataset(cfg.data.train)
    train_idx = cfg.data.training_indices(len(ds))
    train = [ds[i] for i in train_idx]
    got = {}
    orig = ec.calibrated_update

    def grab(structures, model, parts, weights, spec, progress=False, designs=None, mapper=None, seed=0):
        observed = np.flatnonzero(np.asarray(weights, dtype=float) > 0)
        cv = cross_validated_errors(structures, model, parts, progress=progress, designs=designs, mapper=mapper,
                                    keep_observations=observed)
        got.update(model=model, cv=cv, weights=np.asarray(weights, dtype=float), spec=dict(spec), seed=seed,
                   parts=[_small_parts(p) for p in parts], kinds=[sd.info.get("kind") or "si8_szv" for sd in structures])
        return ec.update_from_cv(model, cv, weights, spec, seed=seed)

    t0, c0 = time.perf_counter(), time.process_time()
    ec.calibrated_update = grab
    try:
        fit(train, cfg, progress=False)
    finally:
        ec.calibrated_update = orig
    print(f"fit + calibration pass: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU, "
          f"load {os.getloadavg()[0]:.1f}", file=say, flush=True)
    got["test_idx"] = cfg.data.test_indices(len(ds))
    return got


def _small_parts(p) -> dict:
    """What the H aligned error of one structure needs from its sums: per (key, L) ``(AtA, Aty, yty, gauge)``."""
    out = {}
    for k, ne in p.normal.items():
        g = p.gauge.get(k, {})
        out[k] = (ne.AtA, ne.Aty, float(ne.yty), float(ne.weight_sum), next(iter(g.values())) if g else None)
    return out


def sampled_h_aligned(part: dict, coefs: dict) -> tuple:
    """Weighted squared H error of one structure's sampled blocks, aligned by the best ``V s``, and its
    weight sum: ``(sse, wsum, sse by (key, L))`` (eV^2; divide by ``wsum`` for the mean square per entry)."""
    sse, num, den, wsum, by = 0.0, 0.0, 0.0, 0.0, {}
    for (key, L), (AtA, Aty, yty, ws, g) in part.items():
        th = np.asarray(coefs[key][L], dtype=float)
        q = float(th @ AtA @ th - 2 * th @ Aty + yty)
        by[(key, L)] = q
        sse += q
        wsum += ws
        if g is not None:
            As, ys, ss = g
            num += float(th @ As) - float(ys)
            den += float(ss)
    if den > 0:
        sse -= num * num / den
    return sse, wsum, by


def run_setting(got: dict, spec: dict | None) -> dict:
    """One update setting (None: no update) scored by the calibration's grouped CV; the full model's update."""
    from acehamil.models.hamiltonian.eigen_calibrated import update_parts

    cv, model = got["cv"], got["model"]
    c0 = time.process_time()
    if spec is None:
        full, fold_coefs, err = model, [m.H.coefficients for m in cv["fold_models"]], cv["err"]
    else:
        up = update_parts(model, cv, got["weights"], spec, seed=got["seed"])
        full, fold_coefs, err = up["model"], up["fold_coefficients"], up["err"]
    sec = time.process_time() - c0
    fold_of = {int(i): f for f, val in enumerate(cv["folds"]) for i in val}
    per = []
    for i in sorted(set(int(s) for s in cv["structure"])):
        if got["weights"][i] <= 0:
            continue
        rows = cv["structure"] == i
        sse, ws, _ = sampled_h_aligned(got["parts"][i], fold_coefs[fold_of[i]])
        per.append({"i": i, "kind": got["kinds"][i], "eig_mae_meV": 1e3 * float(np.mean(np.abs(err[rows]))),
                    "H_sse": sse, "H_w": ws})
    return {"model": full, "cv": summarise_cv(per), "seconds_cpu_update": sec, "fold_coefficients": fold_coefs}


_TRAIN = {}


def train_structures(config_path: str, got: dict) -> list:
    """The structures of the calibration (the fit's: training indices of weight > 0, in order), read once."""
    if "list" not in _TRAIN:
        from acehamil.io.config import read_model_config
        from acehamil.io.dataset import read_dataset
        from acehamil.models.hamiltonian.fit import kind_factors

        cfg = read_model_config(config_path)
        ds = read_dataset(cfg.data.train)
        every = [ds[i] for i in cfg.data.training_indices(len(ds))]
        w = kind_factors(every, cfg.fit.kind_weights) * np.asarray(cfg.fit.structure_weights or np.ones(len(every)))
        _TRAIN["list"] = [sd for sd, x in zip(every, w) if x > 0]
        if len(_TRAIN["list"]) != len(got["kinds"]):
            raise RuntimeError("the calibration's structures differ from the config's")
    return _TRAIN["list"]


def exact_cv(got: dict, fold_coefs: list, structures: list) -> dict:
    """Eigenvalue MAE (E_F +- 2 eV, own Fermi levels, 4x4x4, every window state) of each held-out structure of
    fit weight > 0 under its (updated) fold model, exact."""
    import dataclasses

    from acehamil.models.hamiltonian.evaluate import eigenvalue_errors

    cv = got["cv"]
    per = []
    for f, val in enumerate(cv["folds"]):
        sub = cv["fold_models"][f]
        m = dataclasses.replace(sub, H=dataclasses.replace(sub.H, coefficients=fold_coefs[f]))
        idx = [int(i) for i in val if got["weights"][int(i)] > 0]
        e = eigenvalue_errors(m, [structures[i] for i in idx], kmesh=(4, 4, 4), window_eV=2.0, uncertainty=False,
                              path_points=2)
        for i, r in zip(idx, e["per_structure"]):
            per.append({"i": i, "kind": got["kinds"][i], "eig_mae_meV": float(r["mae_meV"]), "H_sse": 0.0, "H_w": 1.0})
    out = summarise_cv(per)
    return {k: v for k, v in out.items() if not k.startswith("H_")}


def summarise_cv(per: list) -> dict:
    kinds = {}
    for r in per:
        kinds.setdefault(r["kind"], []).append(r)
    pk = {k: {"n": len(v), "eig_mae_meV": float(np.mean([r["eig_mae_meV"] for r in v])),
              "H_rmse_meV_aligned": 1e3 * float(np.sqrt(sum(r["H_sse"] for r in v) / sum(r["H_w"] for r in v)))}
          for k, v in sorted(kinds.items())}
    bulk = {k: v for k, v in pk.items() if "slab" not in k}
    return {"per_kind": pk,
            "eig_mae_meV_structures": float(np.mean([r["eig_mae_meV"] for r in per if "slab" not in r["kind"]])),
            "eig_mae_meV_kinds": float(np.mean([v["eig_mae_meV"] for v in bulk.values()])),
            "H_rmse_meV_aligned_kinds": float(np.mean([v["H_rmse_meV_aligned"] for v in bulk.values()])),
            "H_rmse_meV_aligned_all": 1e3 * float(np.sqrt(sum(r["H_sse"] for r in per if "slab" not in r["kind"]) /
                                                          sum(r["H_w"] for r in per if "slab" not in r["kind"])))}


def where_h_error(model, structures) -> dict:
    """Squared aligned H error by category over ``structures`` (meV^2 sums and entry counts)."""
    from acehamil.models.hamiltonian.evaluate import _entry_keys, matrix_residuals

    acc = {}
    for sd in structures:
        pm = model.matrices(sd.atoms)
        res, _ = matrix_residuals(pm.H, sd.H[0])
        s_ref = -matrix_residuals(pm.H.with_data(np.zeros(pm.H.data.size)), sd.S)[0]
        V = -float(res @ s_ref) / float(s_ref @ s_ref)
        r = (res + V * s_ref) * 1e3
        keys, kidx, _ = _entry_keys(pm.H, sd.atoms.numbers, sd.basis)
        _, _, _, bidx = pm.H.coo()
        pos, cell = sd.atoms.positions, np.asarray(sd.atoms.cell)
        M = pm.H
        d = np.linalg.norm(pos[M.j] + M.shift @ cell - pos[M.i], axis=1)[bidx]
        from ase.neighborlist import neighbor_list

        ii = neighbor_list("i", sd.atoms, 2.75)
        coord = np.bincount(ii, minlength=len(sd.atoms))
        odd = (coord != 4)
        defect = (odd[M.i] | odd[M.j])[bidx]
        edges = [0.0, 0.1, 2.7, 4.2, 5.0, 6.0, 8.0, 12.5]
        shell = np.digitize(d, edges) - 1
        names = [f"{'onsite' if shell[0] == 0 else ''}"]
        for c, key in enumerate(keys):
            sel = kidx == c
            typ = key.split("/")[0] + " " + key.split("/")[2]
            for b in np.unique(shell[sel]):
                lab = "onsite" if b == 0 else f"bond {edges[b]:.1f}-{edges[b + 1]:.1f}"
                for dd in (False, True):
                    m = sel & (shell == b) & (defect == dd)
                    if m.any():
                        k = f"{typ} {lab}{' defect' if dd else ''}"
                        a = acc.setdefault(k, [0.0, 0])
                        a[0] += float(r[m] @ r[m])
                        a[1] += int(m.sum())
    del names
    return acc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--cache", default="", help="pickle of the captured fit (made if missing)")
    p.add_argument("--runs", nargs="+", default=["none", "1.5:48"],
                   help="'none' or R:STATES[:KEY=VALUE...] (noise meV, states per structure, more spec keys)")
    p.add_argument("--held-out", action="store_true", help="also evaluate the TOML's held-out cells (6x6x6)")
    p.add_argument("--diagnose", action="store_true", help="where the held-out H error sits (with --held-out)")
    p.add_argument("--exact-cv", action="store_true",
                   help="also the CV's eigenvalue MAE exactly: each held-out structure predicted by its updated fold model "
                        "(every window state, 4x4x4), not linearised")
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args(argv)
    say = sys.stderr

    if args.cache and Path(args.cache).exists():
        with open(args.cache, "rb") as fh:
            got = pickle.load(fh)
    else:
        got = capture(args.config, say)
        if args.cache:
            with open(args.cache, "wb") as fh:
                pickle.dump(got, fh, protocol=pickle.HIGHEST_PROTOCOL)
    test = None
    if args.held_out:
        from acehamil.io.config import read_model_config
        from acehamil.io.dataset import read_dataset

        cfg = read_model_config(args.config)
        ds = read_dataset(cfg.data.train)
        test = [ds[i] for i in got["test_idx"]]
    out = {}
    for text in args.runs:
        spec = None
        if text != "none":
            r, st, *more = text.split(":")
            spec = {**got["spec"], "noise_meV": float(r), "states": int(st)}
            for kv in more:
                k, v = kv.split("=")
                spec[k] = json.loads(v)
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_setting(got, spec)
        row = {"cv": res["cv"], "seconds_cpu_update": res["seconds_cpu_update"]}
        if args.exact_cv:
            row["cv_exact"] = exact_cv(got, res["fold_coefficients"], train_structures(args.config, got))
            print(f"  exact CV eig {row['cv_exact']['eig_mae_meV_structures']:.2f} / {row['cv_exact']['eig_mae_meV_kinds']:.2f}",
                  file=say, flush=True)
        if test is not None:
            from acehamil.models.hamiltonian.evaluate import by_kind, evaluate

            ev = evaluate(res["model"], test, kmesh=(6, 6, 6), window_eV=2.0)
            row["held_out"] = {"by_kind": by_kind(ev["per_structure"]), "H_rmse_meV_aligned": ev["H"]["rmse_meV_aligned"],
                               "eig_mae_meV": ev["eigenvalues"]["mae_meV"]}
            if args.diagnose:
                row["held_out"]["where"] = where_h_error(res["model"], test)
        c = res["cv"]
        print(f"{text}: CV eig {c['eig_mae_meV_structures']:.2f} / {c['eig_mae_meV_kinds']:.2f} meV (structures / kinds), "
              f"H aligned {c['H_rmse_meV_aligned_all']:.3f} / {c['H_rmse_meV_aligned_kinds']:.3f}"
              + (f"; held-out eig {row['held_out']['eig_mae_meV']:.2f}, H {row['held_out']['H_rmse_meV_aligned']:.3f}"
                 if "held_out" in row else "")
              + f"  [{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU, load "
              f"{os.getloadavg()[0]:.1f}]", file=say, flush=True)
        out[text] = row
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

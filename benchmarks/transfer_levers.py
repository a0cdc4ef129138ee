"""Which lever moves the held-out eigenvalue error of the example model?  (issue 12, item 3)

Fits a configuration (default ``examples/si_hamiltonian.toml``, without the error-bar calibration,
which leaves the mean model as it is) once per ``--variant`` (a JSON override of its tables, e.g.
``'{"s_offsite": {"n_max": 24}}'``; ``'{}'`` = the configuration itself) and scores the
configuration's held-out ``[data] test`` structures (TRAINING kinds never fitted; never a test-only
set), per structure kind (``info["kind"]``, unlabelled = ``si8``):

* eigenvalue MAE within E_F +- 2 eV, each relative to its own Fermi level, on about 6 k-points per
  5.43 Å; H RMSE aligned (meV); S RMSE;
* with ``--oracle``: the eigenvalue MAE with the model's S replaced by DFT's S (same model H, the
  cell's energy zero ``V S`` taken with DFT's S), and with the model's H replaced by DFT's (aligned by
  the best ``V S``) and the model's S kept: how much of the error each matrix carries;
* with ``--shells``: per bond-length shell, the rms model error of the H and S entries beside the rms
  of the DFT entries (how large each shell's error is against its own magnitude).

``--extra FILE[:i-j] ...`` appends structures to the training set (e.g. new kinds from the
generator), ``--extra-weight`` their weight.  Fit wall and CPU seconds and the load are printed
beside every variant; ``--json`` prints one record per variant.

Usage::

    python benchmarks/transfer_levers.py --variant '{}' '{"s_offsite": {"n_max": 24, "max_degree": [24]}}' --oracle
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

ROOT = Path(__file__).resolve().parents[1]
SHELLS = (0.0, 2.7, 4.2, 5.0, 6.0, 7.0, 8.0, 10.0, 12.01)  # Å; on-site blocks are their own row


def kmesh_for(atoms) -> tuple:
    """About 6 k-points per 5.43 Å of each periodic cell vector (at least 1)."""
    lengths = np.linalg.norm(np.asarray(atoms.cell.array), axis=1)
    return tuple(int(max(1, round(6 * 5.43 / x))) if p else 1 for x, p in zip(lengths, atoms.pbc))


def apply(cfg, variant: dict):
    """``cfg`` with the tables of ``variant`` replaced key by key (lists become tuples)."""
    for table, kv in variant.items():
        kv = {k: (tuple(x) if isinstance(x, list) else tuple(x.items()) if isinstance(x, dict) else x) for k, x in kv.items()}
        cfg = replace(cfg, **{table: replace(getattr(cfg, table), **kv)})
    return cfg


def add_variant_args(p) -> None:
    """The options ``transfer_cv.py`` and ``transfer_bias.py`` share: ``--config``, ``--variant``, ``--weights``."""
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--variant", nargs="+", default=["{}"], help="JSON overrides of the configuration, one featurisation each")
    p.add_argument("--weights", nargs="+", default=["null"], help="JSON kind_weights tables ('null': the configuration's)")


def every_structure(config: str) -> tuple:
    """``(base, ds, data)``: the configuration with its calibration off, its ``[data] train`` dataset and every
    structure in it (the test ones too: the caller decides what they are used for)."""
    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset

    base = read_model_config(config)
    base = replace(base, uncertainty=replace(base.uncertainty, calibrate=False))
    ds = read_dataset(base.data.train)
    return base, ds, [ds[i] for i in range(len(ds))]


def structures(spec: str) -> list:
    """StructureData of ``FILE[:i-j]`` (inclusive index range), parsed as ``transfer_diagnosis.py`` does."""
    from transfer_diagnosis import structures as labelled  # this folder is on sys.path when run as a script

    return [sd for _, sd in labelled(spec)]


def on_pattern(ref, pattern):
    """``ref``'s blocks on ``pattern``'s block list (zeros where ``ref`` has none)."""
    return pattern.with_data(ref.on_pattern(pattern)[0])


def energy_zero_fit(H, H_ref, S_ref) -> float:
    """Least-squares ``V`` with ``H ~ H_ref + V S_ref`` over ``H``'s blocks, eV."""
    s = on_pattern(S_ref, H).data
    return float((H.data - on_pattern(H_ref, H).data) @ s / (s @ s))


def oracles(model, sd, kmesh) -> dict:
    """Eigenvalue MAE (meV) of the model and with some of its blocks replaced by DFT's: its S (model H),
    its H (model S), H on-site blocks, H bonds < 4.2 Å, H bonds >= 6 Å."""
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.models.hamiltonian.model import ModelMatrices

    m = model.matrices(sd.atoms)
    S_dft, S_dft_h = on_pattern(sd.S, m.S), on_pattern(sd.S, m.H).data  # on S's and on H's block pattern
    H_local = m.H.data - m.energy_zero * on_pattern(m.S, m.H).data
    V = energy_zero_fit(m.H, sd.H[0], sd.S)
    H_dft = on_pattern(sd.H[0], m.H).data + V * S_dft_h
    pos, cell = sd.atoms.positions, np.asarray(sd.atoms.cell.array)
    dist = np.repeat(np.linalg.norm(pos[m.H.j] - pos[m.H.i] + m.H.shift @ cell, axis=1), np.diff(m.H.offsets))

    def mixed(sel):
        return ModelMatrices(m.H.with_data(np.where(sel, H_dft, m.H.data)), m.S, ())

    preds = {"model": m, "dft_S": ModelMatrices(m.H.with_data(H_local + m.energy_zero * S_dft_h), S_dft, ()),
             "dft_H": mixed(dist >= 0), "dft_onsite": mixed(dist == 0), "dft_bonds<4.2": mixed((dist > 0) & (dist < 4.2)),
             "dft_bonds>=6": mixed(dist >= 6.0)}
    return {name: evaluate(model, [sd], kmesh=kmesh, uncertainty=False, predictions=[pred])["eigenvalues"]["mae_meV"]
            for name, pred in preds.items()}


def shell_errors(model, sd) -> dict:
    """Per bond-length shell: rms of (model - DFT) and rms of DFT entries, H (meV, aligned) and S."""
    m = model.matrices(sd.atoms)
    H_dft, S_dft = on_pattern(sd.H[0], m.H), on_pattern(sd.S, m.H)  # every entry on H's block pattern
    V = energy_zero_fit(m.H, sd.H[0], sd.S)
    pos, cell = sd.atoms.positions, np.asarray(sd.atoms.cell.array)
    dist = np.linalg.norm(pos[m.H.j] - pos[m.H.i] + m.H.shift @ cell, axis=1)
    sizes = np.diff(m.H.offsets)
    d_entry = np.repeat(dist, sizes)
    dh = (m.H.data - H_dft.data - V * S_dft.data) * 1e3
    ds = on_pattern(m.S, m.H).data - S_dft.data
    out = {}
    for a, b in [(-1.0, 1e-9)] + list(zip(SHELLS[:-1], SHELLS[1:])):
        sel = (d_entry > a) & (d_entry < b)
        if sel.any():
            out["on-site" if a < 0 else f"{a:g}-{b:g}"] = {"n": int(sel.sum()), "dH_sq": float((dh[sel] ** 2).sum()),
                                   "H_sq": float((((H_dft.data[sel] + V * S_dft.data[sel]) * 1e3) ** 2).sum()),
                                   "dS_sq": float((ds[sel] ** 2).sum()), "S_sq": float((S_dft.data[sel] ** 2).sum())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--variant", nargs="+", default=["{}"], help="JSON overrides of the configuration, one fit each")
    p.add_argument("--extra", nargs="*", default=[], help="FILE[:i-j] ... appended to the training structures")
    p.add_argument("--extra-weight", type=float, default=1.0)
    p.add_argument("--probe", nargs="*", default=[], help="FILE[:i-j] ... more held-out TRAINING candidates to score "
                   "(kind: info['kind'], else the file name); never a test-only set")
    p.add_argument("--oracle", action="store_true", help="eigenvalue MAE with DFT's S / DFT's H substituted")
    p.add_argument("--shells", action="store_true", help="H and S errors per bond-length shell")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.evaluate import by_kind, evaluate
    from acehamil.models.hamiltonian.fit import fit

    base = read_model_config(args.config)
    base = replace(base, uncertainty=replace(base.uncertainty, calibrate=False))
    ds = read_dataset(base.data.train)
    train = [ds[i] for i in base.data.training_indices(len(ds))]
    test = [ds[i] for i in base.data.test_indices(len(ds))]
    extra = [sd for spec in args.extra for sd in structures(spec)]
    for spec in args.probe:
        stem = Path(spec.partition(":")[0]).stem
        test += [sd if sd.info.get("kind") else replace(sd, info={**sd.info, "kind": stem}) for sd in structures(spec)]
    say = sys.stderr if args.json else sys.stdout
    records = []
    for text in args.variant:
        cfg = apply(base, json.loads(text))
        if extra:
            w = tuple(cfg.fit.structure_weights or (1.0,) * len(train)) + (args.extra_weight,) * len(extra)
            cfg = replace(cfg, fit=replace(cfg.fit, structure_weights=w))
        t0, c0 = time.perf_counter(), time.process_time()
        model = fit(train + extra, cfg, progress=False)
        wall, cpu, load = time.perf_counter() - t0, time.process_time() - c0, os.getloadavg()[0]
        per, orc, shells = [], {}, {}
        for sd in test:
            r = evaluate(model, [sd], kmesh=kmesh_for(sd.atoms), uncertainty=False)
            per += r["per_structure"]
            kind = sd.info.get("kind") or "si8"
            if args.oracle:
                for k, v in oracles(model, sd, kmesh_for(sd.atoms)).items():
                    orc.setdefault(kind, {}).setdefault(k, []).append(v)
            if args.shells:
                for sh, v in shell_errors(model, sd).items():
                    acc = shells.setdefault(sh, {"n": 0, "dH_sq": 0.0, "H_sq": 0.0, "dS_sq": 0.0, "S_sq": 0.0})
                    for k in acc:
                        acc[k] += v[k]
        kinds = by_kind(per, default_kind="si8")
        rec = {"variant": json.loads(text), "n_train": len(train) + len(extra), "fit_wall_s": wall, "fit_cpu_s": cpu,
               "load": load, "per_kind": {k: {"n": v["n"], "eig_mae_meV": v["eig_mae_meV"],
                                             "H_rmse_meV_aligned": v["H_rmse_meV_aligned"]} for k, v in kinds.items()},
               "mean_over_kinds_meV": float(np.mean([v["eig_mae_meV"] for v in kinds.values()])),
               "S_rmse": float(np.sqrt(np.mean([r["S_rmse"] ** 2 for r in per])))}
        if orc:
            rec["oracle"] = {k: {n: float(np.mean(x)) for n, x in v.items()} for k, v in orc.items()}
        if shells:
            rec["shells"] = {k: {"n": v["n"], "H_err_meV": np.sqrt(v["dH_sq"] / v["n"]), "H_rms_meV": np.sqrt(v["H_sq"] / v["n"]),
                                 "S_err": np.sqrt(v["dS_sq"] / v["n"]), "S_rms": np.sqrt(v["S_sq"] / v["n"])}
                             for k, v in shells.items()}
        records.append(rec)
        line = " | ".join(f"{k}: {v['eig_mae_meV']:.1f} (H {v['H_rmse_meV_aligned']:.2f})" for k, v in rec["per_kind"].items())
        print(f"{text}: fit {wall:.1f} s wall, {cpu:.1f} s CPU, load {load:.1f} | eig MAE mean over kinds "
              f"{rec['mean_over_kinds_meV']:.1f} meV | {line} | S rmse {rec['S_rmse']:.2e}", file=say, flush=True)
        for k, v in rec.get("oracle", {}).items():
            print(f"    oracle {k}: " + ", ".join(f"{n} {x:.1f}" for n, x in v.items()) + " meV", file=say, flush=True)
        for k, v in rec.get("shells", {}).items():
            print(f"    shell {k:>9s} Å: n {v['n']:6d}  H err {v['H_err_meV']:7.3f} / rms {v['H_rms_meV']:8.2f} meV   "
                  f"S err {v['S_err']:.2e} / rms {v['S_rms']:.2e}", file=say, flush=True)
    if args.json:
        print(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

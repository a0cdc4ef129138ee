"""The d-shell basis study (issue 12 item 4): H/S model of Si in gth-dzvp-molopt-sr (13 orbitals per atom).

Fits ``benchmarks/dshell.toml`` (the example's architecture: on-site and bond-environment ACE blocks,
two-centre S, BLR) on the d-shell training cells and reports, per test set:

* eigenvalue MAE / max within E_F +- 2 eV (each relative to its own Fermi level), aligned H RMSE, S RMSE;
* the S(k) conditioning: smallest eigenvalue of DFT's and of the model's S(k) over a 4x4x4 grid
  (must stay > 0 for the generalized eigen-solve), and DFT's largest condition number over k;
* what each matrix's error does to the solve: eigenvalue MAE with DFT's H and the model's S, and with the
  model's H and DFT's S;
* the cost of storing the data in float32 (change of each structure's band error against PySCF's own bands,
  and the file size).

Data are not shipped (one 8-atom cell is ~3.5 MB in float64); make them with the generator (commands in
``docs/models.md``) into a folder ``DIR`` holding ``train.h5`` and, as test sets, any of ``test_in.h5``
(in distribution), ``test_strain.h5`` (+-4 %), ``test_rattle.h5`` (0.2 Å), ``test_vac.h5`` (vacancy).
The configuration's ``[data] test`` cells of ``train.h5`` are the validation cells used to choose the settings
(``--scan`` compares candidate settings on them only); the test files are never fitted and never used to
choose settings.

Usage::

    python benchmarks/dshell.py --data DIR [--json]          # fit, score every test set
    python benchmarks/dshell.py --data DIR --scan            # candidate settings on the validation cells
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: test files (stem, label) scored when present in --data
TEST_SETS = [("test_in", "in distribution (0.05-0.15 Å, strain <= 2 %)"), ("test_strain", "isotropic strain +-4 %"),
             ("test_rattle", "0.2 Å displacements"), ("test_vac", "vacancy (7 atoms)")]

#: candidate settings compared by --scan on the validation cells (overrides of the TOML's sections)
CANDIDATES = {
    "toml": {},
    "onsite r_cut 5.5": {"h_onsite": {"r_cut": 5.5}},
    "offsite r_env 4.5": {"h_offsite": {"r_env": 4.5}},
    "offsite degree (12, 8)": {"h_offsite": {"max_degree": (12, 8)}},
}


def kmesh_for(atoms) -> tuple:
    """About 6 k-points per 5.43 Å of each cell vector (as benchmarks/learning_curve.py)."""
    return tuple(int(max(1, round(6 * 5.43 / x))) for x in np.linalg.norm(np.asarray(atoms.cell.array), axis=1))


def overlap_spectrum(S, atoms, n: int = 4) -> tuple:
    """Smallest eigenvalue and largest condition number of ``S(k)`` over an ``n^3`` Gamma-centred grid."""
    from acehamil.tb.bloch import BlochAssembler

    k = np.stack(np.meshgrid(*[np.arange(n) / n] * 3, indexing="ij"), -1).reshape(-1, 3)
    Sk = BlochAssembler(S).dense(k)
    ev = np.linalg.eigvalsh(0.5 * (Sk + Sk.conj().transpose(0, 2, 1)))
    return float(ev[:, 0].min()), float((ev[:, -1] / ev[:, 0]).max()) if ev[:, 0].min() > 0 else float("inf")


def window_mae(H, S, sd, kmesh, window: float = 2.0) -> float:
    """Eigenvalue MAE (meV) of ``(H, S)`` against the structure's DFT ``(H, S)`` within E_F +- window, Fermi-aligned."""
    from acehamil.tb.dos import monkhorst_pack
    from acehamil.tb.eigen import solve
    from acehamil.tb.smearing import fermi_level

    kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
    e_ref, e_mod = solve(sd.H[0], sd.S, kp), solve(H, S, kp)
    ef_ref = fermi_level(e_ref[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    ef_mod = fermi_level(e_mod[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    mask = np.abs(e_ref - ef_ref) <= window
    w = np.broadcast_to(wk[:, None], e_ref.shape)[mask]
    err = np.abs((e_mod - ef_mod) - (e_ref - ef_ref))[mask]
    return float((w * err).sum() / w.sum() * 1e3)


def score_structure(model, sd, light: bool = False) -> dict:
    """Every figure of one structure (meV, dimensionless for S); ``light``: eigenvalues and H only."""
    from acehamil.models.hamiltonian.evaluate import evaluate

    km = kmesh_for(sd.atoms)
    res = evaluate(model, [sd], kmesh=km, uncertainty=False)
    if light:
        return {"name": sd.info.get("name", "?"), "eig_mae_meV": res["eigenvalues"]["mae_meV"],
                "eig_max_meV": res["eigenvalues"]["max_meV"], "h_rmse_meV_aligned": res["H"]["rmse_meV_aligned"]}
    H, S = model.predict(sd.atoms)
    smin_dft, cond_dft = overlap_spectrum(sd.S, sd.atoms)
    smin_mod, cond_mod = overlap_spectrum(S, sd.atoms)
    t0 = time.process_time()
    only_s = window_mae(sd.H[0], S, sd, km)
    only_h = window_mae(H, sd.S, sd, km)
    return {"name": sd.info.get("name", "?"), "natoms": len(sd.atoms), "kmesh": list(km),
            "eig_mae_meV": res["eigenvalues"]["mae_meV"], "eig_max_meV": res["eigenvalues"]["max_meV"],
            "h_rmse_meV_aligned": res["H"]["rmse_meV_aligned"], "s_rmse": res["S"]["rmse"],
            "s_min_eig_dft": smin_dft, "s_min_eig_model": smin_mod, "s_cond_dft": cond_dft, "s_cond_model": cond_mod,
            "eig_mae_meV_model_S_only": only_s, "eig_mae_meV_model_H_only": only_h,
            "solve_cpu_s": time.process_time() - t0}


def summarise(rows: list) -> dict:
    """Means over structures (each counts once), extremes of S."""
    keys = ("eig_mae_meV", "h_rmse_meV_aligned", "s_rmse", "eig_mae_meV_model_S_only", "eig_mae_meV_model_H_only")
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out.update(eig_max_meV=max(r["eig_max_meV"] for r in rows), s_min_eig_dft=min(r["s_min_eig_dft"] for r in rows),
               s_min_eig_model=min(r["s_min_eig_model"] for r in rows), s_cond_dft=max(r["s_cond_dft"] for r in rows),
               s_cond_model=max(r["s_cond_model"] for r in rows), n_structures=len(rows))
    return out


def float32_cost(structures: list) -> dict:
    """Band error against PySCF's own bands, float64 vs float32 storage, and the file sizes."""
    from acehamil.io.band_check import band_errors
    from acehamil.io.dataset import read_dataset, write_dataset

    structures = [replace(sd, info={**sd.info, "name": f"{k:03d}-{sd.info.get('name', '')}"})  # unique across files
                  for k, sd in enumerate(structures)]
    out = {"checked_max_meV_f64": [], "checked_max_meV_f32": [], "all_max_meV_f64": [], "all_max_meV_f32": []}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prec in ("float64", "float32"):
            path = Path(tmp) / f"{prec}.h5"
            write_dataset(path, structures, precision=prec)
            sizes[prec] = path.stat().st_size
            for sd in read_dataset(path):
                be = band_errors(sd)
                tag = "f64" if prec == "float64" else "f32"
                out[f"checked_max_meV_{tag}"].append(be["checked_max_meV"])
                out[f"all_max_meV_{tag}"].append(be["all"]["max_meV"])
    change = max(abs(a - b) for a, b in zip(out["all_max_meV_f32"], out["all_max_meV_f64"]))
    return {"bytes_per_structure_float64": sizes["float64"] / len(structures),
            "bytes_per_structure_float32": sizes["float32"] / len(structures),
            "band_error_max_meV_float64": max(out["checked_max_meV_f64"]),
            "band_error_max_meV_float32": max(out["checked_max_meV_f32"]),
            "band_error_all_bands_max_meV_float64": max(out["all_max_meV_f64"]),
            "band_error_all_bands_max_meV_float32": max(out["all_max_meV_f32"]),
            "largest_change_meV": change, "n_structures": len(structures)}


def load_config(path: str, data: Path):
    """The TOML's configuration with its ``[data] train`` files looked up in ``data`` (calibration off)."""
    from acehamil.io.config import read_model_config

    cfg = read_model_config(path)
    train = cfg.data.train if isinstance(cfg.data.train, tuple) else (cfg.data.train,)
    files = tuple(str(data / Path(t).name) for t in train)
    for f in files:
        if not Path(f).exists():
            raise SystemExit(f"{f} not found: make the d-shell data first (docs/models.md, 'd-shell basis')")
    cfg = replace(cfg, data=replace(cfg.data, train=files if len(files) > 1 else files[0]))
    if cfg.uncertainty.calibrate:
        cfg = replace(cfg, uncertainty=replace(cfg.uncertainty, calibrate=False))
    return cfg


def with_overrides(cfg, overrides: dict):
    return replace(cfg, **{sec: replace(getattr(cfg, sec), **vals) for sec, vals in overrides.items()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "benchmarks" / "dshell.toml"))
    p.add_argument("--data", default=os.environ.get("ACEHAMIL_DSHELL_DATA"),
                   help="folder with train.h5 and test_*.h5 (default $ACEHAMIL_DSHELL_DATA)")
    p.add_argument("--scan", action="store_true", help="compare CANDIDATES on the validation cells only")
    p.add_argument("--model", default=None, help="model file: loaded when it exists, else the fit is saved there")
    p.add_argument("--sets", nargs="*", default=None, metavar="STEM",
                   help=f"score only these test files (stems of {', '.join(t for t, _ in TEST_SETS)}; default all present)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.data:
        raise SystemExit("--data DIR (or $ACEHAMIL_DSHELL_DATA) is needed: the d-shell data are not shipped")
    data = Path(args.data)

    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.fit import fit

    cfg = load_config(args.config, data)
    ds = read_dataset(cfg.data.train)
    val_idx = cfg.data.test_indices(len(ds))
    val = [ds[i] for i in val_idx]
    train_idx = cfg.data.training_indices(len(ds))
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    load = lambda: f"load {os.getloadavg()[0]:.1f}"  # noqa: E731
    if args.scan:
        rows = {}
        for name, ov in CANDIDATES.items():
            c = with_overrides(cfg, ov)
            t0, c0 = time.perf_counter(), time.process_time()
            model = fit([ds[i] for i in train_idx], c, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows_v = [score_structure(model, sd, light=True) for sd in val]
            r = {k: float(np.mean([x[k] for x in rows_v])) for k in ("eig_mae_meV", "h_rmse_meV_aligned")}
            r["eig_max_meV"] = max(x["eig_max_meV"] for x in rows_v)
            rows[name] = {**r, "fit_wall_s": wall, "fit_cpu_s": cpu}
            say(f"{name:24s} validation eig MAE {r['eig_mae_meV']:6.2f} meV (max {r['eig_max_meV']:6.1f}), H RMSE aligned "
                f"{r['h_rmse_meV_aligned']:.3f} meV; fit {wall:.0f} s wall, {cpu:.0f} s CPU, {load()}")
        if args.json:
            print(json.dumps({"validation": [ds.names[i] for i in val_idx], "n_train": len(train_idx), "candidates": rows}))
        return 0

    t0, c0 = time.perf_counter(), time.process_time()
    if args.model and Path(args.model).exists():
        from acehamil.io.models import load_model

        model = load_model(args.model)
        say(f"model read from {args.model} (not refitted)")
    else:
        model = fit([ds[i] for i in train_idx], cfg, progress=False)
        if args.model:
            from acehamil.io.models import save_model

            save_model(model, args.model)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    say(f"fit on {len(train_idx)} cells: {wall:.0f} s wall, {cpu:.0f} s CPU, {load()}")
    sets = {}
    all_structs = list(val)
    for label, structs in [("validation (held-out training cells)", val)] * bool(val) + [
            (lab, list(read_dataset(data / f"{stem}.h5"))) for stem, lab in TEST_SETS
            if (data / f"{stem}.h5").exists() and (args.sets is None or stem in args.sets)]:
        if label != "validation (held-out training cells)":
            all_structs += structs
        t1 = time.perf_counter()
        rows = [score_structure(model, sd) for sd in structs]
        s = summarise(rows)
        sets[label] = {**s, "structures": rows}
        say(f"{label:42s} n={s['n_structures']}: eig MAE {s['eig_mae_meV']:6.2f} meV (max {s['eig_max_meV']:6.1f}), "
            f"H RMSE aligned {s['h_rmse_meV_aligned']:.3f} meV, S RMSE {s['s_rmse']:.1e}; min eig S(k) DFT "
            f"{s['s_min_eig_dft']:.2e} model {s['s_min_eig_model']:.2e}, cond DFT {s['s_cond_dft']:.0f}; "
            f"eig MAE with model S only {s['eig_mae_meV_model_S_only']:.2f}, model H only "
            f"{s['eig_mae_meV_model_H_only']:.2f} meV ({time.perf_counter() - t1:.0f} s, {load()})")
    f32 = float32_cost(all_structs)
    say(f"float32 storage: {f32['bytes_per_structure_float32'] / 1e6:.2f} MB per structure "
        f"(float64 {f32['bytes_per_structure_float64'] / 1e6:.2f}); band error vs PySCF max "
        f"{f32['band_error_max_meV_float64']:.4f} -> {f32['band_error_max_meV_float32']:.4f} meV "
        f"(all bands {f32['band_error_all_bands_max_meV_float64']:.3f} -> {f32['band_error_all_bands_max_meV_float32']:.3f})")
    if args.json:
        print(json.dumps({"config": args.config, "data": str(data), "n_train": len(train_idx),
                          "norb_per_atom": sum(sh.size for sh in ds[0].basis.shells_of(int(ds[0].atoms.numbers[0]))),
                          "fit_wall_s": wall, "fit_cpu_s": cpu, "load": os.getloadavg()[0], "sets": sets, "float32": f32}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Calibration of the H model's eigenvalue error bars, per structure kind, and their cost.

Fits (or loads, ``--model``) the example model (``examples/si_hamiltonian.toml``, BLR with the
spread calibrated on a split of its training structures) and evaluates, with the same code as
``acehamil evaluate --json``, the coverage of the 90 % / 68 % eigenvalue intervals (E_F +- 2 eV,
6x6x6 grid) and Spearman(sigma, |error|) on

* the held-out structures of the TOML (in distribution), and
* every ``test_*.h5`` in ``--ood-dir`` (default ``/work/gen`` or ``$ACEHAMIL_OOD_DIR``; strained /
  0.2 Å displaced 8-atom cells, vacancy cells, a 64-atom cell), each file one kind;
  evaluation only.

Cost: wall time of prediction + eigen-solve on the grid, without and with the uncertainty
(draws, their eigenvalues and Fermi levels), for the first held-out structure.

Usage::

    python benchmarks/uncertainty.py [--model model.h5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cost_ratio(model, sd, kmesh=(6, 6, 6), repeats: int = 3) -> dict:
    from acehamil.models.hamiltonian.calibrate import eigen_parts
    from acehamil.tb.dos import monkhorst_pack
    from acehamil.tb.eigen import solve

    kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
    plain, unc = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        H, S = model.predict(sd.atoms)
        solve(H, S, kp)
        t1 = time.perf_counter()
        eigen_parts(model, sd.atoms, kp, wk, sd.n_electrons, model.config.uncertainty.n_samples,
                    np.random.default_rng(0), split=False)
        t2 = time.perf_counter()
        plain.append(t1 - t0)
        unc.append(t2 - t1)
    return {"plain_s": min(plain), "with_uncertainty_s": min(unc), "ratio": min(unc) / min(plain),
            "n_samples": model.config.uncertainty.n_samples, "kmesh": list(kmesh)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--model", default=None, help="use this fitted model instead of fitting the config")
    p.add_argument("--ood-dir", default=os.environ.get("ACEHAMIL_OOD_DIR", "/work/gen"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.io.models import load_model
    from acehamil.models.hamiltonian.evaluate import eigenvalue_errors
    from acehamil.models.hamiltonian.fit import fit

    cfg = read_model_config(args.config)
    ds = read_dataset(cfg.data.train)
    t0 = time.perf_counter()
    if args.model:
        model = load_model(args.model)
    else:
        model = fit([ds[i] for i in cfg.data.training_indices(len(ds))], cfg, progress=False)
    t_fit = time.perf_counter() - t0
    kinds = {"in-distribution (held out)": [ds[i] for i in cfg.data.test_indices(len(ds))]}
    for f in sorted(Path(args.ood_dir).glob("test_*.h5")):
        try:
            d = read_dataset(f)
            kinds[f.stem] = [d[i] for i in range(len(d))]
        except Exception as err:  # noqa: BLE001 - a file still being generated is skipped, and said so
            print(f"skipping {f}: {type(err).__name__}: {err}", file=sys.stderr)
    rows = {}
    for name, structs in kinds.items():
        if not structs:
            continue
        r = eigenvalue_errors(model, structs, kmesh=(6, 6, 6), window_eV=2.0, path_points=2)
        u = r.get("uncertainty", {})
        rows[name] = {"n_structures": len(structs), "mae_meV": r["mae_meV"],
                      **{k: u.get(k) for k in ("coverage_90", "coverage_68", "spearman_sigma_error", "n", "mean_sigma_meV")},
                      "per_structure": u.get("per_structure")}
        print(f"{name:<28} n {len(structs):3d}  MAE {r['mae_meV']:7.2f} meV  mean sigma {u.get('mean_sigma_meV', float('nan')):7.2f} meV  "
              f"cov90 {u.get('coverage_90', float('nan')):.3f}  cov68 {u.get('coverage_68', float('nan')):.3f}  "
              f"spearman {u.get('spearman_sigma_error', float('nan')):.3f}", file=sys.stderr, flush=True)
    out = {"kinds": rows, "calibration": model.report.get("uncertainty"), "fit_seconds": t_fit,
           "cost": cost_ratio(model, kinds["in-distribution (held out)"][0]), "load_average": list(os.getloadavg())}
    print(f"cost: plain {out['cost']['plain_s']:.2f} s, with uncertainty +{out['cost']['with_uncertainty_s']:.2f} s "
          f"(ratio of the extra to plain {out['cost']['ratio']:.2f})", file=sys.stderr)
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

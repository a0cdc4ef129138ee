"""How the held-out error of the H/S models falls with the polynomial degree.

Fits the example configuration (``examples/si_hamiltonian.toml``) with the
off-site and on-site degrees scaled down/up and prints held-out H RMSE (meV, modulo the energy zero),
S RMSE and eigenvalue MAE (meV, E_F +- 2 eV) per setting.

Usage::

    python benchmarks/hamiltonian_degree.py [--config ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def scaled(cfg, step: int):
    """Config with every max_degree entry shifted by ``step`` (n_max follows the nu=1 degree)."""
    def shift(fc):
        if fc.max_nu == 0:
            return fc
        deg = tuple(max(1, d + step) for d in fc.max_degree)
        return replace(fc, max_degree=deg, n_max=max(2, min(fc.n_max + step, int(deg[0]) + 1)))

    return replace(cfg, h_onsite=shift(cfg.h_onsite), h_offsite=shift(cfg.h_offsite), s_offsite=shift(cfg.s_offsite))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--steps", type=int, nargs="+", default=[-4, -2, 0, 2])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.models.hamiltonian.fit import fit

    base = read_model_config(args.config)
    ds = read_dataset(base.data.train)
    train = [ds[i] for i in base.data.training_indices(len(ds))]
    test = [ds[i] for i in base.data.test_indices(len(ds))]
    rows = []
    for step in args.steps:
        cfg = scaled(base, step)
        t0 = time.perf_counter()
        model = fit(train, cfg, progress=False)
        sec = time.perf_counter() - t0
        res = evaluate(model, test, kmesh=(4, 4, 4))
        rows.append({"step": step, "h_onsite_degree": list(cfg.h_onsite.max_degree), "h_offsite_degree": list(cfg.h_offsite.max_degree),
                     "s_offsite_degree": list(cfg.s_offsite.max_degree), "n_features_H": sum(v["n_features"] for v in model.report["H"].values()),
                     "seconds_fit": sec, "H_rmse_meV": res["H"]["rmse_meV"], "H_rmse_meV_aligned": res["H"]["rmse_meV_aligned"],
                     "S_rmse": res["S"]["rmse"],
                     "eig_mae_meV": res["eigenvalues"]["mae_meV"]})
        if not args.json:
            r = rows[-1]
            print(f"degrees on {r['h_onsite_degree']} off {r['h_offsite_degree']} S {r['s_offsite_degree']}: "
                  f"{r['n_features_H']} H features, fit {sec:.1f} s, H RMSE {r['H_rmse_meV_aligned']:.3f} meV (modulo V S; "
                  f"{r['H_rmse_meV']:.3f} absolute), "
                  f"S RMSE {r['S_rmse']:.2e}, eig MAE {r['eig_mae_meV']:.3f} meV", flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

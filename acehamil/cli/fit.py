"""``acehamil fit CONFIG.toml -o model.h5``: fit equivariant ACE models of H and S.

The TOML keys and defaults are documented in :mod:`acehamil.models.config`
and ``docs/models.md``.  Structures listed under ``[data] test`` are never
used in fitting; when present they are evaluated after the fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._outputs import add_overwrite_arg, check_outputs, config_input_files


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit ACE models of H and S from a TOML config", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("-o", "--output", required=True, help="model file to write (HDF5)")
    p.add_argument("--report", help="also write the fit report (and test errors) as JSON here")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def format_report(report: dict) -> str:
    """Per block type table: n blocks, train RMSE, validation RMSE/MAE, condition number."""
    lines = []
    for name, unit in (("H", "meV"), ("S", "")):
        lines.append(f"{name} blocks{'':<22}{'n':>8}{'rmse_train':>12}{'rmse_val':>12}{'mae_val':>12}{'cond':>10}  {unit}")
        for key, st in report.get(name, {}).items():
            lines.append(f"  {key:<28}{st['n_blocks']:>8}{st['train_rmse']:>12.4g}{st.get('val_rmse', float('nan')):>12.4g}"
                         f"{st.get('val_mae', float('nan')):>12.4g}{st['condition_number']:>10.2g}")
    return "\n".join(lines)


def resolve_indices(indices, n: int) -> list:
    """Dataset indices, negative ones counted from the end (Python style)."""
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ValueError(f"structure indices {bad} out of range for a dataset of {n}")
    return [i % n for i in indices]


def training_indices(config, n: int) -> list:
    test = set(resolve_indices(config.data.test, n))
    idx = resolve_indices(config.data.structures, n) or [i for i in range(n) if i not in test]
    if set(idx) & test:
        raise ValueError(f"structures {sorted(set(idx) & test)} are in both train and test")
    if not idx:
        raise ValueError("no training structures left after removing [data] test")
    return idx


def run(args) -> int:
    from ..io.dataset import read_dataset
    from ..io.models import save_model
    from ..models.config import ModelConfig
    from ..models.hamiltonian_eval import evaluate
    from ..models.hamiltonian_fit import fit

    check_outputs(config_input_files(args.config), {"-o": args.output, "--report": args.report}, overwrite=args.overwrite)
    cfg = ModelConfig.from_toml(args.config)
    if not cfg.data.train:
        raise ValueError(f"{args.config}: [data] train (the dataset file) is required")
    ds = read_dataset(cfg.data.train)
    idx = training_indices(cfg, len(ds))
    train = [ds[i] for i in idx] if len(idx) <= 64 else _Lazy(ds, idx)
    model = fit(train, cfg, progress=not args.quiet)
    report = dict(model.report)
    report["dataset_indices"] = idx
    if cfg.data.test:
        test_idx = resolve_indices(cfg.data.test, len(ds))
        report["test"] = evaluate(model, [ds[i] for i in test_idx])
        report["test"]["indices"] = test_idx
    save_model(model, args.output)
    if not args.quiet:
        print(format_report(report), file=sys.stderr)
        print(f"fit {report['seconds_fit']:.1f} s; model written to {args.output}", file=sys.stderr)
        if "test" in report:
            t = report["test"]
            print(f"test ({len(cfg.data.test)} structures): H RMSE {t['H']['rmse_meV']:.3f} meV, S RMSE {t['S']['rmse']:.2e}, "
                  f"eigenvalue MAE {t['eigenvalues']['mae_meV']:.3f} meV (E_F +- {t['eigenvalues']['window_eV']} eV)", file=sys.stderr)
    if args.report:
        from ..io.safe_write import atomic_write_text, dumps_strict

        atomic_write_text(args.report, dumps_strict(report, indent=1))
    return 0


class _Lazy:
    """Indexable subset of a lazy dataset (reads one structure per access)."""

    def __init__(self, ds, idx):
        self.ds, self.idx = ds, list(idx)

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, k):
        return self.ds[self.idx[k]]

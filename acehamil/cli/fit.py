"""``acehamil fit CONFIG.toml -o model.h5``: fit equivariant ACE models of H and S.

The TOML keys and defaults are documented in :mod:`acehamil.models.hamiltonian.config`
and ``docs/models.md``.  Structures listed under ``[data] test`` are never
used in fitting; when present they are evaluated after the fit.
"""

from __future__ import annotations

import sys
import warnings

from ..errors import UserError
from ._outputs import add_overwrite_arg, check_outputs, config_input_files


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit ACE models of H and S from a TOML config", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("-o", "--output", required=True, help="model file to write (HDF5)")
    p.add_argument("--report", help="also write the fit report (and test errors) as JSON here")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io.config import read_model_config
    from ..io.dataset import read_dataset
    from ..io.models import save_model
    from ..models.hamiltonian.evaluate import evaluate
    from ..models.hamiltonian.fit import FitWarning, blr_not_converged_message, fit, format_report

    check_outputs(config_input_files(args.config), {"-o": args.output, "--report": args.report}, overwrite=args.overwrite)
    cfg = read_model_config(args.config)
    if not cfg.data.train:
        raise ValueError(f"{args.config}: [data] train (the dataset file) is required")
    ds = read_dataset(cfg.data.train)
    idx = cfg.data.training_indices(len(ds))
    _check_kind_weights(cfg, ds, args.config)
    train = [ds[i] for i in idx] if len(idx) <= 64 else _Lazy(ds, idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)  # said below in one line, also with -q (Python's took two)
        model = fit(train, cfg, progress=not args.quiet)
    note = blr_not_converged_message(model.report)
    if note:
        print(f"acehamil fit: warning: {note}", file=sys.stderr)
    report = dict(model.report)
    report["dataset_indices"] = idx
    if cfg.data.test:
        test_idx = cfg.data.test_indices(len(ds))
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


def _check_kind_weights(cfg, ds, source) -> None:
    """Refuse ``[fit] kind_weights`` naming a kind no structure of the data files has (a misspelt kind was
    ignored without a word: its structures kept weight 1)."""
    if not cfg.fit.kind_weights:
        return
    kinds = set(ds.kinds())
    unknown = sorted(k for k, _ in cfg.fit.kind_weights if k not in kinds)
    if unknown:
        known = sorted(k for k in kinds if k is not None)
        shown = ", ".join(repr(k) for k in known[:12]) + (", ..." if len(known) > 12 else "") if known else "none"
        raise UserError(f"{source}: [fit] kind_weights names kind(s) {unknown} that no structure of [data] train has "
                        f"(info['kind'] there: {shown})")


class _Lazy:
    """Indexable subset of a lazy dataset (reads one structure per access)."""

    def __init__(self, ds, idx):
        self.ds, self.idx = ds, list(idx)

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, k):
        return self.ds[self.idx[k]]

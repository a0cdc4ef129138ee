"""``acehamil fit-potential CONFIG.toml -o potential.h5``: fit an ACE site-energy potential.

The TOML keys and their defaults are documented in
:mod:`acehamil.models.potential_config` and ``docs/potentials.md``.
Hyperparameters are chosen by k-fold cross-validation on the training set;
test sets listed in the config are only evaluated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("fit-potential", help="fit an ACE site-energy potential from a TOML config",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("-o", "--output", required=True, help="potential file to write (HDF5)")
    p.add_argument("--report", help="also write the fit report (CV table, train/test errors) as JSON here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def format_metrics(title: str, metrics: dict) -> str:
    lines = [f"{title}", f"  {'config_type':<16}{'n':>5}{'E MAE':>10}{'E RMSE':>10}{'F MAE':>10}{'F RMSE':>10}",
             f"  {'':<16}{'':>5}{'meV/at':>10}{'meV/at':>10}{'eV/A':>10}{'eV/A':>10}"]
    for name, m in metrics.items():
        lines.append(f"  {name:<16}{m['nconfigs']:>5}{m['energy_mae_meV_per_atom']:>10.2f}{m['energy_rmse_meV_per_atom']:>10.2f}"
                     f"{m.get('force_mae_eV_per_A', float('nan')):>10.4f}{m.get('force_rmse_eV_per_A', float('nan')):>10.4f}")
    return "\n".join(lines)


def format_cv(by_type: dict) -> str:
    """Held-out energy errors of training-set CV, one line per config_type."""
    lines = ["training-set cross-validation (each configuration predicted by the fit without its fold)",
             f"  {'config_type':<16}{'n':>5}{'E MAE':>10}{'E RMSE':>10}{'max |E|':>10}",
             f"  {'':<16}{'':>5}{'meV/at':>10}{'meV/at':>10}{'meV/at':>10}"]
    for name, m in by_type.items():
        lines.append(f"  {name:<16}{m['nconfigs']:>5}{m['energy_mae_meV_per_atom']:>10.2f}{m['energy_rmse_meV_per_atom']:>10.2f}"
                     f"{m['energy_max_abs_meV_per_atom']:>10.2f}")
    return "\n".join(lines)


def run(args) -> int:
    from ..io.potential_file import save_potential
    from ..models.config import read_toml
    from ..models.potential_config import job_from_config, summarise
    from ..models.potential_data import error_metrics
    from ..models.potential_fit import fit_potential

    cfg_path = Path(args.config)
    job = job_from_config(read_toml(cfg_path), base_dir=cfg_path.parent)
    progress = not args.quiet
    if progress:
        print(f"training: {len(job.train)} configs {summarise(job.train)}; species {list(job.species)}", file=sys.stderr)
    result = fit_potential(job.train, job.basis, job.species, job.settings, job.repulsion, progress=progress)
    save_potential(args.output, result.potential)
    report = {"chosen": result.chosen, "seconds": result.seconds, "n_features": result.potential.n_features,
              "cv": result.cv, "cv_by_type": result.cv_by_type, "train": error_metrics(result.potential, job.train),
              "test": {name: error_metrics(result.potential, cfgs) for name, cfgs in job.test.items()}}
    print(f"chosen hyperparameters: {result.chosen}; features per species: {result.potential.n_features}")
    if result.cv_by_type:
        print(format_cv(result.cv_by_type))
    print(format_metrics("training set", report["train"]))
    for name, m in report["test"].items():
        print(format_metrics(f"test set {name}", m))
    print(f"wrote {args.output}")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=float))
    return 0

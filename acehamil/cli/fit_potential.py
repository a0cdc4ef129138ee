"""``acehamil fit-potential CONFIG.toml -o potential.h5``: fit an ACE site-energy potential.

The TOML keys and their defaults are documented in
:mod:`acehamil.models.potential.config` and ``docs/potentials.md``.
Hyperparameters are chosen by k-fold cross-validation on the training set;
test sets listed in the config are only evaluated.
"""

from __future__ import annotations

import sys

from ._outputs import add_overwrite_arg, check_outputs, config_input_files


def register(subparsers) -> None:
    p = subparsers.add_parser("fit-potential", help="fit an ACE site-energy potential from a TOML config",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("-o", "--output", required=True, help="potential file to write (HDF5)")
    p.add_argument("--report", help="also write the fit report (CV table, train/test errors) as JSON here")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


#: Table columns: (heading, unit, metrics key, format).
_E_COLUMNS = [("E MAE", "meV/at", "energy_mae_meV_per_atom", ".2f"), ("E RMSE", "meV/at", "energy_rmse_meV_per_atom", ".2f")]
_F_COLUMNS = [("F MAE", "eV/A", "force_mae_eV_per_A", ".4f"), ("F RMSE", "eV/A", "force_rmse_eV_per_A", ".4f")]


def _table(title: str, metrics: dict, columns) -> str:
    """One line per config_type of ``metrics`` (as from ``error_metrics``).

    An entry the metrics lack (structures without forces have no force errors) prints ``-``, and a last
    line says which columns were not measured and why, never ``nan``.

    Examples
    --------
    >>> print(_table("test", {"all": {"nconfigs": 2, "energy_mae_meV_per_atom": 1.5, "energy_rmse_meV_per_atom": 2.0}},
    ...              _E_COLUMNS + _F_COLUMNS))
    test
      config_type         n     E MAE    E RMSE     F MAE    F RMSE
                               meV/at    meV/at      eV/A      eV/A
      all                 2      1.50      2.00         -         -
      -: not measured (F MAE, F RMSE: these structures carry no reference forces)
    """
    lines = [title, f"  {'config_type':<16}{'n':>5}" + "".join(f"{h:>10}" for h, _, _, _ in columns),
             f"  {'':<16}{'':>5}" + "".join(f"{u:>10}" for _, u, _, _ in columns)]
    missing = []
    for name, m in metrics.items():
        cells = []
        for h, _, k, fmt in columns:
            if m.get(k) is None:
                cells.append(f"{'-':>10}")
                if h not in missing:
                    missing.append(h)
            else:
                cells.append(f"{m[k]:>10{fmt}}")
        lines.append(f"  {name:<16}{m['nconfigs']:>5}" + "".join(cells))
    if missing:
        why = "these structures carry no reference forces" if all(h.startswith("F ") for h in missing) else "no such values"
        lines.append(f"  -: not measured ({', '.join(missing)}: {why})")
    return "\n".join(lines)


def format_metrics(title: str, metrics: dict) -> str:
    """Energy and force errors per config_type."""
    return _table(title, metrics, _E_COLUMNS + _F_COLUMNS)


def format_cv(by_type: dict) -> str:
    """Held-out energy errors of training-set CV, one line per config_type."""
    return _table("training-set cross-validation (each configuration predicted by the fit without its fold)", by_type,
                  _E_COLUMNS + [("max |E|", "meV/at", "energy_max_abs_meV_per_atom", ".2f")])


def run(args) -> int:
    from ..io.config import read_potential_job
    from ..io.potential_file import save_potential
    from ..models.potential.config import summarise
    from ..models.potential.data import error_metrics
    from ..models.potential.embedded_fit import fit_embedded
    from ..models.potential.fit import fit_potential

    check_outputs(config_input_files(args.config), {"-o": args.output, "--report": args.report}, overwrite=args.overwrite)
    job = read_potential_job(args.config)
    progress = not args.quiet
    if progress:
        print(f"training: {len(job.train)} configs {summarise(job.train)}; species {list(job.species)}", file=sys.stderr)
    blr = job.settings.solver == "blr"
    acc = None
    if job.multilayer is not None and job.embedding is not None:
        from ..models.potential.embedded_multilayer_fit import fit_embedded_multilayer

        result = fit_embedded_multilayer(job.train, job.basis, job.species, job.settings, job.multilayer, job.embedding,
                                         job.repulsion, progress=progress)
        kind = "embedded_multilayer"
    elif job.multilayer is not None:
        from ..models.potential.multilayer_fit import accumulate_multilayer, fit_multilayer, multilayer_layer

        layer = multilayer_layer(job.multilayer, job.species, job.train)
        acc = accumulate_multilayer(job.basis, job.species, job.train, job.settings, layer, job.repulsion, progress)
        result = fit_multilayer(job.train, job.basis, job.species, job.settings, repulsion=job.repulsion, progress=progress,
                                accumulated=acc, layer=layer)
        kind = "multilayer"
    elif job.embedding is None:
        from ..models.potential.fit import accumulate

        acc = accumulate(job.basis, job.species, job.train, job.settings, job.repulsion, progress) if blr else None
        result = fit_potential(job.train, job.basis, job.species, job.settings, job.repulsion, progress=progress, accumulated=acc)
        kind = "linear"
    else:
        result = fit_embedded(job.train, job.basis, job.species, job.settings, job.embedding, job.repulsion, progress=progress)
        kind = "embedded"
    posterior = None
    if blr and kind not in ("embedded", "embedded_multilayer"):  # BLR: the calibrated posterior goes into the file (error bars)
        from ..models.potential.uncertainty import calibrate

        posterior = calibrate(result, job.settings, acc)
    save_potential(args.output, result.potential, posterior=posterior)
    report = {"model": kind, "chosen": result.chosen, "seconds": result.seconds,
              "n_features": result.potential.n_features, "cv": result.cv, "cv_by_type": result.cv_by_type,
              "train": error_metrics(result.potential, job.train),
              "test": {name: error_metrics(result.potential, cfgs) for name, cfgs in job.test.items()}}
    if job.embedding is not None:  # (embedded multilayer: the multilayer fit's CV)
        report["linear_cv"] = result.linear.cv[:20]
        report["optimiser"] = result.info
    if posterior is not None:
        report["posterior"] = {"n_columns": int(posterior.cols.size), "scale": posterior.scale,
                               "force_noise_eV_per_A": posterior.force_noise, "energy_noise_eV_per_atom": posterior.energy_noise}
    if job.multilayer is not None:
        report["message_spec"] = job.multilayer.to_dict()
        report["n_layer2_features"] = int(result.potential.weights.size)
    print(f"chosen hyperparameters: {result.chosen}; features per species: {result.potential.n_features}")
    if result.cv_by_type:
        print(format_cv(result.cv_by_type))
    print(format_metrics("training set", report["train"]))
    for name, m in report["test"].items():
        print(format_metrics(f"test set {name}", m))
    print(f"wrote {args.output}")
    if args.report:
        from ..io.safe_write import atomic_write_text, dumps_strict

        atomic_write_text(args.report, dumps_strict(report, indent=2))
    return 0

"""``acehamil evaluate-potential potential.h5 TEST.xyz [--json]``: errors of a potential on labelled data."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate-potential", help="energy/force errors of a potential on labelled structures",
                              description=__doc__)
    p.add_argument("potential", help="potential file (HDF5, from fit-potential)")
    p.add_argument("data", help="labelled structures (extended XYZ or anything ase.io.read reads)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io.potential_file import load_potential
    from ..io.labelled import read_configs
    from ..models.potential.data import error_metrics
    from .fit_potential import format_metrics

    pot = load_potential(args.potential)
    configs = read_configs(args.data)
    _check_species(pot, configs, args.data)
    metrics = error_metrics(pot, configs)
    if args.json:
        out = dict(metrics["all"])
        out["per_config_type"] = {k: v for k, v in metrics.items() if k != "all"}
        from ..io.safe_write import dumps_strict

        print(dumps_strict(out, indent=2))
    else:
        print(format_metrics(f"{args.data}", metrics))
    return 0


def _check_species(pot, configs, path) -> None:
    """Refuse, before any work, a frame with a species the potential was not fitted for (names file and frame)."""
    from ase.data import chemical_symbols

    from ..errors import UserError

    known = {int(z) for z in pot.species}
    for k, c in enumerate(configs):
        missing = sorted({int(z) for z in c.atoms.numbers} - known)
        if missing:
            raise UserError(f"{path}, frame {k}: species {[chemical_symbols[z] for z in missing]} not in the potential's "
                            f"{[chemical_symbols[z] for z in sorted(known)]}")

"""``acehamil info dataset.h5 [--json]``: what a dataset file holds.

The ``--json`` output is a contract for scripts::

    {"nstructures": n, "format_version": v, "conventions_version": c,
     "structures": [{"name", "natoms", "norb", "species", "nblocks_H", "periodic"}, ...]}
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="summarise an acehamil dataset file")
    p.add_argument("path", help="dataset .h5 file")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(func=run)


def summary(path) -> dict:
    """The JSON contract of ``acehamil info --json`` as a dict."""
    from ..io.dataset import read_dataset
    from ..io.hdf5 import open_h5

    ds = read_dataset(path)
    with open_h5(path) as f:
        fmt, conv = int(f.attrs["format_version"]), int(f.attrs["conventions_version"])
    rows = ds.summary()
    return {"nstructures": len(ds), "format_version": fmt, "conventions_version": conv, "structures": rows}


def run(args) -> int:
    s = summary(args.path)
    if args.json:
        from ..io.safe_write import dumps_strict

        print(dumps_strict(s))
        return 0
    rows = s["structures"]
    print(f"{args.path}: {s['nstructures']} structures (format {s['format_version']}, conventions {s['conventions_version']})")
    for r in rows[:20]:
        print(f"  {r['name']:<24} atoms {r['natoms']:>4}  orbitals {r['norb']:>5}  H blocks {r['nblocks_H']:>6}  "
              f"{'periodic' if r['periodic'] else 'cluster '}  {' '.join(r['species'])}")
    if len(rows) > 20:
        print(f"  ... {len(rows) - 20} more")
    return 0

"""Shared pieces of ``acehamil bands`` and ``acehamil dos``: reading one structure, S(k) options, JSON out."""

from __future__ import annotations

import json
from pathlib import Path


def add_structure_args(p) -> None:
    p.add_argument("data", help="acehamil dataset file (DFT or predicted H and S)")
    p.add_argument("--structure", type=int, default=0, metavar="N", help="structure index in the dataset (default 0)")
    p.add_argument("--remedy", choices=["project"], default=None,
                   help="on a singular/ill-conditioned S(k): project out its near-null space (fewer bands) "
                        "instead of stopping with an error")
    p.add_argument("--s-threshold", type=float, default=1e-6,
                   help="eigenvalue threshold of S(k) for --remedy project (default 1e-6)")
    p.add_argument("--max-condition", type=float, default=1e10,
                   help="largest accepted condition number of S(k) (default 1e10)")
    p.add_argument("--emin", type=float, default=None, help="plot window, eV relative to E_F")
    p.add_argument("--emax", type=float, default=None, help="plot window, eV relative to E_F")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def solver_kw(args) -> dict:
    return {"remedy": args.remedy, "s_threshold": args.s_threshold, "max_condition": args.max_condition}


def load_structure(path, index: int):
    """One StructureData from a dataset file, with clear errors."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such dataset file: {p}")
    from ..io.dataset import read_dataset

    ds = read_dataset(p)
    if not -len(ds) <= index < len(ds):
        raise ValueError(f"--structure {index} out of range: {p} holds {len(ds)} structure(s)")
    sd = ds[index]
    if not sd.H:
        raise ValueError(f"{p} structure {index} has no Hamiltonian (S only?)")
    return sd


def write_json(path, obj) -> None:
    p = Path(path)
    if not p.parent.is_dir():
        raise FileNotFoundError(f"directory {str(p.parent)!r} does not exist")
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False))
    tmp.replace(p)


def check_output(path) -> None:
    """Fail before any work if a figure path cannot be written."""
    if path is None:
        return
    from ..plotting import FORMATS

    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise ValueError(f"figure file must end in one of {FORMATS}, got {p.name!r}")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"directory {str(p.parent)!r} does not exist")

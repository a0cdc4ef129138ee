"""``acehamil convert SOURCE -o dataset.h5``: DFT output -> acehamil dataset.

SOURCE is an FHI-aims output folder (``output_rs_matrices``) or an ACEhamiltonians HDF5 file
(every structure group is converted).  Several sources may be given; ``--append`` adds to an
existing dataset instead of replacing it.
"""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert DFT output (FHI-aims folder, ACEhamiltonians .h5) to a dataset")
    p.add_argument("sources", nargs="+", help="FHI-aims output folder(s) or ACEhamiltonians .h5 file(s)")
    p.add_argument("-o", "--output", required=True, help="dataset file to write")
    p.add_argument("--append", action="store_true", help="append to an existing dataset")
    p.add_argument("--text", action="store_true", help="FHI-aims: read rs_*.out even when rs_*.h5 exist")
    p.set_defaults(func=run)


def read_source(source, text: bool = False) -> list:
    """StructureData list from one source path (folder: FHI-aims; file: ACEhamiltonians)."""
    src = Path(source)
    if src.is_dir():
        from ..io.fhi_aims import read_fhi_aims

        return [read_fhi_aims(src, prefer_hdf5=False if text else None)]
    if src.is_file():
        from ..io.acehamiltonians import read_acehamiltonians

        return read_acehamiltonians(src)
    raise FileNotFoundError(f"no such source: {src} (give an FHI-aims output folder or an ACEhamiltonians .h5 file)")


def run(args) -> int:
    from ..io.dataset import append_dataset, write_dataset

    structures = [sd for src in args.sources for sd in read_source(src, args.text)]
    (append_dataset if args.append else write_dataset)(args.output, structures)
    print(f"{args.output}: wrote {len(structures)} structure(s)")
    return 0

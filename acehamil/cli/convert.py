"""``acehamil convert SOURCE -o dataset.h5``: DFT output -> acehamil dataset.

SOURCE is an FHI-aims output folder (``output_rs_matrices``; with its ``band1NNN.out`` bands
and ``control.in`` path when present), a DeepH folder (``hamiltonians.h5``/``overlaps.h5``,
``lat.dat``, ...) or a folder of DeepH folders (a DeepH dataset; every structure is converted),
an ACEhamiltonians HDF5 file (every structure group is converted) or an acehamil dataset (its
structures are copied, e.g. to merge datasets); the format is detected from the content
(:mod:`acehamil.io.readers`), ``--format`` forces one.  Several sources may be given.  An existing output is
refused unless ``--append`` (add the structures; names must be new) or ``--overwrite``
(replace it) is given.  Every structure is validated (atoms, species, Hermiticity) before
anything is written.
"""

from __future__ import annotations

from ..io.readers import READERS
from ._outputs import add_overwrite_arg, check_outputs


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert DFT output (FHI-aims or DeepH folder, ACEhamiltonians .h5) to a dataset")
    p.add_argument("sources", nargs="+", help="FHI-aims output folder(s), DeepH folder(s) or dataset folders, "
                                              "ACEhamiltonians .h5 file(s)")
    p.add_argument("-o", "--output", required=True, help="dataset file to write")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="append to an existing dataset (names must be new)")
    add_overwrite_arg(mode)
    p.add_argument("--text", action="store_true", help="FHI-aims: read rs_*.out even when rs_*.h5 exist")
    p.add_argument("--format", choices=sorted(READERS), help="read every source with this reader instead of "
                                                           "detecting the format from its content")
    p.set_defaults(func=run)


def read_source(source, text: bool = False, fmt: str | None = None) -> list:
    """StructureData list from one source path, read by the format its content shows
    (:func:`acehamil.io.readers.detect_format`) or by ``fmt``."""
    from ..io.readers import read_structures

    return read_structures(source, format=fmt, text=text)


def run(args) -> int:
    from ..io.dataset import append_dataset, write_dataset
    from ..structure.validate import validate_structure

    check_outputs({f"SOURCE {n + 1}": s for n, s in enumerate(args.sources)}, {"-o": args.output},
                  overwrite=args.overwrite, may_exist={"-o"} if args.append else ())
    structures = []
    for src in args.sources:
        for n, sd in enumerate(read_source(src, args.text, fmt=args.format)):
            validate_structure(sd, f"{src} (structure {n}, {sd.info.get('name', '?')!r})")
            structures.append(sd)
    (append_dataset if args.append else write_dataset)(args.output, structures)
    print(f"{args.output}: wrote {len(structures)} structure(s)")
    return 0

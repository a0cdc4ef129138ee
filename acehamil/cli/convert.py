"""``acehamil convert SOURCE -o dataset.h5``: DFT output -> acehamil dataset.

SOURCE is an FHI-aims output folder (``output_rs_matrices``; with its ``band1NNN.out`` bands
and ``control.in`` path when present), a DeepH folder (``hamiltonians.h5``/``overlaps.h5``,
``lat.dat``, ...) or a folder of DeepH folders (a DeepH dataset; every structure is converted),
an ACEhamiltonians HDF5 file (every structure group is converted) or an acehamil dataset (its
structures are copied, e.g. to merge datasets); the format is detected from the content
(:mod:`acehamil.io.readers`), ``--format`` forces one.  Several sources may be given.  An existing output is
refused unless ``--append`` (add the structures; names must be new) or ``--overwrite``
(replace it) is given.  Every structure of a dataset stores one orbital basis (a fit reads them with
one): structures of different species are refused unless ``--combined-basis`` (each stores the union
of all bases); one species with other shells (another basis set or orbital convention) always.  Every structure is validated (atoms, species, Hermiticity) before
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
    p.add_argument("--combined-basis", action="store_true",
                   help="store with every structure the combined orbital basis of all of them (and, with --append, of "
                        "the file's): data of different species in one dataset, as a fit reads them")
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
    from ..errors import UserError
    from ..io.dataset import append_dataset, write_dataset
    from ..structure.validate import validate_structure

    check_outputs({f"SOURCE {n + 1}": s for n, s in enumerate(args.sources)}, {"-o": args.output},
                  overwrite=args.overwrite, may_exist={"-o"} if args.append else ())
    structures, wheres = [], []
    for src in args.sources:
        for n, sd in enumerate(read_source(src, args.text, fmt=args.format)):
            wheres.append(f"{src} (structure {n}, {sd.info.get('name', '?')!r})")
            validate_structure(sd, wheres[-1])
            structures.append(sd)
    if not structures:  # wrote an empty dataset and said 'wrote 0 structure(s)'
        raise UserError(f"no structures in {', '.join(args.sources)}: nothing to convert")
    structures = _one_basis(structures, wheres, args)
    (append_dataset if args.append else write_dataset)(args.output, structures)
    print(f"{args.output}: wrote {len(structures)} structure(s)")
    return 0


def _one_basis(structures, wheres, args) -> list:
    """``structures``, each storing the combined basis (``--combined-basis``), after the check that the output
    will hold one orbital basis (:mod:`acehamil.io.dataset_basis`); UserError otherwise."""
    from dataclasses import replace

    from ..errors import UserError
    from ..io.dataset_basis import basis_text, check_same_basis, combined_basis, stored_bases

    named = [(where, sd.basis) for where, sd in zip(wheres, structures)]
    if not args.combined_basis:
        check_same_basis(named, "add --combined-basis to store it with each (or convert them into separate files)")
        return structures
    stored = []
    if args.append:
        from ..io.dataset import KIND, SUPPORTED_VERSIONS
        from ..io.hdf5 import check_header, open_h5

        with open_h5(args.output) as f:
            check_header(f, KIND, SUPPORTED_VERSIONS)
            stored = stored_bases(f, args.output)
    union = combined_basis(stored + named)
    for where, basis in stored:
        if basis != union:
            raise UserError(f"{where} stores the orbital basis {{{basis_text(basis)}}}, but the combined basis is "
                            f"{{{basis_text(union)}}} and --append cannot change the structures already in the file: "
                            f"write a new file with all of them (acehamil convert {args.output} SOURCE... -o NEW.h5 "
                            f"--combined-basis)")
    return [sd if sd.basis == union else replace(sd, basis=union) for sd in structures]

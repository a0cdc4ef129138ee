"""``acehamil export DATA --format sisl|tshs|deeph -o OUT``: H and S for other codes.

- ``deeph``: one DeepH folder per structure, ``OUT/<index>/`` (``hamiltonians.h5``,
  ``overlaps.h5``, ``lat.dat``, ``site_positions.dat``, ``element.dat``,
  ``orbital_types.dat``, ``info.json``; eV, Å; DeepH's orbital order), readable back by
  ``acehamil convert OUT``.
- ``tshs``: a SIESTA ``.TSHS`` file (for TBtrans transport), written by sisl;
  ``OUT`` must end in ``.TSHS`` (one structure: ``--structure N``).
- ``sisl``: a sisl ``.nc`` file (``sisl.Hamiltonian``; read it with
  ``sisl.get_sile(OUT).read_hamiltonian()``).

A structure whose S(k) is not positive definite (checked at Gamma and on a grid, as ``predict`` does) is refused:
the other code's generalized eigen-solve would fail or give levels without meaning.

``tshs`` and ``sisl`` need the optional dependency sisl (``pip install -e ".[sisl]"``).
"""

from __future__ import annotations

from pathlib import Path

from ._outputs import add_overwrite_arg, check_outputs


def register(sub) -> None:
    p = sub.add_parser("export", help="export H and S to DeepH folders, a SIESTA TSHS file or a sisl file",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="acehamil dataset file (DFT or predicted)")
    p.add_argument("--format", required=True, choices=["deeph", "tshs", "sisl"], help="target format")
    p.add_argument("-o", "--output", required=True,
                   help="deeph: folder to create (one subfolder per structure); tshs: file.TSHS; sisl: file.nc")
    p.add_argument("--structure", type=int, default=None, metavar="N",
                   help="export only structure N (default: every structure for deeph, structure 0 otherwise)")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..io.dataset import read_dataset

    out = Path(args.output)
    if not out.absolute().parent.is_dir():
        raise UserError(f"cannot write output -o ({out}): folder {str(out.parent)!r} does not exist")
    if args.format == "deeph":
        if out.exists() and not out.is_dir():
            raise UserError(f"output -o ({out}) is a file; --format deeph writes a folder")
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise UserError(f"output folder {out} exists and is not empty; pass --overwrite to write into it "
                            "(existing DeepH subfolders are still refused)")
        check_outputs({"DATA": args.data}, {}, overwrite=args.overwrite)
    else:
        suffix = ".TSHS" if args.format == "tshs" else ".nc"
        if out.suffix.upper() != suffix.upper():
            raise UserError(f"--format {args.format} writes a {suffix} file; -o {out} does not end in {suffix}")
        check_outputs({"DATA": args.data}, {"-o": out}, overwrite=args.overwrite)
        from ..io.sisl_interop import require_sisl

        try:
            require_sisl()
        except ImportError as err:
            raise UserError(str(err)) from None
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"no such dataset file: {args.data}")
    ds = read_dataset(args.data)
    if not len(ds):  # wrote an empty folder (or nothing) and said 'wrote 0 DeepH folder(s)'
        raise UserError(f"{args.data} holds no structures: nothing to export")
    if args.structure is not None and not -len(ds) <= args.structure < len(ds):
        raise UserError(f"--structure {args.structure} out of range: {args.data} holds {len(ds)} structure(s)")
    if args.format == "deeph":
        from ..io.deeph import write_deeph

        idx = range(len(ds)) if args.structure is None else [args.structure % len(ds)]
        for i in idx:  # every structure read and checked before the first folder is made
            _check_overlap(ds[i], args.data, i)
        out.mkdir(exist_ok=True)
        for i in idx:
            write_deeph(out / str(i), ds[i])
        if not args.quiet:
            print(f"{out}: wrote {len(idx)} DeepH folder(s) ({', '.join(str(i) for i in list(idx)[:5])}"
                  f"{', ...' if len(idx) > 5 else ''})")
        return 0
    from ..io.sisl_interop import require_sisl, to_sisl, write_tshs

    sd = ds[0 if args.structure is None else args.structure]
    if not sd.H:  # an S-only structure was an IndexError inside the sisl conversion
        raise UserError(f"{args.data} structure {0 if args.structure is None else args.structure} "
                        f"({sd.info.get('name', '?')!r}) has no Hamiltonian (S only): --format {args.format} writes H "
                        "and S (--format deeph writes an S-only folder)")
    _check_overlap(sd, args.data, 0 if args.structure is None else args.structure)
    if args.format == "tshs":
        write_tshs(out, sd)
    else:
        sisl = require_sisl()
        from ..io.safe_write import atomic_path

        try:
            import netCDF4  # noqa: F401 - sisl's .nc writer needs it
        except ImportError:
            raise UserError('--format sisl writes a netCDF file and needs netCDF4: pip install -e ".[sisl]" '
                            "(or use --format tshs)") from None
        H = to_sisl(sd)
        with atomic_path(out) as tmp:
            real = Path(tmp).with_name(Path(tmp).name + ".nc")
            H.write(sisl.get_sile(str(real), "w"))
            real.replace(tmp)
    if not args.quiet:
        print(f"{out}: wrote {sd.info.get('name', 'structure')} ({len(sd.atoms)} atoms, {sd.layout.norb} orbitals)")
    return 0


def _check_overlap(sd, data, index) -> None:
    """UserError unless ``sd.S(k)`` is positive definite on :func:`acehamil.tb.overlap.overlap_check`'s k-points
    (was exported without a word: TBtrans or DeepH then read an overlap that is no overlap)."""
    from ..errors import UserError
    from ..tb.overlap import overlap_check

    if sd.S is None:
        return
    smin, kmin, nk = overlap_check(sd.S, sd.atoms)
    if not smin > 0:
        raise UserError(f"{data} structure {index} ({sd.info.get('name', '?')!r}): its overlap S(k) is not positive "
                        f"definite (smallest eigenvalue {smin:.3g} at k = {[round(x, 4) for x in kmin]}, {nk} k-point(s) "
                        "checked): another code's eigen-solve would fail or give levels without meaning, so it is not "
                        "exported (a predicted S: the structure is outside what the model was fitted on; `acehamil "
                        "bands/dos --remedy project` can still use it here)")

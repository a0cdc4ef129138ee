"""``acehamil predict model.h5 STRUCTURES -o predicted.h5``: predict H and S.

``STRUCTURES`` is an acehamil dataset file (its atoms are used; reference
matrices are ignored) or any file ASE can read (all frames).  The output is a
dataset file, so ``acehamil bands`` / ``acehamil dos`` work on it; an existing
output is refused without ``--overwrite``.  Every frame is checked (species in
the model, finite positions, no atoms on top of each other) before any work;
predictions are streamed, so a failing frame keeps the ones before it (and is
named).  The smallest eigenvalue of the predicted S(k) (over Gamma and a k grid)
is printed and stored in each structure's ``info["overlap_min_eigenvalue"]``; a
non-positive-definite S is reported on stderr even with ``-q``.  A model with a
posterior stores ``--samples`` calibrated draws of H with each prediction (``H_draws``,
used by ``bands``/``dos --uncertainty``) and the per-atom extrapolation score in
``info["uncertainty"]`` (docs/uncertainty.md).

Structures of ``--stream`` (or of >= 20000 atoms) are predicted chunk by chunk of atoms straight
into the output (:mod:`acehamil.io.stream`): peak memory is the model plus one chunk, whatever the
size, with a progress line per chunk; they get no S(k) check and no draws (docs/tb.md).
"""

from __future__ import annotations

import sys
import time

from ._outputs import add_overwrite_arg, check_outputs
from ._select import parse_selection, select_indices


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict H and S of structures with a fitted model",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file (acehamil fit)")
    p.add_argument("structures", help="acehamil dataset file or any ASE-readable structure file")
    p.add_argument("-o", "--output", required=True, help="dataset file to write")
    p.add_argument("--index", default=":", help="ASE-style selection of structures (default all), e.g. '3' or '0:5'")
    p.add_argument("--charge", type=float, default=None, metavar="Q",
                   help="net charge per cell (electrons removed; -1 adds one): n_electrons = the model's valence "
                        "electrons per species summed over the atoms - Q, which fixes the Fermi level of bands/dos "
                        "(default: the dataset's own count, else neutral)")
    p.add_argument("--supercell", type=int, nargs=3, default=None, metavar=("N1", "N2", "N3"),
                   help="tile each predicted cell N1 x N2 x N3 times (exactly the supercell's matrices, at the cost "
                        "of predicting one cell): large test systems for dos --method kpm / eigs")
    p.add_argument("--samples", type=int, default=None,
                   help="posterior draws of H stored with each prediction (default: the model's n_samples; "
                        "0 = none, else >= 2); bands/dos --uncertainty use them")
    p.add_argument("--stream", action="store_true",
                   help="predict every structure in chunks of atoms straight into the output file (peak memory: "
                        "the model plus one chunk, whatever the size); automatic from %d atoms. Streamed structures "
                        "get no S(k) check and no posterior draws" % _stream_min_atoms())
    p.add_argument("--chunk-atoms", type=int, default=None, metavar="N",
                   help="atoms per chunk of a streamed prediction (default %d)" % _chunk_atoms())
    p.add_argument("--precision", choices=["double", "single"], default="double",
                   help="stored precision of H and S (single halves the file; read back as double)")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no per-structure lines (warnings still go to stderr)")
    p.set_defaults(func=run)


def _stream_min_atoms() -> int:
    from ..io.stream import STREAM_MIN_ATOMS

    return STREAM_MIN_ATOMS


def _chunk_atoms() -> int:
    from ..models.hamiltonian.chunked import CHUNK_ATOMS

    return CHUNK_ATOMS


def read_structures(path, index: str = ":") -> list:
    """``[(atoms, n_electrons or None, name), ...]`` from a dataset or an ASE-readable file.

    Raises UserError for a missing, empty or unreadable file and for a selection that is
    out of range or empty.
    """
    from pathlib import Path

    import h5py

    from ..errors import UserError

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise UserError(f"{p} is a folder; give a dataset or structure file")
    if h5py.is_hdf5(p):
        from ..io.dataset import read_dataset

        ds = read_dataset(p)
        out = []
        for i in select_indices(index, len(ds), "--index", str(p)):
            sd = ds[i]
            out.append((sd.atoms, sd.n_electrons, ds.names[i]))
        return out
    import ase.io

    parse_selection(index)
    if p.stat().st_size == 0:
        raise UserError(f"{p} is empty: no structures to predict")
    from ..io.labelled import check_not_cut

    check_not_cut(p)
    try:
        frames = ase.io.read(p, index=":")
    except Exception as err:  # noqa: BLE001 - ASE's parsers raise anything on foreign input
        raise UserError(f"{p}: ASE cannot read structures from it ({type(err).__name__}: {err})") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise UserError(f"{p} holds no structures")
    return [(frames[k], None, f"{p.name}:{k}") for k in select_indices(index, len(frames), "--index", str(p))]


def _selection(index: str):
    """Kept for callers of the old helper: int or slice (see :func:`acehamil.cli._select.parse_selection`)."""
    return parse_selection(index)


def check_frames(model, items) -> None:
    """Refuse, before any work, frames the model cannot predict (names the frame)."""
    from ..errors import UserError
    from ..structure.validate import check_atoms

    species = set(model.orbital_basis.species)
    for atoms, _, name in items:
        check_atoms(atoms, f"structure {name}")
        missing = sorted({int(z) for z in atoms.numbers} - species)
        if missing:
            from ase.data import chemical_symbols

            raise UserError(f"structure {name}: species {[chemical_symbols[z] for z in missing]} are not in the "
                            f"model's basis ({[chemical_symbols[z] for z in sorted(species)]})")


def run(args) -> int:
    import warnings

    import numpy as np

    from ..errors import UserError
    from ..io.dataset import StreamingWriter
    from ..io.models import load_model
    from ..models.hamiltonian.model import OverlapWarning

    check_outputs({"MODEL": args.model, "STRUCTURES": args.structures}, {"-o": args.output}, overwrite=args.overwrite)
    if args.charge is not None and not np.isfinite(args.charge):
        raise UserError(f"--charge must be a finite number of electrons, got {args.charge}")
    model = load_model(args.model)
    items = read_structures(args.structures, args.index)
    check_frames(model, items)
    if args.supercell is not None:
        from ..errors import UserError
        from ..structure.supercell import check_reps

        for atoms, _, name in items:
            try:
                check_reps(args.supercell, atoms.pbc)
            except ValueError as err:
                raise UserError(f"--supercell for structure {name}: {err}") from None
    from ..models.hamiltonian.uncertainty import has_posterior

    n_samples = model.config.uncertainty.n_samples if args.samples is None else args.samples
    if n_samples < 0 or n_samples == 1:
        from ..errors import UserError

        raise UserError(f"--samples must be 0 (no draws) or >= 2 (one draw has no spread), got {n_samples}")
    if not has_posterior(model.H) or args.supercell is not None:  # draws are per predicted cell
        n_samples = 0
    if args.chunk_atoms is not None and args.chunk_atoms < 1:
        raise UserError(f"--chunk-atoms must be >= 1, got {args.chunk_atoms}")
    streamed = [args.stream or len(atoms) >= _stream_min_atoms() for atoms, _, _ in items]
    if args.supercell is not None and any(streamed):
        raise UserError("--supercell tiles a predicted cell in memory; it cannot be combined with a streamed "
                        "prediction (--stream, or structures of >= %d atoms)" % _stream_min_atoms())
    precision = {"double": "float64", "single": "float32"}[args.precision]
    rng = np.random.default_rng(0)
    bad_s = 0
    with StreamingWriter(args.output, keep_on_error=True, precision=precision) as out:
        for k, (atoms, n_el, name) in enumerate(items):
            t0 = time.perf_counter()
            if streamed[k]:
                try:
                    _predict_streamed(model, atoms, n_el, name, args, out, n_samples)
                except Exception as err:
                    _frame_failed(err, k, name, out.count, args.output)
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", OverlapWarning)  # reported below, once per frame
                    sd = model.predict_structure(atoms, info={"name": name, "model": str(args.model)},
                                                 charge=0.0 if model.valence_electrons is None else (args.charge or 0.0),
                                                 n_samples=n_samples, rng=rng)
                if args.charge is not None and model.valence_electrons is None:
                    if n_el is None:
                        raise UserError(f"--charge: the model {args.model} stores no electron counts per species "
                                        f"(fitted before they were recorded) and {name} carries no electron count")
                    n_el = n_el - args.charge
                if n_el is not None and (args.charge is None or model.valence_electrons is None):
                    from dataclasses import replace

                    sd = replace(sd, n_electrons=n_el)
                if args.supercell is not None:
                    from ..structure.supercell import tile_structure

                    sd = tile_structure(sd, args.supercell)
                out.add(sd)
            except Exception as err:
                _frame_failed(err, k, name, out.count, args.output)
            smin, nk = sd.info["overlap_min_eigenvalue"], sd.info["overlap_kpoints_checked"]
            if not smin > 0:
                bad_s += 1
                print(f"WARNING: {name}: predicted S is not positive definite: smallest eigenvalue of S(k) "
                      f"{smin:.4g} at k = {sd.info['overlap_min_kpoint']} (over {nk} k-points checked)", file=sys.stderr)
            elif not args.quiet:
                unc = sd.info.get("uncertainty", {})
                ext, sx = unc.get("extrapolation_max"), unc.get("sigma_extrapolation_eV") or 0.0
                ext = "" if ext is None else (f", extrapolation score {ext:.3g}" + (" (OUTSIDE the training data)" if ext > 1 else "")
                                              + (f", sigma >= {sx * 1e3:.0f} meV on every eigenvalue" if sx > 0 else ""))
                print(f"{name}: {len(sd.atoms)} atoms, {sd.H[0].nblocks} blocks, {time.perf_counter() - t0:.2f} s, "
                      f"min eig S(k) = {smin:.4g} over {nk} k-points{ext}", file=sys.stderr)
    if bad_s:
        print(f"WARNING: {bad_s} of {len(items)} predicted structures have a non-positive-definite S "
              f"(bands/dos will refuse them)", file=sys.stderr)
    return 0


def _frame_failed(err: Exception, k: int, name: str, done: int, output) -> None:
    """Re-raise the failure of frame ``k``: a user error as one line naming the frame (and what was
    written before it), anything else (a bug) unchanged after a line saying which frame it was.
    With no frame done, the output is not written at all (:class:`StreamingWriter` keeps only
    structures that exist)."""
    from ..errors import UserError
    from . import is_user_error

    kept = f"the {done} structure(s) before it were written to {output}" if done else f"nothing was written to {output}"
    if isinstance(err, ValueError) and is_user_error(err):
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"frame {k} ({name}) failed: {msg}; {kept}") from err
    print(f"acehamil predict: frame {k} ({name}) failed; {kept}", file=sys.stderr)
    raise err


def _predict_streamed(model, atoms, n_el, name, args, out, n_samples) -> None:
    """One structure predicted chunk by chunk into the open output (no S check, no draws)."""
    from ..errors import UserError
    from ..io.stream import progress_printer
    from ..models.hamiltonian.chunked import CHUNK_ATOMS, predict_chunks

    t0 = time.perf_counter()
    charge = 0.0 if model.valence_electrons is None else (args.charge or 0.0)
    n_model = model.n_electrons(atoms, charge)
    if args.charge is not None and model.valence_electrons is None:
        if n_el is None:
            raise UserError(f"--charge: the model {args.model} stores no electron counts per species (fitted before "
                            f"they were recorded) and {name} carries no electron count")
        n_el = n_el - args.charge
    n_el = n_el if n_el is not None and (args.charge is None or model.valence_electrons is None) else n_model
    info = {"source": "acehamil prediction", "name": name, "model": str(args.model), "streamed": True,
            "overlap_check": "not done: a streamed prediction never holds S (acehamil dos/eigs check S(k) when they "
                             "factorise it)"}
    if charge:
        info["charge"] = float(charge)
    if n_samples:
        print(f"{name}: streamed prediction: no posterior draws stored (--samples applies to in-memory predictions)",
              file=sys.stderr)
    chunk = args.chunk_atoms or CHUNK_ATOMS
    if not args.quiet:
        print(f"{name}: {len(atoms)} atoms, streamed to {args.output} in chunks of {chunk} atoms", file=sys.stderr)
    summary = out.add_chunked(atoms, model.orbital_basis, predict_chunks(model, atoms, chunk), name=name, info=info,
                              n_electrons=n_el, progress=None if args.quiet else progress_printer(f"  {name}"))
    if not args.quiet:
        print(f"{name}: {summary['natoms']} atoms, {summary['nblocks']} blocks, {time.perf_counter() - t0:.2f} s, "
              f"S(k) not checked (streamed)", file=sys.stderr)

"""``acehamil predict model.h5 STRUCTURES -o predicted.h5``: predict H and S.

``STRUCTURES`` is an acehamil dataset file (its atoms are used; reference
matrices are ignored) or any file ASE can read (all frames).  The output is a
dataset file, so ``acehamil bands`` / ``acehamil dos`` work on it.  The
smallest eigenvalue of the predicted S(k) (Gamma and a few k) is printed and
stored in each structure's ``info["overlap_min_eigenvalue"]``.
"""

from __future__ import annotations

import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict H and S of structures with a fitted model",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file (acehamil fit)")
    p.add_argument("structures", help="acehamil dataset file or any ASE-readable structure file")
    p.add_argument("-o", "--output", required=True, help="dataset file to write")
    p.add_argument("--index", default=":", help="ASE-style selection of structures (default all), e.g. '3' or '0:5'")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def read_structures(path, index: str = ":") -> list:
    """``[(atoms, n_electrons or None, name), ...]`` from a dataset or an ASE-readable file."""
    from pathlib import Path

    import h5py

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    sel = _selection(index)
    if h5py.is_hdf5(p):
        from ..io.dataset import read_dataset

        ds = read_dataset(p)
        idx = range(len(ds))[sel]
        idx = [idx] if isinstance(idx, int) else list(idx)
        out = []
        for i in idx:
            sd = ds[i]
            out.append((sd.atoms, sd.n_electrons, ds.names[i]))
        return out
    import ase.io

    frames = ase.io.read(p, index=index)
    frames = frames if isinstance(frames, list) else [frames]
    return [(a, None, f"{p.name}:{k}") for k, a in enumerate(frames)]


def _selection(index: str):
    if ":" in index:
        parts = [int(x) if x else None for x in index.split(":")]
        return slice(*parts)
    return int(index)


def run(args) -> int:
    from ..io.dataset import write_dataset
    from ..io.models import load_model

    model = load_model(args.model)
    items = read_structures(args.structures, args.index)
    out = []
    for atoms, n_el, name in items:
        t0 = time.perf_counter()
        sd = model.predict_structure(atoms, info={"name": name, "model": str(args.model)})
        if n_el is not None:
            from dataclasses import replace

            sd = replace(sd, n_electrons=n_el)
        out.append(sd)
        smin = sd.info["overlap_min_eigenvalue"]
        if not args.quiet:
            flag = "" if smin > 0 else "  WARNING: predicted S is not positive definite"
            print(f"{name}: {len(atoms)} atoms, {sd.H[0].nblocks} blocks, {time.perf_counter() - t0:.2f} s, "
                  f"min eig S(k) = {smin:.4g}{flag}", file=sys.stderr)
    write_dataset(args.output, out)
    return 0

"""``acehamil select MODEL CANDIDATES -n K -o picked.xyz``: the candidates worth a DFT calculation.

Picks ``K`` candidate structures (an acehamil dataset or any ASE-readable file, e.g. an MD
trajectory or random perturbations) by the criterion ``benchmarks/active.py`` shows pays
(``--criterion information``, the default: greedy expected information gain on the posterior of the
H coefficients, the posterior updated after each pick so that near-copies gain little; each
candidate at its kind's weight in the model's ``kind_weights``), or by the predicted band
uncertainty (``band``: the reducible, i.e. coefficient, spread of the eigenvalues within E_F +- 2 eV
on a small k-grid), the extrapolation score (``extrapolation``, cheapest) or the expected reduction
over the candidates of the predictive variance of their blocks (``variance``, eV^2; ``leverage``, in
units of each block type's noise) or of their window eigenvalues (``eigen``, the model's own
eigenvectors on ``--kmesh``).  The picks are written as extended XYZ with
``info["select_score"]`` and ``info["select_source"]``; ``acehamil generate pyscf --structures
picked.xyz`` computes them, a refit closes the loop (docs/uncertainty.md).
"""

from __future__ import annotations

import sys

from ._outputs import add_overwrite_arg, check_outputs


def register(subparsers) -> None:
    p = subparsers.add_parser("select", help="pick the candidate structures a model is least sure about",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file (acehamil fit) with a posterior")
    p.add_argument("candidates", help="acehamil dataset file or any ASE-readable structure file")
    p.add_argument("-n", type=int, required=True, dest="k", help="number of structures to pick")
    p.add_argument("-o", "--output", required=True, help="extended XYZ file to write")
    p.add_argument("--criterion", choices=["band", "eigen", "extrapolation", "information", "leverage", "variance"],
                   default="information",
                   help="band: predicted band spread; extrapolation: the on-site score; information: expected "
                        "information gain on the coefficients; variance / leverage / eigen: expected reduction over "
                        "the candidates of their blocks' variance (eV^2 / in units of the noise) or of their window "
                        "eigenvalues' variance (V-optimal); docs/uncertainty.md says which pays")
    p.add_argument("--kmesh", type=int, nargs=3, default=(2, 2, 2), help="k-grid of the band and eigen criteria")
    p.add_argument("--samples", type=int, default=12, help="posterior draws of the band criterion")
    p.add_argument("--index", default=":", help="ASE-style selection of candidates (default all)")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..io.models import load_model
    from ..models.hamiltonian.select import select
    from ..progress import Progress
    from ._tbcommon import check_mesh_and_samples
    from .predict import check_frames, read_structures

    if not args.output.lower().endswith((".xyz", ".extxyz")):
        raise UserError(f"-o must be an .xyz/.extxyz file, got {args.output!r}")
    if args.samples < 2 or min(args.kmesh) < 1:
        raise UserError("--samples must be >= 2 and --kmesh entries >= 1")
    check_outputs({"MODEL": args.model, "CANDIDATES": args.candidates}, {"-o": args.output}, overwrite=args.overwrite)
    model = load_model(args.model)
    items = read_structures(args.candidates, args.index)
    items = _with_kinds(args.candidates, items)
    check_frames(model, items)
    check_mesh_and_samples(tuple(args.kmesh) if args.criterion in ("band", "eigen") else None, args.samples,
                           [a for a, _, _ in items],
                           lambda at: sum(model.orbital_basis.norb(int(z)) for z in at.numbers))
    if not 1 <= args.k <= len(items):
        raise UserError(f"-n must be between 1 and the number of candidates ({len(items)}), got {args.k}")
    bar = Progress(len(items), "score", not args.quiet)
    try:
        picked, scores = select(model, [(a, n) for a, n, _ in items], args.k, args.criterion, tuple(args.kmesh),
                                args.samples, progress=bar)
    except ValueError as err:
        raise UserError(str(err)) from None
    import ase.io

    frames = []
    unit = "meV" if args.criterion == "band" else ""
    for j in picked:
        atoms, _, name = items[j]
        at = atoms.copy()
        at.info["select_score"] = float(scores[j])
        at.info["select_source"] = str(name)
        frames.append(at)
        if not args.quiet:
            val = scores[j] * (1000.0 if args.criterion == "band" else 1.0)  # band in meV; others as returned
            print(f"picked {name}: {args.criterion} score {val:.4g} {unit}".rstrip(), file=sys.stderr)
    from ..io.safe_write import atomic_path

    with atomic_path(args.output) as tmp:  # a unique temporary (a fixed '.NAME.tmp' collided between runs)
        ase.io.write(tmp, frames, format="extxyz")
    return 0


def _with_kinds(path, items) -> list:
    """Candidates of an acehamil dataset carry their ``info["kind"]`` in ``atoms.info`` (copies), so that
    the criteria weigh them by the model's ``kind_weights``; ASE files keep their own ``atoms.info``."""
    import h5py

    if not h5py.is_hdf5(path):
        return items
    from ..io.dataset import read_dataset

    ds = read_dataset(path)
    kinds = {name: ds[i].info.get("kind") for i, name in enumerate(ds.names)}
    out = []
    for atoms, n_el, name in items:
        if kinds.get(name) is not None:
            atoms = atoms.copy()
            atoms.info["kind"] = kinds[name]
        out.append((atoms, n_el, name))
    return out

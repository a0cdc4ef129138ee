"""``acehamil bands DATA -o bands.png [--json bands.json]``: band structure of one structure.

k-points: ``--kpts FILE`` (one fractional k-point per line), else ``--path``
(ASE special-point letters, e.g. GXWKGL; default the lattice's standard path),
else - when the structure carries the DFT code's own bands and no path is
asked for - the reference k-points, with the reference overlaid and the
largest deviation reported.  ``--reference OTHER`` overlays the bands of the
same structure index in another dataset (e.g. DFT vs a model prediction).
"""

from __future__ import annotations

import numpy as np

from ._tbcommon import add_structure_args, check_output, load_structure, solver_kw, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser("bands", help="band structure (plot and/or JSON) of a dataset structure",
                              description=__doc__.split("\n\n")[0])
    add_structure_args(p)
    p.add_argument("--path", default=None, help="k-path string, e.g. GXWKGL or 'GMK,GA' (default: standard path)")
    p.add_argument("--npoints", type=int, default=200, help="k-points along the path (default 200)")
    p.add_argument("--kpts", default=None, metavar="FILE", help="file with one fractional k-point (3 numbers) per line")
    p.add_argument("--reference", default=None, metavar="OTHER", help="dataset whose bands are overlaid as reference")
    p.add_argument("--fermi-level", type=float, default=None, help="E_F in eV (default: from the electron count)")
    p.add_argument("-o", "--output", default=None, help="figure file (.png or .pdf)")
    p.add_argument("--json", default=None, help="write the bands JSON (see docs/tb.md)")
    p.set_defaults(func=run)


def read_kpts(path) -> np.ndarray:
    """Fractional k-points from a text file, shape (nk, 3); '#' starts a comment."""
    try:
        k = np.loadtxt(path, ndmin=2, comments="#")
    except ValueError as err:
        raise ValueError(f"{path}: cannot read k-points (3 numbers per line expected): {err}") from None
    if k.ndim != 2 or k.shape[1] != 3 or len(k) == 0:
        raise ValueError(f"{path}: expected one k-point of 3 fractional coordinates per line, got shape {k.shape}")
    return k


def run(args) -> int:
    from ..tb.bands import band_structure, eigenvalues

    check_output(args.output)
    sd = load_structure(args.data, args.structure)
    kw = solver_kw(args)
    kpts, reference, ref_label = None, None, "reference"
    if args.kpts is not None:
        kpts = read_kpts(args.kpts)
    elif args.path is None and args.reference is None and sd.reference_bands is not None:
        kpts, reference = (np.asarray(a, dtype=float) for a in sd.reference_bands)
        ref_label = str(sd.info.get("source", sd.info.get("code", "DFT")))
    res = band_structure(sd, path=args.path, npoints=args.npoints, kpts=kpts, fermi_level=args.fermi_level,
                         reference=reference, **kw)
    if args.reference is not None:
        other = load_structure(args.reference, args.structure)
        if len(other.atoms) != len(sd.atoms):
            raise ValueError(f"--reference structure {args.structure} has {len(other.atoms)} atoms, "
                             f"{args.data} has {len(sd.atoms)}")
        ref = eigenvalues(other, res.kpts, **kw)
        res = type(res)(res.path, res.energies, res.fermi_level, res.gap, ref)
        ref_label = str(args.reference)
    if args.json:
        write_json(args.json, res.to_json())
    if args.output:
        from ..plotting import plot_bands, save_figure

        emin = -10.0 if args.emin is None else args.emin
        emax = 6.0 if args.emax is None else args.emax
        if res.fermi_level is None and args.emin is None and args.emax is None:
            emin = emax = None
        fig = plot_bands(res, emin=emin, emax=emax, reference_label=ref_label, label=str(args.data))
        save_figure(fig, args.output)
    if not args.quiet:
        gap = "unknown" if res.gap is None else f"{res.gap.gap:.4f} eV (VBM {res.gap.vbm:.4f}, CBM {res.gap.cbm:.4f})"
        ef = "unknown" if res.fermi_level is None else f"{res.fermi_level:.4f} eV"
        print(f"{len(res.kpts)} k-points, {res.energies.shape[-1]} bands, E_F {ef}, gap {gap}")
        if res.reference is not None:
            print(f"max |bands - reference| = {res.reference_error():.3e} eV")
    return 0

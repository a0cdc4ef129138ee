"""``acehamil bands DATA -o bands.png [--json bands.json]``: band structure of one structure.

k-points: ``--kpts FILE`` (one fractional k-point per line), else ``--path``
(ASE special-point letters, e.g. GXWKGL; default the lattice's standard path),
else - when the structure carries the DFT code's own bands and no path is
asked for - the reference k-points, with the reference overlaid and the
largest deviation reported.  ``--reference OTHER`` overlays the bands of the
structure of the same name in another dataset (e.g. DFT vs a model prediction;
refused when the name is missing or the atoms differ); ``--align fermi``
compares energies relative to each one's own Fermi level (as ``evaluate``
does), the default compares absolute energies.  Any k list can be plotted;
lines break where the path jumps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import UserError
from ..tb.kpath import LATTICE_TOLERANCE
from ._tbcommon import add_structure_args, check_levels_size, check_tb_outputs, load_structure, save_figure_safely, solver_kw, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser("bands", help="band structure (plot and/or JSON) of a dataset structure",
                              description=__doc__.split("\n\n")[0])
    add_structure_args(p)
    p.add_argument("--path", default=None, help="k-path string, e.g. GXWKGL or 'GMK,GA' (default: standard path)")
    p.add_argument("--npoints", type=int, default=None,
                   help="k-points along the path (default: 285 per 1/Å of path, 40..200: 199 for the 8-atom Si cell, "
                        "67 for a 216-atom supercell)")
    p.add_argument("--kpts", default=None, metavar="FILE", help="file with one fractional k-point (3 numbers) per line")
    p.add_argument("--reference", default=None, metavar="OTHER",
                   help="dataset whose structure of the same name is overlaid as reference")
    p.add_argument("--align", choices=["absolute", "fermi"], default="absolute",
                   help="compare with --reference in absolute energies (default) or each relative to its own E_F")
    p.add_argument("--fermi-level", type=float, default=None, help="E_F in eV (default: from the electron count)")
    p.add_argument("--lattice-tolerance", type=float, default=LATTICE_TOLERANCE, metavar="EPS",
                   help=f"tolerance in Å for recognising the Bravais lattice of the standard path (default "
                        f"{LATTICE_TOLERANCE}: a slightly strained cubic cell keeps its cubic path; 2e-4 is ASE's strict value)")
    p.add_argument("--fat", nargs="?", const="species", default=None, choices=["species", "shell", "l"],
                   help="orbital-projected ('fat') bands: Mulliken weight per species (default), shell or l "
                        "as marker size; the JSON gains 'weights'")
    p.add_argument("-o", "--output", default=None, help="figure file (.png or .pdf)")
    p.add_argument("--uncertainty", action="store_true",
                   help="shade +-2 sigma per band from the prediction's posterior draws (docs/uncertainty.md)")
    p.add_argument("--json", default=None, help="write the bands JSON (see docs/tb.md)")
    p.set_defaults(func=run)


def read_kpts(path) -> np.ndarray:
    """Fractional k-points from a text file, shape (nk, 3); '#' starts a comment.  A file whose last
    line has no newline is refused (:func:`acehamil.io.text_files.check_not_cut`): a file cut
    mid-number (``0.25`` -> ``0.2``) would otherwise give a wrong k-point without a word."""
    from ..io.text_files import check_not_cut

    try:
        check_not_cut(path)
    except ValueError as err:
        raise UserError(f"--kpts {err}; if the file is complete, end its last line with a newline") from None
    except OSError as err:
        raise UserError(f"--kpts {path}: cannot read it ({err.strerror or err})") from None
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data": said below, in one line
            k = np.loadtxt(path, ndmin=2, comments="#")
    except ValueError as err:
        raise UserError(f"{path}: cannot read k-points (3 numbers per line expected): {err}") from None
    if k.size == 0:
        raise UserError(f"{path}: no k-points (an empty file, or only comments); give one k-point of 3 fractional "
                        f"coordinates per line")
    if k.ndim != 2 or k.shape[1] != 3 or len(k) == 0:
        raise UserError(f"{path}: expected one k-point of 3 fractional coordinates per line, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise UserError(f"{path}: k-points contain NaN or inf")
    return k


def paired_reference(data_path, index: int, ref_path, orthonormal: bool = False):
    """The structure of ``ref_path`` with the same name as structure ``index`` of ``data_path``,
    refused (UserError) when absent or when its atoms differ."""
    from ..io.dataset import read_dataset

    name = read_dataset(data_path).names[index]
    ref = read_dataset(ref_path)
    if name not in ref.names:
        shown = ", ".join(ref.names[:5]) + (", ..." if len(ref.names) > 5 else "")
        raise UserError(f"--reference {ref_path} has no structure named {name!r} (structure {index} of {data_path}); "
                        f"it holds {shown}")
    k = ref.names.index(name)
    other = load_structure(ref_path, k, orthonormal, option="--reference structure")
    return other, k


def run(args) -> int:
    from ..tb.bands import band_structure, eigenvalues

    if args.npoints is not None and args.npoints < 2:
        raise UserError(f"--npoints must be >= 2, got {args.npoints}")
    solver_kw(args)  # checked before any work
    check_tb_outputs(args, REFERENCE=args.reference, KPTS=args.kpts)
    sd = load_structure(args.data, args.structure, args.orthonormal)
    if args.npoints is not None and args.kpts is None:
        from ..tb.kpath import effective_pbc

        if not effective_pbc(sd.atoms).any():  # a molecule's levels are at Γ only: --npoints was ignored
            raise UserError(f"--npoints {args.npoints} does not apply: structure {args.structure} has no periodic axis "
                            "(a molecule or cluster), its levels are at Γ only")
    if args.npoints is not None:
        check_levels_size(args.npoints, sd, f"--npoints {args.npoints}")
    kw = solver_kw(args)
    kpts, reference, ref_label, labels, breaks = None, None, "reference", None, None
    if args.kpts is not None:
        kpts = read_kpts(args.kpts)
        check_levels_size(len(kpts), sd, f"--kpts {args.kpts} ({len(kpts)} k-points)")
    elif args.path is None and args.reference is None and sd.reference_bands is not None:
        kpts, reference = (np.asarray(a, dtype=float) for a in sd.reference_bands)
        ref_label = str(sd.info.get("source", sd.info.get("code", "DFT")))
        bp = sd.info.get("band_path") or {}
        labels, breaks = bp.get("labels"), bp.get("breaks")
        if "reference_bands_spin1" in sd.info and sd.nspin == 2:
            reference = np.stack([reference, np.asarray(sd.info["reference_bands_spin1"], dtype=float)])
    npoints = args.npoints
    if npoints is None:
        npoints = 200
        if kpts is None:
            from ..tb.kpath import path_npoints

            try:
                npoints = path_npoints(sd.atoms, args.path, args.lattice_tolerance)
            except ValueError:
                pass  # a path band_structure refuses itself, with its own message
            else:
                if not args.quiet and np.any(sd.atoms.pbc):  # a molecule's levels are at Γ only
                    import sys

                    print(f"bands: {npoints} k-points along the path (default: 285 per 1/Å of path, 40..200; "
                          f"--npoints N to choose)", file=sys.stderr, flush=True)
    if args.uncertainty and sd.H_draws is not None:  # refused before any work when the draws' eigenvalues are too costly
        from ..tb.dos import monkhorst_pack
        from ..tb.draws import check_draws_work
        from ..tb.kpath import kmesh_for

        n_path = len(kpts) if kpts is not None else npoints
        try:
            check_draws_work(sd, n_path + len(monkhorst_pack(kmesh_for(sd.atoms), sd.atoms.pbc)[0]),
                             f"--npoints N, now {n_path} along the path")
        except ValueError as err:
            raise UserError(str(err)) from None
    res = band_structure(sd, path=args.path, npoints=npoints, kpts=kpts, fermi_level=args.fermi_level,
                         reference=reference, labels=labels, breaks=breaks, lattice_tolerance=args.lattice_tolerance,
                         projections=args.fat, **kw)
    alignment = "absolute energies"
    if args.reference is not None:
        from ..io.generator import _same_structure
        from ..tb.bands import structure_fermi_level

        other, k = paired_reference(args.data, args.structure, args.reference, args.orthonormal)
        if not _same_structure(other.atoms, sd.atoms, tol=1e-4):
            raise UserError(f"--reference {args.reference} structure {k} has the same name but other atoms "
                            f"(species, cell or positions differ by more than 1e-4 Å) than {args.data} structure "
                            f"{args.structure}")
        ref = eigenvalues(other, res.kpts, **kw)
        if args.align == "fermi":
            ef_ref = structure_fermi_level(other, **kw)
            if res.fermi_level is None or ef_ref is None:
                raise UserError("--align fermi needs both Fermi levels (electron counts or stored fermi_level)")
            ref = ref - ef_ref + res.fermi_level
            alignment = f"each relative to its own Fermi level (reference shifted by {res.fermi_level - ef_ref:+.4f} eV)"
        res = dataclasses.replace(res, reference=ref)
        ref_label = f"{args.reference} ({other.info.get('name', k)})"
    sigma = None
    if args.uncertainty:
        from ..tb.draws import band_uncertainty

        if sd.H_draws is None:
            raise UserError(f"{args.data} structure {args.structure} carries no H draws: --uncertainty needs a "
                            f"prediction by a model with a posterior (acehamil predict stores them)")
        _, sigma = band_uncertainty(sd, res.kpts, solver_kw=kw)
    if args.json:
        out = res.to_json()
        if sigma is not None:
            out["sigma"] = sigma.tolist()
            out["units"]["sigma"] = "eV (posterior standard deviation of E - E_F)"
        write_json(args.json, out)
    if args.output:
        from ..plotting import plot_bands

        emin = -10.0 if args.emin is None else args.emin
        emax = 6.0 if args.emax is None else args.emax
        if res.fermi_level is None and args.emin is None and args.emax is None:
            emin = emax = None
        fig = plot_bands(res, emin=emin, emax=emax, reference_label=ref_label, label=str(args.data), sigma=sigma)
        save_figure_safely(fig, args.output)
    if not args.quiet:
        ef = "unknown" if res.fermi_level is None else f"{res.fermi_level:.4f} eV"
        from ..tb.kpath import effective_pbc

        if res.periodic or effective_pbc(sd.atoms).any():  # a crystal at one k-point (--path G) is no molecule
            print(f"{len(res.kpts)} k-points ({_path_name(res)}), {res.energies.shape[-1]} bands, E_F {ef}, "
                  f"gap {gap_text(res.gap)}")
        else:
            print(f"molecule/cluster: {res.energies.shape[-1]} levels at Γ (level diagram), E_F {ef}, "
                  f"HOMO-LUMO gap {gap_text(res.gap)}")
        if res.reference is not None:
            print(f"max |bands - reference| = {res.reference_error():.3e} eV ({alignment})")
        if sigma is not None:
            print(f"uncertainty: sigma of E - E_F median {1e3 * float(np.median(sigma)):.1f} meV, "
                  f"largest {1e3 * float(sigma.max()):.1f} meV (shaded: +-2 sigma)")
    return 0


def gap_text(gap) -> str:
    """The gap line: never shows a VBM above the CBM (overlapping bands are a metal)."""
    if gap is None:
        return "unknown"
    if gap.gap > 0 and gap.cbm > gap.vbm:
        return f"{gap.gap:.4f} eV (VBM {gap.vbm:.4f}, CBM {gap.cbm:.4f})"
    if gap.cbm < gap.vbm:
        return (f"none: metallic (the highest occupied level {gap.vbm:.4f} eV lies above the lowest empty "
                f"level {gap.cbm:.4f} eV: bands overlap)")
    return "none: metallic (a band crosses E_F)"


def _path_name(res) -> str:
    ax = res.axis
    return "-".join(ax.labels) if ax.labels else "unlabelled path"

"""Shared pieces of ``acehamil bands`` and ``acehamil dos``: reading one structure, S(k) options, outputs."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ._outputs import add_overwrite_arg, check_outputs

#: Largest number of k-points (after time-reversal reduction) x bands accepted (eigenvalues in memory):
#: ``dos``, and every ``--kmesh`` of ``evaluate`` and ``select`` (:func:`check_mesh_and_samples`).
MAX_K_BANDS = 2e8


def add_structure_args(p) -> None:
    p.add_argument("data", help="acehamil dataset file (DFT or predicted H and S)")
    p.add_argument("--structure", type=int, default=0, metavar="N", help="structure index in the dataset (default 0)")
    p.add_argument("--remedy", choices=["project"], default=None,
                   help="on a singular/ill-conditioned S(k): project out its near-null space (fewer bands) "
                        "instead of stopping with an error")
    p.add_argument("--s-threshold", type=float, default=None,
                   help="eigenvalue threshold of S(k) for --remedy project (default 1e-6; only with --remedy project)")
    p.add_argument("--max-condition", type=float, default=1e10,
                   help="largest accepted condition number of S(k) (default 1e10)")
    p.add_argument("--orthonormal", action="store_true",
                   help="accept a structure without S as an orthonormal basis (S = 1); without this flag a "
                        "missing S is an error")
    p.add_argument("--emin", type=float, default=None, help="plot window, eV relative to E_F")
    p.add_argument("--emax", type=float, default=None, help="plot window, eV relative to E_F")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def solver_kw(args) -> dict:
    """The S(k) options of ``bands``/``dos`` as solver keywords, checked (UserError): ``--s-threshold`` is a
    positive number and comes with ``--remedy project`` (without it the value was ignored without a word)."""
    import math

    from ..tb.eigen import S_THRESHOLD

    thr = args.s_threshold
    if thr is not None and args.remedy != "project":
        raise UserError(f"--s-threshold {thr:g} applies only with --remedy project (the S(k) directions it projects "
                        "out); without it an ill-conditioned S(k) stops with an error")
    if thr is not None and not (thr > 0 and math.isfinite(thr)):
        raise UserError(f"--s-threshold must be a positive number, got {thr:g}")
    return {"remedy": args.remedy, "s_threshold": S_THRESHOLD if thr is None else thr,
            "max_condition": args.max_condition}


def load_structure(path, index: int, orthonormal: bool = False, option: str = "--structure"):
    """One StructureData from a dataset file, with clear errors (missing S refused unless ``orthonormal``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such dataset file: {p}")
    from ..io.dataset import read_dataset

    ds = read_dataset(p)
    if not -len(ds) <= index < len(ds):
        raise UserError(f"{option} {index} out of range: {p} holds {len(ds)} structure(s)")
    sd = ds[index]
    if not sd.H:
        raise UserError(f"{p} structure {index} has no Hamiltonian (S only?)")
    if sd.S is None and not orthonormal:
        raise UserError(f"{p} structure {index} ({ds.names[index]!r}) has no overlap S; if its basis really is "
                        f"orthonormal, pass --orthonormal")
    return sd


def write_json(path, obj) -> None:
    """Strict JSON (null for NaN/inf), written atomically under a unique temporary name."""
    from ..io.safe_write import atomic_write_text, dumps_strict

    atomic_write_text(path, dumps_strict(obj, indent=1))


def check_output(path) -> None:
    """Fail before any work if a figure path has the wrong suffix (see also :func:`check_tb_outputs`)."""
    if path is None:
        return
    from ..plotting import FORMATS

    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UserError(f"figure file must end in one of {FORMATS}, got {p.name!r}")
    if not p.parent.is_dir():
        raise UserError(f"cannot write {p}: folder {str(p.parent)!r} does not exist")


#: Largest k-points x bands (x spin channels) a band structure or DOS holds: 2e8 levels are 1.5 GiB of eigenvalues.
MAX_LEVELS = 2e8
#: Largest energy grid of a DOS (points): far beyond any plot's resolution.
MAX_ENERGY_POINTS = 10**6


def check_levels_size(nk: int, sd, option: str) -> None:
    """UserError, before any work, when ``nk`` k-points of ``sd`` need more than :data:`MAX_LEVELS` eigenvalues."""
    norb = sd.S.norb if sd.S is not None else sd.H[0].norb
    levels = float(nk) * norb * max(1, len(sd.H))
    if levels > MAX_LEVELS:
        raise UserError(f"{option}: {nk} k-points x {norb} bands would need ~{levels * 8 / 2**30:.3g} GiB of "
                        f"eigenvalues and ~{nk * norb**3 * 1e-9:.3g} Gflop of eigen-solves; use fewer k-points")


def check_energy_options(args) -> None:
    """``--emin``/``--emax``/``--fermi-level`` finite (eV) and ``--emin < --emax``, before any work."""
    import math

    for opt in ("emin", "emax", "fermi_level"):
        v = getattr(args, opt, None)
        if v is not None and not math.isfinite(v):
            raise UserError(f"--{opt.replace('_', '-')} must be a finite energy in eV, got {v}")
    npoints = getattr(args, "npoints", None)
    if getattr(args, "command", "") == "dos" and npoints is not None and npoints > MAX_ENERGY_POINTS:
        raise UserError(f"--npoints {npoints}: more than {MAX_ENERGY_POINTS} energies (far beyond any plot's "
                        f"resolution; each costs a pass over every level)")
    if args.emin is not None and args.emax is not None and not args.emin < args.emax:
        raise UserError(f"--emin {args.emin} must be below --emax {args.emax} (eV relative to E_F)")


def check_tb_outputs(args, **extra_inputs) -> None:
    """Write rules of bands/dos (``docs/files-and-safety.md``) and their energy options, checked
    before any work."""
    check_energy_options(args)
    check_output(args.output)
    inputs = {"DATA": args.data, **{k: v for k, v in extra_inputs.items() if v is not None}}
    check_outputs(inputs, {"-o": args.output, "--json": args.json}, overwrite=args.overwrite)


def save_figure_safely(fig, path) -> None:
    """Save a figure atomically (unique temporary, umask-respecting mode)."""
    from ..io.safe_write import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=Path(path).suffix.lower()[1:])


def check_mesh_and_samples(kmesh, samples, structures, norb_of, option: str = "--kmesh") -> None:
    """Refuse (UserError) before any work a ``--samples`` above
    :data:`~acehamil.models.hamiltonian.config.MAX_SAMPLES` or a k-mesh whose eigenvalues
    over ``structures`` (ase.Atoms, or objects with ``.atoms``) would exceed :data:`MAX_K_BANDS`
    levels (``evaluate --kmesh 1000 1000 1000`` ran until killed).  ``norb_of(structure)`` gives its orbitals."""
    import numpy as np

    from ..models.hamiltonian.config import MAX_SAMPLES
    from ..tb.kpath import effective_pbc

    if samples is not None and samples > MAX_SAMPLES:
        raise UserError(f"--samples must be <= {MAX_SAMPLES} (the spreads' sampling error is ~1/sqrt(2 x samples): "
                        f"0.7 % at {MAX_SAMPLES}), got {samples}")
    if kmesh is None:
        return
    for s in structures:
        atoms = getattr(s, "atoms", s)
        nk = float(np.prod([float(n) if p else 1.0 for n, p in zip(kmesh, effective_pbc(atoms))]))
        levels = nk * norb_of(s)
        if levels > MAX_K_BANDS:
            raise UserError(f"{option} {' '.join(map(str, kmesh))}: {nk:.3g} k-points x {norb_of(s)} orbitals of a "
                            f"{len(atoms)}-atom structure are {levels:.3g} levels, more than {MAX_K_BANDS:.0e} "
                            f"(~{levels * 16 / 2**30:.3g} GiB of eigenvalues alone); use a smaller grid")

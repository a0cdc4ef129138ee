"""``acehamil generate pyscf``: make a dataset with PySCF, resumable after an interruption.

Examples::

    acehamil generate pyscf --base si8 --count 40 --seed 0 -o data/si8_szv.h5
    acehamil generate pyscf --base-file my_cell.cif --count 10 -o mine.h5       # named my_cell-0000, ...
    acehamil generate pyscf --structures mixed_sizes.xyz -o mixed.h5            # meshes chosen per cell
    acehamil generate pyscf --structures water.xyz --molecule --basis def2-svp --xc pbe -o water.h5

Every periodic structure is checked against PySCF's own bands at off-mesh k-points; its band error
(meV) is printed, stored in its ``info["band_error"]``, and above ``--band-tol`` the run stops (or,
with ``--on-band-error flag``, stores the structure flagged).
"""

from __future__ import annotations

import argparse
import sys

def _slab(kind: str):
    """Si slabs, bulk-terminated (unreconstructed: metallic surface states, use --smearing), pbc (T, T, F),
    14 Å of vacuum (> the default r_cut 12 Å, so no kept bond crosses it)."""
    from ase.build import diamond100, diamond111

    if kind == "001":
        return diamond100("Si", size=(1, 1, 8), a=5.43, vacuum=7.0)  # 8 layers, 1x1, 3.84 Å in-plane
    return diamond111("Si", size=(1, 1, 6), a=5.43, vacuum=7.0)  # 6 layers (3 bilayers), 1x1 hexagonal


BASES = {
    "si8": lambda: __import__("ase.build", fromlist=["bulk"]).bulk("Si", "diamond", a=5.43, cubic=True),
    "si2": lambda: __import__("ase.build", fromlist=["bulk"]).bulk("Si", "diamond", a=5.43),
    "si001": lambda: _slab("001"),
    "si111": lambda: _slab("111"),
}


#: Most k-points of a generate k-mesh (--scf-kmesh, --fourier-kmesh) and most tiles of a --repeat supercell.
MAX_GENERATE_KPOINTS = 100_000
MAX_GENERATE_TILES = 10_000


def _mesh_arg(values, option: str):
    """``["auto"]`` -> "auto"; three positive integers -> tuple."""
    if list(values) == ["auto"]:
        return "auto"
    try:
        mesh = tuple(int(v) for v in values)
    except ValueError:
        mesh = ()
    if len(mesh) != 3 or min(mesh) < 1:
        raise ValueError(f"{option} takes 'auto' or three positive integers, got {' '.join(values)}")
    if mesh[0] * mesh[1] * mesh[2] > MAX_GENERATE_KPOINTS:  # --fourier-kmesh 1000 1000 1000 was killed for memory
        raise ValueError(f"{option} {' '.join(values)} asks {mesh[0] * mesh[1] * mesh[2]:.3g} k-points, more than "
                         f"{MAX_GENERATE_KPOINTS} (DFT meshes of a few hundred points are typical)")
    return mesh


def _ke_arg(value: str):
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (Hartree) or 'auto', got {value!r}") from None


def _smearing_arg(value: str):
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a width (Hartree) or 'auto', got {value!r}") from None


def register(sub) -> None:
    from ..io.band_check import BAND_TOL
    from ..io.kmesh import SCF_LENGTH

    p = sub.add_parser("generate", help="generate training data with a DFT code (PySCF)")
    p.add_argument("code", choices=["pyscf"], help="DFT code")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--structures", help="ASE-readable structure file (every frame is computed, named <stem>-NNNN)")
    src.add_argument("--base", choices=sorted(BASES),
                     help="built-in base structure to perturb: si8 (cubic diamond cell), si2 (primitive), si001 / si111 "
                          "(8- and 6-layer 1x1 slabs with 14 Å vacuum, pbc along x, y only: 2D k-meshes; "
                          "unreconstructed, so metallic: add --smearing)")
    src.add_argument("--base-file", help="perturb the first frame of this file (structures named <stem>-NNNN)")
    p.add_argument("--kind", choices=["perturb", "vacancy", "interstitial", "strain", "rattle"], default="perturb",
                   help="what to make from the base (acehamil.io.plans): perturb (default: displacements + random strain), "
                        "vacancy / interstitial (perturbed, then --n-defects atoms removed / inserted in the largest voids), "
                        "strain (isotropic, evenly over -strain..+strain), rattle (MD-like Gaussian displacements, sigma in "
                        "the --displacement range; Si ~0.077 Å at 300 K, ~0.14 Å at 1000 K)")
    p.add_argument("--repeat", type=int, nargs=3, default=None, metavar="N",
                   help="use the base repeated N1 x N2 x N3 times (e.g. 2 2 2: the 64-atom Si cell)")
    p.add_argument("--n-defects", type=int, default=1, help="vacancies or interstitials per structure (default 1)")
    p.add_argument("--count", type=int, default=40, help="number of structures (default 40)")
    p.add_argument("--displacement", type=float, nargs=2, default=(0.05, 0.15), metavar=("LOW", "HIGH"),
                   help="per-atom displacement length range, Å (default 0.05 0.15)")
    p.add_argument("--strain", type=float, default=0.02, help="max |strain| entry (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--molecule", action="store_true", help="molecular calculation (pyscf.dft) instead of periodic")
    p.add_argument("--basis", default=None, help="basis set (default gth-szv for crystals, def2-svp for molecules)")
    p.add_argument("--pseudo", default="gth-pade")
    p.add_argument("--xc", default=None, help="functional (default lda,vwn for crystals, pbe for molecules)")
    p.add_argument("--scf-kmesh", nargs="+", default=["auto"], metavar="N",
                   help=f"SCF Monkhorst-Pack mesh, three integers or 'auto' (default): the same k-density for every "
                        f"cell (Born-von Karman supercell >= {SCF_LENGTH:g} Å: 2x2x2 for the 8-atom Si cell, 1x1x1 for "
                        "its 64-atom supercell)")
    p.add_argument("--fourier-kmesh", nargs="+", default=["auto"], metavar="N",
                   help="mesh on which H(k) is Fourier-transformed to H(T), three integers or 'auto' (default): the "
                        "smallest on which every bond <= r_cut is the unique shortest image; a coarser one is refused")
    p.add_argument("--ke-cutoff", type=_ke_arg, default="auto",
                   help="FFT grid cutoff, Hartree, or 'auto' (default): the lowest of 20, 30, 40, 60, ... whose FFT "
                        "noise in H(k) is below 1e-5 Ha for the structure's elements (Si: 20, C: 60)")
    p.add_argument("--r-cut", type=float, default=12.0, help="keep blocks with bond length <= r_cut Å (default 12)")
    p.add_argument("--conv-tol", type=float, default=1e-8, help="SCF tolerance, Hartree")
    p.add_argument("--smearing", type=_smearing_arg, default=0.0,
                   help="Fermi-Dirac smearing of the SCF occupations, Hartree (default 0: none); metals and "
                        "unreconstructed surfaces need it to converge (e.g. 0.005); 'auto': none, unless a structure's "
                        "aufbau filling stays uneven over k-points or its SCF does not converge, then 0.005 "
                        "(per structure, recorded in info resolved.smearing)")
    p.add_argument("--band-tol", type=float, default=BAND_TOL,
                   help=f"largest accepted band error against PySCF's own bands (occupied and E_F +- 2 eV bands), "
                        f"meV (default {BAND_TOL:g}: a fraction of the 5-10 meV model targets)")
    p.add_argument("--on-band-error", choices=["stop", "flag"], default="stop",
                   help="above --band-tol: stop without storing the structure (default), or store it flagged "
                        "(info band_error.above_tol)")
    p.add_argument("-o", "--output", required=True, help="output dataset (.h5)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an existing output: skip the structures it holds (only with the same settings "
                           "and structures; anything else is refused)")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output (start afresh)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings_of(args) -> dict:
    """The settings stored in the output and compared on ``--resume`` (everything that changes a result;
    the structures themselves are compared by position, so file names may move).  Meshes and cutoffs are
    stored as requested ("auto" stays "auto"); what each structure got is in its ``info["resolved"]``."""
    keys = ("code", "base", "kind", "repeat", "n_defects", "displacement", "strain", "seed", "molecule", "basis",
            "pseudo", "xc", "scf_kmesh", "fourier_kmesh", "ke_cutoff", "r_cut", "conv_tol")
    out = {}
    for k in keys:
        v = getattr(args, k, None)
        out[k] = list(v) if isinstance(v, (tuple, list)) else v
    if getattr(args, "smearing", 0.0):  # only when set: files made before the option compare equal
        out["smearing"] = args.smearing
    return out


def plan_of(args) -> list:
    """The named structures ``args`` ask for (see :mod:`acehamil.io.generator`)."""
    from pathlib import Path

    from ..io import generator, plans

    if args.structures:
        if args.kind != "perturb" or args.repeat:
            raise ValueError("--kind and --repeat apply to --base or --base-file (a --structures file is computed as it is)")
        return generator.structures_from_file(args.structures)
    if args.base_file:
        base, prefix = generator.first_frame(args.base_file), Path(args.base_file).stem
    else:
        base, prefix = BASES[args.base](), args.base
    if args.repeat:
        base = plans.supercell(base, args.repeat)
        prefix = f"{prefix}_{'x'.join(map(str, args.repeat))}"
    return plans.make_plan(base, args.kind, args.count, tuple(args.displacement), args.strain, args.seed, prefix=prefix,
                           n_defects=args.n_defects)


def crystal_settings(args):
    """The :class:`~acehamil.io.pyscf_gen.CrystalSettings` of ``args`` (stored with every structure)."""
    from ..io.pyscf_gen import CrystalSettings

    return CrystalSettings(
        basis=args.basis or "gth-szv", pseudo=args.pseudo, xc=args.xc or "lda,vwn",
        scf_kmesh=_mesh_arg(args.scf_kmesh, "--scf-kmesh"), fourier_kmesh=_mesh_arg(args.fourier_kmesh, "--fourier-kmesh"),
        ke_cutoff=args.ke_cutoff, conv_tol=args.conv_tol, r_cut=args.r_cut, smearing=args.smearing,
    )


def _check_numbers(args) -> None:
    """Settings no DFT run should start with (refused before the first structure is computed)."""
    import math

    from ..errors import UserError

    if not args.structures and args.count < 1:
        raise UserError(f"--count must be >= 1, got {args.count}")
    if args.seed < 0:  # numpy's "expected non-negative integer" was an internal-error traceback
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.repeat and min(args.repeat) >= 1 and math.prod(args.repeat) > MAX_GENERATE_TILES:
        raise UserError(f"--repeat {' '.join(map(str, args.repeat))} tiles the base {math.prod(args.repeat):.3g} times, "
                        f"more than {MAX_GENERATE_TILES} (1000 1000 1000 was a MemoryError traceback)")
    if not (math.isfinite(args.strain) and 0 <= args.strain < 0.5):
        raise UserError(f"--strain (largest |strain| entry) must be in [0, 0.5), got {args.strain}")
    for opt in ("conv_tol", "band_tol"):
        v = getattr(args, opt)
        if not (math.isfinite(v) and v > 0):
            raise UserError(f"--{opt.replace('_', '-')} must be a positive number, got {v}")


def _check_pyscf_names(basis: str, xc: str, plan) -> None:
    """A basis set PySCF cannot load for a species of the plan, or a functional libxc does not know, is
    refused before the first (expensive) structure instead of failing inside PySCF."""
    from ase.data import chemical_symbols

    from ..errors import UserError

    try:
        from pyscf import gto
        from pyscf.dft import libxc
    except ImportError:
        return  # the computation itself says how to install PySCF
    import warnings

    for z in sorted({int(n) for _, at in plan for n in at.numbers}):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PySCF's hint to install basis-set-exchange
                gto.basis.load(basis, chemical_symbols[z])
        except Exception as err:  # noqa: BLE001 - PySCF raises several kinds for an unknown name
            raise UserError(f"--basis {basis!r}: PySCF has no such basis for {chemical_symbols[z]} "
                            f"({type(err).__name__})") from None
    try:
        libxc.parse_xc(xc)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"--xc {xc!r}: not a functional libxc knows ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def _note_hidden_copies(output) -> None:
    """Say on stderr (even with -q) where a ``.NAME.*.replaced`` file lies beside the output: acehamil before
    55de7da moved an output aside under that name during ``generate --overwrite`` and left it there when the run was
    killed (before the first structure, as the only copy of the old data).  Nothing reads or removes it: the user
    decides, since it may be the only copy."""
    from pathlib import Path

    p = Path(output)
    hidden = sorted(h.name for h in p.parent.glob(f".{p.name}.*.replaced") if h.is_file())
    if hidden:
        keep = f"rename it to {p.name} to get it back" if not p.exists() else "delete it, or rename it to keep it"
        print(f"note: {', '.join(hidden)} in {p.parent}: a copy of an older {p.name} hidden by an interrupted "
              f"'generate --overwrite' of an earlier acehamil; nothing reads it ({keep})", file=sys.stderr)


def run(args) -> int:
    from ..io import generator
    from ._outputs import check_outputs

    check_outputs({"--structures": args.structures, "--base-file": args.base_file}, {"-o": args.output},
                  overwrite=args.overwrite, may_exist={"-o"} if args.resume else ())
    _note_hidden_copies(args.output)
    _check_numbers(args)
    plan = plan_of(args)
    if args.molecule:
        from ..io.pyscf_gen import run_molecule

        basis, xc = args.basis or "def2-svp", args.xc or "pbe"

        def compute(atoms, state):
            return run_molecule(atoms, basis=basis, xc=xc, conv_tol=args.conv_tol, forces=True), None
    else:
        from ..io.band_check import check_band_tolerance
        from ..io.pyscf_gen import run_crystal

        settings = crystal_settings(args)

        def log(msg):  # a structure can take many minutes (an SCF retried): say where it is
            print(f"  {msg}", file=sys.stderr, flush=True)

        def compute(atoms, state):
            data, state = run_crystal(atoms, settings, dm0=state, log=None if args.quiet else log)
            return check_band_tolerance(data, args.band_tol, args.on_band_error), state

    _check_pyscf_names(basis if args.molecule else settings.basis, xc if args.molecule else settings.xc, plan)
    res = generator.generate(plan, args.output, compute, progress=not args.quiet, settings=settings_of(args),
                             overwrite=args.overwrite)
    line = f"{args.output}: computed {res['done']}, already present {res['skipped']}, {res['seconds']:.0f} s"
    if res.get("band_error_max_meV") is not None:
        line += (f"; band error vs PySCF (occupied and E_F +- 2 eV bands) max {res['band_error_max_meV']:.2f} meV, "
                 f"median {res['band_error_median_meV']:.2f} meV")
    print(line)
    return 0

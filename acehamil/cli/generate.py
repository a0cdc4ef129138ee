"""``acehamil generate pyscf``: make a dataset with PySCF, resumable after an interruption.

Examples::

    acehamil generate pyscf --base si8 --count 40 --seed 0 -o data/si8_szv.h5
    acehamil generate pyscf --structures water.xyz --molecule --basis def2-svp --xc pbe -o water.h5
"""

from __future__ import annotations

BASES = {
    "si8": lambda: __import__("ase.build", fromlist=["bulk"]).bulk("Si", "diamond", a=5.43, cubic=True),
    "si2": lambda: __import__("ase.build", fromlist=["bulk"]).bulk("Si", "diamond", a=5.43),
}


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate training data with a DFT code (PySCF)")
    p.add_argument("code", choices=["pyscf"], help="DFT code")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--structures", help="ASE-readable structure file (every frame is computed)")
    src.add_argument("--base", choices=sorted(BASES), help="built-in base structure to perturb")
    p.add_argument("--base-file", help="perturb the first frame of this file instead of a built-in base")
    p.add_argument("--count", type=int, default=40, help="number of perturbed structures (default 40)")
    p.add_argument("--displacement", type=float, nargs=2, default=(0.05, 0.15), metavar=("LOW", "HIGH"),
                   help="per-atom displacement length range, Å (default 0.05 0.15)")
    p.add_argument("--strain", type=float, default=0.02, help="max |strain| entry (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--molecule", action="store_true", help="molecular calculation (pyscf.dft) instead of periodic")
    p.add_argument("--basis", default=None, help="basis set (default gth-szv for crystals, def2-svp for molecules)")
    p.add_argument("--pseudo", default="gth-pade")
    p.add_argument("--xc", default=None, help="functional (default lda,vwn for crystals, pbe for molecules)")
    p.add_argument("--scf-kmesh", type=int, nargs=3, default=(2, 2, 2))
    p.add_argument("--fourier-kmesh", type=int, nargs=3, default=(4, 4, 4))
    p.add_argument("--ke-cutoff", type=float, default=20.0, help="FFT grid cutoff, Hartree (default 20)")
    p.add_argument("--r-cut", type=float, default=12.0, help="keep blocks with bond length <= r_cut Å (default 12)")
    p.add_argument("--conv-tol", type=float, default=1e-8, help="SCF tolerance, Hartree")
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
    the structures themselves are compared by position, so file names may move)."""
    keys = ("code", "base", "displacement", "strain", "seed", "molecule", "basis",
            "pseudo", "xc", "scf_kmesh", "fourier_kmesh", "ke_cutoff", "r_cut", "conv_tol")
    out = {}
    for k in keys:
        v = getattr(args, k, None)
        out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def run(args) -> int:
    import os

    from ..io import generator
    from ._outputs import check_outputs

    check_outputs({"--structures": args.structures, "--base-file": args.base_file}, {"-o": args.output},
                  overwrite=args.overwrite, may_exist={"-o"} if args.resume else ())
    if args.overwrite and os.path.exists(args.output):
        os.unlink(args.output)

    if args.structures:
        plan = generator.structures_from_file(args.structures)
    else:
        if args.base_file:
            from ase.io import read

            base = read(args.base_file)
        else:
            base = BASES[args.base]()
        plan = generator.perturbed_structures(base, args.count, tuple(args.displacement), args.strain, args.seed,
                                              prefix=args.base or "s")
    if args.molecule:
        from ..io.pyscf_gen import run_molecule

        basis, xc = args.basis or "def2-svp", args.xc or "pbe"

        def compute(atoms, state):
            return run_molecule(atoms, basis=basis, xc=xc, conv_tol=args.conv_tol, forces=True), None
    else:
        from ..io.pyscf_gen import CrystalSettings, run_crystal

        settings = CrystalSettings(
            basis=args.basis or "gth-szv", pseudo=args.pseudo, xc=args.xc or "lda,vwn", scf_kmesh=tuple(args.scf_kmesh),
            fourier_kmesh=tuple(args.fourier_kmesh), ke_cutoff=args.ke_cutoff, conv_tol=args.conv_tol, r_cut=args.r_cut,
        )

        def compute(atoms, state):
            return run_crystal(atoms, settings, dm0=state)

    res = generator.generate(plan, args.output, compute, progress=not args.quiet, settings=settings_of(args))
    print(f"{args.output}: computed {res['done']}, already present {res['skipped']}, {res['seconds']:.0f} s")
    return 0

"""``acehamil eigs DATA --near fermi -n 20``: generalized eigenpairs nearest an energy at one k-point.

Small systems are diagonalised densely; large ones use shift-invert Lanczos on the sparse
``H(k) - sigma S(k)`` (one sparse LU factorisation), see docs/tb.md.  ``--near fermi`` uses
the structure's stored Fermi level, else the Fermi level from its electron count (KPM for
large systems).  Prints the energies (eV, absolute and relative to the shift); ``--json``
writes ``{"energies", "sigma", "kpt", "residual_eV", "method", "seconds", "norb"}``.
"""

from __future__ import annotations

import time

from ..errors import UserError
from ._tbcommon import check_levels_size, load_structure, write_json


#: ``--near`` beyond this (eV) is refused: no tight-binding level lies there, and the shift loses every digit.
MAX_NEAR_EV = 1e5


def register(subparsers) -> None:
    from ._outputs import add_overwrite_arg

    p = subparsers.add_parser("eigs", help="eigenpairs nearest an energy (shift-invert for large systems)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="acehamil dataset file")
    p.add_argument("--structure", type=int, default=0, metavar="N", help="structure index in the dataset (default 0)")
    p.add_argument("--near", default="fermi", help="energy in eV, or 'fermi' (default)")
    p.add_argument("-n", type=int, default=None, help="number of eigenpairs (default 20, or all but one of a smaller "
                                                      "structure's orbitals)")
    p.add_argument("--kpt", type=float, nargs=3, default=[0.0, 0.0, 0.0], metavar=("K1", "K2", "K3"),
                   help="fractional k-point (default Gamma, where the matrices are real)")
    p.add_argument("--method", choices=["auto", "dense", "shift-invert"], default="auto",
                   help="auto: dense up to 3000 orbitals, else shift-invert")
    p.add_argument("--supercell", type=int, nargs=3, default=None, metavar=("N1", "N2", "N3"),
                   help="eigenpairs of the structure tiled N1 x N2 x N3 times (--kpt in the supercell's zone), exactly "
                        "from the cell's blocks: one dense cell solve per tile wave vector")
    p.add_argument("--factorization", choices=["superlu", "pardiso"], default="superlu",
                   help="shift-invert: SuperLU (default) or MKL PARDISO LDL^T (pip install pypardiso; real k only; "
                        "4.5x less CPU at 6912 orbitals, docs/tb.md)")
    p.add_argument("--spin", type=int, default=0, help="spin channel (default 0)")
    p.add_argument("--orthonormal", action="store_true", help="accept a structure without S (S = 1)")
    p.add_argument("--json", default=None, help="write the eigenvalues as JSON")
    add_overwrite_arg(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ._outputs import check_outputs
    from ..tb.solvers import eigenpairs

    if args.n is not None and args.n < 1:
        raise UserError(f"-n must be >= 1, got {args.n}")
    near = args.near
    if near != "fermi":
        try:
            near = float(near)
        except ValueError:
            raise UserError(f"--near must be an energy in eV or 'fermi', got {args.near!r}") from None
        if not abs(near) < float("inf"):
            raise UserError(f"--near must be a finite energy in eV (or 'fermi'), got {args.near!r}")
        if abs(near) > MAX_NEAR_EV:  # 1e300 printed the levels' distances as 300-digit numbers
            raise UserError(f"--near {args.near} eV is beyond any level of a Hamiltonian (|E| <= {MAX_NEAR_EV:g} eV "
                            "accepted): in another unit?")
    check_outputs({"DATA": args.data}, {"--json": args.json}, overwrite=args.overwrite)
    sd = load_structure(args.data, args.structure, args.orthonormal)
    norb = sd.H[0].norb
    if args.supercell is not None:
        from ..structure.supercell import check_reps

        if args.method == "shift-invert":
            raise UserError("--supercell is solved exactly per tile wave vector: use --method auto or dense")
        try:
            tiles = int(check_reps(args.supercell, sd.atoms.pbc).prod())
        except ValueError as err:
            raise UserError(f"--supercell: {err}") from None
        check_levels_size(tiles, sd, f"--supercell {' '.join(map(str, args.supercell))} ({tiles} tile wave vectors)")
        norb *= tiles
    n = args.n
    if n is None:  # the default: 20, but a 16-orbital cell was refused ("-n 20 must be smaller than ...")
        n = min(20, norb - 1)
        if n < 1:
            raise UserError(f"the structure has {norb} orbital: no eigenpairs to look for near an energy")
    if n >= norb:
        raise UserError(f"-n {n} must be smaller than the number of orbitals ({norb})")
    t0 = time.perf_counter()
    if args.factorization == "pardiso":
        from ..tb.pardiso import available

        if not available():
            raise UserError("--factorization pardiso needs the optional package pypardiso (pip install pypardiso)")
    res = eigenpairs(sd, near=near, n=n, kpt=args.kpt, method=args.method, spin=args.spin, supercell=args.supercell,
                     factorization=args.factorization)
    seconds = time.perf_counter() - t0
    if args.json:
        write_json(args.json, {**res.to_json(), "seconds": seconds, "norb": int(norb)})
    if not args.quiet:
        print(f"{len(res.energies)} eigenvalues nearest {res.sigma:.6f} eV at k = {res.kpt.tolist()} "
              f"({res.method}, {norb} orbitals, {seconds:.2f} s, residual {res.residual:.2e} eV):")
        for e in res.energies:
            print(f"{e:16.9f}  {e - res.sigma:+12.6f}")
    return 0

"""``acehamil dos DATA -o dos.png [--json dos.json]``: density of states (and Mulliken PDOS).

The DOS is ``g_s sum_k w_k sum_n delta(E - eps_nk)`` in states/eV per cell on
a time-reversal-reduced Monkhorst-Pack grid (``g_s`` = 2 for one spin
channel, channels summed when there are two).  ``--width`` is the smearing
width ``w`` of :mod:`acehamil.tb.smearing` (Gaussian ``exp(-(x/w)^2)``).
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ._tbcommon import (MAX_K_BANDS, add_structure_args, check_tb_outputs, load_structure, save_figure_safely,
                        solver_kw, write_json)



#: Most Chebyshev moments or random vectors of a KPM DOS.
MAX_KPM = 100_000
#: Most orbitals of a KPM supercell (a complex vector of 1e8 orbitals is 1.5 GiB; KPM holds a few per random vector).
MAX_KPM_ORBITALS = 100_000_000

def register(subparsers) -> None:
    p = subparsers.add_parser("dos", help="density of states (plot and/or JSON) of a dataset structure",
                              description=__doc__.split("\n\n")[0])
    add_structure_args(p)
    p.add_argument("--method", choices=["auto", "dense", "kpm"], default="auto",
                   help="dense diagonalisation, or the kernel polynomial method for large systems (O(N), with "
                        "error bars); auto: dense up to 3000 orbitals (see docs/tb.md)")
    p.add_argument("--kmesh", type=int, nargs=3, default=None, metavar=("N1", "N2", "N3"),
                   help="Monkhorst-Pack grid (default, dense: scaled with the cell, n_i = ceil(40 Å |b_i|) (8 8 8 for "
                        "the 8-atom Si cell, 3 3 3 for a 216-atom supercell, Gamma only beyond 40 Å and for molecules); "
                        "KPM: 1 1 1 = Gamma; 1 along non-periodic axes)")
    p.add_argument("--moments", type=int, default=1024, help="KPM: Chebyshev moments (resolution ~ pi * bandwidth / 2 / moments)")
    p.add_argument("--vectors", type=int, default=16, help="KPM: random vectors of the stochastic trace")
    p.add_argument("--kernel", choices=["jackson", "lorentz"], default="jackson", help="KPM damping kernel")
    p.add_argument("--seed", type=int, default=0, help="KPM: seed of the random vectors")
    p.add_argument("--s-solver", choices=["auto", "lu", "cg"], default="auto",
                   help="KPM: how S^-1 is applied (sparse LU up to 20000 orbitals, else conjugate gradients)")
    p.add_argument("--supercell", type=int, nargs=3, default=None, metavar=("N1", "N2", "N3"),
                   help="KPM DOS of the structure tiled N1 x N2 x N3 times, from the cell's blocks only (FFT over the "
                        "tiles; no supercell matrix; states/eV per supercell; --kmesh samples the supercell's zone)")
    p.add_argument("--gamma-centred", action="store_true",
                   help="shift even grid axes to contain Gamma (as FHI-aims' k_grid); odd axes always do")
    p.add_argument("--width", type=float, default=0.05, help="smearing width in eV (default 0.05)")
    p.add_argument("--smearing", default="gaussian", choices=["gaussian", "fermi-dirac", "methfessel-paxton"])
    p.add_argument("--pdos", nargs="?", const="species", default=None, choices=["species", "shell", "l"],
                   help="Mulliken PDOS per species (default), shell or l")
    p.add_argument("--erange", type=float, nargs=2, default=None, metavar=("EMIN", "EMAX"),
                   help="absolute energy range of the DOS in eV (default: all levels)")
    p.add_argument("--window", choices=["valence", "all"], default="valence",
                   help="default energy range: valence (leave out core levels below a >= 20 eV gap and empty levels "
                        "far above E_F, as in all-electron data) or all levels; --erange overrides")
    p.add_argument("--npoints", type=int, default=None,
                   help="energy points (default: spacing width/5 over all levels; 2001 with --erange)")
    p.add_argument("--fermi-level", type=float, default=None, help="E_F in eV (default: from the electron count)")
    p.add_argument("-o", "--output", default=None, help="figure file (.png or .pdf)")
    p.add_argument("--uncertainty", action="store_true",
                   help="shade +-2 sigma of the DOS over the prediction's posterior draws (docs/uncertainty.md)")
    p.add_argument("--json", default=None, help="write the DOS JSON (see docs/tb.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..tb.solvers import choose_dos_method

    if args.npoints is not None and args.npoints < 2:
        raise UserError(f"--npoints must be >= 2, got {args.npoints}")
    if args.kmesh is not None and min(args.kmesh) < 1:
        raise UserError(f"k-mesh entries must be >= 1, got --kmesh {args.kmesh}")
    if args.erange is not None and not (np.isfinite(args.erange).all() and args.erange[0] < args.erange[1]):
        raise UserError(f"--erange EMIN EMAX needs finite EMIN < EMAX, got {args.erange[0]} {args.erange[1]}")
    if not args.width > 0:
        raise UserError(f"--width must be > 0 eV, got {args.width}")
    if args.moments < 2 or args.vectors < 1:
        raise UserError(f"--moments must be >= 2 and --vectors >= 1, got {args.moments}, {args.vectors}")
    if args.moments > MAX_KPM or args.vectors > MAX_KPM:  # --moments 1e9 was a MemoryError traceback
        raise UserError(f"--moments and --vectors must be <= {MAX_KPM} (resolution ~ pi x band width / 2 / moments: "
                        f"1e5 moments resolve ~1 meV of a 60 eV band), got {args.moments}, {args.vectors}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.erange is not None and args.method != "kpm" and args.supercell is None:
        from ..tb.dos import check_grid_resolves

        try:  # before any work (the default range is checked once the levels are known)
            check_grid_resolves(args.erange[1] - args.erange[0], args.npoints or 2001, args.width)
        except ValueError as err:
            raise UserError(f"--erange, --npoints, --width: {err}") from None
    solver_kw(args)  # checked before any work
    check_tb_outputs(args)
    sd = load_structure(args.data, args.structure, args.orthonormal)
    energies = None if args.erange is None else np.linspace(args.erange[0], args.erange[1], args.npoints or 2001)
    if args.supercell is not None:
        from ..structure.supercell import check_reps

        if args.method == "dense" or args.pdos or args.uncertainty:
            raise UserError("--supercell is a KPM DOS (no --method dense, --pdos or --uncertainty): for a dense DOS "
                            "use the cell with a k-mesh multiplied by the tiling")
        try:
            tiles = int(check_reps(args.supercell, sd.atoms.pbc).prod())
        except ValueError as err:
            raise UserError(f"--supercell: {err}") from None
        norb = sd.H[0].norb * tiles
        if norb > MAX_KPM_ORBITALS:  # --supercell 1000 1000 1000 was a MemoryError traceback
            raise UserError(f"--supercell {' '.join(map(str, args.supercell))}: {norb:.3g} orbitals, more than "
                            f"{MAX_KPM_ORBITALS:.0e}: each KPM random vector alone would need {norb * 16 / 2**30:.3g} GiB; "
                            f"use a smaller tiling")
        return _run_kpm(args, sd, energies)
    method = choose_dos_method(sd.H[0].norb, args.method)
    if method == "kpm":
        return _run_kpm(args, sd, energies)
    chosen = args.kmesh is None
    if chosen:
        from ..tb.kpath import DOS_K_DENSITY, dos_kmesh, effective_pbc

        args.kmesh = list(dos_kmesh(sd.atoms))
        if not args.quiet:
            import sys

            mesh = "x".join(map(str, args.kmesh)) if effective_pbc(sd.atoms).any() else "Γ only (molecule/cluster)"
            print(f"dos: k-mesh {mesh} (default: n_i = ceil({DOS_K_DENSITY:g} Å x |b_i|), scaled with the cell; "
                  f"--kmesh N1 N2 N3 to choose)", file=sys.stderr, flush=True)
    estimate_size(args.kmesh, sd, quiet=args.quiet)
    from ..tb.dos import density_of_states, monkhorst_pack

    if args.uncertainty and sd.H_draws is not None:  # refused before any work when the draws' eigenvalues are too costly
        from ..tb.draws import check_draws_work

        try:
            check_draws_work(sd, len(monkhorst_pack(args.kmesh, sd.atoms.pbc, gamma_centred=args.gamma_centred)[0]),
                             f"--kmesh N1 N2 N3, now {' '.join(map(str, args.kmesh))}")
        except ValueError as err:
            raise UserError(str(err)) from None

    res = density_of_states(sd, kmesh=args.kmesh, width=args.width, smearing=args.smearing, energies=energies,
                            npoints=args.npoints, pdos=args.pdos, fermi_level=args.fermi_level, gamma_centred=args.gamma_centred,
                            window=args.window,
                            **solver_kw(args))
    spread = None
    if args.uncertainty:
        from ..tb.draws import dos_spread

        if sd.H_draws is None:
            raise UserError(f"{args.data} structure {args.structure} carries no H draws: --uncertainty needs a "
                            f"prediction by a model with a posterior (acehamil predict stores them)")
        if len(sd.H) != 1:
            raise UserError("--uncertainty supports one spin channel")
        spread = dos_spread(sd, res, solver_kw=solver_kw(args))
    if args.json:
        out = {**res.to_json(), "method": "dense"}
        if spread is not None:
            out["dos_sigma"] = spread.tolist()
        write_json(args.json, out)
    if args.output:
        from ..plotting import plot_dos

        save_figure_safely(plot_dos(res, emin=args.emin, emax=args.emax, spread=spread), args.output)
    if not args.quiet:
        ef = "unknown" if res.fermi_level is None else f"{res.fermi_level:.4f} eV"
        from ..tb.kpath import effective_pbc

        pbc = effective_pbc(sd.atoms)
        grid = "x".join(str(n if p else 1) for n, p in zip(args.kmesh, pbc))
        where = (f"{len(res.kpts)} k-points (weights from a {grid} grid)" if pbc.any()
                 else "molecule/cluster: Γ only")
        print(f"{where}, "
              f"E_F {ef}, spin degeneracy {res.spin_degeneracy}, "
              f"{np.trapezoid(res.dos, res.energies):.4f} states/cell in {res.energies[0]:.2f}..{res.energies[-1]:.2f} eV "
              f"(of {2 * res.eigenvalues.shape[-1]} in all)")
    return 0


def _run_kpm(args, sd, energies) -> int:
    from ..tb.solvers import dos

    progress = None if args.quiet else _progress_callback("KPM moments")
    res = dos(sd, "kpm", kmesh=args.kmesh, energies=energies, npoints=args.npoints, pdos=args.pdos,
              fermi_level=args.fermi_level, n_moments=args.moments, n_vectors=args.vectors, kernel=args.kernel,
              seed=args.seed, s_method=args.s_solver, gamma_centred=args.gamma_centred, progress=progress,
              supercell=args.supercell)
    if args.json:
        write_json(args.json, res.to_json())
    if args.output:
        from ..plotting import plot_dos

        save_figure_safely(plot_dos(res, emin=args.emin, emax=args.emax), args.output)
    if not args.quiet:
        ef = "unknown" if res.fermi_level is None else f"{res.fermi_level:.4f} eV"
        win = "" if res.fermi_window is None else f" (window {res.fermi_window[0]:.3f}..{res.fermi_window[1]:.3f} eV)"
        print(f"KPM: {len(res.kpts)} k-point(s), {res.n_moments} moments (resolution {1000 * res.resolution:.1f} meV), "
              f"{res.n_vectors} random vectors, E_F {ef}{win}, {res.idos[-1]:.2f} states/cell, {res.seconds:.1f} s")
    return 0


def _progress_callback(label):
    """``f(done, total)`` drawing :class:`acehamil.progress.Progress` (created on the first call)."""
    from ..progress import Progress

    state = {}

    def update(done, total):
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = Progress(total, label)
        bar.step(done - bar.n)

    return update


def estimate_size(kmesh, sd, quiet: bool = True) -> None:
    """Refuse (UserError) a k grid whose eigenvalues alone would not fit in memory, before any work;
    announce a long one on stderr (unless ``quiet``).

    Estimate: about half the grid's k-points (time reversal; non-periodic axes count 1) x orbitals
    x spin channels x 8 bytes for the eigenvalues (plus as much again for PDOS weights); solving
    costs ~ nk x norb^3.
    """
    import sys

    from ..tb.kpath import effective_pbc

    pbc = effective_pbc(sd.atoms)
    nk_full = float(np.prod([float(n) if p else 1.0 for n, p in zip(kmesh, pbc)]))
    nk = nk_full / 2 if nk_full > 1 else 1.0
    norb = sd.S.norb if sd.S is not None else sd.H[0].norb
    kb = nk * norb * max(1, len(sd.H))
    if kb > MAX_K_BANDS:
        raise UserError(f"--kmesh {' '.join(map(str, kmesh))}: about {nk:.3g} k-points x {norb} bands needs "
                        f"~{2 * kb * 8 / 2**30:.3g} GiB for the eigenvalues alone and ~{nk * norb**3 * 1e-9:.3g} "
                        f"Gflop of eigen-solves; use a smaller grid (the DOS converges long before)")
    if not quiet and kb > 2e6:
        print(f"dos: solving about {nk:.3g} k-points x {norb} orbitals (~{nk * norb**3 * 1e-9:.3g} Gflop); this can "
              f"take minutes", file=sys.stderr, flush=True)

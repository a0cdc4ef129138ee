"""``acehamil demo``: a short, honest demonstration of the ACE basis on bulk Si.

Builds a basis (nu = 3, L = 0..4), evaluates every site of a rattled periodic
supercell, checks on the fly that the features transform correctly under a
random improper rotation combined with a permutation of the neighbours
(``B_L(Q env) = parity * D^L(-Q) B_L(env)``), checks the reverse-mode forces
path against central differences, and prints feature counts, the errors and
timings.  Exit status 1 if a check fails.
"""

from __future__ import annotations

import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="ACE basis demo on bulk Si (equivariance check, timings)",
        description="ACE basis demo on bulk Si: builds a basis, evaluates every site, checks equivariance and forces, prints timings.",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions of the 8-atom cubic Si cell (default 3: 216 sites)")
    p.add_argument("--seed", type=int, default=0, help="random seed (rattle, rotation, coefficients)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np
    from ase.build import bulk

    from ..basis import ACEBasis, BasisSpec, Centres, RadialSpec
    from ..so3 import random_rotation, wigner_d_real
    from ..structure.neighbours import neighbour_pairs

    if args.reps < 1:
        raise ValueError(f"--reps must be >= 1, got {args.reps}")
    rng = np.random.default_rng(args.seed)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(args.reps)
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    cutoff = 5.0
    spec = BasisSpec(categories=(14,), radial=RadialSpec(n_max=8, r_cut=cutoff), max_nu=3, max_degree=(12, 10, 8), L_max=4)
    t0 = time.perf_counter()
    basis = ACEBasis(spec)
    t_build = time.perf_counter() - t0
    nl = neighbour_pairs(atoms, cutoff)
    centres = Centres(atoms.numbers, nl.i, nl.vec, atoms.numbers[nl.j])
    print(f"acehamil demo: ACE basis on bulk Si ({len(atoms)} sites, {len(nl)} neighbour vectors within {cutoff} Å)")
    print(f"  basis: nu <= {spec.max_nu}, degree limits {spec.max_degree}, n_max {spec.radial.n_max}, L = 0..{spec.L_max}")
    print(f"  {basis!r}, built in {t_build:.2f} s")
    print("  features per (L, parity): " + ", ".join(f"({L},{p:+d}): {n}" for (L, p), n in sorted(basis.n_features.items())))

    t0 = time.perf_counter()
    vals = basis.evaluate(centres)
    t_val = time.perf_counter() - t0
    print(f"  evaluate all {len(atoms)} sites: {t_val:.3f} s ({1e3 * t_val / len(atoms):.3f} ms/site)")

    Q = random_rotation(rng, improper=True)
    perm = rng.permutation(len(nl))
    moved = Centres(atoms.numbers, nl.i[perm], nl.vec[perm] @ Q.T, atoms.numbers[nl.j[perm]])
    rotated = basis.evaluate(moved)
    worst = 0.0
    for (L, parity), x in vals.items():
        expect = parity * np.einsum("MN,cfN->cfM", wigner_d_real(L, -Q), x)
        worst = max(worst, np.abs(rotated[(L, parity)] - expect).max() / np.abs(x).max())
    print(f"  equivariance under a random improper rotation + neighbour permutation: max relative error {worst:.1e}")

    coeffs = {14: rng.normal(size=basis.n_features[(0, 1)]) / basis.n_features[(0, 1)]}
    t0 = time.perf_counter()
    E, g = basis.evaluate_linear(centres, coeffs)
    t_lin = time.perf_counter() - t0
    p, x, h = int(rng.integers(len(nl))), int(rng.integers(3)), 1e-5
    shifted = []
    for sign in (1, -1):
        vec = nl.vec.copy()
        vec[p, x] += sign * h
        shifted.append(basis.evaluate_linear(Centres(atoms.numbers, nl.i, vec, atoms.numbers[nl.j]), coeffs)[0][nl.i[p]])
    fd = (shifted[0] - shifted[1]) / (2 * h)
    fd_err = abs(fd - g[p, x]) / max(abs(g[p, x]), 1e-12)
    print(f"  linear site energy + gradients (reverse mode): {t_lin:.3f} s; central-difference check rel. error {fd_err:.1e}")
    ok = worst < 1e-10 and fd_err < 1e-5
    print("  all checks passed" if ok else "  CHECK FAILED")
    return 0 if ok else 1

"""Property-test helpers shipped with the package (as e3nn ships ``util/test.py``).

For users extending acehamil (a new block family, basis or potential) and for
the package's own tests:

* :func:`fd_errors` / :func:`assert_fd_converges`: a derivative checked by central
  differences whose error must fall with the step ``h``, not by one tolerance;
* :func:`orbital_rotation` / :func:`assert_blocks_equivariant`: orbital blocks
  rotate as ``H_ij(Q R) = D^{l1}(Q) H_ij(R) D^{l2}(Q)^T`` for proper *and* improper
  ``Q`` (then a block gains ``(-1)^(l1+l2)``);
* :func:`rotated`, :func:`random_cluster`, :func:`random_centres`: random
  structures and environments (seeded by the caller's generator);
* :func:`assert_site_energy_invariant` / :func:`assert_stress_matches_strain`: a site-energy
  potential's ``compute`` (energy, per-atom energies, forces, stress) under rotations,
  permutations, translations and strain.

Every helper takes a ``numpy.random.Generator``; none keeps state.  Failing
checks raise ``AssertionError`` with the measured numbers.
"""

from __future__ import annotations

import numpy as np

#: Default central-difference steps (decreasing), in the units of the displaced coordinate.
STEPS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def fd_errors(f, analytic, x0, directions, steps=STEPS) -> np.ndarray:
    """Largest error of central differences of ``f`` against ``analytic``, per step.

    Parameters
    ----------
    f : callable ndarray -> ndarray
        Function of the coordinates (any shape), returning an array.
    analytic : callable ndarray -> ndarray, or ndarray
        Directional derivative along a direction: ``analytic(direction)`` (same
        shape as ``f``'s value), or an array of derivatives ``(len(directions), ...)``.
    x0 : ndarray
        The point.
    directions : sequence of ndarray
        Unit displacements, each of ``x0``'s shape.
    steps : sequence of float
        Decreasing steps ``h``.

    Returns
    -------
    ndarray, shape (len(steps),)
        ``max_d |(f(x0 + h d) - f(x0 - h d)) / 2h - analytic_d|`` per ``h``.

    Examples
    --------
    >>> d = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    >>> errs = fd_errors(lambda x: np.sin(x).sum(), lambda u: np.cos([0.3, 0.5]) @ u, np.array([0.3, 0.5]), d)
    >>> bool(errs[2] < errs[0] / 1000)
    True
    """
    x0 = np.asarray(x0, dtype=float)
    out = []
    for h in steps:
        err = 0.0
        for k, u in enumerate(directions):
            u = np.asarray(u, dtype=float)
            num = (np.asarray(f(x0 + h * u)) - np.asarray(f(x0 - h * u))) / (2 * h)
            ana = analytic(u) if callable(analytic) else np.asarray(analytic)[k]
            err = max(err, float(np.abs(num - ana).max(initial=0.0)))
        out.append(err)
    return np.array(out)


def assert_fd_converges(errs, scale: float = 1.0, drop: float = 50.0, best: float = 1e-7) -> None:
    """Central-difference errors (of :func:`fd_errors`, steps falling by 10) must fall with ``h``.

    Parameters
    ----------
    errs : array_like
        Errors per step.
    scale : float
        Size of the derivative (errors are relative to ``max(scale, tiny)``).
    drop : float
        The error at the third step must be below the first's divided by this
        (``h^2`` convergence gives 1e4 for steps 1e-2 -> 1e-4), or already at rounding level.
    best : float
        The smallest error must be below ``best * scale``.

    Raises
    ------
    AssertionError
        With the errors.
    """
    errs = np.asarray(errs, dtype=float)
    if not (len(errs) >= 3 and (errs[2] < errs[0] / drop or errs[2] < 1e-10 * scale)):
        raise AssertionError(f"FD error does not fall with h: {errs.tolist()}")
    if not errs.min() < best * scale:
        raise AssertionError(f"FD error too large at best step: {errs.tolist()} (scale {scale:.3g})")


def rotated(atoms, Q):
    """A copy of ``atoms`` with positions (and cell) transformed by the orthogonal ``Q``, ``r -> Q r``."""
    out = atoms.copy()
    out.positions = atoms.positions @ np.asarray(Q).T
    if np.any(atoms.pbc):
        out.cell = atoms.cell.array @ np.asarray(Q).T
    return out


def assert_site_energy_invariant(compute, atoms, rng, improper: bool = False) -> None:
    """``compute(atoms)`` of a site-energy potential is unchanged by a random (proper or improper)
    rotation, permutation and translation: energy to 1e-9 relative, per-atom energies permuted
    to 1e-9 eV, forces permuted and rotated to 1e-8 eV/Å.

    Parameters
    ----------
    compute : callable
        ``compute(atoms) -> dict`` with ``energy`` (eV), ``energies`` (natoms,) eV and
        ``forces`` (natoms, 3) eV/Å.
    atoms : ase.Atoms
    rng : numpy.random.Generator
    improper : bool
        Use a rotation with determinant -1.
    """
    from ase import Atoms

    from .so3 import random_rotation

    ref = compute(atoms)
    Q = random_rotation(rng, improper=improper)
    perm = rng.permutation(len(atoms))
    moved = Atoms(numbers=atoms.numbers[perm], positions=atoms.positions[perm] @ Q.T + rng.normal(size=3) * 3.0,
                  cell=atoms.cell.array @ Q.T, pbc=atoms.pbc)
    res = compute(moved)
    if not abs(res["energy"] - ref["energy"]) <= 1e-9 * max(1.0, abs(ref["energy"])):
        raise AssertionError(f"energy changed: {res['energy']!r} vs {ref['energy']!r}")
    np.testing.assert_allclose(res["energies"], ref["energies"][perm], atol=1e-9)
    np.testing.assert_allclose(res["forces"], ref["forces"][perm] @ Q.T, atol=1e-8)


#: Voigt order of the stress components (xx, yy, zz, yz, xz, xy).
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def assert_stress_matches_strain(compute, energy, atoms, steps=(1e-3, 1e-4)) -> None:
    """The stress of ``compute(atoms)`` equals the central difference of the energy under
    symmetric strain, with the error falling >= 20x from the first to the last step (or below 1e-9).

    Parameters
    ----------
    compute : callable
        ``compute(atoms) -> dict`` with ``stress`` (6,) eV/Å^3 in :data:`VOIGT` order.
    energy : callable
        ``energy(atoms) -> float`` (eV); may skip forces and stress.
    atoms : ase.Atoms
        Periodic.
    steps : tuple of float
        Strain steps, largest first.
    """
    stress = compute(atoms)["stress"]
    vol = atoms.get_volume()
    for v, (a, b) in enumerate(VOIGT):
        errs = []
        for h in steps:
            e = []
            for sgn in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] += sgn * h / 2
                eps[b, a] += sgn * h / 2
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
                e.append(energy(strained))
            errs.append(abs((e[0] - e[1]) / (2 * h) / vol - stress[v]))
        if not errs[-1] < max(errs[0] / 20, 1e-9):
            raise AssertionError(f"stress component {v}: FD errors {errs} do not fall")


def orbital_rotation(orbital_basis, z: int, Q) -> np.ndarray:
    """Block-diagonal real Wigner matrix ``diag(D^{l_1}(Q), D^{l_2}(Q), ...)`` over the shells of species ``z``.

    Returns
    -------
    ndarray, shape (n_orb(z), n_orb(z))
    """
    from .so3 import wigner_d_real

    mats = [wigner_d_real(s.l, Q) for s in orbital_basis.shells_of(z)]
    n = sum(m.shape[0] for m in mats)
    out, o = np.zeros((n, n)), 0
    for m in mats:
        out[o:o + len(m), o:o + len(m)] = m
        o += len(m)
    return out


def assert_blocks_equivariant(M, M_rot, numbers, orbital_basis, Q, rtol: float = 1e-10) -> float:
    """``M_rot`` (the matrix of the rotated structure) equals ``D(Q) M D(Q)^T`` block by block.

    Parameters
    ----------
    M, M_rot : RealSpaceMatrix
        Same block pattern.
    numbers : array of int, shape (natoms,)
    orbital_basis : OrbitalBasis
    Q : ndarray, shape (3, 3)
        Orthogonal, proper or improper.
    rtol : float
        Allowed error relative to ``max(|M|, 1)``.

    Returns
    -------
    float
        The largest block error found.
    """
    if not M_rot.same_pattern(M):
        raise AssertionError("the rotated structure gives a different block pattern")
    D = {int(z): orbital_rotation(orbital_basis, int(z), Q) for z in set(np.asarray(numbers).tolist())}
    err = 0.0
    for p in range(M.nblocks):
        Di, Dj = D[int(numbers[M.i[p]])], D[int(numbers[M.j[p]])]
        err = max(err, float(np.abs(M_rot.block(p) - Di @ M.block(p) @ Dj.T).max(initial=0.0)))
    scale = max(float(np.abs(M.data).max(initial=0.0)), 1.0)
    if err > rtol * scale:
        raise AssertionError(f"blocks not equivariant: error {err:.3g} > {rtol:.1g} * {scale:.3g}")
    return err


def random_cluster(rng, species, n: int, spacing: float = 2.0, periodic: bool = False):
    """Random atoms on a jittered grid, at least about ``spacing`` Å apart; a skewed periodic cell if asked.

    Returns
    -------
    ase.Atoms
    """
    from ase import Atoms

    side = int(np.ceil(n ** (1 / 3)))
    grid = np.array([[a, b, c] for a in range(side) for b in range(side) for c in range(side)], float)[:n]
    pos = (grid + 0.25 * rng.uniform(-1, 1, size=grid.shape)) * spacing * 1.2
    atoms = Atoms(numbers=rng.choice(list(species), size=n), positions=pos)
    if periodic:
        atoms.cell = np.diag([side * spacing * 1.2] * 3) + 0.3 * rng.uniform(-1, 1, size=(3, 3))
        atoms.pbc = True
    return atoms


def random_centres(rng, spec, n_centres: int = 2, per_centre: int = 5, weights: bool = False, extent: float = 2.2,
                   centre_species: int = 14):
    """Random environments for a :class:`~acehamil.basis.BasisSpec`: each centre gets its singleton
    particles (e.g. the bond) and ``per_centre`` particles of random categories within ``extent`` Å;
    particles in random order (not grouped by centre).

    Returns
    -------
    acehamil.basis.Centres
    """
    from .basis import Centres

    cats = [c for c in spec.categories if c not in spec.singleton_categories]
    pc, vec, cat = [], [], []
    for c in range(n_centres):
        for s in spec.singleton_categories:
            pc.append(c), vec.append(rng.normal(size=3)), cat.append(s)
        for _ in range(per_centre):
            pc.append(c), vec.append(rng.uniform(-extent, extent, size=3)), cat.append(rng.choice(cats))
    order = rng.permutation(len(pc))
    w = rng.uniform(0.5, 1.0, size=len(pc)) if weights else None
    return Centres(np.full(n_centres, centre_species), np.array(pc)[order], np.array(vec)[order], np.array(cat)[order], w)

"""Site (atom-centred) and bond (pair-centred) environments.

An :class:`Environments` is the input of the ACE basis for a set of centres:
per-particle vectors relative to the centre, categories and weights, plus the
bookkeeping that ties each centre back to atoms and cell shifts.

Site environment of atom ``i``
    Every neighbour ``k`` (periodic images included) with ``|r_ik| < r_cut``;
    particle vector ``r_ik = pos[k] - pos[i] + T_k @ cell``, category ``Z_k``,
    weight 1.

Bond environment of the directed bond ``(i, j, T)`` with ``r = r_ij``
    Centred at the bond midpoint ``m = pos[i] + r / 2``.  Particle 0 is the
    bond itself: vector ``r``, category :data:`BOND` (= -1), weight 1.  The
    other particles are the atoms ``k`` near the bond (every atom and image
    except ``i`` and ``j(T)`` themselves), vector ``p = r_ik - r/2`` (relative to
    the midpoint), category ``Z_k`` and the smooth ellipsoidal weight

    ``w(p) = (1 - s^2)^2`` for ``s^2 < 1``, else 0, with
    ``s^2 = (p.u / a)^2 + |p - (p.u) u|^2 / b^2``, ``u = r / |r|``,
    ``a = |r|/2 + r_env`` (semi-axis along the bond) and ``b = r_env``
    (transverse semi-axis).

    ``w`` is rotation invariant and unchanged under ``r -> -r``, so the
    environment of ``(j, i, -T)`` is that of ``(i, j, T)`` with only the bond
    particle reversed.  An atom exactly at the midpoint (closer than
    :data:`MIN_MIDPOINT_DISTANCE`; in practice the middle image of a bond
    ``i -> i(2T)``, which stays at the midpoint under any strain) has no
    direction and is left out: the basis of bond reversal symmetry in
    :mod:`acehamil.models.hamiltonian.offsite`.  Every environment particle lies within
    ``|r|/2 + r_env`` of the midpoint.  Optionally (``env_bond_cut``) the
    environment weights also fade with the bond length,
    ``w -> w (1 - (|r|/env_bond_cut)^2)^2``, so long bonds are two-centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .structure.neighbours import NeighbourPairs, neighbour_pairs

#: Particle category of the bond particle in bond environments.
BOND = -1
#: Å; environment atoms closer than this to the bond midpoint are left out (their harmonics are undefined).
MIN_MIDPOINT_DISTANCE = 1e-6


@dataclass(frozen=True, eq=False)
class Environments:
    """Particles around a set of centres (atoms or directed bonds).

    Attributes
    ----------
    centre_species : ndarray of int, shape (n_centres,)
        Atomic number of atom ``i`` of each centre.
    i, j : ndarray of int, shape (n_centres,)
        Atoms of each centre (``i == j`` for sites).
    shift : ndarray of int, shape (n_centres, 3)
        Cell shift of atom ``j`` (zero for sites).
    vec : ndarray of float, shape (n_centres, 3)
        Bond vector ``r_ij`` in Å (zero for sites).
    particle_centre : ndarray of int, shape (P,)
        Centre of each particle, non-decreasing.
    particle_vec : ndarray of float, shape (P, 3)
        Å, relative to the centre.
    particle_category : ndarray of int, shape (P,)
        Atomic number, or :data:`BOND`.
    particle_weight : ndarray of float, shape (P,)
        Smooth cutoff weight in [0, 1].
    """

    centre_species: np.ndarray
    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    vec: np.ndarray
    particle_centre: np.ndarray
    particle_vec: np.ndarray
    particle_category: np.ndarray
    particle_weight: np.ndarray

    @property
    def n_centres(self) -> int:
        return len(self.centre_species)

    @property
    def n_particles(self) -> int:
        return len(self.particle_centre)

    def to_centres(self):
        """The :class:`acehamil.basis.Centres` of these environments."""
        from .basis import Centres

        return Centres(
            self.centre_species, self.particle_centre, self.particle_vec, self.particle_category, particle_weight=self.particle_weight
        )

    def subset(self, start: int, stop: int) -> "Environments":
        """Centres ``start:stop`` with their particles (renumbered from 0)."""
        lo, hi = np.searchsorted(self.particle_centre, [start, stop])
        return Environments(
            self.centre_species[start:stop],
            self.i[start:stop],
            self.j[start:stop],
            self.shift[start:stop],
            self.vec[start:stop],
            self.particle_centre[lo:hi] - start,
            self.particle_vec[lo:hi],
            self.particle_category[lo:hi],
            self.particle_weight[lo:hi],
        )

    def take(self, idx) -> "Environments":
        """Centres ``idx`` (int array, any order) with their particles."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = np.bincount(self.particle_centre, minlength=self.n_centres)
        starts = np.concatenate([[0], np.cumsum(counts)])
        n = counts[idx]
        new_centre = np.repeat(np.arange(len(idx)), n)
        pidx = starts[idx][new_centre] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        return Environments(
            self.centre_species[idx], self.i[idx], self.j[idx], self.shift[idx], self.vec[idx],
            new_centre, self.particle_vec[pidx], self.particle_category[pidx], self.particle_weight[pidx],
        )

    def in_bond_frame(self) -> tuple:
        """Every bond centre rotated so that its bond lies along +z.

        ``Q_c`` is a proper rotation with ``Q_c r_c / |r_c| = z``; each particle ``p`` of centre ``c``
        becomes ``Q_c p``, and the bond particle (category :data:`BOND`) exactly ``(0, 0, |r_c|)``
        (so its harmonics with ``m != 0`` are exactly zero).  Equivariant features transform back
        as ``B_L(env) = D^L(Q_c)^T B_L(Q_c env)``.

        Returns
        -------
        Environments
            Same centres and particles, rotated.
        Q : ndarray, shape (n_centres, 3, 3)

        Raises
        ------
        ValueError
            A centre with a zero bond vector (a site).
        """
        d = np.linalg.norm(self.vec, axis=1)
        if len(d) and d.min() < 1e-8:
            raise ValueError("the bond frame needs non-zero bond vectors (site centres have none)")
        ez = self.vec / d[:, None]
        helper = np.zeros_like(ez)
        along_x = np.abs(ez[:, 0]) < 0.9  # any axis not (nearly) parallel to the bond
        helper[along_x, 0] = 1.0
        helper[~along_x, 1] = 1.0
        ex = helper - np.einsum("ni,ni->n", helper, ez)[:, None] * ez
        ex /= np.linalg.norm(ex, axis=1)[:, None]
        Q = np.stack([ex, np.cross(ez, ex), ez], axis=1)  # rows: Q ez = z, det +1
        # particles are grouped by centre: each Q repeated over its particles (a block copy, not a gather)
        per = np.bincount(self.particle_centre, minlength=len(d))
        pv = np.einsum("pij,pj->pi", np.repeat(Q, per, axis=0), self.particle_vec)
        bond = self.particle_category == BOND
        pv[bond] = 0.0
        pv[bond, 2] = d[self.particle_centre[bond]]
        rotated = Environments(self.centre_species, self.i, self.j, self.shift, np.c_[np.zeros((len(d), 2)), d],
                               self.particle_centre, pv, self.particle_category, self.particle_weight)
        return rotated, Q

    def chunks(self, max_particles: int = 200_000):
        """Yield ``(start, stop, sub)`` covering all centres, each with at most
        ``max_particles`` particles (at least one centre per chunk)."""
        counts = np.bincount(self.particle_centre, minlength=self.n_centres)
        cum = np.cumsum(counts)
        start = 0
        while start < self.n_centres:
            base = cum[start - 1] if start else 0
            stop = int(np.searchsorted(cum, base + max_particles, side="right"))
            stop = max(stop, start + 1)
            yield start, stop, self.subset(start, stop)
            start = stop


def site_environments(atoms, r_cut: float, centres=None, pairs: NeighbourPairs | None = None) -> Environments:
    """Atom-centred environments.

    Parameters
    ----------
    atoms : ase.Atoms
    r_cut : float
        Å.
    centres : array of int, optional
        Atoms to centre on (default all), in this order.
    pairs : NeighbourPairs, optional
        A neighbour list with cutoff ``>= r_cut`` to reuse.

    Returns
    -------
    Environments

    Examples
    --------
    >>> from ase.build import bulk
    >>> env = site_environments(bulk("Si", "diamond", a=5.43), 2.5)
    >>> env.n_centres, env.n_particles
    (2, 8)
    """
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    nl = neighbour_pairs(atoms, r_cut) if pairs is None else pairs.select(pairs.dist < r_cut)
    centres = np.arange(len(numbers)) if centres is None else np.asarray(centres, dtype=np.int64)
    # map atom -> position in the centre list; keep only pairs of chosen centres
    pos_of = np.full(len(numbers), -1, dtype=np.int64)
    pos_of[centres] = np.arange(len(centres))
    c = pos_of[nl.i]
    keep = c >= 0
    c, k, vec = c[keep], nl.j[keep], nl.vec[keep]
    order = np.argsort(c, kind="stable")
    n = len(centres)
    return Environments(
        numbers[centres], centres.copy(), centres.copy(), np.zeros((n, 3), np.int64), np.zeros((n, 3)),
        c[order], vec[order], numbers[k[order]], np.ones(len(order)),
    )


def axial_semi_axis(bond_length, r_env: float):
    """Å, the ellipsoid's semi-axis along a bond, ``|r|/2 + r_env``: every environment particle
    of the bond lies within it of the bond midpoint (the bond basis' radial cutoff).

    Examples
    --------
    >>> axial_semi_axis(4.0, 2.5)
    4.5
    """
    return bond_length / 2 + r_env


def bond_reach(bond_length, r_env: float):
    """Å, how far from atom ``i`` the environment of a bond of length ``|r|`` reaches,
    ``|r| + r_env`` (= ``|r|/2`` to the midpoint plus :func:`axial_semi_axis`): the
    neighbour-list cutoff bond environments need.  The one reach formula of the package.

    Examples
    --------
    >>> bond_reach(4.0, 2.5)
    6.5
    """
    return bond_length + r_env


def ellipsoid_weight(p: np.ndarray, r: np.ndarray, r_env: float) -> np.ndarray:
    """Smooth bond-environment weight (formula in the module docstring).

    Parameters
    ----------
    p : ndarray, shape (n, 3)
        Å, particle positions relative to the bond midpoint.
    r : ndarray, shape (n, 3)
        Å, bond vectors (non-zero).
    r_env : float
        Å, transverse semi-axis; the axial one is ``|r|/2 + r_env``.

    Returns
    -------
    ndarray, shape (n,), in [0, 1]

    Examples
    --------
    >>> float(ellipsoid_weight(np.zeros((1, 3)), np.array([[2.0, 0, 0]]), 3.0)[0])
    1.0
    >>> float(ellipsoid_weight(np.array([[4.0, 0, 0]]), np.array([[2.0, 0, 0]]), 3.0)[0])
    0.0
    """
    d = np.linalg.norm(r, axis=1)
    z = np.einsum("ni,ni->n", p, r) / d
    rho2 = np.maximum(np.einsum("ni,ni->n", p, p) - z * z, 0.0)
    a = axial_semi_axis(d, r_env)
    s2 = (z / a) ** 2 + rho2 / r_env**2
    return np.where(s2 < 1.0, (1.0 - s2) ** 2, 0.0)


@dataclass(frozen=True, eq=False)
class SortedNeighbours:
    """A neighbour list grouped by atom ``i``, for repeated bond-environment builds.

    Attributes
    ----------
    pairs : NeighbourPairs
        Pairs sorted by ``i`` (the caller's list itself when it already is: no copy).
    starts : ndarray of int, shape (natoms + 1,)
        First pair of each atom.
    reach : float
        Å, the cutoff of ``pairs``.
    """

    pairs: NeighbourPairs
    starts: np.ndarray
    reach: float


def sorted_neighbours(atoms, reach: float, pairs: NeighbourPairs | None = None) -> SortedNeighbours:
    """:class:`SortedNeighbours` within ``reach`` (Å), from ``pairs`` (cutoff ``>= reach``) when given
    (used as they are when grouped by ``i``, as :func:`neighbour_pairs` returns them)."""
    nl = neighbour_pairs(atoms, reach) if pairs is None else pairs
    if len(nl) and np.any(np.diff(nl.i) < 0):
        nl = nl.select(np.argsort(nl.i, kind="stable"))
    counts = np.bincount(nl.i, minlength=len(atoms))
    starts = np.concatenate([[0], np.cumsum(counts)])
    return SortedNeighbours(nl, starts, float(reach))


def bond_environments(atoms, bonds: NeighbourPairs, r_env: float, pairs: NeighbourPairs | None = None,
                      env_bond_cut: float = 0.0, sorted_nl: SortedNeighbours | None = None) -> Environments:
    """Bond-centred environments of directed bonds (see the module docstring).

    Parameters
    ----------
    atoms : ase.Atoms
    bonds : NeighbourPairs
        The directed bonds ``(i, j, shift, vec)``; ``vec`` must be non-zero.
    r_env : float
        Å, > 0 for an environment; 0 gives the bond particle only.
    pairs : NeighbourPairs, optional
        Neighbour list with cutoff ``>= max|r| + r_env`` to reuse.
    env_bond_cut : float
        Å; if > 0, environment weights are multiplied by the bond-length taper
        ``(1 - (|r| / env_bond_cut)^2)^2`` and bonds with ``|r| >= env_bond_cut``
        have no environment (two-centre), smoothly.  0 = no taper.
    sorted_nl : SortedNeighbours, optional
        Prepared once by :func:`sorted_neighbours` (reach ``>= max|r| + r_env`` over the bonds
        with an environment) and reused: streaming predictions build environments chunk by chunk.

    Returns
    -------
    Environments
        Centres in the order of ``bonds``; particle 0 of each centre is the bond.
    """
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    nb = len(bonds)
    bvec = np.asarray(bonds.vec, dtype=float)
    blen = np.linalg.norm(bvec, axis=1) if nb else np.zeros(0)
    if nb and blen.min() < 1e-8:
        raise ValueError("bond environments need non-zero bond vectors (an on-site pair was passed)")
    ec, ev, ecat, ew = [], [], [], []  # environment particles, in centre order
    with_env = np.nonzero(blen < env_bond_cut)[0] if env_bond_cut > 0 else np.arange(nb)
    if r_env > 0 and len(with_env):
        # a particle of the ellipsoid of bond r has |r_ik| <= |p| + |r|/2 <= |r| + r_env: the
        # neighbours of atom i within that reach are the candidates
        reach = bond_reach(float(blen[with_env].max()), r_env)
        if sorted_nl is None or sorted_nl.reach < reach:
            sorted_nl = sorted_neighbours(atoms, reach, pairs)
        nl, starts = sorted_nl.pairs, sorted_nl.starts
        u_all = bvec / np.where(blen > 0, blen, 1.0)[:, None]
        if env_bond_cut > 0:
            x2 = (blen / env_bond_cut) ** 2
            taper = np.where(x2 < 1.0, (1.0 - x2) ** 2, 0.0)
        # bonds grouped by atom i: every bond of atom i against all of i's neighbours as one dense
        # (bonds x neighbours) test (a matrix product on a contiguous slice, no gathers)
        grp = with_env[np.argsort(bonds.i[with_env], kind="stable")]
        gi = bonds.i[grp]
        cuts = np.concatenate([[0], np.nonzero(np.diff(gi))[0] + 1, [len(grp)]])
        half, semi, d2, hvec = 0.5 * blen, axial_semi_axis(blen, r_env), nl.dist**2, 0.5 * bvec
        bj, bshift, nj, nshift = np.asarray(bonds.j), np.asarray(bonds.shift), nl.j, nl.shift
        for g0, g1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            b, atom = grp[g0:g1], int(gi[g0])
            s0, s1 = int(starts[atom]), int(starts[atom + 1])
            x = nl.vec[s0:s1]
            # ellipsoid test from x = r_ik alone: axial z = x.u - |r|/2 (from the midpoint),
            # transverse rho^2 = |x|^2 - (x.u)^2 (in place: two (bonds x neighbours) arrays)
            xu = u_all[b] @ x.T
            s2 = xu - half[b][:, None]
            s2 /= semi[b][:, None]
            np.square(s2, out=s2)
            np.multiply(xu, xu, out=xu)
            np.subtract(d2[s0:s1], xu, out=xu)
            np.maximum(xu, 0.0, out=xu)
            xu /= r_env**2
            s2 += xu
            inside = s2 < 1.0
            flat = np.flatnonzero(inside)
            k = flat % (s1 - s0)
            hits = np.count_nonzero(inside, axis=1)  # hits in row order: per-bond values by np.repeat
            bb, q = np.repeat(b, hits), s0 + k
            w = (1.0 - np.take(s2, flat, mode="clip")) ** 2  # (take: no bounds-check buffering)
            if env_bond_cut > 0:
                w = w * np.repeat(taper[b], hits)
            p = np.take(x, k, axis=0, mode="clip") - np.repeat(hvec[b], hits, axis=0)
            # atom j(T) itself is no environment particle: same j first (rare), then the shift
            is_j = nj[q] == bj[bb]
            maybe = np.nonzero(is_j)[0]
            is_j[maybe] = np.all(nshift[q[maybe]] == bshift[bb[maybe]], axis=1)
            # an atom exactly at the midpoint (the middle image of a bond i -> i(2T)) has no direction: left out
            keep = (w > 0) & ~is_j & (np.einsum("ni,ni->n", p, p) > MIN_MIDPOINT_DISTANCE**2)
            ec.append(bb[keep]), ev.append(p[keep]), ecat.append(numbers[nj[q[keep]]]), ew.append(w[keep])
    # particle 0 of each centre is the bond itself, then its environment particles
    env_c = np.concatenate(ec) if ec else np.zeros(0, np.int64)
    if len(env_c) and np.any(np.diff(env_c) < 0):  # bonds not grouped by atom: put the particles in bond order
        order = np.argsort(env_c, kind="stable")
        env_c, ev, ecat, ew = env_c[order], [np.concatenate(ev)[order]], [np.concatenate(ecat)[order]], [np.concatenate(ew)[order]]
    counts = 1 + np.bincount(env_c, minlength=nb)
    first = (np.cumsum(counts) - counts).astype(np.int64)
    total = nb + len(env_c)
    pc = np.repeat(np.arange(nb), counts)
    pv = np.empty((total, 3))
    pv[first] = bvec
    pcat = np.full(total, BOND, dtype=np.int64)
    pw = np.ones(total)
    if len(env_c):
        at = env_c + np.arange(1, len(env_c) + 1)  # environment particle e of bond c sits after c + 1 bond particles
        pv[at] = np.concatenate(ev)
        pcat[at] = np.concatenate(ecat)
        pw[at] = np.concatenate(ew)
    return Environments(
        numbers[bonds.i], np.asarray(bonds.i, np.int64), np.asarray(bonds.j, np.int64), np.asarray(bonds.shift, np.int64),
        bvec, pc, pv, pcat, pw,
    )

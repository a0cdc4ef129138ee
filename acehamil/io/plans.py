"""Structure plans for training data that cover defects, strain and thermal disorder.

Each plan is a deterministic (seeded) list of named structures ``[(name, ase.Atoms), ...]`` made from a
base structure, ready for :func:`acehamil.io.generator.generate` (``acehamil generate pyscf --kind ...``):

=============== ========================================================================================
kind            structure ``n`` of ``count``
=============== ========================================================================================
``perturb``     random symmetric strain (entries in ``[-strain, strain]``) and every atom displaced by a
                length in ``displacement`` (:func:`acehamil.io.generator.perturbed_structures`)
``vacancy``     as ``perturb``, then ``n_defects`` random atoms removed
``interstitial`` as ``perturb``, then ``n_defects`` atoms (of the base's most common species) inserted at the
                points farthest from every atom (the largest voids: in diamond the tetrahedral site)
``strain``      isotropic strain evenly spaced over ``[-strain, +strain]`` (so ``count = 5, strain = 0.04``
                gives -4, -2, 0, +2, +4 %), plus the displacements
``rattle``      MD-like: every Cartesian component displaced by a Gaussian with standard deviation
                ``sigma`` uniform in ``displacement`` (unbounded tails, as in a thermal ensemble), no strain.
                For Si, ``sigma`` ~ 0.077 Å at room temperature (Debye-Waller ``B`` = 0.46 Å^2,
                ``sigma^2 = B / 8 pi^2``) and, classically ``sigma ~ sqrt(T)``, ~0.14 Å at 1000 K
=============== ========================================================================================

Names are ``f"{prefix}-{index:04d}"`` for ``perturb`` (as before) and ``f"{prefix}-{kind}-{index:04d}"``
otherwise, so plans of several kinds can share one output file.  Use :func:`supercell` (``--repeat``) for
larger cells: an 8-atom Si cell repeated 2x2x2 gives the 64-atom cells where on-site environments stop
being periodic copies of themselves.

Examples
--------
>>> from ase.build import bulk
>>> si8 = bulk("Si", "diamond", a=5.43, cubic=True)
>>> plan = make_plan(si8, "vacancy", 2, seed=1, prefix="si8")
>>> [(name, len(at)) for name, at in plan]
[('si8-vacancy-0000', 7), ('si8-vacancy-0001', 7)]
>>> [round(float(at.get_volume() / si8.get_volume()), 4) for _, at in make_plan(si8, "strain", 3, strain=0.04)]
[0.8847, 1.0, 1.1249]
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

KINDS = ("perturb", "vacancy", "interstitial", "strain", "rattle")


def supercell(base: Atoms, repeat) -> Atoms:
    """``base`` repeated ``n1 x n2 x n3`` times (ASE's order of atoms)."""
    r = tuple(int(x) for x in repeat)
    if len(r) != 3 or min(r) < 1:
        raise ValueError(f"repeat must be three positive integers, got {repeat!r}")
    return base.repeat(r)


def _displace(at: Atoms, rng, displacement) -> None:
    lo, hi = displacement
    d = rng.normal(size=(len(at), 3))
    d *= (rng.uniform(lo, hi, size=len(at)) / np.linalg.norm(d, axis=1))[:, None]
    at.positions = at.positions + d


def _strain(at: Atoms, base_cell: np.ndarray, e: np.ndarray) -> None:
    at.set_cell(base_cell @ (np.eye(3) + e), scale_atoms=True)


def largest_voids(atoms: Atoms, count: int = 1, grid: int = 12) -> np.ndarray:
    """Cartesian points (Å) farthest from every atom (periodic images included), one after another.

    For a slab (some ``pbc`` False) only between its outermost atoms along the vacuum axes.

    Each chosen point counts as an atom for the next, so several interstitials spread out.  Searched on a
    ``grid^3`` fractional grid, then refined by a local grid of half the spacing.

    Returns
    -------
    ndarray, shape (count, 3), Å
    """
    cell = atoms.cell.array
    pos = atoms.positions.copy()
    pbc = np.asarray(atoms.pbc, bool)
    M = np.stack(np.meshgrid(*[np.arange(-1, 2) if p else np.zeros(1, int) for p in pbc], indexing="ij"), -1).reshape(-1, 3)
    g = (np.stack(np.meshgrid(*[np.arange(grid)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) / grid
    if not pbc.all():  # a slab: search between its outermost atoms, not in the vacuum
        frac = np.linalg.solve(cell.T, pos.T).T
        lo, hi = frac.min(axis=0), frac.max(axis=0)
        g[:, ~pbc] = lo[~pbc] + g[:, ~pbc] * (hi - lo)[~pbc]

    def nearest(frac):
        pts = frac @ cell
        imgs = (pos[None, :, None, :] + (M @ cell)[None, None]).reshape(1, -1, 3)
        return np.linalg.norm(pts[:, None, :] - imgs, axis=-1).min(axis=1)

    out = []
    for _ in range(count):
        best = g[np.argmax(nearest(g))]
        fine = best + (np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, 5)] * 3, indexing="ij"), -1).reshape(-1, 3) / grid)
        best = fine[np.argmax(nearest(fine))]
        best[pbc] %= 1.0
        out.append(best @ cell)
        pos = np.vstack([pos, out[-1]])
    return np.array(out)


def make_plan(base: Atoms, kind: str, count: int, displacement=(0.05, 0.15), strain: float = 0.02, seed: int = 0,
              prefix: str = "s", n_defects: int = 1) -> list:
    """A seeded plan of ``count`` structures of one ``kind`` (see the module table).

    Parameters
    ----------
    base : ase.Atoms
        Periodic or not (strain only for periodic ones).
    kind : str
        One of :data:`KINDS`.
    count : int
    displacement : (float, float)
        Å: displacement-length range (``rattle``: range of the Gaussian's standard deviation).
    strain : float
        Largest strain (``perturb``, ``vacancy``, ``interstitial``: tensor entries; ``strain``: isotropic).
    seed : int
    prefix : str
    n_defects : int
        Vacancies or interstitials per structure.

    Returns
    -------
    list of (str, ase.Atoms)
    """
    from .generator import perturbed_structures

    if kind not in KINDS:
        raise ValueError(f"unknown structure kind {kind!r}; choose one of {', '.join(KINDS)}")
    lo, hi = (float(x) for x in displacement)
    if not (0 <= lo <= hi):
        raise ValueError(f"displacement range must satisfy 0 <= low <= high, got {displacement}")
    if count < 0 or n_defects < 1:
        raise ValueError(f"count must be >= 0 and n_defects >= 1, got {count}, {n_defects}")
    if kind == "perturb":
        return perturbed_structures(base, count, (lo, hi), strain, seed, prefix=prefix)
    periodic = bool(np.any(base.pbc))
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    out = []
    if kind in ("vacancy", "interstitial"):
        if kind == "vacancy" and n_defects >= len(base):
            raise ValueError(f"cannot remove {n_defects} of {len(base)} atoms")
        species = np.bincount(base.numbers).argmax()
        for n, (_, at) in enumerate(perturbed_structures(base, count, (lo, hi), strain, int(rng.integers(2**31)))):
            if kind == "vacancy":
                del at[sorted(rng.choice(len(at), size=n_defects, replace=False).tolist(), reverse=True)]
            else:
                for p in largest_voids(at, n_defects):
                    at += Atoms(numbers=[species], positions=[p])
            out.append((f"{prefix}-{kind}-{n:04d}", at))
        return out
    for n in range(count):
        at = base.copy()
        if kind == "strain":
            if periodic:
                s = 0.0 if count == 1 else -strain + 2 * strain * n / (count - 1)
                _strain(at, base.cell.array, s * np.eye(3))
            _displace(at, rng, (lo, hi))
        else:  # rattle
            sigma = rng.uniform(lo, hi)
            at.positions = at.positions + rng.normal(scale=sigma, size=(len(at), 3))
        out.append((f"{prefix}-{kind}-{n:04d}", at))
    return out

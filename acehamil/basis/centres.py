"""Centres (sites or bonds) and the particles around them: the input of :class:`~acehamil.basis.ACEBasis`.

A :class:`Centres` is validated once on construction (shapes, integer categories, finite
vectors, no particle on its centre) and read-only afterwards.

Examples
--------
>>> env = Centres([14], [0, 0], [[1.0, 0.2, 0.0], [0.0, 2.0, 0.3]], [14, 14])
>>> env.n_centres, env.n_particles
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Particles closer to their centre than this (Å) are rejected.
MIN_LENGTH = 1e-8


@dataclass(frozen=True, eq=False)
class Centres:
    """Centres (sites or bonds) and the particles around them.

    Parameters
    ----------
    centre_species : array of int, shape (n_centres,)
        Selects the per-(centre species, category) cutoff.
    particle_centre : array of int, shape (P,)
        Index of the centre each particle belongs to.
    particle_vec : array of float, shape (P, 3), Å
        Particle position relative to its centre (non-zero).
    particle_category : array of int, shape (P,)
        Category (atomic number, or BOND = -1) of each particle.
    particle_weight : array of float, shape (P,), optional
        Multiplies the particle's radial basis (no gradient through it).
    """

    centre_species: np.ndarray
    particle_centre: np.ndarray
    particle_vec: np.ndarray
    particle_category: np.ndarray
    particle_weight: np.ndarray | None = None

    def __post_init__(self):
        cs = _int_array(self.centre_species, "centre_species", 1)
        pc = _int_array(self.particle_centre, "particle_centre", 1)
        cat = _int_array(self.particle_category, "particle_category", 1)
        vec = np.asarray(self.particle_vec, dtype=float)
        if vec.size == 0:
            vec = vec.reshape(0, 3)
        if vec.ndim != 2 or vec.shape[1] != 3:
            raise ValueError(f"particle_vec must have shape (P, 3), got {vec.shape}")
        P = len(vec)
        if len(pc) != P or len(cat) != P:
            raise ValueError(
                f"particle arrays disagree in length: particle_vec {P}, particle_centre {len(pc)}, particle_category {len(cat)}"
            )
        if P and (pc.min() < 0 or pc.max() >= len(cs)):
            raise ValueError(f"particle_centre must lie in 0..{len(cs) - 1}, got range {pc.min()}..{pc.max()}")
        if not np.all(np.isfinite(vec)):
            raise ValueError("particle_vec contains NaN or inf")
        r = np.linalg.norm(vec, axis=1)
        if P and r.min() < MIN_LENGTH:
            raise ValueError(f"particle {int(np.argmin(r))} has a zero-length vector (|x| = {r.min():.3g} Å)")
        w = self.particle_weight
        if w is not None:
            w = np.asarray(w, dtype=float)
            if w.shape != (P,):
                raise ValueError(f"particle_weight must have shape ({P},), got {w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError("particle_weight contains NaN or inf")
            w = _readonly(w)
        for name, val in (("centre_species", cs), ("particle_centre", pc), ("particle_category", cat), ("particle_vec", vec)):
            object.__setattr__(self, name, _readonly(val))
        object.__setattr__(self, "particle_weight", w)
        r.setflags(write=False)
        object.__setattr__(self, "_length", r)  # |particle_vec| (Å), computed once: reused by the basis

    @property
    def n_centres(self) -> int:
        return len(self.centre_species)

    @property
    def n_particles(self) -> int:
        return len(self.particle_vec)


def _int_array(x, name, ndim):
    a = np.asarray(x)
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a

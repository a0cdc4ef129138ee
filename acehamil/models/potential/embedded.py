"""ACE potential with nonlinear (Finnis-Sinclair-like) embeddings of several ACE densities.

The model::

    E = sum_i [ E0(Z_i) + c_{Z_i} . B(R_i) + sum_k F_k(rho_i^k) ] + E_rep,
    rho_i^k = d^k_{Z_i} . B(R_i)

``B`` are the invariant ACE features of :mod:`acehamil.models.potential.model`, ``c`` the
linear coefficients (the linear model is the special case without densities),
``d^k`` the coefficients of density ``k`` (in practice non-zero only on a subset of
low-degree features) and ``F_k`` a fixed smooth embedding (:data:`EMBEDDINGS`).
Every ``rho^k`` is a linear ACE contraction, so evaluation runs the contracted
reverse mode of the basis once for all densities
(:meth:`acehamil.basis.ACEBasis.evaluate_composed`): its cost is the linear
model's plus one sparse quadratic form per density.

Examples
--------
>>> from ase.build import bulk
>>> from acehamil.models.potential.config import make_basis
>>> basis = make_basis((14,), r_cut=4.0, n_max=3, max_nu=2, max_degree=(4, 4))
>>> nB = len(feature_degrees(basis))
>>> pot = EmbeddedACEPotential(basis, (14,), [-4.0], np.zeros((1, nB)), 0.1 * np.ones((1, 2, nB)), ("fs", "tanh"))
>>> res = pot.compute(bulk("Si", "diamond", a=5.43))
>>> bool(abs(res["forces"]).max() < 1e-10), res["stress"].shape
(True, (6,))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import INVARIANT, _species_index, basis_cutoff, evaluate_sites, feature_degrees, make_centres
from .repulsion import RepulsionSpec


def _fs(x):
    s = np.sqrt(1.0 + np.abs(x))
    return np.sign(x) * (s - 1.0), 0.5 / s, -np.sign(x) * 0.25 / s**3


def _tanh(x):
    t = np.tanh(x)
    d = 1.0 - t * t
    return t, d, -2.0 * t * d


#: Embedding functions: name -> ``x -> (F, F', F'')`` (elementwise).
#: ``fs``: ``sign(x) (sqrt(1 + |x|) - 1)`` (Finnis-Sinclair-like, as pacemaker's);
#: ``tanh``: ``tanh(x)``.  Both are odd with slope 1/2 resp. 1 at 0 and C1
#: (``fs``'s second derivative jumps at 0, which energy conservation does not need).
EMBEDDINGS = {"fs": _fs, "tanh": _tanh}


def embed(name: str, x):
    """``(F(x), F'(x), F''(x))`` of the embedding ``name``.

    Examples
    --------
    >>> [round(float(v), 6) for v in embed("fs", np.array(3.0))]
    [1.0, 0.25, -0.03125]
    """
    try:
        fn = EMBEDDINGS[name]
    except KeyError:
        raise ValueError(f"unknown embedding {name!r}; known: {sorted(EMBEDDINGS)}") from None
    return fn(np.asarray(x, dtype=float))


@dataclass(frozen=True, eq=False)
class EmbeddedACEPotential:
    """A fitted ACE potential with linear part and embedded densities.

    Attributes
    ----------
    basis : acehamil.basis.ACEBasis
    species : tuple of int
    e0 : ndarray, float64, shape (n_species,)
        eV.
    coef : ndarray, float64, shape (n_species, n_B)
        Linear coefficients, eV per feature unit.
    densities : ndarray, float64, shape (n_species, n_densities, n_B)
        Density coefficients (dimensionless densities per feature unit).
    embeddings : tuple of str, length n_densities
        Names in :data:`EMBEDDINGS`; ``F_k`` gives eV.
    repulsion : RepulsionSpec or None
    metadata : dict
    """

    basis: object
    species: tuple
    e0: np.ndarray
    coef: np.ndarray
    densities: np.ndarray
    embeddings: tuple
    repulsion: RepulsionSpec | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        species = tuple(int(z) for z in self.species)
        if len(set(species)) != len(species) or not species:
            raise ValueError(f"species must be distinct and non-empty, got {self.species}")
        ns, nB = len(species), len(feature_degrees(self.basis))
        e0 = np.array(self.e0, dtype=float)
        coef = np.array(self.coef, dtype=float)
        dens = np.array(self.densities, dtype=float)
        if isinstance(self.embeddings, str):
            raise TypeError("embeddings must be a sequence of names, not one string")
        emb = tuple(str(e) for e in self.embeddings)
        if e0.shape != (ns,):
            raise ValueError(f"e0 must have shape ({ns},), got {e0.shape}")
        if coef.shape != (ns, nB):
            raise ValueError(f"coef must have shape ({ns}, {nB}), got {coef.shape}")
        if not emb:
            raise ValueError("an embedded potential needs at least one density (use ACEPotential otherwise)")
        if dens.shape != (ns, len(emb), nB):
            raise ValueError(f"densities must have shape ({ns}, {len(emb)}, {nB}), got {dens.shape}")
        for name in emb:
            embed(name, 0.0)
        if not (np.all(np.isfinite(e0)) and np.all(np.isfinite(coef)) and np.all(np.isfinite(dens))):
            raise ValueError("e0, coef and densities must be finite")
        for a in (e0, coef, dens):
            a.flags.writeable = False
        object.__setattr__(self, "species", species)
        object.__setattr__(self, "e0", e0)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "densities", dens)
        object.__setattr__(self, "embeddings", emb)
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "_contractions", None)

    @property
    def n_features(self) -> int:
        """Invariant features per species."""
        return int(self.coef.shape[1])

    @property
    def n_densities(self) -> int:
        return len(self.embeddings)

    @property
    def cutoff(self) -> float:
        """Interaction range, Å."""
        rc = basis_cutoff(self.basis)
        return max(rc, self.repulsion.max_radius) if self.repulsion else rc

    def contractions(self) -> list:
        """Linear part then one contraction per density (built on first use, then reused)."""
        if self._contractions is None:
            lin = {z: self.coef[s] for s, z in enumerate(self.species)}
            lcs = [self.basis.contraction(lin, INVARIANT)]
            for k in range(self.n_densities):
                lcs.append(self.basis.contraction({z: self.densities[s, k] for s, z in enumerate(self.species)}, INVARIANT))
            object.__setattr__(self, "_contractions", lcs)
        return self._contractions

    def outer(self, rho, species=None):
        """Site energy from ``[linear part, rho^1..rho^K]`` (nb, 1 + K) and its partial derivatives."""
        eps = rho[:, 0].copy()
        deps = np.ones_like(rho)
        for k, name in enumerate(self.embeddings):
            F, dF, _ = embed(name, rho[:, 1 + k])
            eps += F
            deps[:, 1 + k] = dF
        return eps, deps

    def densities_of(self, B: np.ndarray, sidx: np.ndarray) -> np.ndarray:
        """``rho^k`` of sites with features ``B`` (n, n_B) and species indices ``sidx`` (n,): shape (n, K)."""
        return np.einsum("nb,nkb->nk", B, self.densities[sidx])

    def site_terms(self, numbers, a: int, b: int, sub, grad: bool):
        """Site energies of atoms ``a:b`` (without E0) and ``dE/dvec`` of their particles (see ACEPotential)."""
        sidx = _species_index(self.species, numbers[a:b])
        centres = make_centres(numbers[a:b], sub.i - a, sub.vec, numbers[sub.j])
        if grad:
            eps, g, _ = self.basis.evaluate_composed(centres, self.contractions(), self.outer)
            return eps, g
        B = np.asarray(self.basis.evaluate(centres, keys=[INVARIANT])[INVARIANT])[:, :, 0]
        lin = np.einsum("nb,nb->n", B, self.coef[sidx])
        eps, _ = self.outer(np.column_stack([lin, self.densities_of(B, sidx)]))
        return eps, None

    def compute(self, atoms, forces: bool = True, stress: bool = True, chunk_atoms: int = 256) -> dict:
        """Energy, per-atom energies, forces and stress; as :meth:`ACEPotential.compute`."""
        return evaluate_sites(self, atoms, forces, stress, chunk_atoms)

"""ACE site-energy potential: energies, forces and the virial from invariant features.

The model::

    E = sum_i [ E0(Z_i) + c_{Z_i} . B(R_i) ] + 1/2 sum_{i != j} phi(r_ij)

``B(R_i)`` are the invariant features (key ``(L, parity) = (0, +1)``) of the ACE
basis engine (:mod:`acehamil.basis`) for the environment of atom ``i``,
``c_Z`` one coefficient vector per centre species, and ``phi`` the optional
fixed core repulsion (:mod:`acehamil.models.potential.repulsion`).

Gradients: particle ``p`` of centre ``i`` is atom ``j`` at
``vec_p = r_j - r_i + T @ cell``; with ``g_p = dE/dvec_p``,
``dE/dr_j += g_p`` and ``dE/dr_i -= g_p``; forces ``F = -dE/dr``;
the strain derivative is ``dE/deps_ab = sum_p g_pa vec_pb`` and the ASE stress
``sigma = (1/V) dE/deps`` (eV/Å^3).

The same machinery gives the linear design rows used by fitting: column layout
``[E0 count per species (n_species), features of species 0 (n_B), features of
species 1 (n_B), ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from ...structure.neighbours import NeighbourPairs, neighbour_pairs
from .repulsion import RepulsionSpec

#: Feature key of the invariants: L = 0, even parity.
INVARIANT = (0, 1)
#: Voigt order used by ASE: xx, yy, zz, yz, xz, xy.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


# ---------------------------------------------------------------- basis adapters
def basis_cutoff(basis) -> float:
    """Largest radial cutoff of an ACE basis, Å."""
    radial = basis.spec.radial
    rc = float(getattr(radial, "r_cut", 0.0) or 0.0)
    for entry in getattr(radial, "cutoffs", ()) or ():
        rc = max(rc, float(entry[-1]))
    if not rc > 0:
        raise ValueError("the basis has no positive radial cutoff")
    return rc


def feature_degrees(basis) -> np.ndarray:
    """Per invariant feature, its total polynomial degree (for smoothness priors), shape (n_B,)."""
    return basis.feature_degrees(INVARIANT)


def feature_orders(basis) -> np.ndarray:
    """Per invariant feature, its correlation order nu, shape (n_B,)."""
    return basis.feature_orders(INVARIANT)


def make_centres(centre_species, particle_centre, particle_vec, particle_category):
    """:class:`acehamil.basis.Centres` of atom-centred environments (categories = neighbour atomic numbers)."""
    from ...basis import Centres

    return Centres(
        centre_species=centre_species,
        particle_centre=particle_centre,
        particle_vec=particle_vec,
        particle_category=particle_category,
    )


@dataclass(frozen=True, eq=False)
class SiteDescriptors:
    """Invariant features of a set of centres and their particle gradients.

    Attributes
    ----------
    B : ndarray, float64, shape (n_centres, n_B)
    G : ndarray, float64, shape (P, n_B, 3) or None
        ``dB[centre(p), b] / d vec_p``, 1/Å times the feature unit.
    pairs : NeighbourPairs
        The particles (``i`` = centre atom, ``j`` = neighbour atom).
    """

    B: np.ndarray
    G: np.ndarray | None
    pairs: NeighbourPairs


def site_descriptors(basis, atoms, gradients: bool = True, pairs: NeighbourPairs | None = None) -> SiteDescriptors:
    """Invariant features (and gradients) of every atom of ``atoms``.

    Parameters
    ----------
    basis : acehamil.basis.ACEBasis
    atoms : ase.Atoms
    gradients : bool
    pairs : NeighbourPairs, optional
        Precomputed pairs within :func:`basis_cutoff` (sorted by ``i``).
    """
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    if pairs is None:
        pairs = neighbour_pairs(atoms, basis_cutoff(basis))
    return _descriptors_for(basis, numbers, np.arange(len(numbers)), pairs, gradients)


def _descriptors_for(basis, numbers, centre_atoms, pairs, gradients) -> SiteDescriptors:
    """Descriptors of the atoms ``centre_atoms`` (a contiguous range) using the pairs whose i is in it."""
    first = int(centre_atoms[0]) if len(centre_atoms) else 0
    centres = make_centres(numbers[centre_atoms], pairs.i - first, pairs.vec, numbers[pairs.j])
    if gradients:
        vals, grads = basis.evaluate(centres, gradients=True, keys=[INVARIANT])
        G = np.asarray(grads[INVARIANT])[:, :, 0, :]
    else:
        vals, G = basis.evaluate(centres, keys=[INVARIANT]), None
    B = np.asarray(vals[INVARIANT])[:, :, 0]
    return SiteDescriptors(B, G, pairs)


# ---------------------------------------------------------------- pair scatter
def scatter_pair_gradients(natoms: int, i, j, g) -> np.ndarray:
    """``dE/dr_k = sum_{p: j_p = k} g_p - sum_{p: i_p = k} g_p``.

    Parameters
    ----------
    natoms : int
    i, j : ndarray of int, shape (P,)
    g : ndarray, shape (P, ...)
        ``dE/dvec_p`` (any trailing shape).

    Returns
    -------
    ndarray, shape (natoms, ...)
    """
    P = len(i)
    if P == 0:
        return np.zeros((natoms,) + np.shape(g)[1:])
    flat = np.asarray(g).reshape(P, -1)
    if flat.shape[1] <= 8:  # a few columns (forces): one pair of bincounts per column, no sparse matrix to build
        out = np.empty((natoms, flat.shape[1]))
        for c in range(flat.shape[1]):
            out[:, c] = np.bincount(j, flat[:, c], natoms) - np.bincount(i, flat[:, c], natoms)
        return out.reshape((natoms,) + np.shape(g)[1:])
    rows = np.concatenate([j, i])
    cols = np.concatenate([np.arange(P), np.arange(P)])
    vals = np.concatenate([np.ones(P), -np.ones(P)])
    S = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(natoms, P))
    return np.asarray(S @ flat).reshape((natoms,) + np.shape(g)[1:])


def strain_derivative(vec, g) -> np.ndarray:
    """``dE/deps_ab = sum_p g_pa vec_pb`` for ``g`` of shape (P, ..., 3); returns (..., 3, 3)."""
    return np.einsum("p...a,pb->...ab", g, vec)


def cell_volume(atoms) -> float | None:
    """Cell volume in Å^3 when periodic in all three directions, else None."""
    if not np.all(atoms.pbc):
        return None
    return float(abs(np.linalg.det(atoms.cell.array)))


def repulsion_terms(rep: RepulsionSpec | None, atoms, pairs: NeighbourPairs):
    """Energy (eV), per-atom energies (natoms,), dE/dr (natoms, 3) and dE/deps (3, 3) of the core repulsion."""
    natoms = len(atoms)
    if rep is None or not rep.r_core:
        return 0.0, np.zeros(natoms), np.zeros((natoms, 3)), np.zeros((3, 3))
    numbers = np.asarray(atoms.numbers)
    mask = pairs.dist < rep.max_radius
    p = pairs.select(mask)
    phi, dphi = rep.pair(numbers[p.i], numbers[p.j], p.dist)
    per_atom = 0.5 * np.bincount(p.i, weights=phi, minlength=natoms)
    g = 0.5 * (dphi / p.dist)[:, None] * p.vec
    return float(per_atom.sum()), per_atom, scatter_pair_gradients(natoms, p.i, p.j, g), strain_derivative(p.vec, g)


# ---------------------------------------------------------------- design rows
@dataclass(frozen=True, eq=False)
class DesignRows:
    """Linear design rows of one structure (column layout in the module docstring).

    Attributes
    ----------
    energy : ndarray, shape (n_cols,)
        ``dE/dc``.
    forces : ndarray, shape (natoms, 3, n_cols) or None
        ``dF/dc``.
    strain : ndarray, shape (3, 3, n_cols) or None
        ``d(dE/deps)/dc``; divide by the volume for stress.
    """

    energy: np.ndarray
    forces: np.ndarray | None
    strain: np.ndarray | None


def design_rows(basis, species, atoms, gradients: bool = True) -> DesignRows:
    """Design rows of one structure for a linear fit of ``E0`` and the coefficients.

    Parameters
    ----------
    basis : ACEBasis
    species : sequence of int
        The model's species (column-block order).
    atoms : ase.Atoms
    gradients : bool
        Also build force and strain rows.
    """
    return rows_from_descriptors(site_descriptors(basis, atoms, gradients=gradients), species, atoms.numbers)


def rows_from_descriptors(desc: SiteDescriptors, species, numbers) -> DesignRows:
    """:func:`design_rows` from precomputed descriptors (gradient rows when ``desc.G`` is present)."""
    species = tuple(int(z) for z in species)
    numbers = np.asarray(numbers)
    gradients = desc.G is not None
    sidx = _species_index(species, numbers)
    ns, natoms = len(species), len(numbers)
    nB = desc.B.shape[1]
    ncols = ns * (1 + nB)
    energy = np.zeros(ncols)
    energy[:ns] = np.bincount(sidx, minlength=ns)
    forces = np.zeros((natoms, 3, ncols)) if gradients else None
    strain = np.zeros((3, 3, ncols)) if gradients else None
    pair_s = sidx[desc.pairs.i] if gradients else None
    for s in range(ns):
        cols = slice(ns + s * nB, ns + (s + 1) * nB)
        energy[cols] = desc.B[sidx == s].sum(axis=0)
        if gradients:
            m = pair_s == s
            Gs = desc.G[m]
            dEdr = scatter_pair_gradients(natoms, desc.pairs.i[m], desc.pairs.j[m], Gs)  # (natoms, nB, 3)
            forces[:, :, cols] = -dEdr.transpose(0, 2, 1)
            strain[:, :, cols] = np.einsum("pba,pc->acb", Gs, desc.pairs.vec[m])
    return DesignRows(energy, forces, strain)


def _species_index(species, numbers) -> np.ndarray:
    """Position of each atomic number in ``species``, int64 shape (natoms,) (one vectorised lookup, no
    Python loop over atoms); ValueError naming the first atomic number that is not a species."""
    species = np.asarray(species, dtype=np.int64)
    numbers = np.asarray(numbers)
    if numbers.size and not np.issubdtype(numbers.dtype, np.integer):
        numbers = numbers.astype(np.int64)
    order = np.argsort(species)
    pos = np.searchsorted(species[order], numbers)
    pos = np.minimum(pos, len(species) - 1)
    idx = order[pos]
    bad = species[idx] != numbers
    if bad.any():
        z = int(numbers[np.argmax(bad)])
        raise ValueError(f"atomic number {z} is not one of the model's species {species.tolist()}")
    return idx.astype(np.int64, copy=False)


# ---------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class ACEPotential:
    """A fitted linear ACE site-energy potential.

    Attributes
    ----------
    basis : acehamil.basis.ACEBasis
    species : tuple of int
        Atomic numbers, column-block order.
    e0 : ndarray, float64, shape (n_species,)
        One-body reference energies, eV.
    coef : ndarray, float64, shape (n_species, n_B)
        Coefficients of the invariant features per centre species, eV per feature unit.
    repulsion : RepulsionSpec or None
        Fixed core repulsion.
    metadata : dict
        Free-form provenance (fit settings, training-set summary); JSON-serialisable.
    """

    basis: object
    species: tuple
    e0: np.ndarray
    coef: np.ndarray
    repulsion: RepulsionSpec | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        species = tuple(int(z) for z in self.species)
        if len(set(species)) != len(species) or not species:
            raise ValueError(f"species must be distinct and non-empty, got {self.species}")
        e0 = np.array(self.e0, dtype=float)
        coef = np.array(self.coef, dtype=float)
        if e0.shape != (len(species),):
            raise ValueError(f"e0 must have shape ({len(species)},), got {e0.shape}")
        nB = len(feature_degrees(self.basis))
        if coef.shape != (len(species), nB):
            raise ValueError(f"coef must have shape ({len(species)}, {nB}), got {coef.shape}")
        if not (np.all(np.isfinite(e0)) and np.all(np.isfinite(coef))):
            raise ValueError("e0 and coef must be finite")
        e0.flags.writeable = False
        coef.flags.writeable = False
        object.__setattr__(self, "species", species)
        object.__setattr__(self, "e0", e0)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "_coeff_dict", {z: coef[k] for k, z in enumerate(species)})
        object.__setattr__(self, "_contraction", None)

    def contraction(self):
        """The coefficients pushed through the basis tables (built on first use, then reused)."""
        if self._contraction is None:
            object.__setattr__(self, "_contraction", self.basis.contraction(self._coeff_dict, INVARIANT))
        return self._contraction

    @property
    def n_features(self) -> int:
        """Invariant features per species."""
        return int(self.coef.shape[1])

    @property
    def cutoff(self) -> float:
        """Interaction range, Å."""
        rc = basis_cutoff(self.basis)
        return max(rc, self.repulsion.max_radius) if self.repulsion else rc

    def parameter_vector(self) -> np.ndarray:
        """All parameters in the design-column layout, shape (n_species * (1 + n_B),)."""
        return np.concatenate([self.e0, self.coef.ravel()])

    @classmethod
    def from_parameter_vector(cls, basis, species, vector, repulsion=None, metadata=None) -> "ACEPotential":
        """Inverse of :meth:`parameter_vector`."""
        ns = len(species)
        v = np.asarray(vector, dtype=float)
        return cls(basis, tuple(species), v[:ns], v[ns:].reshape(ns, -1), repulsion, metadata or {})

    def compute(self, atoms, forces: bool = True, stress: bool = True, chunk_atoms: int = 256) -> dict:
        """Energy, per-atom energies, forces and (3-D periodic cells) stress.

        Parameters
        ----------
        atoms : ase.Atoms
        forces : bool
        stress : bool
            Ignored (no ``"stress"`` key) unless periodic along all three axes.
        chunk_atoms : int
            Centres evaluated per basis call (bounds memory on large cells).

        Returns
        -------
        dict
            ``energy`` (eV), ``energies`` (natoms,) eV, ``forces`` (natoms, 3) eV/Å,
            ``stress`` (6,) eV/Å^3 in Voigt order xx yy zz yz xz xy (ASE sign:
            ``(1/V) dE/deps``), ``virial_strain`` (3, 3) eV = dE/deps.
        """
        return evaluate_sites(self, atoms, forces, stress, chunk_atoms)

    def site_terms(self, numbers, a: int, b: int, sub: NeighbourPairs, grad: bool):
        """Site energies of atoms ``a:b`` (without E0) and ``dE/dvec`` of their particles ``sub``.

        Returns
        -------
        eps : ndarray, shape (b - a,), eV
        g : ndarray, shape (len(sub), 3) or None, eV/Å
        """
        sidx = _species_index(self.species, numbers[a:b])
        if grad and hasattr(self.basis, "contraction"):
            # contracted reverse mode: no (P, n_B, 3) Jacobian
            centres = make_centres(numbers[a:b], sub.i - a, sub.vec, numbers[sub.j])
            return self.basis.evaluate_linear(centres, self.contraction())
        desc = _descriptors_for(self.basis, numbers, np.arange(a, b), sub, grad)
        eps = np.einsum("nb,nb->n", desc.B, self.coef[sidx])
        g = np.einsum("pbx,pb->px", desc.G, self.coef[sidx[sub.i - a]]) if grad else None
        return eps, g


def evaluate_sites(model, atoms, forces: bool = True, stress: bool = True, chunk_atoms: int = 256, pairs=None) -> dict:
    """Energy, per-atom energies, forces and stress of a site-energy model (see :meth:`ACEPotential.compute`).

    ``model`` provides ``species``, ``e0``, ``basis``, ``repulsion``, ``cutoff`` and
    ``site_terms(numbers, a, b, pairs_of_a_to_b, grad) -> (eps, g)``; this function
    does the chunking over centres, the pair scatter, the virial and the repulsion.
    ``pairs`` (optional): a neighbour list of ``atoms`` within at least ``model.cutoff``,
    sorted by ``i`` (reused instead of building one).
    """
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    natoms = len(numbers)
    sidx = _species_index(model.species, numbers)
    rc = basis_cutoff(model.basis)
    if pairs is None:
        pairs_all = neighbour_pairs(atoms, model.cutoff)
        pairs = pairs_all if model.cutoff <= rc else pairs_all.select(pairs_all.dist < rc)
    else:
        pairs_all = pairs
        if len(pairs.dist) and pairs.dist.max() >= rc:  # (a list within rc is used as it is, not copied)
            pairs = pairs_all.select(pairs_all.dist < rc)
    grad = forces or stress
    energies = model.e0[sidx].copy()
    g_all = np.zeros((len(pairs.i), 3)) if grad else None  # dE/dvec of every pair, scattered once at the end
    starts = np.searchsorted(pairs.i, np.arange(0, natoms + 1))
    step = max(int(chunk_atoms), 1)
    for a in range(0, natoms, step):
        b = min(a + step, natoms)
        sub = pairs.select(slice(starts[a], starts[b]))
        eps, g = model.site_terms(numbers, a, b, sub, grad)
        energies[a:b] += eps
        if grad and len(sub):
            g_all[starts[a] : starts[b]] = g
    if grad:
        dEdr = scatter_pair_gradients(natoms, pairs.i, pairs.j, g_all)
        dEde = g_all.T @ pairs.vec
    else:
        dEdr, dEde = np.zeros((natoms, 3)), np.zeros((3, 3))
    e_rep, per_rep, dEdr_rep, dEde_rep = repulsion_terms(model.repulsion, atoms, pairs_all)
    energies += per_rep
    out = {"energy": float(energies.sum()), "energies": energies, "free_energy": float(energies.sum())}
    if forces:
        out["forces"] = -(dEdr + dEdr_rep)
    vol = cell_volume(atoms)
    if grad:
        out["virial_strain"] = dEde + dEde_rep
    if stress and vol is not None:
        sig = out["virial_strain"] / vol
        sig = 0.5 * (sig + sig.T)
        out["stress"] = np.array([sig[a, b] for a, b in VOIGT])
    return out

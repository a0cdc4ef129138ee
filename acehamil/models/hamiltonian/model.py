"""Linear equivariant models of whole H and S matrices, and prediction.

A :class:`MatrixModel` is a set of block families (on-site per species,
off-site per species pair), each with one independent linear model per block
type (shell pair) and per coupled ``L``.  A :class:`HamiltonianModel` pairs the
H and S models of one orbital basis.

Prediction (:meth:`MatrixModel.predict`) is vectorised over blocks: one
feature evaluation per family (in chunks of centres), then per block type a
contraction with the coefficients, Clebsch-Gordan assembly and a scatter into
the flat block-sparse data of a :class:`~acehamil.structure.RealSpaceMatrix`.
Its pattern is every on-site block ``(i, i, 0)`` plus every directed bond
with ``|r_ij| < r_cut`` of its species pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...structure import OrbitalBasis, RealSpaceMatrix, StructureData
from ...structure.neighbours import neighbour_pairs
from ...environments import reverse_index
from ...threads import with_inner_threads
from .blocks import assemble, transpose_sign
from .config import FeatureConfig, ModelConfig
from .offsite import OffsiteFamily
from .onsite import OnsiteFamily


def make_families(orbital_basis: OrbitalBasis, onsite: FeatureConfig, offsite: FeatureConfig) -> tuple:
    """On-site families (one per species) and off-site families (one per species pair ``zi <= zj``)."""
    species = orbital_basis.species
    lmax = {z: max(orbital_basis.lvalues(z)) for z in species}
    on = tuple(OnsiteFamily(z, onsite, species, lmax[z]) for z in species)
    off = tuple(OffsiteFamily(zi, zj, offsite, species, lmax[zi] + lmax[zj]) for zi in species for zj in species if zi <= zj)
    return on, off


def shell_offsets(orbital_basis: OrbitalBasis) -> dict:
    """``{Z: array of first orbital of each shell within the atom}``."""
    return {z: np.concatenate([[0], np.cumsum([s.size for s in orbital_basis.shells_of(z)])]).astype(np.int64)
            for z in orbital_basis.species}


def scatter_blocks(data: np.ndarray, offsets, ncols, row0: int, col0: int, X: np.ndarray) -> None:
    """Write sub-blocks ``X (n, d1, d2)`` at rows ``row0..``, cols ``col0..`` of blocks
    starting at ``offsets (n,)`` with ``ncols (n,)`` columns (row-major), in place."""
    n, d1, d2 = X.shape
    if n == 0:
        return
    idx = (np.asarray(offsets)[:, None, None] + (row0 + np.arange(d1))[None, :, None] * np.asarray(ncols)[:, None, None]
           + (col0 + np.arange(d2))[None, None, :])
    data[idx] = X


def gather_blocks(matrix: RealSpaceMatrix, q: np.ndarray, row0: int, col0: int, d1: int, d2: int) -> np.ndarray:
    """Sub-blocks ``(n, d1, d2)`` of blocks ``q`` of ``matrix`` (zeros where ``q < 0``)."""
    q = np.asarray(q, dtype=np.int64)
    out = np.zeros((len(q), d1, d2))
    ok = q >= 0
    if ok.any():
        qq = q[ok]
        nc = matrix.norb_per_atom[matrix.j[qq]]
        idx = (matrix.offsets[qq][:, None, None] + (row0 + np.arange(d1))[None, :, None] * nc[:, None, None]
               + (col0 + np.arange(d2))[None, None, :])
        out[ok] = matrix.data[idx]
    return out


@dataclass(frozen=True)
class Pattern:
    """Block pattern of a predicted matrix: on-site blocks first, then bonds.

    Attributes
    ----------
    norb : ndarray of int, shape (natoms,)
    i, j : ndarray of int, shape (nblocks,)
    shift : ndarray of int, shape (nblocks, 3)
    offsets : ndarray of int, shape (nblocks + 1,)
    bonds : NeighbourPairs
        The bonds (blocks ``natoms:``).
    pairs : NeighbourPairs
        The neighbour list the bonds were selected from (reused for environments).
    """

    norb: np.ndarray
    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    offsets: np.ndarray
    bonds: object
    pairs: object


@dataclass(frozen=True, eq=False)
class MatrixModel:
    """Linear equivariant model of one matrix (H or S).

    Attributes
    ----------
    name : str
        "H" or "S".
    orbital_basis : OrbitalBasis
    onsite, offsite : tuple of OnsiteFamily / OffsiteFamily
    coefficients : dict
        ``{block_type.key: {L: ndarray (n_F,)}}``; missing types predict zero.
    posteriors : dict
        Optional BLR posteriors ``{block_type.key: {L: BLRPosterior}}``.
    """

    name: str
    orbital_basis: OrbitalBasis
    onsite: tuple
    offsite: tuple
    coefficients: dict = field(default_factory=dict)
    posteriors: dict = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, orbital_basis: OrbitalBasis, onsite: FeatureConfig, offsite: FeatureConfig, coefficients=None,
              posteriors=None) -> "MatrixModel":
        on, off = make_families(orbital_basis, onsite, offsite)
        return cls(name, orbital_basis, on, off, dict(coefficients or {}), dict(posteriors or {}))

    @property
    def families(self) -> tuple:
        return self.onsite + self.offsite

    def block_types(self) -> list:
        """``[(family, block_type), ...]`` of every fitted block type."""
        return [(f, bt) for f in self.families for bt in f.block_types(self.orbital_basis)]

    @property
    def reach(self) -> float:
        """Neighbour-list cutoff needed for prediction, Å."""
        return max(f.reach for f in self.families)

    def _bond_cutoff(self, zi, zj) -> float:
        a, b = sorted((int(zi), int(zj)))
        for f in self.offsite:
            if (f.zi, f.zj) == (a, b):
                return f.config.r_cut
        return 0.0

    def pattern(self, atoms, pairs=None) -> Pattern:
        """The block pattern this model predicts for ``atoms``."""
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        norb = self.orbital_basis.layout(numbers).norb_per_atom
        nl = pairs if pairs is not None else neighbour_pairs(atoms, self.reach)
        species = sorted(set(numbers.tolist()))
        cut = np.zeros((max(species) + 1,) * 2) if species else np.zeros((1, 1))
        for a in species:
            for b in species:
                cut[a, b] = self._bond_cutoff(a, b)
        bonds = nl.select(nl.dist < cut[numbers[nl.i], numbers[nl.j]]) if len(nl) else nl
        nat = len(numbers)
        i = np.concatenate([np.arange(nat), bonds.i]).astype(np.int64)
        j = np.concatenate([np.arange(nat), bonds.j]).astype(np.int64)
        shift = np.concatenate([np.zeros((nat, 3), np.int64), bonds.shift]).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(norb[i] * norb[j])]).astype(np.int64)
        return Pattern(norb, i, j, shift, offsets, bonds, nl)

    def coefficient(self, bt, L: int, n_features: int) -> np.ndarray:
        c = self.coefficients.get(bt.key, {}).get(L)
        if c is None:
            return np.zeros(n_features)
        if c.shape != (n_features,):
            raise ValueError(
                f"{self.name} model: block type {bt.key} L={L} has {c.shape[0]} coefficients but the basis gives "
                f"{n_features} features (model and basis versions differ?)"
            )
        return c

    def predict(self, atoms, pairs=None, max_particles: int = 200_000, bond_chunk: int = 8192) -> RealSpaceMatrix:
        """Predicted real-space matrix of ``atoms`` (any ``ase.Atoms``, periodic or not).

        Parameters
        ----------
        atoms : ase.Atoms
        pairs : NeighbourPairs, optional
            Neighbour list with cutoff ``>= self.reach`` to reuse.
        max_particles : int
            Particles per feature-evaluation chunk (bounds memory).
        bond_chunk : int
            Bonds whose environments are built at a time (bounds memory; results do not depend on it).

        Returns
        -------
        RealSpaceMatrix
            eV for H, dimensionless for S.
        """
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        pat = self.pattern(atoms, pairs)
        data = np.zeros(int(pat.offsets[-1]))
        so = shell_offsets(self.orbital_basis)
        for fam in self.onsite:
            idx = fam.select(atoms)
            if len(idx) == 0:
                continue
            env = fam.environments(atoms, idx, pairs=pat.pairs)
            feats = fam.features(env)
            for bt in fam.block_types(self.orbital_basis):
                X = self._blocks(fam, bt, fam.design(feats, bt, len(idx)))
                scatter_blocks(data, pat.offsets[idx], pat.norb[idx], so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b], X)
                if bt.shell_a != bt.shell_b:
                    scatter_blocks(data, pat.offsets[idx], pat.norb[idx], so[bt.species_j][bt.shell_b], so[bt.species_i][bt.shell_a],
                                   X.transpose(0, 2, 1))
        bonds = pat.bonds
        nat = len(numbers)
        rev_all = reverse_index(bonds.i, bonds.j, bonds.shift) if len(bonds) else np.zeros(0, np.int64)
        for fam in self.offsite:
            sel = fam.select(numbers, bonds) if len(bonds) else np.zeros(0, np.int64)
            if len(sel) == 0:
                continue
            if np.any(rev_all[sel] < 0):
                raise RuntimeError("bond list is not closed under reversal")  # pragma: no cover
            sub = bonds.select(sel)
            prep = fam.sorted_neighbours(atoms, pat.pairs)
            bts = fam.block_types(self.orbital_basis)
            raw = {bt.key: {L: np.zeros((len(sel), 2 * L + 1)) for L in bt.L_values()} for bt in bts}
            # stream: environments, features and their contraction chunk by chunk of bonds, so the
            # working set is bounded (the environments of all bonds are never held at once)
            for b0 in range(0, len(sel), bond_chunk):
                env = fam.environments(atoms, sub.select(slice(b0, b0 + bond_chunk)), pairs=pat.pairs, sorted_nl=prep)
                for s0, s1, chunk in env.chunks(max_particles):
                    feats = fam.evaluate(chunk)
                    for bt in bts:
                        for L in bt.L_values():
                            f = feats.get((L, bt.parity))
                            if f is not None and f.shape[1]:
                                raw[bt.key][L][b0 + s0:b0 + s1] = np.einsum("nfM,f->nM", f, self.coefficient(bt, L, f.shape[1]))
                    del feats
            blk = nat + sel
            off, nc = pat.offsets[blk], pat.norb[pat.j[blk]]
            if fam.zi == fam.zj:
                pos = np.full(len(bonds), -1, np.int64)
                pos[sel] = np.arange(len(sel))
                rev = pos[rev_all[sel]]
                for bt in bts:
                    parts = raw[bt.key]
                    if bt.symmetric:
                        parts = {L: 0.5 * (h + transpose_sign(L) * h[rev]) for L, h in parts.items()}
                    X = assemble(parts, bt.l1, bt.l2, len(sel))
                    ra, cb = so[fam.zi][bt.shell_a], so[fam.zj][bt.shell_b]
                    scatter_blocks(data, off, nc, ra, cb, X)
                    if bt.shell_a != bt.shell_b:
                        scatter_blocks(data, off, nc, cb, ra, X[rev].transpose(0, 2, 1))
            else:
                rblk = nat + rev_all[sel]
                roff, rnc = pat.offsets[rblk], pat.norb[pat.j[rblk]]
                for bt in bts:
                    X = assemble(raw[bt.key], bt.l1, bt.l2, len(sel))
                    ra, cb = so[fam.zi][bt.shell_a], so[fam.zj][bt.shell_b]
                    scatter_blocks(data, off, nc, ra, cb, X)
                    scatter_blocks(data, roff, rnc, cb, ra, X.transpose(0, 2, 1))
        return RealSpaceMatrix(pat.norb, pat.i, pat.j, pat.shift, data)

    def _blocks(self, fam, bt, design: dict) -> np.ndarray:
        n = next(iter(design.values())).shape[0] if design else 0
        parts = {L: np.einsum("nfM,f->nM", D, self.coefficient(bt, L, D.shape[1])) for L, D in design.items() if D.shape[1]}
        return assemble(parts, bt.l1, bt.l2, n)


@dataclass(frozen=True)
class EnergyZero:
    """Energy zero of predicted H for fully periodic cells: ``V = v0 + sum_Z beta_Z N_Z / Omega`` (eV), ``H -> H + V S``.

    Periodic DFT sets the cell-averaged electrostatic potential to zero, so its absolute
    levels carry a constant that depends on the whole cell, not on any one environment: to
    first order a sum of atomic contributions divided by the cell volume (the G = 0 terms of
    the pseudopotentials, ``sum_I alpha_I / Omega``, and the mean inner potential).  A local
    model cannot know it; this term restores it from the species number densities
    ``N_Z / Omega`` (Å^-3).  It is fitted to the per-structure energy zeros ``V_s`` found by
    the energy-zero fit (``fit.energy_zero_model = "density"``).  Clusters and slabs (not
    periodic along all three axes) get ``V = 0`` (the training average).

    Attributes
    ----------
    v0 : float
        eV.
    beta : tuple of (int, float)
        ``(Z, beta_Z)`` pairs, eV Å^3.

    Examples
    --------
    >>> from ase.build import bulk
    >>> ez = EnergyZero(v0=-1.0, beta=((14, 20.0),))
    >>> round(ez.value(bulk("Si", "diamond", a=5.43, cubic=True)), 4)   # 8 atoms in 160.1 Å^3
    -0.0006
    """

    v0: float = 0.0
    beta: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "v0", float(self.v0))
        object.__setattr__(self, "beta", tuple((int(z), float(b)) for z, b in self.beta))
        if not all(np.isfinite([self.v0] + [b for _, b in self.beta])):
            raise ValueError(f"energy zero parameters must be finite, got v0={self.v0}, beta={self.beta}")

    def value(self, atoms) -> float:
        """``V`` of ``atoms`` in eV (0 unless periodic along all three axes)."""
        if not np.all(atoms.pbc):
            return 0.0
        vol = abs(float(np.linalg.det(atoms.cell.array)))
        if not vol > 0:
            raise ValueError("periodic cell with zero volume")
        numbers = np.asarray(atoms.numbers)
        return float(self.v0 + sum(b * np.count_nonzero(numbers == z) / vol for z, b in self.beta))

    def to_dict(self) -> dict:
        return {"v0_eV": self.v0, "beta_eV_A3": {str(z): b for z, b in self.beta}}

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyZero":
        return cls(v0=d["v0_eV"], beta=tuple((int(z), b) for z, b in d["beta_eV_A3"].items()))


def add_overlap(H: RealSpaceMatrix, S: RealSpaceMatrix, V: float) -> RealSpaceMatrix:
    """``H + V S`` on the pattern of ``H`` (blocks of ``S`` outside it are left out), eV.

    Examples
    --------
    >>> S = RealSpaceMatrix.from_dense([1, 1], [[0, 0, 0]], [np.array([[1.0, 0.5], [0.5, 1.0]])])
    >>> add_overlap(S.with_data(np.zeros(S.data.size)), S, 0.1).data.tolist()
    [0.1, 0.05, 0.05, 0.1]
    """
    if V == 0.0:
        return H
    if H.same_pattern(S):
        return H.with_data(H.data + V * S.data)
    data = H.data.copy()
    for p in range(H.nblocks):
        q = S.find(H.i[p], H.j[p], H.shift[p])
        if q >= 0:
            data[H.offsets[p]:H.offsets[p + 1]] += V * S.data[S.offsets[q]:S.offsets[q + 1]]
    return H.with_data(data)


@dataclass(frozen=True, eq=False)
class HamiltonianModel:
    """H and S models of one orbital basis, with the configuration that defines them.

    Attributes
    ----------
    config : ModelConfig
    orbital_basis : OrbitalBasis
    H, S : MatrixModel
    report : dict
        Fit report (per block type statistics), JSON-able.
    valence_electrons : dict or None
        ``{Z: electrons}`` per atom of each species, as counted by the orbital basis of the
        training data (e.g. 4 for Si with a GTH pseudopotential, 6 for all-electron C), found
        from the training structures' ``n_electrons`` (:func:`electrons_per_species`); None when
        unknown.  Gives predictions an electron count, hence a Fermi level.
    energy_zero : EnergyZero or None
        Cell-level energy zero added to H as ``V S`` (periodic cells); None = none.
    """

    config: ModelConfig
    orbital_basis: OrbitalBasis
    H: MatrixModel
    S: MatrixModel
    report: dict = field(default_factory=dict)
    valence_electrons: dict | None = None
    energy_zero: EnergyZero | None = None

    def n_electrons(self, atoms, charge: float = 0.0) -> float | None:
        """Electrons per cell of ``atoms`` with net charge ``charge`` (removed electrons); None
        when the model stores no electron counts.

        Raises
        ------
        ValueError
            A species without a stored count, or a charge that leaves a negative count.
        """
        if self.valence_electrons is None:
            return None
        missing = sorted({int(z) for z in atoms.numbers} - set(self.valence_electrons))
        if missing:
            raise ValueError(f"the model stores no electron count for species Z={missing}")
        n = float(sum(self.valence_electrons[int(z)] for z in atoms.numbers)) - float(charge)
        if n < 0:
            raise ValueError(f"charge {charge} removes more than the {n + charge:g} electrons of the structure")
        return n

    @classmethod
    def build(cls, config: ModelConfig, orbital_basis: OrbitalBasis, h_coefficients=None, s_coefficients=None,
              report=None, h_posteriors=None, s_posteriors=None, energy_zero=None) -> "HamiltonianModel":
        """Model of ``config`` with the given coefficients (default: zero)."""
        H = MatrixModel.build("H", orbital_basis, config.h_onsite, config.h_offsite, h_coefficients, h_posteriors)
        S = MatrixModel.build("S", orbital_basis, config.s_onsite, config.s_offsite, s_coefficients, s_posteriors)
        return cls(config, orbital_basis, H, S, dict(report or {}), energy_zero=energy_zero)

    @property
    def reach(self) -> float:
        return max(self.H.reach, self.S.reach)

    @with_inner_threads
    def predict(self, atoms) -> tuple:
        """``(H, S)`` real-space matrices of ``atoms`` (eV, dimensionless).

        H includes the cell's energy zero ``V S`` when the model has one (:class:`EnergyZero`).
        """
        nl = neighbour_pairs(atoms, self.reach)
        H, S = self.H.predict(atoms, pairs=nl), self.S.predict(atoms, pairs=nl)
        if self.energy_zero is not None:
            H = add_overlap(H, S, self.energy_zero.value(atoms))
        return H, S

    def predict_structure(self, atoms, check_overlap: bool = True, info=None, charge: float = 0.0, n_samples: int = 0,
                          rng=None) -> StructureData:
        """Predicted :class:`StructureData` (dataset-ready; no reference data).

        With ``n_samples > 0`` (a model with posteriors) the result carries ``H_draws``
        (calibrated posterior draws minus the prediction, :mod:`.uncertainty`) and
        ``info["uncertainty"]`` = ``{"n_samples", "scale_epistemic", "scale_noise",
        "extrapolation_max", "extrapolation_per_atom"}`` (see
        :func:`~acehamil.models.hamiltonian.uncertainty.extrapolation_score`).

        When ``check_overlap``, the smallest eigenvalue of ``S(k)`` over the k-points of
        :func:`overlap_check_kpts` (Gamma and a grid for periodic cells) is stored in
        ``info["overlap_min_eigenvalue"]``, with ``info["overlap_kpoints_checked"]`` (their
        number), ``info["overlap_min_kpoint"]`` (fractional) and
        ``info["overlap_positive_definite"]``.  A non-positive-definite S raises no error
        here (the eigen-solvers refuse it) but emits an :class:`OverlapWarning`.

        ``n_electrons`` is set from :attr:`valence_electrons` minus ``charge`` (None when the model
        stores no counts; then ``charge`` must be 0).
        """
        n_el = self.n_electrons(atoms, charge)
        if n_el is None and charge:
            raise ValueError("the model stores no electron counts per species (fitted before they were recorded, "
                             "or training data without n_electrons): a charge cannot be applied")
        meta = {"source": "acehamil prediction", **dict(info or {})}
        draws = None
        if n_samples:
            from .calibrate import scales_of
            from .uncertainty import extrapolation_score, sample_matrix

            nl = neighbour_pairs(atoms, self.reach)
            a, b = scales_of(self)
            rng = rng if rng is not None else np.random.default_rng(0)
            H, draws = sample_matrix(self.H, atoms, int(n_samples), rng, pairs=nl, scales=(a, b))
            S = self.S.predict(atoms, pairs=nl)
            if self.energy_zero is not None:
                H = add_overlap(H, S, self.energy_zero.value(atoms))
            score = extrapolation_score(self, atoms, pairs=nl)
            meta["uncertainty"] = {"n_samples": int(n_samples), "scale_epistemic": a, "scale_noise": b,
                                   "extrapolation_max": float(np.nanmax(score)) if np.any(np.isfinite(score)) else None,
                                   "extrapolation_per_atom": [None if not np.isfinite(x) else float(x) for x in score]}
        else:
            H, S = self.predict(atoms)
        if check_overlap:
            smin, kmin, nk = overlap_check(S, atoms)
            meta.update(overlap_min_eigenvalue=smin, overlap_min_kpoint=kmin, overlap_kpoints_checked=nk,
                        overlap_positive_definite=bool(smin > 0))
            if not smin > 0:
                import warnings

                warnings.warn(f"predicted S of {meta.get('name', 'the structure')} is not positive definite: smallest "
                              f"eigenvalue of S(k) {smin:.4g} at k = {kmin} (over {nk} k-points checked); atoms too "
                              f"close or outside the training data? bands/DOS will refuse it", OverlapWarning,
                              stacklevel=2)
        if charge:
            meta["charge"] = float(charge)
        return StructureData(atoms=atoms.copy(), basis=self.orbital_basis, H=(H,), S=S, n_electrons=n_el, info=meta,
                             H_draws=draws)


class OverlapWarning(UserWarning):
    """A predicted overlap matrix S(k) is not positive definite."""


def overlap_check_kpts(atoms, norb: int) -> np.ndarray:
    """k-points at which a predicted S(k) is checked, shape (nk, 3), fractional.

    Gamma for clusters; for periodic cells a Gamma-centred grid along the periodic axes with
    4 points per axis (2 above 300 orbitals, Gamma and the zone boundary only above 2000),
    which contains Gamma, the zone-boundary points 1/2 and the points in between.
    """
    if not np.any(atoms.pbc):
        return np.zeros((1, 3))
    n = 4 if norb <= 300 else 2 if norb <= 2000 else 1
    axes = [np.arange(n) / n if p else np.zeros(1) for p in atoms.pbc]
    k = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    if n == 1:
        k = np.vstack([k, [[0.5 * p for p in atoms.pbc]]])
    return k


@with_inner_threads
def overlap_check(S: RealSpaceMatrix, atoms, kpts=None, dense_limit: int = 4000) -> tuple:
    """Smallest eigenvalue of ``S(k)`` over ``kpts`` (default :func:`overlap_check_kpts`).

    Returns
    -------
    (float, list of float, int)
        Smallest eigenvalue (dimensionless), its fractional k-point, number of k-points checked.
        Above ``dense_limit`` orbitals: a sparse Lanczos estimate at Gamma only (1 k-point).
    """
    periodic = bool(np.any(atoms.pbc))
    kpts = overlap_check_kpts(atoms, S.norb) if kpts is None else np.asarray(kpts, dtype=float).reshape(-1, 3)
    if not periodic:
        kpts = np.zeros((1, 3))
    if S.norb <= dense_limit:
        from ...tb.bloch import BlochAssembler

        # one assembler (the sparse grouping of S is built once), k-points in chunks, stacked eigvalsh
        asm = BlochAssembler(S)
        chunk = max(1, 2**26 // max(1, 16 * S.norb * S.norb))
        smallest = []
        for k0 in range(0, len(kpts), chunk):
            Sk = asm.dense(kpts[k0:k0 + chunk])
            Sk = 0.5 * (Sk + Sk.conj().transpose(0, 2, 1))
            smallest.extend(np.linalg.eigvalsh(Sk)[:, 0].tolist())
        q = int(np.argmin(smallest))
        return smallest[q], [float(x) for x in kpts[q]], len(kpts)
    import scipy.sparse as sps
    import scipy.sparse.linalg as spl

    rows, cols, vals, _ = S.coo()
    M = sps.csr_matrix((vals, (rows, cols)), shape=(S.norb, S.norb))
    M = 0.5 * (M + M.T)
    return float(spl.eigsh(M, k=1, which="SA", tol=1e-6, maxiter=5000, return_eigenvectors=False)[0]), [0.0, 0.0, 0.0], 1


def overlap_min_eigenvalue(S: RealSpaceMatrix, atoms, kpts=None, dense_limit: int = 4000) -> float:
    """Smallest eigenvalue of ``S(k)`` over the checked k-points (see :func:`overlap_check`)."""
    return overlap_check(S, atoms, kpts, dense_limit)[0]


def random_coefficients(mm: MatrixModel, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Random coefficients of the right shapes for every block type of ``mm`` (tests, benchmarks).

    Returns
    -------
    dict {bt.key: {L: ndarray (n_F,)}}
    """
    out = {}
    for fam, bt in mm.block_types():
        nf = fam.basis.n_features if fam.basis is not None else {}
        for L in bt.L_values():
            n = nf.get((L, bt.parity), 0) + (1 if (fam.kind == "onsite" and L == 0) else 0)
            if n:
                out.setdefault(bt.key, {})[L] = scale * rng.normal(size=n)
    return out


def electrons_per_species(records) -> dict | None:
    """Electrons per atom of each species from structures' total electron counts.

    Solves ``n_electrons(structure) = sum_Z count_Z(structure) * v_Z`` by least squares over the
    structures that carry ``n_electrons``.

    Parameters
    ----------
    records : iterable of (numbers (natoms,) int, n_electrons float or None)

    Returns
    -------
    dict {Z: float} or None
        None when no structure carries a count, when the compositions cannot separate the
        species (e.g. every structure has the same stoichiometry of two species), or when no
        per-species count reproduces every structure's count to 1e-6 (charged or inconsistent
        training data).

    Examples
    --------
    >>> electrons_per_species([([14, 14], 8.0), ([14, 14, 1], 9.0)])
    {1: 1.0, 14: 4.0}
    >>> electrons_per_species([([14, 1], 5.0), ([14, 1, 14, 1], 10.0)]) is None
    True
    """
    rows = [(np.asarray(z, dtype=np.int64), float(n)) for z, n in records if n is not None]
    if not rows:
        return None
    species = sorted({int(z) for zs, _ in rows for z in zs})
    A = np.array([[np.count_nonzero(zs == z) for z in species] for zs, _ in rows], dtype=np.float64)
    b = np.array([n for _, n in rows])
    if np.linalg.matrix_rank(A) < len(species):
        return None
    v = np.linalg.lstsq(A, b, rcond=None)[0]
    if np.abs(A @ v - b).max() > 1e-6:
        return None
    v = np.where(np.abs(v - np.round(v)) < 1e-9, np.round(v), v)
    return {z: float(x) for z, x in zip(species, v)}

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
from functools import cached_property

import numpy as np

from ...structure import OrbitalBasis, RealSpaceMatrix, StructureData
from ...structure.neighbours import neighbour_pairs
from ...structure.pair_index import KeyIndex
from ...tb.overlap import overlap_check
from ...threads import with_inner_threads
from .blocks import transpose_sign
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


@dataclass(frozen=True)
class Pattern:
    """Block pattern of a predicted matrix: on-site blocks first, then bonds.

    Attributes
    ----------
    norb : ndarray of int, shape (natoms,)
    i, j : ndarray of int, shape (nblocks,)
    shift : ndarray of int, shape (nblocks, 3)
    offsets : ndarray of int, shape (nblocks + 1,)
    bonds : ndarray of int, shape (nblocks - natoms,)
        Positions in ``pairs`` of the bonds (blocks ``natoms:``).
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

    def find(self, i, j, shift) -> np.ndarray:
        """Block index of each ``(i, j, shift)`` in this pattern, -1 where absent; shape (n,)."""
        return self._index.find(i, j, shift)

    @cached_property
    def _index(self) -> KeyIndex:
        """The blocks' keys sorted once for every :meth:`find`."""
        return KeyIndex(self.i, self.j, self.shift)


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
        return max(f.bond_cutoff(zi, zj) for f in self.families)

    def same_pattern_as(self, other: "MatrixModel", species) -> bool:
        """True when both models predict the same blocks for structures of ``species`` (same bond cutoffs)."""
        return all(self._bond_cutoff(a, b) == other._bond_cutoff(a, b) for a in species for b in species)

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
        bonds = np.nonzero(nl.dist < cut[numbers[nl.i], numbers[nl.j]])[0] if len(nl) else np.zeros(0, np.int64)
        nat = len(numbers)
        i = np.concatenate([np.arange(nat), nl.i[bonds]]).astype(np.int64)
        j = np.concatenate([np.arange(nat), nl.j[bonds]]).astype(np.int64)
        shift = np.concatenate([np.zeros((nat, 3), np.int64), nl.shift[bonds].reshape(-1, 3)]).astype(np.int64)
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

    def predict(self, atoms, pairs=None, bond_chunk: int = 2048, rows=None, pattern=None) -> RealSpaceMatrix:
        """Predicted real-space matrix of ``atoms`` (any ``ase.Atoms``, periodic or not).

        Parameters
        ----------
        atoms : ase.Atoms
        pairs : NeighbourPairs, optional
            Neighbour list with cutoff ``>= self.reach`` to reuse.
        bond_chunk : int
            Centres (atoms or bonds) whose environments are built at a time (bounds memory; results do
            not depend on it).
        pattern : Pattern, optional
            :meth:`pattern` of ``atoms`` (e.g. shared with the other matrix of a model).
        rows : array of int, optional
            Only the blocks ``(i, j, T)`` with ``i`` in ``rows`` are computed (the others stay zero;
            the pattern is the full one): the unit of work of a distributed prediction
            (:mod:`acehamil.distributed`).  Bonds with ``j`` in ``rows`` are evaluated too, as the
            reversal symmetry needs both directions.

        Returns
        -------
        RealSpaceMatrix
            eV for H, dimensionless for S.
        """
        pat = self.pattern(atoms, pairs) if pattern is None else pattern
        return RealSpaceMatrix.adopt(pat.norb, pat.i, pat.j, pat.shift, self.predict_data(atoms, pat, bond_chunk, rows))

    def predict_data(self, atoms, pat: Pattern, bond_chunk: int = 2048, rows=None) -> np.ndarray:
        """The flat block data of :meth:`predict` on the pattern ``pat`` (a new writable array, float64)."""
        so = shell_offsets(self.orbital_basis)
        row_mask = None
        if rows is not None:
            row_mask = np.zeros(len(atoms), dtype=bool)
            row_mask[np.asarray(rows, dtype=np.int64)] = True
        # first every family's centres, blocks and partners (the look-ups' temporaries are freed
        # before the output is allocated: they do not add to the peak)
        work = []
        for fam in self.families:
            sel = fam.select(atoms, pat.pairs)
            if len(sel) and row_mask is not None:  # closed under reversal: a bond and its reverse are both in or out
                ci, cj, _ = fam.centre_blocks(atoms, pat.pairs, sel)
                sel = sel[row_mask[ci] | row_mask[cj]]
            if len(sel) == 0:
                continue
            ci, cj, cs = fam.centre_blocks(atoms, pat.pairs, sel)
            blk, rblk = pat.find(ci, cj, cs), pat.find(cj, ci, -cs)
            if np.any(blk < 0) or np.any(rblk < 0):
                raise RuntimeError(f"{fam.name}: block pattern is not closed under reversal")  # pragma: no cover
            bts = fam.block_types(self.orbital_basis)
            sym = any(fam.symmetrised(bt) for bt in bts)
            rev = None
            if sym:  # each centre's partner among the centres, from the blocks (one block per key)
                at = np.full(len(pat.i), -1, dtype=np.int64)
                at[blk] = np.arange(len(blk))
                rev = at[rblk]
            del ci, cj, cs
            if sym and np.any(rev < 0):
                raise ValueError(f"{fam.name}: symmetrised blocks need every reversed centre")
            work.append((fam, sel, blk, rblk, bts, sym, rev))
        data = np.zeros(int(pat.offsets[-1]))
        for fam, sel, blk, rblk, bts, sym, rev in work:
            prep = fam.prepare(atoms, pat.pairs)
            W, const, slots = self.output_map(fam, bts)
            mapping = fam.mapping(W, [(L, sl.start) for (_, L), sl in slots.items()])
            G, sym_cols, sym_sign, fwd, back = self._block_map(fam, bts, slots, so)
            row_of = np.full(len(sel), -1, dtype=np.int64) if sym else None
            # streamed: environments, their mapped features and the blocks chunk by chunk of centres
            # (each chunk holds the partners of its centres), so the working set is bounded: neither
            # the environments nor the outputs of all centres are held at once
            for idx, y in fam.mapped_chunks(atoms, pat.pairs, sel, mapping, prepared=prep, chunk=bond_chunk, rev=rev):
                y += const
                if sym:  # family.symmetrise, within the chunk: 1/2 [x_L + (-1)^L x_L(partner)]
                    row_of[idx] = np.arange(len(idx))
                    partner = row_of[rev[idx]]
                    if np.any(partner < 0):  # pragma: no cover
                        raise RuntimeError(f"{fam.name}: a chunk without the partners of its centres")
                    y[:, sym_cols] = 0.5 * (y[:, sym_cols] + sym_sign * y[partner][:, sym_cols])
                    row_of[idx] = -1
                # every block type's entries at once (sum_L C^L x_L as one product), scattered into
                # the blocks and, for non-symmetric types, transposed into the partner blocks (j, i, -T)
                X = y @ G
                data[_entries(pat, blk[idx], *fwd)] = X
                if back is not None:
                    data[_entries(pat, rblk[idx], *back[1:])] = X[:, back[0]]
        return data

    @staticmethod
    def _block_map(fam, bts, slots, so) -> tuple:
        """The family's irreducible parts ``y (n, n_y)`` to the entries of all its blocks.

        Returns
        -------
        G : ndarray, shape (n_y, E)
            ``X = y @ G``: entry ``e`` of the family's ``E`` block entries (``sum_L C^L x_L`` of each type).
        sym_cols : ndarray of int
            Columns of ``y`` of symmetrised block types; ``sym_sign`` their ``(-1)^L``.
        fwd : (rows (E,), cols (E,))
            Row and column of each entry inside its block ``(i, j, T)``.
        back : (entries, rows, cols) or None
            For the non-symmetric types: their entries and where each lands, transposed, in the
            partner block ``(j, i, -T)``.
        """
        from ...so3 import cg_real

        n_y = max((sl.stop for sl in slots.values()), default=0)
        blocks, rows, cols, brows, bcols, bwhich, sym_cols, sym_sign = [], [], [], [], [], [], [], []
        e = 0
        for bt in bts:
            d1, d2 = 2 * bt.l1 + 1, 2 * bt.l2 + 1
            g = np.zeros((n_y, d1 * d2))
            for L in bt.L_values():
                sl = slots[bt.key, L]
                g[sl] = cg_real(bt.l1, bt.l2, L).reshape(d1 * d2, 2 * L + 1).T
                if fam.symmetrised(bt):
                    sym_cols.append(np.arange(sl.start, sl.stop))
                    sym_sign.append(np.full(sl.stop - sl.start, transpose_sign(L), dtype=float))
            blocks.append(g)
            ra, cb = so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b]
            a, c = np.divmod(np.arange(d1 * d2), d2)
            rows.append(ra + a)
            cols.append(cb + c)
            if not bt.symmetric:
                bwhich.append(e + np.arange(d1 * d2))
                brows.append(cb + c)
                bcols.append(ra + a)
            e += d1 * d2
        cat = (lambda xs, dt=np.int64: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
        G = np.concatenate(blocks, axis=1) if blocks else np.zeros((n_y, 0))
        back = (cat(bwhich), cat(brows), cat(bcols)) if bwhich else None
        return G, cat(sym_cols), cat(sym_sign, float), (cat(rows), cat(cols)), back

    def output_map(self, fam, bts) -> tuple:
        """The fitted coefficients of a family as one linear map on its flat features.

        Every block type ``bt`` and ``L`` of ``bts`` owns the columns ``slots[bt.key, L]`` (2L+1 of
        them) of ``y = flat(features) @ W + const``, which are its irreducible parts ``x_L`` (before
        :func:`~acehamil.models.hamiltonian.family.symmetrise`).

        Returns
        -------
        W : ndarray, shape (n_out, n_y)
            ``n_out`` flat features of ``fam.basis`` (0 without a basis).
        const : ndarray, shape (n_y,)
        slots : dict {(bt.key, L): slice}
        """
        n_out = fam.basis.tables.n_out if fam.basis is not None else 0
        slots, y = {}, 0
        for bt in bts:
            for L in bt.L_values():
                slots[bt.key, L] = slice(y, y + 2 * L + 1)
                y += 2 * L + 1
        W, const = np.zeros((n_out, y)), np.zeros(y)
        for bt in bts:
            ncoef = fam.n_coefficients(bt)
            for L in bt.L_values():
                key, w, c0 = fam.linear_map(bt, L, self.coefficient(bt, L, ncoef[L]))
                cols = np.arange(slots[bt.key, L].start, slots[bt.key, L].stop)
                const[cols[0]] += c0
                if key is not None and len(w):
                    m = len(cols)
                    rows = fam.basis.tables.out_slices[key].start + np.arange(len(w))[:, None] * m + np.arange(m)
                    W[rows, cols[None, :]] = w[:, None]
        return W, const, slots


def _entries(pat: Pattern, b: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Flat data positions ``(n, E)`` of entries ``(rows, cols)`` of blocks ``b`` of ``pat`` (row-major blocks)."""
    nc = pat.norb[pat.j[b]]
    if len(nc) and np.all(nc == nc[0]):  # one column count (a family's blocks): one offset per entry
        return pat.offsets[b][:, None] + (rows * int(nc[0]) + cols)
    return pat.offsets[b][:, None] + rows * nc[:, None] + cols


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
    # a new data array on H's (read-only, shared) index arrays: one matrix-sized temporary, not three
    if H.same_pattern(S):
        data = V * S.data
    else:
        data = V * S.on_pattern(H)[0]
    data += H.data
    return RealSpaceMatrix.adopt(H.norb_per_atom, H.i, H.j, H.shift, data)


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
        if not np.isfinite(float(charge)):
            raise ValueError(f"charge must be a finite number of electrons, got {charge}")
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

    def energy_zero_of(self, atoms) -> float:
        """The cell's energy zero ``V`` in eV (0 without an :class:`EnergyZero`)."""
        return 0.0 if self.energy_zero is None else self.energy_zero.value(atoms)

    def with_energy_zero(self, H_local, S: RealSpaceMatrix, atoms) -> RealSpaceMatrix:
        """Model H of ``atoms`` from the local part ``H_local`` (``self.H``'s blocks): ``H_local + V S``.

        The one place where the cell's energy zero (:class:`EnergyZero`) enters a predicted H.
        Every path that assembles H from ``self.H`` itself (row chunks on workers, posterior
        draws) goes through here or through :meth:`matrices`; draws are differences from the
        prediction, so the rigid ``V S`` cancels in them.

        ``H_local`` is a :class:`RealSpaceMatrix`, or the flat data of one on ``S``'s pattern handed
        over by the caller (a fresh writable array, :meth:`MatrixModel.predict_data`): then ``V S`` is
        added in place, in slices, and no matrix-sized temporary is made.
        """
        V = self.energy_zero_of(atoms)
        if isinstance(H_local, RealSpaceMatrix):
            return add_overlap(H_local, S, V)
        h = np.asarray(H_local)
        if h.shape != S.data.shape or h.dtype != np.float64 or not h.flags.writeable:
            raise ValueError("H_local data must be a writable float64 array on the pattern of S")
        if V != 0.0:
            for a in range(0, len(h), 1 << 20):
                h[a:a + (1 << 20)] += V * S.data[a:a + (1 << 20)]
        return RealSpaceMatrix.adopt(S.norb_per_atom, S.i, S.j, S.shift, h)

    @with_inner_threads
    def matrices(self, atoms, pairs=None, n_samples: int = 0, rng=None, split: bool = False,
                 scales=None) -> "ModelMatrices":
        """Predicted H (with the energy zero), S and, when ``n_samples > 0``, posterior draws of H.

        The entry point of every prediction (:meth:`predict`, :meth:`predict_structure`,
        evaluation, calibration, selection): features are evaluated once per structure for
        the prediction and its draws together.

        Parameters
        ----------
        atoms : ase.Atoms
        pairs : NeighbourPairs, optional
            Neighbour list with cutoff ``>= self.reach`` (built when omitted).
        n_samples : int
            Posterior draws ``K`` of H (0: none; needs posteriors).
        rng : numpy.random.Generator, optional
            Of the draws (default ``default_rng(0)``).
        split : bool
            Draws of the epistemic, noise and shared-noise parts separately, unscaled (what
            the calibration needs); else one calibrated set ``a epi + b noise + c shared``.
        scales : (float, float, float), optional
            ``(a, b, c)``; default the model's calibration (:func:`.calibrate.scales_of`).

        Returns
        -------
        ModelMatrices
        """
        _check_atoms_arg(atoms)
        nl = pairs if pairs is not None else neighbour_pairs(atoms, self.reach)
        species = sorted(set(np.asarray(atoms.numbers).tolist()))
        # one block pattern (and one set of index arrays) for H and S when their bond cutoffs agree
        pat = self.S.pattern(atoms, nl) if self.H.same_pattern_as(self.S, species) else None
        S = self.S.predict(atoms, pairs=nl, pattern=pat)
        draws, score, sx = (), None, 0.0
        if n_samples:
            from .calibrate import scales_of
            from .uncertainty import sample_matrix

            rng = rng if rng is not None else np.random.default_rng(0)
            ab = scales_of(self) if scales is None else scales
            H_local, *draws = sample_matrix(self.H, atoms, int(n_samples), rng, pairs=nl, scales=ab, split=split)
            if not split:
                score, sx = self.extrapolation(atoms, nl)
        else:
            # on the shared pattern, H's fresh data is handed to with_energy_zero (V S added in place)
            H_local = self.H.predict_data(atoms, pat) if pat is not None else self.H.predict(atoms, pairs=nl)
        return ModelMatrices(self.with_energy_zero(H_local, S, atoms), S, tuple(draws), self.energy_zero_of(atoms), nl,
                             sx, score)

    def extrapolation(self, atoms, pairs=None) -> tuple:
        """``(score, sigma)``: per-atom extrapolation score (natoms,) and the extrapolation part of
        the eigenvalue spread (eV, :func:`.calibrate.extrapolation_sigma`; 0 when uncalibrated)."""
        from .calibrate import extrapolation_sigma
        from .uncertainty import extrapolation_score

        score = extrapolation_score(self, atoms, pairs=pairs)
        return score, extrapolation_sigma(self, score)

    def predict(self, atoms, check_overlap: bool = True) -> tuple:
        """``(H, S)`` real-space matrices of ``atoms`` (eV, dimensionless).

        H includes the cell's energy zero ``V S`` when the model has one (:class:`EnergyZero`).
        With ``check_overlap`` (as :meth:`predict_structure`) a predicted S(k) that is not
        positive definite emits an :class:`OverlapWarning` (:func:`acehamil.tb.overlap.overlap_check`).
        """
        m = self.matrices(atoms)
        if check_overlap:
            warn_if_not_positive_definite(overlap_check(m.S, atoms), "the structure")
        return m.H, m.S

    def predict_structure(self, atoms, check_overlap: bool = True, info=None, charge: float = 0.0, n_samples: int = 0,
                          rng=None) -> StructureData:
        """Predicted :class:`StructureData` (dataset-ready; no reference data).

        With ``n_samples > 0`` (a model with posteriors) the result carries ``H_draws``
        (calibrated posterior draws minus the prediction, :mod:`.uncertainty`) and
        ``info["uncertainty"]`` = ``{"n_samples", "scale_epistemic", "scale_noise", "scale_shared",
        "sigma_extrapolation_eV", "extrapolation_max", "extrapolation_per_atom"}`` (see
        :func:`~acehamil.models.hamiltonian.uncertainty.extrapolation_score`).

        When ``check_overlap``, the smallest eigenvalue of ``S(k)`` over the k-points of
        :func:`acehamil.tb.overlap.overlap_check_kpts` (Gamma and a grid for periodic cells) is stored in
        ``info["overlap_min_eigenvalue"]``, with ``info["overlap_kpoints_checked"]`` (their
        number), ``info["overlap_min_kpoint"]`` (fractional) and
        ``info["overlap_positive_definite"]``.  A non-positive-definite S raises no error
        here (the eigen-solvers refuse it) but emits an :class:`OverlapWarning`.

        ``n_electrons`` is set from :attr:`valence_electrons` minus ``charge`` (None when the model
        stores no counts; then ``charge`` must be 0).
        """
        _check_atoms_arg(atoms)
        n_el = self.n_electrons(atoms, charge)
        if n_el is None and charge:
            raise ValueError("the model stores no electron counts per species (fitted before they were recorded, "
                             "or training data without n_electrons): a charge cannot be applied")
        meta = {"source": "acehamil prediction", **dict(info or {})}
        draws = None
        if n_samples:
            from .calibrate import scales_of

            a, b, c = scales_of(self)
            m = self.matrices(atoms, n_samples=int(n_samples), rng=rng, scales=(a, b, c))
            draws = m.draws[0]
            score = m.extrapolation_score
            meta["uncertainty"] = {"n_samples": int(n_samples), "scale_epistemic": a, "scale_noise": b, "scale_shared": c,
                                   "sigma_extrapolation_eV": float(m.sigma_extrapolation),
                                   "extrapolation_max": float(np.nanmax(score)) if np.any(np.isfinite(score)) else None,
                                   "extrapolation_per_atom": [None if not np.isfinite(x) else float(x) for x in score]}
        else:
            m = self.matrices(atoms)
        H, S = m.H, m.S
        if check_overlap:
            smin, kmin, nk = overlap_check(S, atoms)
            meta.update(overlap_min_eigenvalue=smin, overlap_min_kpoint=kmin, overlap_kpoints_checked=nk,
                        overlap_positive_definite=bool(smin > 0))
            warn_if_not_positive_definite((smin, kmin, nk), meta.get("name", "the structure"))
        if charge:
            meta["charge"] = float(charge)
        return StructureData(atoms=atoms.copy(), basis=self.orbital_basis, H=(H,), S=S, n_electrons=n_el, info=meta,
                             H_draws=draws)


def _check_atoms_arg(atoms) -> None:
    """TypeError unless ``atoms`` is an ase.Atoms-like object; ValueError when it has no atoms."""
    if not hasattr(atoms, "numbers") or not hasattr(atoms, "positions"):
        raise TypeError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms: nothing to predict")


class OverlapWarning(UserWarning):
    """A predicted overlap matrix S(k) is not positive definite."""


def warn_if_not_positive_definite(check: tuple, name: str) -> None:
    """Emit an :class:`OverlapWarning` unless the smallest eigenvalue of ``check`` (the result of
    :func:`acehamil.tb.overlap.overlap_check`) is > 0."""
    smin, kmin, nk = check
    if not smin > 0:
        import warnings

        warnings.warn(f"predicted S of {name} is not positive definite: smallest eigenvalue of S(k) {smin:.4g} at "
                      f"k = {kmin} (over {nk} k-points checked); atoms too close or outside the training data? "
                      f"bands/DOS will refuse it", OverlapWarning, stacklevel=3)


@dataclass(frozen=True, eq=False)
class ModelMatrices:
    """What :meth:`HamiltonianModel.matrices` predicts for one structure.

    Attributes
    ----------
    H : RealSpaceMatrix
        eV, including the cell's energy zero ``V S``.
    S : RealSpaceMatrix
        Dimensionless.
    draws : tuple of ndarray
        Posterior draws of H minus ``H`` (layout of ``H.data``), each (K, H.data.size), eV:
        ``()`` without draws, ``(delta,)`` calibrated, ``(epistemic, noise, shared)`` with ``split``.
    energy_zero : float
        ``V`` (eV) included in H.
    pairs : NeighbourPairs
        The neighbour list used (reusable for more work on the same structure).
    sigma_extrapolation : float
        With calibrated draws: the extrapolation part of the spread of every eigenvalue (eV,
        :func:`.calibrate.extrapolation_sigma`), added in quadrature to the draws' spread.
    extrapolation_score : ndarray, shape (natoms,), optional
        With calibrated draws: the per-atom extrapolation score it came from.
    """

    H: RealSpaceMatrix
    S: RealSpaceMatrix
    draws: tuple = ()
    energy_zero: float = 0.0
    pairs: object = None
    sigma_extrapolation: float = 0.0
    extrapolation_score: object = None


def random_coefficients(mm: MatrixModel, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Random coefficients of the right shapes for every block type of ``mm`` (tests, benchmarks).

    Returns
    -------
    dict {bt.key: {L: ndarray (n_F,)}}
    """
    out = {}
    for fam, bt in mm.block_types():
        for L, n in fam.n_coefficients(bt).items():
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

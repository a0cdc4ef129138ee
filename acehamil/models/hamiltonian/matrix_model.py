"""Linear equivariant model of one block-sparse matrix (H or S), and its prediction.

A :class:`MatrixModel` is a set of block families (on-site per species,
off-site per species pair), each with one independent linear model per block
type (shell pair) and per coupled ``L``.

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

from ...structure import OrbitalBasis, RealSpaceMatrix
from ...structure.neighbours import neighbour_pairs
from ...structure.pair_index import KeyIndex
from .blocks import transpose_sign
from .config import FeatureConfig
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

    def coefficient(self, bt, L: int, n_features: int, coefficients=None) -> np.ndarray:
        """The coefficients of ``bt``, ``L`` (of ``coefficients``, default the model's; zeros when absent)."""
        c = (self.coefficients if coefficients is None else coefficients).get(bt.key, {}).get(L)
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

    def predict_many(self, atoms, pat: Pattern, coefficient_sets, bond_cut: float | None = None, out=None,
                     bond_chunk: int = 2048, compact: bool = False):
        """The flat block data of several coefficient sets at once, shape ``(len(coefficient_sets), nd)``.

        One mapped feature pass (as :meth:`predict_data`): every centre's products are formed once and
        each set adds its outputs to the map (e.g. posterior draws of the coefficients,
        :func:`acehamil.models.hamiltonian.uncertainty.sample_matrix`), instead of forming the features.

        Parameters
        ----------
        atoms : ase.Atoms
        pat : Pattern
        coefficient_sets : sequence of dict {bt.key: {L: ndarray}}
            Missing entries are zero (no constant either).
        bond_cut : float, optional, Å
            Only the on-site blocks and the bonds shorter than this (the others stay zero).
        out : ndarray, shape (len(coefficient_sets), nd), optional
            Filled (entries outside ``bond_cut`` are left as they are) and returned.
        compact : bool
            Return only the entries computed (inside ``bond_cut``), ``(positions (ne,), values (len(sets),
            ne))``, positions in the flat data, ascending and distinct, instead of the ``(len(sets), nd)``
            array whose other entries are zero (a large cell's bonds beyond the cut; ``out`` not allowed).
        """
        sets = list(coefficient_sets)
        nd = int(pat.offsets[-1])
        if compact and out is not None:
            raise ValueError("compact output and out are exclusive")
        parts = [] if compact else None
        if not compact and out is None:
            out = np.zeros((len(sets), nd))
        elif not compact and out.shape != (len(sets), nd):
            raise ValueError(f"out must have shape ({len(sets)}, {nd}), got {out.shape}")
        if not sets:
            return (np.zeros(0, np.int64), np.zeros((0, 0))) if compact else out
        so = shell_offsets(self.orbital_basis)
        pos, cell = np.asarray(atoms.get_positions(), dtype=float), np.asarray(atoms.cell.array, dtype=float)
        for fam in self.families:
            sel = fam.select(atoms, pat.pairs)
            if len(sel) == 0:
                continue
            ci, cj, cs = fam.centre_blocks(atoms, pat.pairs, sel)
            if bond_cut is not None:  # closed under reversal: a bond and its reverse have one length
                inside = np.linalg.norm(pos[cj] - pos[ci] + np.asarray(cs, dtype=float) @ cell, axis=1) < bond_cut
                sel, ci, cj, cs = sel[inside], ci[inside], cj[inside], cs[inside]
                if len(sel) == 0:
                    continue
            blk, rblk = pat.find(ci, cj, cs), pat.find(cj, ci, -cs)
            if np.any(blk < 0) or np.any(rblk < 0):
                raise RuntimeError(f"{fam.name}: block pattern is not closed under reversal")  # pragma: no cover
            at = np.full(len(pat.i), -1, dtype=np.int64)
            at[blk] = np.arange(len(blk))
            rev = at[rblk]
            bts = fam.block_types(self.orbital_basis)
            sym = any(fam.symmetrised(bt) for bt in bts)
            if sym and np.any(rev < 0):
                raise ValueError(f"{fam.name}: symmetrised blocks need every reversed centre")
            W, const, slots = self._output_map_many(fam, bts, sets, sparse=True)
            S = len(sets)
            n_y = W.shape[1] // S
            mapping = fam.mapping(W, [(L, q * n_y + sl.start) for q in range(S) for (_, L), sl in slots.items()],
                                  sparse=True, sets=S)
            G, sym_cols, sym_sign, fwd, back = self._block_map(fam, bts, slots, so)
            row_of = np.full(len(sel), -1, dtype=np.int64) if sym else None
            for idx, y in fam.mapped_chunks(atoms, pat.pairs, sel, mapping, prepared=fam.prepare(atoms, pat.pairs),
                                            chunk=bond_chunk, rev=rev):
                y = (y + const).reshape(len(idx), S, n_y)
                if sym:  # family.symmetrise within the chunk, per set
                    row_of[idx] = np.arange(len(idx))
                    partner = row_of[rev[idx]]
                    if np.any(partner < 0):  # pragma: no cover
                        raise RuntimeError(f"{fam.name}: a chunk without the partners of its centres")
                    y[:, :, sym_cols] = 0.5 * (y[:, :, sym_cols] + sym_sign * y[partner][:, :, sym_cols])
                    row_of[idx] = -1
                X = y @ G  # (m, S, E)
                if compact:
                    parts.append((_entries(pat, blk[idx], *fwd).reshape(-1), X.reshape(len(idx), S, -1)))
                    if back is not None:
                        parts.append((_entries(pat, rblk[idx], *back[1:]).reshape(-1), X[:, :, back[0]]))
                    continue
                out[:, _entries(pat, blk[idx], *fwd)] = X.transpose(1, 0, 2)
                if back is not None:
                    out[:, _entries(pat, rblk[idx], *back[1:])] = X[:, :, back[0]].transpose(1, 0, 2)
        if compact:  # as the dense writes: the last value written to a position is kept
            if not parts:
                return np.zeros(0, np.int64), np.zeros((len(sets), 0))
            pos = np.concatenate([e for e, _ in parts])
            val = np.concatenate([x.transpose(1, 0, 2).reshape(len(sets), -1) for _, x in parts], axis=1)
            last = len(pos) - 1 - np.unique(pos[::-1], return_index=True)[1]
            return pos[last], val[:, last]
        return out

    def _output_map_many(self, fam, bts, sets, sparse: bool = False) -> tuple:
        """:meth:`output_map` of several coefficient sets side by side: ``W (n_out, S n_y)``, ``const (S n_y,)``
        (set ``q`` owns columns ``q n_y + slots[bt.key, L]``), ``slots`` of one set; ``sparse``: ``W`` as a
        scipy CSR matrix (each feature row feeds one column per set and block type: mostly zeros)."""
        from scipy.sparse import csr_matrix

        n_out = fam.basis.tables.n_out if fam.basis is not None else 0
        slots, y = {}, 0
        for bt in bts:
            for L in bt.L_values():
                slots[bt.key, L] = slice(y, y + 2 * L + 1)
                y += 2 * L + 1
        S = len(sets)
        const = np.zeros(S * y)
        R, Cc, V = [], [], []
        for bt in bts:
            ncoef = fam.n_coefficients(bt)
            for L in bt.L_values():
                maps = [fam.linear_map(bt, L, self.coefficient(bt, L, ncoef[L], c)) for c in sets]
                m, c0 = 2 * L + 1, slots[bt.key, L].start
                const[np.arange(S) * y + c0] += [x[2] for x in maps]
                key = maps[0][0]
                if key is not None and len(maps[0][1]):
                    w = np.stack([x[1] for x in maps], axis=1)  # (n_F, S)
                    rows = fam.basis.tables.out_slices[key].start + np.arange(w.shape[0])[:, None] * m + np.arange(m)
                    cols = np.arange(S)[None, :] * y + (c0 + np.arange(m))[:, None]  # (m, S)
                    R.append(np.broadcast_to(rows[:, :, None], (w.shape[0], m, S)).reshape(-1))
                    Cc.append(np.broadcast_to(cols[None], (w.shape[0], m, S)).reshape(-1))
                    V.append(np.broadcast_to(w[:, None, :], (w.shape[0], m, S)).reshape(-1))
        if R:
            R, Cc, V = np.concatenate(R), np.concatenate(Cc), np.concatenate(V)
        else:
            R, Cc, V = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        if sparse:  # every (row, column) once: one (block type, L) slot per column
            W = csr_matrix((V, (R, Cc)), shape=(n_out, S * y))
        else:
            W = np.zeros((n_out, S * y))
            W[R, Cc] = V
        return W, const, slots

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
        return self._output_map_many(fam, bts, [None])  # one set: the model's own coefficients


def _entries(pat: Pattern, b: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Flat data positions ``(n, E)`` of entries ``(rows, cols)`` of blocks ``b`` of ``pat`` (row-major blocks)."""
    nc = pat.norb[pat.j[b]]
    if len(nc) and np.all(nc == nc[0]):  # one column count (a family's blocks): one offset per entry
        return pat.offsets[b][:, None] + (rows * int(nc[0]) + cols)
    return pat.offsets[b][:, None] + rows * nc[:, None] + cols


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


"""Partial normal equations of the H/S fit: one structure's contribution, and how they add.

The fit is a sum over structures.  :func:`structure_sums` maps one training
structure to a :class:`FitSums` (its normal equations per ``(block type, L)``,
its block counts and, for the energy-zero fit, its overlap terms); ``+`` adds
two of them (a monoid with :meth:`FitSums.empty` as zero), so the sums of any
partition of the training set, added in any grouping, give the same problem
(up to rounding).  This is the map-reduce seam: a parallel engine maps
:func:`structure_sums` over structures (or batches) and reduces with ``+``;
:func:`acehamil.models.hamiltonian.fit.fit` is the serial loop.

Sampling plans (which centres each structure contributes, seeded per structure) are in
:mod:`acehamil.models.hamiltonian.sampling`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...fitting import NormalEquations
from ...structure.blocks import gather_blocks
from ...structure.neighbours import neighbour_pairs
from ...structure.pair_index import reverse_index
from .blocks import project
from .family import sampling_leaders, symmetrise
from .matrix_model import shell_offsets
from .sampling import SHORT, Rates, Sampling, keep_within_of  # noqa: F401  (Rates, Sampling re-exported)


@dataclass(frozen=True, eq=False)
class FitSums:
    """Sums over some training structures (never modified after construction).

    Attributes
    ----------
    normal : dict {(bt.key, L): NormalEquations}
        Weighted normal equations of the irreducible parts ``x_L``.
    counts : dict {bt.key: int}
        Blocks (centres) used per block type.
    gauge : dict {(bt.key, L): {structure: (ndarray (n_F,), float, float)}}
        Per training structure ``s``: ``A_s^T W s_s``, ``y_s^T W s_s``, ``s_s^T W s_s`` with
        ``s_s`` the overlap parts of the same blocks (energy-zero fit only; else empty).
    """

    normal: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    gauge: dict = field(default_factory=dict)

    @classmethod
    def empty(cls) -> "FitSums":
        """The zero: ``FitSums.empty() + s`` equals ``s``."""
        return cls()

    def __add__(self, other: "FitSums") -> "FitSums":
        if not isinstance(other, FitSums):
            return NotImplemented
        return FitSums.total([self, other])

    @staticmethod
    def total(parts) -> "FitSums":
        """Sum of ``parts`` in order, ``((p0 + p1) + p2) + ...``, without copying the total per part.

        Examples
        --------
        >>> a = FitSums({("k", 0): NormalEquations(1).add([[1.0]], [2.0])}, {"k": 1})
        >>> s = FitSums.total([a, a, FitSums.empty()])
        >>> s.normal[("k", 0)].AtA.tolist(), s.counts, a.normal[("k", 0)].AtA.tolist()
        ([[2.0]], {'k': 2}, [[1.0]])
        """
        total = FitSums()
        for p in parts:
            total._accumulate(p)
        return total

    def _accumulate(self, p: "FitSums") -> None:
        """Add ``p`` into this sum in place (a sum being built, not yet handed out: :meth:`total`,
        :class:`FoldSums`); the first normal equations of a key are copied."""
        normal, counts, gauge = self.normal, self.counts, self.gauge
        for key, ne in p.normal.items():
            mine = normal.get(key)
            if mine is None:
                normal[key] = ne.copy()
            else:
                if mine.n != ne.n:
                    raise ValueError(f"{key}: cannot add normal equations with {mine.n} and {ne.n} unknowns")
                mine.AtA += ne.AtA
                mine.Aty += ne.Aty
                mine.yty += ne.yty
                mine.count += ne.count
                mine.weight_sum += ne.weight_sum
        for key, n in p.counts.items():
            counts[key] = counts.get(key, 0) + n
        for key, g in p.gauge.items():
            dup = set(g) & set(gauge.get(key, {}))
            if dup:
                raise ValueError(f"{key}: structures {sorted(dup)} are in both sums")
            gauge.setdefault(key, {}).update(g)

    @staticmethod
    def subset(parts, keep) -> "FitSums":
        """Sum of ``parts[k]`` for ``k`` in ``keep``, energy-zero terms re-keyed ``0..len(keep)-1``.

        The sums of a fit without some structures (a cross-validation fold): no feature is
        evaluated again.  ``parts[k]`` must key its energy-zero terms by ``k`` (as
        :func:`structure_sums` with ``index=k``).

        Examples
        --------
        >>> p = [FitSums({("k", 0): NormalEquations(1).add([[float(v)]], [1.0])}, {"k": 1},
        ...              {("k", 0): {i: (np.ones(1), 0.0, 1.0)}}) for i, v in enumerate((1, 2, 3))]
        >>> s = FitSums.subset(p, [0, 2])
        >>> s.normal[("k", 0)].AtA.tolist(), sorted(s.gauge[("k", 0)])
        ([[10.0]], [0, 1])
        """
        keep = [int(k) for k in keep]
        if len(set(keep)) != len(keep) or any(not 0 <= k < len(parts) for k in keep):
            raise ValueError(f"keep must be distinct indices into {len(parts)} parts, got {keep}")
        return FitSums.total(parts[k].rekeyed(k, p) for p, k in enumerate(keep))

    def rekeyed(self, k: int, index: int) -> "FitSums":
        """Structure ``k``'s sums with its energy-zero terms keyed ``index`` (its place in a subset); the
        normal equations are shared, not copied."""
        gauge = {}
        for key, g in self.gauge.items():
            if set(g) - {k}:
                raise ValueError(f"part {k} holds energy-zero terms of structures {sorted(set(g) - {k})}")
            gauge[key] = {index: v for v in g.values()}
        return FitSums(self.normal, self.counts, gauge)


def centre_counts(model, atoms, pairs=None, keep_within: float = 0.0) -> dict:
    """Centres of each family of ``model`` (a MatrixModel) in one structure, ``{family.name: int}``; with
    ``keep_within`` > 0 (Å) also ``{family.name + SHORT: int}``, the bonds of each off-site family shorter
    than it."""
    nl = pairs if pairs is not None else neighbour_pairs(atoms, model.reach)
    out = {fam.name: len(fam.select(atoms, nl)) for fam in model.families}
    if keep_within > 0:
        out.update({fam.name + SHORT: int(np.count_nonzero(nl.dist[fam.select(atoms, nl)] < keep_within))
                    for fam in model.offsite})
    return out


def counts_and_pairs(models, reach: float, atoms, keep_within: float = 0.0) -> tuple:
    """The fit's counting pass for one structure: its neighbour list, built once, and the centre
    counts of every model on it.

    Parameters
    ----------
    models : sequence of MatrixModel
        E.g. ``(H, S)`` of a HamiltonianModel.
    reach : float
        Cutoff of the list, Å, at least every model's ``reach`` (each family keeps its own bonds).
    atoms : ase.Atoms
    keep_within : float
        Å; > 0: the short-bond counts of the stratified sampling too (:func:`centre_counts`).

    Returns
    -------
    counts : list of dict {family.name: int}
        One per model (:func:`centre_counts`).
    pairs : NeighbourPairs
        Handed to the sums (:func:`batch_parts`) and, through :class:`StructureDesigns`, to the
        extrapolation reference and the calibration: one list per structure for the whole fit.
    """
    if any(mm.reach > reach for mm in models):
        raise ValueError(f"reach {reach} Å is shorter than a model's ({max(mm.reach for mm in models)} Å)")
    nl = neighbour_pairs(atoms, reach)
    return [centre_counts(mm, atoms, nl, keep_within) for mm in models], nl


def sampled_centres(fam, atoms, nl, rate: float, rng, keep_within: float = 0.0) -> tuple:
    """Positions of the sampled centres of one family in one structure, and their row factors.

    Each centre is kept with probability ``rate`` (one uniform draw per centre, in
    order, only when ``rate < 1``); a centre and its partner in the family are
    kept or dropped together (:func:`sampling_leaders`).  With ``keep_within`` > 0
    (Å; off-site families only) a bond shorter than it is kept with probability 1
    (the same draws) and its rows weigh ``rate``.

    Returns
    -------
    sel : ndarray of int, shape (n,)
        As ``fam.select``.
    factors : ndarray of float, shape (n,), or None
        Row weight factor of each kept centre; None = all 1.
    """
    sel = fam.select(atoms, nl)
    factors = None
    if rate < 1.0 and len(sel):
        u = rng.random(len(sel))
        lead = sampling_leaders(reverse_index(*fam.centre_blocks(atoms, nl, sel)))
        if keep_within > 0:
            short = nl.dist[sel] < keep_within
            kept = short[lead] | (u[lead] < rate)
            sel, short = sel[kept], short[kept]
            factors = np.where(short, rate, 1.0) if short.any() else None
        else:
            sel = sel[u[lead] < rate]
    return sel, factors


def family_centres(fam, atoms, nl, rate: float, rng, keep_within: float = 0.0) -> tuple:
    """Sampled centres of one family in one structure (:func:`sampled_centres`).

    Returns
    -------
    env : Environments or None
        None when no centre is left.
    rev : ndarray of int or None
        Position of each centre's partner among the kept centres, -1 where it is
        not a centre of this family (None when no centre is left).
    """
    sel, _ = sampled_centres(fam, atoms, nl, rate, rng, keep_within)
    if len(sel) == 0:
        return None, None
    return fam.environments(atoms, nl, sel), reverse_index(*fam.centre_blocks(atoms, nl, sel))


def targets(bt, env, matrix, so) -> np.ndarray:
    """The reference sub-blocks ``(n, 2l1+1, 2l2+1)`` of block type ``bt`` at the centres of ``env``."""
    q = matrix.lookup(env.i, env.j, env.shift)
    return gather_blocks(matrix, q, so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b], 2 * bt.l1 + 1, 2 * bt.l2 + 1)


def structure_sums(model, sd, matrix_of, rates: dict, weight: float, rng, index: int = 0, gauge: bool = False,
                   pairs=None, centre_weights=None) -> FitSums:
    """The normal-equation sums of one training structure (the map step of the fit).

    Parameters
    ----------
    model : MatrixModel
        Supplies the families and block types (its coefficients are not used).
    sd : StructureData
    matrix_of : callable StructureData -> RealSpaceMatrix
        Picks H (spin 0) or S.
    rates : dict {family.name: float}
        Sampling rates (:attr:`Sampling.rates`); missing = 1.  A :class:`Rates` with ``keep_within``
        > 0 keeps every off-site bond shorter than it, its rows weighted by the family's rate.
    weight : float
        Weight of every row of this structure.
    rng : numpy.random.Generator
        This structure's generator (:meth:`Sampling.rng`); drawn from only where a rate is < 1.
    index : int
        Position of the structure in the training set (keys :attr:`FitSums.gauge`).
    gauge : bool
        Also collect the energy-zero terms.
    pairs : NeighbourPairs, optional
        Neighbour list of ``sd.atoms`` with cutoff ``>= model.reach`` (built when omitted).
    centre_weights : callable, optional
        ``centre_weights(family, env) -> (n_centres,) float array``: an extra row weight per centre of each
        family's environments, multiplied into ``weight`` (e.g. a bond-length-dependent noise model);
        None = ``weight`` for every row.

    Returns
    -------
    FitSums
    """
    return structure_sums_and_designs(model, sd, matrix_of, rates, weight, rng, index, gauge, pairs,
                                      centre_weights)[0]


def structure_sums_and_designs(model, sd, matrix_of, rates: dict, weight: float, rng, index: int = 0,
                               gauge: bool = False, pairs=None, centre_weights=None) -> tuple:
    """:func:`structure_sums` and, from the same features, the structure's on-site design tensors.

    Returns
    -------
    sums : FitSums
    onsite : dict or None
        ``{(bt.key, L): (atom indices (n,), D (n, n_F, 2L+1))}``, the unsymmetrised on-site designs of
        every atom of each on-site family (the format of
        :func:`acehamil.models.hamiltonian.uncertainty.onsite_designs`, equal to it); None when an
        on-site family was sampled (rate < 1: not every atom has its rows).
    """
    so = shell_offsets(model.orbital_basis)
    matrix = matrix_of(sd)
    atoms = sd.atoms
    nl = pairs if pairs is not None else neighbour_pairs(atoms, model.reach)
    normal, counts, terms = {}, {}, {}
    onsite_families = {id(f) for f in model.onsite}
    onsite = {} if all(rates.get(f.name, 1.0) >= 1.0 for f in model.onsite) else None
    w = float(weight)
    offsite_families = {id(f) for f in model.offsite}
    keep_within = keep_within_of(rates)
    for fam in model.families:
        sel, factors = sampled_centres(fam, atoms, nl, rates.get(fam.name, 1.0), rng,
                                       keep_within if id(fam) in offsite_families else 0.0)
        if len(sel) == 0:
            continue
        env, rev = fam.environments(atoms, nl, sel), reverse_index(*fam.centre_blocks(atoms, nl, sel))
        n = env.n_centres
        wc = None if centre_weights is None else w * np.asarray(centre_weights(fam, env), dtype=float)
        if factors is not None:
            wc = (w if wc is None else wc) * factors
        groups = feature_groups(fam, env, rev)
        if len(groups) > 1 or groups[0][2] is not None:  # two-centre bonds: their few nonzero columns only
            _add_grouped(normal, counts, terms, fam, model.orbital_basis, groups, n, env, matrix, sd.S if gauge else None,
                         so, w, wc, rev, index)
            continue
        feats = groups[0][1]
        keep = onsite is not None and id(fam) in onsite_families
        for bt in fam.block_types(model.orbital_basis):
            raw = fam.design(feats, bt, n)
            if keep:
                centres = np.asarray(env.i)
                onsite.update({(bt.key, L): (centres, D) for L, D in raw.items()})
            design = symmetrise(fam, bt, raw, rev)
            target = targets(bt, env, matrix, so)
            overlap = targets(bt, env, sd.S, so) if gauge else None
            counts[bt.key] = counts.get(bt.key, 0) + n
            for L, D in design.items():
                if D.shape[1] == 0:
                    continue
                A = D.transpose(0, 2, 1).reshape(n * (2 * L + 1), D.shape[1])
                y = project(target, bt.l1, bt.l2, L).reshape(-1)
                rows = np.full(len(y), w) if wc is None else np.repeat(wc, 2 * L + 1)
                normal[(bt.key, L)] = NormalEquations(D.shape[1]).add(A, y, rows)
                if gauge:
                    s_L = project(overlap, bt.l1, bt.l2, L).reshape(-1)
                    sv = rows * s_L
                    terms[(bt.key, L)] = {index: (A.T @ sv, float(y @ sv), float(sv @ s_L))}
    return FitSums(normal, counts, terms), onsite


def feature_groups(fam, env, rev=None) -> list:
    """The features of the centres of ``env``: ``[(positions (m,), {key: (m, n_cols, 2L+1)}, columns)]``.

    One group with every feature column (``columns`` None) and, for a family whose
    ``feature_parts`` splits off centres with few nonzero columns (bonds beyond ``env_bond_cut``:
    their ``nu = 1`` features), a group of those with ``columns`` ``{key: column indices}`` (every
    other column is zero for them).  The values are those of ``fam.features(env)`` (same chunks).
    With ``rev`` (each centre's partner, :func:`~acehamil.structure.pair_index.reverse_index`), a
    centre whose partner falls in the other group puts both groups back together (every column).
    """
    if not hasattr(fam, "feature_parts"):
        return [(np.arange(env.n_centres), fam.features(env), None)]
    full, compact = [], []
    for s0, _, chunk in env.chunks():
        for idx, feats, cols in fam.feature_parts(chunk):
            (full if cols is None else compact).append((s0 + idx, feats, cols))
    groups = []
    for parts in (full, compact):
        if parts:
            feats = parts[0][1] if len(parts) == 1 else {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
            groups.append((np.concatenate([p[0] for p in parts]), feats, parts[0][2]))
    if len(groups) == 2 and rev is not None:
        rev = np.asarray(rev)
        side = np.zeros(env.n_centres, dtype=bool)
        side[groups[1][0]] = True
        has = rev >= 0
        if np.any(side[has] != side[rev[has]]):  # a bond and its reverse on different sides: one group
            return [(np.arange(env.n_centres), _merged(groups, env.n_centres), None)]
    if len(groups) == 1 and groups[0][2] is None:
        pos, feats, _ = groups[0]
        if not np.array_equal(pos, np.arange(env.n_centres)):
            return [(np.arange(env.n_centres), _merged(groups, env.n_centres), None)]
    return groups


def _merged(groups, n) -> dict:
    """Every column of every centre from :func:`feature_groups`' groups (zeros outside ``columns``)."""
    keys = next(g[1] for g in groups if g[2] is None).keys() if any(g[2] is None for g in groups) else None
    if keys is None:
        raise ValueError("no group holds every feature column")
    out = {}
    for key in keys:
        full = next(g[1][key] for g in groups if g[2] is None)
        x = np.zeros((n,) + full.shape[1:])
        for pos, feats, cols in groups:
            if cols is None:
                x[pos] = feats[key]
            elif key in cols:
                x[pos[:, None], cols[key][None, :]] = feats[key]
        out[key] = x
    return out


def _add_grouped(normal, counts, terms, fam, orbital_basis, groups, n, env, matrix, overlap_matrix, so, w, wc, rev,
                 index) -> None:
    """The normal equations (and energy-zero terms) of one family from :func:`feature_groups`' groups:
    the rows of each group with its columns only (:meth:`NormalEquations.add`, ``columns``); the same
    sums as the full design rows, added in another order (equal up to rounding)."""
    where = np.full(n, -1, dtype=np.int64)
    for pos, _, _ in groups:
        where[pos] = np.arange(len(pos))
    for bt in fam.block_types(orbital_basis):
        target = targets(bt, env, matrix, so)
        overlap = targets(bt, env, overlap_matrix, so) if overlap_matrix is not None else None
        counts[bt.key] = counts.get(bt.key, 0) + n
        parts = []
        for pos, feats, cols in groups:
            rg = None if rev is None else np.where(np.asarray(rev)[pos] >= 0, where[np.asarray(rev)[pos]], -1)
            parts.append((pos, symmetrise(fam, bt, fam.design(feats, bt, len(pos)), rg), cols))
        for L, n_f in fam.n_coefficients(bt).items():
            if n_f == 0:
                continue
            ne = NormalEquations(n_f)
            gA, gy, gs = (np.zeros(n_f), 0.0, 0.0) if overlap is not None else (None, 0.0, 0.0)
            for pos, design, cols in parts:
                D = design[L]
                c = None if cols is None else np.asarray(cols.get((L, bt.parity), np.zeros(0, np.int64)))
                m = len(pos)
                A = D.transpose(0, 2, 1).reshape(m * (2 * L + 1), D.shape[1])
                y = project(target[pos], bt.l1, bt.l2, L).reshape(-1)
                rows = np.full(len(y), w) if wc is None else np.repeat(wc[pos], 2 * L + 1)
                ne.add(A, y, rows, columns=c)
                if overlap is not None:
                    s_L = project(overlap[pos], bt.l1, bt.l2, L).reshape(-1)
                    sv = rows * s_L
                    if c is None:
                        gA += A.T @ sv
                    else:
                        gA[c] += A.T @ sv
                    gy += float(y @ sv)
                    gs += float(sv @ s_L)
            normal[(bt.key, L)] = ne
            if overlap is not None:
                terms[(bt.key, L)] = {index: (gA, gy, gs)}


@dataclass(frozen=True, eq=False)
class StructureDesigns:
    """What the fit computed for one training structure that the steps after the solve reuse
    (the extrapolation reference, the calibration), so that they evaluate no features and build
    no neighbour list again.

    Attributes
    ----------
    pairs : NeighbourPairs
        Neighbour list of the structure with cutoff ``HamiltonianModel.reach`` (H and S), Å.
    onsite : dict or None
        H on-site design tensors ``{(bt.key, L): (atom indices (n,), D (n, n_F, 2L+1))}`` of every
        atom (as :func:`acehamil.models.hamiltonian.uncertainty.onsite_designs`); None when the
        fit sampled on-site centres (then compute them with ``onsite_designs(mm, atoms, pairs)``).
    """

    pairs: object
    onsite: dict | None = None


def pick_h(sd):
    """``sd.H[0]``: the matrix the H fit targets (a named function, so tasks pickle)."""
    return sd.H[0]


def pick_s(sd):
    """``sd.S``: the matrix the S fit targets."""
    return sd.S


def batch_parts(model, matrix_of, rates: dict, gauge: bool, structures, weights, rngs, indices, pairs=None) -> tuple:
    """The sums of one batch of structures, added in order, and each structure's on-site designs
    (:func:`structure_sums_and_designs`): the task a worker runs.

    The fit adds the batch sums in batch order, and the batches are fixed by
    ``batch_structures`` (not by the engine), so a serial loop, any number of workers and
    any completion order give the same numbers bit for bit.

    Parameters
    ----------
    model, matrix_of, rates, gauge
        As :func:`structure_sums` (shared by every batch of a pass).
    structures : list of StructureData
    weights : list of float
    rngs : list of numpy.random.Generator
        Each structure's generator (:meth:`Sampling.rng`).
    indices : list of int
        Positions in the training set.
    pairs : list of NeighbourPairs, optional
        Each structure's neighbour list (cutoff ``>= model.reach``; built when omitted).

    Returns
    -------
    sums : FitSums
    onsite : list of (dict or None)
        One per structure of the batch.
    """
    if not len(structures) == len(weights) == len(rngs) == len(indices):
        raise ValueError("structures, weights, rngs and indices must have the same length")
    pairs = [None] * len(structures) if pairs is None else list(pairs)
    if len(pairs) != len(structures):
        raise ValueError(f"need one neighbour list per structure ({len(structures)}), got {len(pairs)}")
    done = [structure_sums_and_designs(model, sd, matrix_of, rates, w, g, index=k, gauge=gauge, pairs=nl)
            for sd, w, g, k, nl in zip(structures, weights, rngs, indices, pairs)]
    return FitSums.total(d[0] for d in done), [d[1] for d in done]


def serial_map(fn, common: tuple, tasks):
    """The default engine of the fit: ``fn(*common, *task)`` for each task, in order (lazily)."""
    for task in tasks:
        yield fn(*common, *task)

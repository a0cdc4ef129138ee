"""The calibration's folds: which training structures each fold holds out (:func:`fold_splits`), which
of them are predicted (:func:`held_out_subset`), and each fold's model refitted from the per-structure
normal-equation sums of the full fit (:func:`fold_model`: a subtraction and a solve, no features).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only (sums imports nothing from here, but keep the import graph one-way)
    from .sums import FitSums


def fold_splits(n: int, folds: int, fraction: float, seed: int) -> list:
    """Held-out index sets of the calibration: ``folds`` > 1 disjoint folds covering ``0..n-1``,
    or one split of ``round(fraction n)`` structures (seeded permutation)."""
    if n < 2:
        raise ValueError("calibration needs at least 2 training structures")
    order = np.random.default_rng(seed).permutation(n)
    if folds > 1:
        return [np.sort(order[f::folds]) for f in range(min(folds, n))]
    return [np.sort(order[:min(max(int(round(fraction * n)), 1), n - 1)])]


def calibration_folds(n: int, config) -> list:
    """The calibration's held-out index sets of ``n`` training structures under ``config`` (ModelConfig):
    :func:`fold_splits` with ``[uncertainty]``'s folds and fraction, seeded by ``[fit] seed``."""
    uc = config.uncertainty
    return fold_splits(n, uc.calibration_folds, uc.calibration_fraction, config.fit.seed + 7919)


def calibration_keeps(n: int, config) -> list:
    """The training structures of each calibration fold's model (:func:`calibration_folds`' complements, ascending)."""
    return [np.setdiff1d(np.arange(n), val) for val in calibration_folds(n, config)]


def held_out_subset(kinds, per_kind: int, seed: int) -> np.ndarray:
    """Weight of each training structure as a held-out structure of the calibration: 0 (not
    predicted) or ``n_kind / per_kind`` for the ``per_kind`` structures drawn at random (seeded)
    among the ``n_kind`` of their kind (``info["kind"]``; None is a kind), 1 for every structure of
    a kind with at most ``per_kind`` (``per_kind = 0``: all, weight 1).  The weighted likelihood of
    the chosen structures is an unbiased estimate of that of all of them.

    Examples
    --------
    >>> w = held_out_subset(["a", "a", "a", "a", None, "b"], 2, 0)
    >>> sorted(w.tolist()), float(w[:4].sum())
    ([0.0, 0.0, 1.0, 1.0, 2.0, 2.0], 4.0)
    """
    kinds = ["\0none" if k is None else str(k) for k in kinds]
    w = np.ones(len(kinds))
    if int(per_kind) <= 0:
        return w
    rng = np.random.default_rng([int(seed), 104729])
    for kind in sorted(set(kinds)):
        members = np.array([i for i, k in enumerate(kinds) if k == kind])
        if len(members) > per_kind:
            w[members] = 0.0
            w[rng.choice(members, int(per_kind), replace=False)] = len(members) / per_kind
    return w


class FoldSums:
    """The sums :meth:`FitSums.subset` gives for some fixed subsets (e.g. the calibration folds' training
    structures), built as the per-structure sums arrive instead of keeping every one of them.

    Each subset's sum is accumulated in index order as :meth:`FitSums.subset` sums it (the same
    additions, so the same numbers), while only one sum per subset is held: for the README job's
    ``nu = 3`` off-site model the per-structure sums were 11.4 MB each, 93 structures.

    Parameters
    ----------
    n : int
        Number of structures (parts), added in order ``0..n-1`` by :meth:`add`.
    keeps : sequence of sequences of int
        The subsets (distinct ascending indices each) whose sums are wanted.

    Examples
    --------
    >>> from acehamil.fitting import NormalEquations
    >>> from acehamil.models.hamiltonian.sums import FitSums
    >>> p = [FitSums({("k", 0): NormalEquations(1).add([[float(v)]], [1.0])}, {"k": 1},
    ...              {("k", 0): {i: (np.ones(1), 0.0, 1.0)}}) for i, v in enumerate((1, 2, 3))]
    >>> f = FoldSums(3, [[0, 2], [1]])
    >>> for k, part in enumerate(p):
    ...     f.add(k, part)
    >>> s = f.subset([0, 2])
    >>> s.normal[("k", 0)].AtA.tolist(), sorted(s.gauge[("k", 0)]), len(f)
    ([[10.0]], [0, 1], 3)
    """

    def __init__(self, n: int, keeps):
        from .sums import FitSums

        self.n = int(n)
        self._keeps = {}
        for keep in keeps:
            keep = tuple(int(k) for k in keep)
            if list(keep) != sorted(set(keep)) or any(not 0 <= k < self.n for k in keep):
                raise ValueError(f"each subset must be distinct ascending indices into {self.n} parts, got {list(keep)}")
            self._keeps[keep] = ({k: p for p, k in enumerate(keep)}, FitSums())
        self._next = 0

    def __len__(self) -> int:
        return self.n

    def add(self, k: int, part: FitSums) -> None:
        """Add structure ``k``'s sums (``k`` must be the next index) to every subset holding it; ``part`` is
        not modified or kept."""
        if int(k) != self._next:
            raise ValueError(f"parts must be added in order: expected {self._next}, got {k}")
        self._next += 1
        for pos, acc in self._keeps.values():
            if k in pos:
                acc._accumulate(part.rekeyed(k, pos[k]))

    def subset(self, keep) -> FitSums:
        """The sum over ``keep`` (one of the subsets given), once every part was added."""
        keep = tuple(int(k) for k in keep)
        if keep not in self._keeps:
            raise ValueError(f"no sums kept for the subset {list(keep)} (kept: {len(self._keeps)} subsets)")
        if self._next != self.n:
            raise ValueError(f"{self._next} of {self.n} parts added")
        return self._keeps[keep][1]


def fold_model(model, parts, keep, cells, ends=None):
    """``model`` with its H coefficients refitted without the structures not in ``keep``.

    Parameters
    ----------
    model : HamiltonianModel
        Fitted on all ``len(parts)`` structures.
    parts : sequence of FitSums, or FoldSums
        Per-structure H sums of that fit (:func:`acehamil.models.hamiltonian.sums.structure_sums`), or the
        fold sums built from them (:class:`FoldSums`, holding ``keep``).
    keep : sequence of int
        Structures of the fold's fit.
    cells : sequence of ase.Atoms
        All training structures (the density energy zero of the fold).
    ends : sequence of dict, optional
        Bond ends of every cell (:func:`fold_ends`; default: computed for the fold's cells when needed).

    Returns
    -------
    HamiltonianModel
        H refitted from the summed normal equations (a subtraction and a solve: no features
        are evaluated); S is the full model's (its errors, ~1e-6, do not matter here).
    """
    from .solve import solve_sums
    from .sums import FitSums

    keep = [int(k) for k in keep]
    sums = parts.subset(keep) if isinstance(parts, FoldSums) else FitSums.subset(parts, keep)
    # no condition numbers: the fold model reports none (an eigen-decomposition per problem saved)
    coefs, posts, _, _, ez, _ = solve_sums(model.H, sums, model.config, [cells[k] for k in keep],
                                           model.orbital_basis.species, condition=False,
                                           ends=None if ends is None else [ends[k] for k in keep])
    H = dataclasses.replace(model.H, coefficients=coefs, posteriors=posts)
    return dataclasses.replace(model, H=H, energy_zero=ez, report={})


def fold_ends(model, cells):
    """Bond ends of every cell (:func:`.energy_zero.bond_ends`) when the fold models' energy zero needs them
    (``fit.energy_zero_model = "bonds"``), else None: computed once for all folds (:func:`fold_model`)."""
    from .energy_zero import bond_ends

    if model.config.fit.energy_zero_model != "bonds":
        return None
    return [bond_ends(at, model.orbital_basis.species) for at in cells]

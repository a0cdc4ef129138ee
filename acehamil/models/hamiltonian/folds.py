"""The calibration's folds: which training structures each fold holds out (:func:`fold_splits`), which
of them are predicted (:func:`held_out_subset`), and each fold's model refitted from the per-structure
normal-equation sums of the full fit (:func:`fold_model`: a subtraction and a solve, no features).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def fold_splits(n: int, folds: int, fraction: float, seed: int) -> list:
    """Held-out index sets of the calibration: ``folds`` > 1 disjoint folds covering ``0..n-1``,
    or one split of ``round(fraction n)`` structures (seeded permutation)."""
    if n < 2:
        raise ValueError("calibration needs at least 2 training structures")
    order = np.random.default_rng(seed).permutation(n)
    if folds > 1:
        return [np.sort(order[f::folds]) for f in range(min(folds, n))]
    return [np.sort(order[:min(max(int(round(fraction * n)), 1), n - 1)])]


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


def fold_model(model, parts, keep, cells, ends=None):
    """``model`` with its H coefficients refitted without the structures not in ``keep``.

    Parameters
    ----------
    model : HamiltonianModel
        Fitted on all ``len(parts)`` structures.
    parts : sequence of FitSums
        Per-structure H sums of that fit (:func:`acehamil.models.hamiltonian.sums.structure_sums`).
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
    sums = FitSums.subset(parts, keep)
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

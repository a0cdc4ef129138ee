"""Fitting the multilayer ACE potential (:mod:`.multilayer`).

The model is linear in ``(E0, c, w)`` once the message normalisation is fixed, so it
is fitted exactly like the linear potential (:mod:`.fit`): the same rows, weights,
ridge prior on unit-RMS columns and k-fold training CV over ``lam``, the prior
exponent, energy factors and degree cut-backs, with the second layer's columns
appended to the linear layout (always kept; prior degree
:meth:`MessageLayer.feature_degrees`).  One feature pass over the training set
serves both models: the linear fit is the same design data restricted to its
columns (:func:`linear_from_accumulated`).

The message normalisation (``shift``, ``scale`` of each invariant channel) is the
mean and standard deviation over the training atoms, fixed before any fit.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ...fitting import NormalEquations
from ...structure.neighbours import neighbour_pairs
from .fit import Accumulated, FitResult, FitSettings, accumulate, select_and_solve
from .model import VOIGT, ACEPotential, DesignRows, cell_volume, design_rows, feature_degrees
from .multilayer import MessageLayer, MessageSpec, MultilayerACEPotential


def message_normalisation(spec: MessageSpec, species, configs) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each invariant message channel over the training atoms.

    Returns
    -------
    shift, scale : ndarray, shape (n_species * n_message,)
        Channels that never occur (or are constant) get scale 1.
    """
    if not configs:
        raise ValueError("no training configurations")
    layer = MessageLayer(spec, species)
    total = np.zeros(layer.n_channels)
    total2 = np.zeros(layer.n_channels)
    n = 0
    for c in configs:
        rho = layer.densities(c.atoms.numbers, neighbour_pairs(c.atoms, spec.r_message))
        total += rho.sum(axis=0)
        total2 += (rho**2).sum(axis=0)
        n += len(rho)
    mean = total / n
    var = np.maximum(total2 / n - mean**2, 0.0)
    std = np.sqrt(var)
    scale = np.where(std > 1e-8 * max(1.0, float(np.abs(mean).max())), std, 1.0)
    return mean, scale


def multilayer_rows(basis, species, layer: MessageLayer, atoms, gradients: bool = True) -> DesignRows:
    """Design rows ``[E0, c, w]`` of one structure (linear layout, then the second layer's columns)."""
    lin = design_rows(basis, species, atoms, gradients=gradients)
    e2, dEdr2, dEde2 = layer.design(atoms.numbers, neighbour_pairs(atoms, layer.cutoff), gradients=gradients)
    energy = np.concatenate([lin.energy, e2])
    if not gradients:
        return DesignRows(energy, None, None)
    return DesignRows(energy, np.concatenate([lin.forces, -dEdr2], axis=2), np.concatenate([lin.strain, dEde2], axis=2))


def multilayer_layer(spec: MessageSpec, species, configs) -> MessageLayer:
    """The second layer with its normalisation taken from the training ``configs``."""
    shift, scale = message_normalisation(spec, species, configs)
    return MessageLayer(spec, species, shift, scale)


def accumulate_multilayer(basis, species, configs, settings: FitSettings, layer: MessageLayer, repulsion=None,
                          progress: bool = False) -> Accumulated:
    """:func:`~.fit.accumulate` with the second layer's columns appended."""
    species = tuple(int(z) for z in species)
    return accumulate(basis, species, configs, settings, repulsion, progress,
                      rows_fn=lambda atoms, grad: multilayer_rows(basis, species, layer, atoms, grad),
                      n_extra=len(species) * layer.n_features)


def accumulate_multilayer_from_linear(data, configs, settings: FitSettings, layer: MessageLayer,
                                      progress: bool = False) -> Accumulated:
    """:func:`accumulate_multilayer` reusing the linear rows already evaluated for the embedded fit.

    The linear part of the design (the expensive full feature Jacobians) is taken from
    ``data`` (:class:`~.embedded_fit.EmbeddingData` of the same configurations, basis,
    weights, folds and repulsion); only the second layer's rows are computed here.

    Parameters
    ----------
    data : EmbeddingData
    configs : list of Config
        The configurations ``data`` was built from, in the same order.
    settings : FitSettings
        The force and stress sigmas ``data``'s rows are to be weighted with.
    layer : MessageLayer
    progress : bool
    """
    t0 = time.perf_counter()
    n = len(configs)
    if len(data.folds) != n or not np.array_equal(data.natoms, [c.natoms for c in configs]):
        raise ValueError("the linear design data were built for other configurations")
    folds = np.random.default_rng(settings.seed).permutation(n) % int(settings.n_folds)
    if not np.array_equal(folds, data.folds):
        raise ValueError("the linear design data use another fold assignment (n_folds / seed)")
    species = layer.species
    n_lin, n_extra = data.n_cols, len(species) * layer.n_features
    n_cols = n_lin + n_extra
    nf = int(settings.n_folds)
    E_rows = np.zeros((n, n_cols))
    E_rows[:, :n_lin] = data.energy_rows
    F = [NormalEquations(n_cols) for _ in range(nf)]
    S = [NormalEquations(n_cols) for _ in range(nf)]
    fcount, fwsum = np.zeros(nf), np.zeros(nf)
    starts = np.concatenate([[0], np.cumsum(data.natoms)])
    for k, c in enumerate(configs):
        f, w = data.folds[k], data.config_weights[k]
        e2, dEdr2, dEde2 = layer.design(c.atoms.numbers, neighbour_pairs(c.atoms, layer.cutoff),
                                        gradients=bool(data.has_forces[k] or data.has_stress[k]))
        E_rows[k, n_lin:] = e2 / c.natoms
        if data.has_forces[k]:
            sl = slice(3 * starts[k], 3 * starts[k + 1])
            A = np.hstack([data.force_rows[sl], -dEdr2.reshape(-1, n_extra)])
            wf = w / settings.force_sigma**2
            F[f].add(A, data.force_targets[sl], np.full(A.shape[0], wf))
            fcount[f] += A.shape[0]
            fwsum[f] += wf * A.shape[0]
        if data.has_stress[k]:
            vol = cell_volume(c.atoms)
            A = np.hstack([data.stress_rows[k], np.array([dEde2[a, b] for a, b in VOIGT]) / vol])
            S[f].add(A, data.stress_targets[k], np.full(6, w / settings.stress_sigma**2))
        if progress and (k + 1) % max(1, n // 10) == 0:
            print(f"  second-layer features: {k + 1}/{n} configs, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return Accumulated(E_rows, data.energy_targets, data.config_weights, data.folds, F, S, fcount, fwsum, n_cols,
                       data.seconds + time.perf_counter() - t0, int(data.natoms.sum()), int(fcount.sum()), list(data.config_types))


def _extra_degrees(layer: MessageLayer, n_species: int) -> np.ndarray:
    return np.tile(layer.feature_degrees(), n_species)


def linear_from_accumulated(acc: Accumulated, basis, species, settings: FitSettings, repulsion=None,
                            progress: bool = False) -> FitResult:
    """The linear potential fitted (with its own CV) from multilayer design data: its columns only."""
    species = tuple(int(z) for z in species)
    theta, cv, chosen, info, cv_by_type, (t1, t2, t3), cols = select_and_solve(acc, basis, species, settings, progress)
    n_lin = len(species) * (1 + len(feature_degrees(basis)))
    if np.any(theta[n_lin:] != 0):
        raise RuntimeError("the linear fit set second-layer coefficients")
    meta = {"settings": settings.to_dict(), "chosen": chosen, "n_configs": len(acc.folds), "n_atoms": acc.n_atoms,
            "n_active_columns": int(len(cols)),
            "solver_info": {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))}}
    pot = ACEPotential.from_parameter_vector(basis, species, theta[:n_lin], repulsion, meta)
    return FitResult(pot, cv, chosen, info, {"features": acc.seconds, "cv": t2 - t1, "solve": t3 - t2}, cv_by_type)


def fit_multilayer(configs, basis, species, settings: FitSettings | None = None, spec: MessageSpec | None = None,
                   repulsion=None, progress: bool = False, accumulated: Accumulated | None = None,
                   layer: MessageLayer | None = None) -> FitResult:
    """Fit E0, the linear coefficients and the second layer's weights; hyperparameters by k-fold training CV.

    Parameters
    ----------
    configs : list of Config
        Training data only (never the test set).
    basis : ACEBasis
        First-layer basis.
    species : sequence of int
    settings : FitSettings, optional
        As for the linear fit (the CV grids apply to the joint fit).
    spec : MessageSpec, optional
        Second-layer settings (default :class:`MessageSpec`).
    repulsion : RepulsionSpec, optional
    progress : bool
    accumulated, layer : optional
        Design data from :func:`accumulate_multilayer` and the layer it was built with
        (both or neither).

    Returns
    -------
    FitResult
        ``potential`` is a :class:`MultilayerACEPotential`.
    """
    settings = settings or FitSettings()
    species = tuple(int(z) for z in species)
    if (accumulated is None) != (layer is None):
        raise ValueError("pass accumulated together with the layer it was built with")
    if layer is None:
        layer = multilayer_layer(spec or MessageSpec(), species, configs)
        acc = accumulate_multilayer(basis, species, configs, settings, layer, repulsion, progress)
    else:
        acc = accumulated
        n_cols = len(species) * (1 + len(feature_degrees(basis)) + layer.n_features)
        if len(acc.folds) != len(configs) or acc.n_cols != n_cols:
            raise ValueError("accumulated design data do not match these configurations/basis/layer")
    extra = _extra_degrees(layer, len(species))
    theta, cv, chosen, info, cv_by_type, (t1, t2, t3), cols = select_and_solve(acc, basis, species, settings, progress, extra)
    ns, nB = len(species), len(feature_degrees(basis))
    n_lin = ns * (1 + nB)
    meta = {"settings": settings.to_dict(), "chosen": chosen, "n_configs": len(configs), "n_atoms": acc.n_atoms,
            "n_active_columns": int(len(cols)), "message_spec": layer.spec.to_dict(),
            "solver_info": {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))}}
    pot = MultilayerACEPotential(basis, species, theta[:ns], theta[ns:n_lin].reshape(ns, nB), layer,
                                 theta[n_lin:].reshape(ns, layer.n_features), repulsion, meta)
    return FitResult(pot, cv, chosen, info, {"features": acc.seconds, "cv": t2 - t1, "solve": t3 - t2}, cv_by_type)

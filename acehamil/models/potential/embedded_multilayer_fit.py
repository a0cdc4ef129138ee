"""Fitting the embedded multilayer model: a multilayer fit plus embedded densities in its first layer.

The site energy is the multilayer model's (:mod:`.multilayer`) with Finnis-Sinclair-like
densities added to the first layer (:mod:`.embedded`)::

    eps_i = E0 + c . B_i + sum_k F_k(d_k . B_i) + w . Phi_i

It is fitted as the embedded model is (:mod:`.embedded_fit`: variable projection, L-BFGS
over the density coefficients, ``lam_density`` by k-fold training CV if several are
given), with the second layer's columns appended to the linear design rows: for given
densities, ``(E0, c, w)`` are the ridge solution with the multilayer fit's own
hyperparameters (``power``, ``lam``, energy factor, second-layer prior factor, all
chosen by the multilayer fit's training CV).  With ``d = 0`` the model is that
multilayer fit.

Examples
--------
>>> from ase.build import bulk
>>> from acehamil.models.potential.config import make_basis
>>> from acehamil.models.potential.data import Config
>>> from acehamil.models.potential.fit import FitSettings
>>> from acehamil.models.potential.multilayer import MessageSpec
>>> rng = np.random.default_rng(0)
>>> configs = []
>>> for k in range(6):
...     at = bulk("Si", "diamond", a=5.43 + 0.03 * k, cubic=True)
...     at.positions += 0.05 * rng.normal(size=at.positions.shape)
...     configs.append(Config(at, -4.0 * len(at) + 0.1 * k, forces=0.1 * rng.normal(size=(len(at), 3))))
>>> basis = make_basis((14,), r_cut=3.5, n_max=3, max_nu=2, max_degree=(4, 4))
>>> settings = FitSettings(lam=(1e-6,), power=(0.0,), n_folds=1)
>>> spec = MessageSpec(n_message=2, r_message=3.5, n_pass=2, r_pass=3.5)
>>> res = fit_embedded_multilayer(configs, basis, (14,), settings, spec,
...                               EmbeddingSettings(lam=(1e-3,), maxiter=5, cv=False))
>>> res.potential.n_densities, res.potential.densities.shape[:2]
(2, (1, 2))
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np

from .embedded_data import EmbeddingData, density_columns, embedding_data
from .embedded_fit import EmbeddedFitResult, EmbeddingSettings, densities_from_theta, fit_densities, fit_record
from .fit import FitResult, FitSettings, _columns
from .model import VOIGT, cell_volume, feature_degrees
from .multilayer import MessageLayer, MessageSpec, MultilayerACEPotential
from ...structure.neighbours import neighbour_pairs


def with_layer_columns(data: EmbeddingData, configs, layer: MessageLayer, progress: bool = False) -> EmbeddingData:
    """``data`` with the second layer's energy, force and stress rows appended to its linear rows.

    Parameters
    ----------
    data : EmbeddingData
        Linear design data of ``configs`` (:func:`~.embedded_fit.embedding_data`).
    configs : list of Config
        The configurations ``data`` was built from, in the same order.
    layer : MessageLayer
        With its normalisation fixed (:func:`~.multilayer_fit.multilayer_layer`).
    progress : bool

    Returns
    -------
    EmbeddingData
        ``energy_rows`` (n_configs, n_lin + n_extra), ``force_rows`` (3 n_atoms, n_lin + n_extra),
        ``stress_rows`` (n_configs, 6, n_lin + n_extra) with ``n_extra = n_species * layer.n_features``
        (species-major, the layout of :meth:`MultilayerACEPotential.parameter_vector`); the rest shared.
    """
    t0 = time.perf_counter()
    n = len(configs)
    if len(data.folds) != n or not np.array_equal(data.natoms, [c.natoms for c in configs]):
        raise ValueError("the linear design data were built for other configurations")
    if len(layer.species) != data.n_species:
        raise ValueError(f"the layer has {len(layer.species)} species, the design data {data.n_species}")
    n_extra = len(layer.species) * layer.n_features
    E2 = np.zeros((n, n_extra))
    F2 = np.zeros((data.force_rows.shape[0], n_extra))
    S2 = np.zeros((n, 6, n_extra))
    starts = np.concatenate([[0], np.cumsum(data.natoms)])
    for k, c in enumerate(configs):
        grad = bool(data.has_forces[k] or data.has_stress[k])
        e2, dEdr2, dEde2 = layer.design(c.atoms.numbers, neighbour_pairs(c.atoms, layer.cutoff), gradients=grad)
        E2[k] = e2 / c.natoms
        if grad:
            F2[3 * starts[k]:3 * starts[k + 1]] = -dEdr2.reshape(-1, n_extra)
            vol = cell_volume(c.atoms)
            S2[k] = np.array([dEde2[a, b] for a, b in VOIGT]) / (vol if vol else 1.0)
        if progress and (k + 1) % max(1, n // 10) == 0:
            print(f"  second-layer rows: {k + 1}/{n} configs, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return replace(data, energy_rows=np.hstack([data.energy_rows, E2]), force_rows=np.hstack([data.force_rows, F2]),
                   stress_rows=np.concatenate([data.stress_rows, S2], axis=2), seconds=data.seconds + time.perf_counter() - t0)


def fit_embedded_multilayer(configs, basis, species, settings: FitSettings | None = None, spec: MessageSpec | None = None,
                            emb: EmbeddingSettings | None = None, repulsion=None, progress: bool = False,
                            data: EmbeddingData | None = None, multilayer: FitResult | None = None,
                            layer_data: EmbeddingData | None = None) -> EmbeddedFitResult:
    """Fit the multilayer model (its CV chooses the linear hyperparameters), then densities in its first layer.

    Parameters
    ----------
    configs : list of Config
        Training data only (never the test set).
    basis : ACEBasis
    species : sequence of int
    settings : FitSettings, optional
        Weights, folds and the multilayer fit's CV grids.
    spec : MessageSpec, optional
        Second layer (ignored when ``multilayer`` is given: its layer is used).
    emb : EmbeddingSettings, optional
        Densities (``lam`` by CV when ``emb.cv`` and several folds; with ``emb.keep_base`` the CV may
        also choose no densities, i.e. the multilayer fit itself, ``chosen["lam_density"] = None``).
    repulsion : RepulsionSpec, optional
    progress : bool
    data : EmbeddingData, optional
        Linear design data of ``configs`` (:func:`~.embedded_fit.embedding_data`, same basis,
        settings and repulsion); the second layer's rows are appended here.
    multilayer : FitResult, optional
        The multilayer fit of the same data (:func:`~.multilayer_fit.fit_multilayer`); fitted here if absent.
    layer_data : EmbeddingData, optional
        ``with_layer_columns(data, configs, multilayer.potential.layer)`` when already formed (several
        density settings on one multilayer fit); formed here if absent.

    Returns
    -------
    EmbeddedFitResult
        ``potential`` is a :class:`MultilayerACEPotential` with densities; ``linear`` the
        multilayer fit it started from.
    """
    from .multilayer_fit import accumulate_multilayer_from_linear, fit_multilayer, multilayer_layer

    settings = settings or FitSettings()
    emb = emb or EmbeddingSettings()
    species = tuple(int(z) for z in species)
    nB = len(feature_degrees(basis))
    if data is None:
        data = embedding_data(basis, species, configs, settings, density_columns(basis, emb.density_max_degree), repulsion, progress)
    if len(data.folds) != len(configs) or data.n_cols != len(species) * (1 + nB):
        raise ValueError("embedding design data do not match these configurations/basis")
    t0 = time.perf_counter()
    if multilayer is None:
        layer = multilayer_layer(spec or MessageSpec(), species, configs)
        acc = accumulate_multilayer_from_linear(data, configs, settings, layer, progress)
        multilayer = fit_multilayer(configs, basis, species, settings, repulsion=repulsion, progress=progress, accumulated=acc,
                                    layer=layer)
    pot0 = multilayer.potential
    if not isinstance(pot0, MultilayerACEPotential) or pot0.n_densities or pot0.species != species:
        raise TypeError("multilayer must be the FitResult of fit_multilayer for these species")
    layer = pot0.layer
    full_data = layer_data if layer_data is not None else with_layer_columns(data, configs, layer, progress)
    if full_data.n_cols != data.n_cols + len(species) * layer.n_features or len(full_data.folds) != len(configs):
        raise ValueError("layer_data do not match these design data and the multilayer fit's layer")
    ch = multilayer.chosen
    extra = np.tile(layer.feature_degrees(), len(species))
    cols, degs = _columns(basis, species, int(ch["shift"]), extra)
    t1 = time.perf_counter()
    theta, a, loss, res, cv, lam_d, cv_by_type, (t2, t3) = fit_densities(full_data, settings, emb, cols, degs, ch, multilayer.cv,
                                                                          progress, n_extra=len(extra), keep_base=emb.keep_base)
    seconds = {"features": full_data.seconds, "multilayer": t1 - t0, "cv": t2 - t1, "solve": t3 - t2}
    if lam_d is None:  # keep_base: the training CV prefers the multilayer fit without densities
        info = {"iterations": 0, "densities": "none: the training CV scored the multilayer fit best",
                "n_density_features": int(len(data.density_cols))}
        meta = {**pot0.metadata, "embedding_settings": emb.to_dict(), "chosen": {**ch, "lam_density": None}, "solver_info": info}
        pot = MultilayerACEPotential(basis, species, pot0.e0, pot0.coef, layer, pot0.weights, repulsion, meta)
        return EmbeddedFitResult(pot, multilayer, cv, {**ch, "lam_density": None}, info, seconds, multilayer.cv_by_type)
    ns, n_lin = len(species), len(species) * (1 + nB)
    full = np.zeros(full_data.n_cols)
    full[cols] = a
    dens = densities_from_theta(full_data, loss, theta, nB)
    chosen = {**ch, "lam_density": lam_d}
    info, meta = fit_record(res, data, settings, emb, chosen, len(configs), len(cols), {"message_spec": layer.spec.to_dict()})
    pot = MultilayerACEPotential(basis, species, full[:ns], full[ns:n_lin].reshape(ns, nB), layer,
                                 full[n_lin:].reshape(ns, layer.n_features), repulsion, meta, dens, emb.embeddings)
    return EmbeddedFitResult(pot, multilayer, cv, chosen, info, seconds, cv_by_type)

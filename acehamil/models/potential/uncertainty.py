"""Energy and force standard deviations of a linear or multilayer ACE potential from its BLR posterior.

A fit with ``FitSettings(solver="blr")`` yields a Gaussian posterior of the fitted columns
of the parameter vector, ``theta ~ N(mean, Sigma)``, and a noise precision ``beta`` of the
weighted rows (force rows carry weight ``1 / force_sigma^2``).  Energy and forces are linear
in ``theta``, ``E = e . theta``, ``F = G theta`` (:func:`~.model.design_rows`), so

    var E = e Sigma e^T + N_atoms^2 energy_noise^2,   var F_ia = g_ia Sigma g_ia^T + force_noise^2

with ``force_noise^2 = force_sigma^2 / beta`` (a force component) and ``energy_noise^2 =
energy_sigma^2 / (beta * energy_factor)`` (per atom).  All spreads are multiplied by one
calibration factor found by cross-validation on the training folds (:func:`calibrate`):
refit without a fold, compare the fold's summed squared force residuals with its summed
predicted variances (both from the accumulated normal equations, no extra feature
evaluation).  Test data are never used.  The multilayer potential
(:mod:`.multilayer`) is linear in its parameters too: the same formulas with its joint
design rows (:func:`~.multilayer_fit.multilayer_rows`) and its columns (the linear layout,
then the second layer's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class PotentialPosterior:
    """Posterior of a potential's parameter vector (the fitted columns).

    Attributes
    ----------
    cols : ndarray of int, shape (k,)
        Columns of ``potential.parameter_vector()`` that were fitted (the others are 0).
    factor : ndarray, shape (k, k)
        ``Sigma = factor @ factor.T`` (parameter units).
    force_noise : float
        eV/Å, noise standard deviation of one force component.
    energy_noise : float
        eV/atom.
    scale : float
        Calibration factor of every standard deviation (1 = uncalibrated).
    """

    cols: np.ndarray
    factor: np.ndarray
    force_noise: float
    energy_noise: float
    scale: float = 1.0


def _fit_columns(result):
    """Fitted columns, their prior degrees and the number of appended (second-layer) columns."""
    from .fit import _columns
    from .multilayer import MultilayerACEPotential

    pot = result.potential
    extra = None
    if isinstance(pot, MultilayerACEPotential):
        if pot.n_densities:
            raise ValueError("an embedded multilayer potential is nonlinear in its densities: it has no linear posterior")
        extra = np.tile(pot.layer.feature_degrees(), len(pot.species))
    cols, degs = _columns(pot.basis, pot.species, result.chosen["shift"], extra)
    return cols, degs, 0 if extra is None else len(extra)


def posterior_from_fit(result, settings) -> PotentialPosterior:
    """The posterior of a BLR potential fit (:func:`~.fit.fit_potential` or
    :func:`~.multilayer_fit.fit_multilayer` with ``solver="blr"``)."""
    info = result.info
    post = info.get("posterior")
    if post is None:
        raise ValueError("the fit has no posterior: use FitSettings(solver='blr')")
    cols, _, _ = _fit_columns(result)
    return _posterior(post, info["column_scale"], cols, settings, result.chosen.get("energy_factor", 1.0))


def _posterior(post, d, cols, settings, e_factor) -> PotentialPosterior:
    # z = theta * d has the BLR posterior; Sigma_z = Q diag(1/(beta s + alpha)) Q^T
    Q = post.eigvecs / np.sqrt(post.prior_diag)[:, None] / np.sqrt(post.beta * post.eigvals + post.alpha)[None, :]
    factor = Q / np.asarray(d)[:, None]
    return PotentialPosterior(np.asarray(cols), factor, float(settings.force_sigma / np.sqrt(post.beta)),
                              float(settings.energy_sigma / np.sqrt(post.beta * e_factor)))


def calibrate(result, settings, accumulated) -> PotentialPosterior:
    """Posterior of ``result`` with its scale calibrated on the training folds.

    For every fold ``f`` the model is refitted (same hyperparameters) without it; the scale
    is ``sqrt(sum_f RSS_f / sum_f V_f)`` with ``RSS_f`` the weighted squared force residuals
    of fold ``f`` and ``V_f`` their summed predicted variances (coefficient part
    ``tr(Sigma A_f^T W A_f)`` plus noise), both from the accumulated normal equations.
    """
    from .fit import solve

    acc = accumulated
    base = posterior_from_fit(result, settings)
    ch = result.chosen
    cols, degs, n_extra = _fit_columns(result)
    folds = np.unique(acc.folds)
    if len(folds) < 2:
        return base
    rss = var = 0.0
    for f in folds:
        train = acc.folds != f
        theta, info = solve(acc, settings, cols, degs, len(result.potential.species), ch["power"], ch.get("lam"),
                            train=train, e_factor=ch.get("energy_factor", 1.0), n_extra=n_extra,
                            extra_factor=ch.get("layer_prior", 1.0))
        p = _posterior(info["posterior"], info["column_scale"], cols, settings, ch.get("energy_factor", 1.0))
        ne = acc.forces[f]
        if ne.count == 0:
            continue
        rss += ne.residual_sum_of_squares(theta)
        A = ne.AtA[np.ix_(cols, cols)]
        # a weighted row's residual has variance 1/beta (the noise model of the weighted fit)
        var += float(np.einsum("ij,ik,jk->", A, p.factor, p.factor)) + ne.count / info["posterior"].beta
    if var <= 0:
        return base
    return replace(base, scale=float(np.sqrt(rss / var)))


def predict_sigma(potential, posterior: PotentialPosterior, atoms) -> dict:
    """Standard deviations of a potential's energy and forces for ``atoms``.

    Returns
    -------
    dict
        ``energy_sigma`` (eV, total energy), ``forces_sigma`` (natoms, 3) eV/Å.
    """
    from .model import ACEPotential, design_rows
    from .multilayer import MultilayerACEPotential
    from .multilayer_fit import multilayer_rows

    if isinstance(potential, ACEPotential):
        rows = design_rows(potential.basis, potential.species, atoms, gradients=True)
    elif isinstance(potential, MultilayerACEPotential) and not potential.n_densities:
        rows = multilayer_rows(potential.basis, potential.species, potential.layer, atoms, gradients=True)
    else:
        raise TypeError(f"error bars need a linear or multilayer ACE potential (BLR posterior), got {type(potential).__name__}")
    if posterior.cols.size and posterior.cols.max() >= rows.energy.shape[0]:
        raise ValueError("the posterior's columns do not fit this potential (a posterior of another model?)")
    F = posterior.factor
    c = posterior.cols
    s2 = posterior.scale**2
    n = len(atoms)
    e = rows.energy[c] @ F
    g = rows.forces[:, :, c] @ F  # (natoms, 3, k)
    return {
        "energy_sigma": float(np.sqrt(s2 * (e @ e + (n * posterior.energy_noise) ** 2))),
        "forces_sigma": np.sqrt(s2 * (np.einsum("iak,iak->ia", g, g) + posterior.force_noise**2)),
    }

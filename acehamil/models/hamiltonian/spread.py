"""The spread of a Hamiltonian model's eigenvalues: its parts and their calibrated sum.

The spread of an eigenvalue (relative to the Fermi level) has three parts, propagated by
posterior draws (:func:`acehamil.models.hamiltonian.uncertainty.sample_matrix`,
:mod:`acehamil.tb.draws`):

* ``sigma_epi``: coefficient (epistemic) uncertainty, ``D Sigma D^T`` pushed through the
  feature map: correlated over all blocks, grows where the features leave the training data;
* ``sigma_noise``: the fitted noise ``1/beta`` of every block component, independent;
* ``sigma_shared``: one noise draw per ``(block type, L, M)`` shared by every block of that
  type (the systematic part of the model's error, which does not average out in large cells);
* ``sigma_extrapolation``: one spread per structure, ``d sqrt(score)`` with ``score`` the
  structure's extrapolation score (:func:`~acehamil.models.hamiltonian.uncertainty.extrapolation_score`):
  the model error that the posterior does not see (a structure unlike the training data is
  predicted with a bias that more data of its kind would remove, not with a larger variance).
  It is the same for every eigenvalue of the structure and does not shrink with its size.

The reported spread is ``sigma^2 = (a sigma_epi)^2 + (b sigma_noise)^2 + (c sigma_shared)^2 + (d sqrt(score))^2``
(:func:`combine`), with the factors ``a, b, c, d`` of the model's calibration
(:func:`acehamil.models.hamiltonian.calibrate.calibrate`; :func:`scales_of`, :func:`extrapolation_sigma`).
"""

from __future__ import annotations

import numpy as np


def scales_of(model) -> tuple:
    """``(a, b, c)``: factors of the epistemic, noise and shared-noise parts (``(1, 1, 0)`` when
    uncalibrated; models calibrated before the shared-noise part existed have ``c = 0``)."""
    u = getattr(model, "report", {}).get("uncertainty", {}) or {}
    return (float(u.get("scale_epistemic", 1.0)), float(u.get("scale_noise", 1.0)),
            float(u.get("scale_shared", 0.0)))


#: Unit of the extrapolation part in the fit of the factors (eV at score 1; only the conditioning).
EXTRAPOLATION_UNIT = 0.01


def extrapolation_sigma(model, score) -> float:
    """The extrapolation part of the spread of every eigenvalue of a structure, eV.

    ``d sqrt(score)`` with ``d = model.report["uncertainty"]["extrapolation_sigma_eV"]`` (0 for
    uncalibrated models and models calibrated before this part existed) and ``score`` the
    structure's largest per-atom extrapolation score (NaN, no score: 0).  Grows with the score:
    0 for an environment seen in training, ``d`` at the training data's largest leverage, more beyond.

    Examples
    --------
    >>> class M: report = {"uncertainty": {"extrapolation_sigma_eV": 0.02}}
    >>> [round(extrapolation_sigma(M, s), 4) for s in (0.0, 0.25, 1.0, 4.0, float("nan"))]
    [0.0, 0.01, 0.02, 0.04, 0.0]
    """
    u = getattr(model, "report", {}).get("uncertainty", {}) or {}
    d = float(u.get("extrapolation_sigma_eV", 0.0))
    s = float(np.nanmax(score)) if np.size(score) and np.any(np.isfinite(score)) else float("nan")
    return d * float(np.sqrt(s)) if d > 0 and np.isfinite(s) and s > 0 else 0.0


def default_samples(model) -> int:
    return int(model.config.uncertainty.n_samples)


def eigen_parts(model, atoms, kpts, weights, n_electrons, n_samples: int, rng, kpath=None, split: bool = True) -> dict:
    """Eigenvalues of the prediction and the parts of their spread (uncalibrated).

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    atoms : ase.Atoms
    kpts : array, shape (nk, 3)
        k-grid (fractional) on which the Fermi level of the prediction and of each draw is found.
    weights : array, shape (nk,)
    n_electrons : float
    n_samples : int
    rng : numpy.random.Generator
    kpath : array, shape (np, 3), optional
        More k-points (a band path): eigenvalues and spreads there too, relative to the
        same per-draw Fermi levels.
    split : bool
        Propagate the three parts separately (3K draws, each part at ``SPLIT_AMPLITUDE`` of its size
        and its spread divided by it: the linear regime; what the calibration needs).  False:
        K draws of the calibrated sum ``a epi + b noise + c shared``; the result then holds
        ``sigma`` (calibrated) instead of the parts, at a third of the cost.

    Returns
    -------
    dict
        ``eps (nk, nb)``, ``fermi_level`` (float), ``sigma_epi``, ``sigma_noise``, ``sigma_shared``
        (nk, nb), eV, ``H``, ``S`` (the prediction), and with ``kpath``: ``path_eps`` and
        ``path_sigma_*``; ``delta_epi``, ``delta_noise``, ``delta_shared`` (K, ndata) the
        real-space draws.  Without ``split``: ``sigma``, ``path_sigma``, ``delta``.
    """
    from ...tb.draws import eigenvalue_draws, fermi_levels, relative_sigma

    m = model.matrices(atoms, n_samples=n_samples, rng=rng, split=split)
    H, S, deltas = m.H, m.S, list(m.draws)
    names = PARTS if split else ("",)
    # the unscaled parts are propagated at SPLIT_AMPLITUDE of their size and their spreads divided by
    # it: the linear regime, where the spread of a sum of parts is the root-sum-square of theirs (what
    # the calibration assumes); at full size a part can close gaps and move E_F, a spread that does
    # not scale with its factor
    amp = SPLIT_AMPLITUDE if split else 1.0
    K = deltas[0].shape[0]
    delta = amp * np.concatenate(deltas)
    eps, draws = eigenvalue_draws(H, S, delta, kpts)
    ef, efd = fermi_levels(eps, draws, weights, n_electrons)
    out = {"eps": eps, "fermi_level": ef, "H": H, "S": S}
    path = eigenvalue_draws(H, S, delta, kpath) if kpath is not None else None
    if path is not None:
        out["path_eps"] = path[0]
    for p, name in enumerate(names):
        suffix = f"_{name}" if name else ""
        sl = slice(p * K, (p + 1) * K)
        out["delta" + suffix] = deltas[p]
        out["sigma" + suffix] = relative_sigma(eps, draws[sl], ef, efd[sl]) / amp
        if path is not None:
            out["path_sigma" + suffix] = relative_sigma(path[0], path[1][sl], ef, efd[sl]) / amp
    return out


#: Size at which the separate parts are propagated (``eigen_parts(split=True)``), relative to unscaled.
SPLIT_AMPLITUDE = 0.1

#: The parts of the spread, in the order of :func:`scales_of` and ``sample_matrix(split=True)``.
PARTS = ("epi", "noise", "shared")


def combine(model, sigma_epi, sigma_noise, sigma_shared=0.0, score=float("nan")) -> np.ndarray:
    """Calibrated spread ``sqrt((a sigma_epi)^2 + (b sigma_noise)^2 + (c sigma_shared)^2 + x^2)``, eV,
    with ``x`` the extrapolation part of a structure of extrapolation score ``score``
    (:func:`extrapolation_sigma`)."""
    a, b, c = scales_of(model)
    x = extrapolation_sigma(model, score)
    return np.sqrt((a * np.asarray(sigma_epi)) ** 2 + (b * np.asarray(sigma_noise)) ** 2
                   + (c * np.asarray(sigma_shared)) ** 2 + x**2)

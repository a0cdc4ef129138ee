"""Eigenvalue uncertainties of a Hamiltonian model, and their calibration on training data.

The spread of an eigenvalue (relative to the Fermi level) has two parts, propagated by
posterior draws (:func:`acehamil.models.hamiltonian.uncertainty.sample_matrix`,
:mod:`acehamil.tb.draws`):

* ``sigma_epi``: coefficient (epistemic) uncertainty, ``D Sigma D^T`` pushed through the
  feature map: correlated over all blocks, grows where the features leave the training data;
* ``sigma_noise``: the fitted noise ``1/beta`` of every block component, independent.

The reported spread is ``sigma^2 = (a sigma_epi)^2 + (b sigma_noise)^2``.  The BLR evidence
treats the block errors as independent, but a linear model's errors are systematic (the
same environment gives the same error on many blocks), so ``a = b = 1`` is not calibrated.
:func:`calibrate` refits the model on part of the training structures, draws the
eigenvalues of the held-out rest, and fits ``a, b`` by maximum likelihood of the held-out
errors, then one common factor so that 90 % of them lie within ``1.645 sigma``.  Only
training structures are used.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: z-values of the central 90 % and 68.3 % intervals of a normal distribution.
Z90, Z68 = 1.6448536269514722, 1.0


def scales_of(model) -> tuple:
    """``(a, b)``: factors of the epistemic and noise parts (``(1, 1)`` when uncalibrated)."""
    u = getattr(model, "report", {}).get("uncertainty", {}) or {}
    return float(u.get("scale_epistemic", 1.0)), float(u.get("scale_noise", 1.0))


def default_samples(model) -> int:
    return int(model.config.uncertainty.n_samples)


def eigen_parts(model, atoms, kpts, weights, n_electrons, n_samples: int, rng, kpath=None, split: bool = True) -> dict:
    """Eigenvalues of the prediction and the two parts of their spread (uncalibrated).

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
        Propagate the two parts separately (2K draws; what the calibration needs).  False:
        K draws of the calibrated sum ``a epi + b noise``; the result then holds ``sigma``
        (calibrated) instead of ``sigma_epi``/``sigma_noise``, at half the cost.

    Returns
    -------
    dict
        ``eps (nk, nb)``, ``fermi_level`` (float), ``sigma_epi``, ``sigma_noise`` (nk, nb), eV,
        ``H``, ``S`` (the prediction), and with ``kpath``: ``path_eps``, ``path_sigma_epi``,
        ``path_sigma_noise``; ``delta_epi``, ``delta_noise`` (K, ndata) the real-space draws.
    """
    from ...tb.draws import eigenvalue_draws, fermi_levels, relative_sigma

    m = model.matrices(atoms, n_samples=n_samples, rng=rng, split=True)
    H, S, (de, dn) = m.H, m.S, m.draws
    K = de.shape[0]
    if not split:
        a, b = scales_of(model)
        delta = a * de + b * dn
        eps, draws = eigenvalue_draws(H, S, delta, kpts)
        ef, efd = fermi_levels(eps, draws, weights, n_electrons)
        out = {"eps": eps, "fermi_level": ef, "H": H, "S": S, "delta": delta, "sigma": relative_sigma(eps, draws, ef, efd)}
        if kpath is not None:
            pe, pd = eigenvalue_draws(H, S, delta, kpath)
            out.update(path_eps=pe, path_sigma=relative_sigma(pe, pd, ef, efd))
        return out
    eps, draws = eigenvalue_draws(H, S, np.concatenate([de, dn]), kpts)
    ef, efd = fermi_levels(eps, draws, weights, n_electrons)
    out = {"eps": eps, "fermi_level": ef, "H": H, "S": S, "delta_epi": de, "delta_noise": dn,
           "sigma_epi": relative_sigma(eps, draws[:K], ef, efd[:K]),
           "sigma_noise": relative_sigma(eps, draws[K:], ef, efd[K:])}
    if kpath is not None:
        pe, pd = eigenvalue_draws(H, S, np.concatenate([de, dn]), kpath)
        out.update(path_eps=pe, path_sigma_epi=relative_sigma(pe, pd[:K], ef, efd[:K]),
                   path_sigma_noise=relative_sigma(pe, pd[K:], ef, efd[K:]))
    return out


def combine(model, sigma_epi, sigma_noise) -> np.ndarray:
    """Calibrated spread ``sqrt((a sigma_epi)^2 + (b sigma_noise)^2)``, eV."""
    a, b = scales_of(model)
    return np.sqrt((a * np.asarray(sigma_epi)) ** 2 + (b * np.asarray(sigma_noise)) ** 2)


def fit_scales(err, sigma_epi, sigma_noise) -> tuple:
    """Maximum-likelihood ``a, b`` of ``err ~ N(0, (a s_e)^2 + (b s_n)^2)``, then one common
    factor so that the 90 % quantile of ``|err| / sigma`` is 1.645.

    Parameters
    ----------
    err, sigma_epi, sigma_noise : array, shape (n,), eV

    Returns
    -------
    (a, b) : floats

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> se, sn = rng.uniform(0.1, 2, 4000), np.full(4000, 0.5)
    >>> err = rng.normal(size=4000) * np.sqrt((3 * se) ** 2 + (0.5 * sn) ** 2)
    >>> a, b = fit_scales(err, se, sn)
    >>> bool(2.5 < a < 3.5), bool(b < 0.8)
    (True, True)
    """
    from scipy.optimize import minimize

    e = np.abs(np.asarray(err, dtype=float))
    se, sn = np.asarray(sigma_epi, dtype=float), np.asarray(sigma_noise, dtype=float)
    if not (e.shape == se.shape == sn.shape) or e.size < 2:
        raise ValueError("err, sigma_epi and sigma_noise must have one equal shape with >= 2 values")
    tiny = 1e-30

    def nll(p):
        v = np.exp(p[0]) * se**2 + np.exp(p[1]) * sn**2 + tiny
        return 0.5 * float(np.sum(np.log(v) + e**2 / v))

    x0 = np.log(max(float(np.mean(e**2)) / max(float(np.mean(se**2 + sn**2)), tiny), tiny))
    res = minimize(nll, [x0, x0], method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-8, "maxiter": 2000})
    a, b = np.sqrt(np.exp(res.x))
    s = np.sqrt((a * se) ** 2 + (b * sn) ** 2) + tiny
    g = float(np.quantile(e / s, 0.9)) / Z90
    return float(a * g), float(b * g)


def interval_metrics(err, sigma) -> dict:
    """Coverage of the 90 % and 68 % intervals and the rank correlation of sigma with |err|.

    ``coverage_90`` is the fraction with ``|err| <= 1.645 sigma``, ``coverage_68`` with
    ``|err| <= sigma``; ``spearman_sigma_error`` is Spearman's rho of ``sigma`` and ``|err|``.

    Examples
    --------
    >>> m = interval_metrics([0.1, -0.5, 2.0, 0.0], [1.0, 1.0, 1.0, 0.1])
    >>> m["coverage_90"], m["coverage_68"], m["n"]
    (0.75, 0.75, 4)
    """
    from scipy.stats import spearmanr

    e = np.abs(np.asarray(err, dtype=float)).reshape(-1)
    s = np.asarray(sigma, dtype=float).reshape(-1)
    if e.shape != s.shape:
        raise ValueError(f"err and sigma shapes differ: {e.shape} vs {s.shape}")
    nan = float("nan")
    if e.size == 0:
        return {"coverage_90": nan, "coverage_68": nan, "spearman_sigma_error": nan, "n": 0}
    rho = nan
    if e.size > 2 and np.ptp(s) > 0 and np.ptp(e) > 0:
        rho = float(spearmanr(s, e)[0])
    return {"coverage_90": float(np.mean(e <= Z90 * s)), "coverage_68": float(np.mean(e <= Z68 * s)),
            "spearman_sigma_error": rho, "n": int(e.size)}


def reference_errors(sd, eps, ef, kpts, weights, window_eV) -> tuple:
    """Errors of ``eps - ef`` against the reference (own Fermi level) within the window.

    Returns
    -------
    err : ndarray, shape (nk, nb), eV
    mask : ndarray of bool, shape (nk, nb)
        Reference eigenvalues within ``E_F +- window_eV``.
    """
    from ...tb.eigen import solve
    from ...tb.smearing import fermi_level

    e_ref = solve(sd.H[0], sd.S, kpts)
    nb = min(e_ref.shape[1], eps.shape[1])
    if sd.n_electrons is not None:
        ef_ref = fermi_level(e_ref[None], weights, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    elif sd.fermi_level is not None:
        ef_ref = float(sd.fermi_level)
    else:
        raise ValueError("reference structure has neither fermi_level nor n_electrons: no eigenvalue window")
    err = (eps[:, :nb] - ef) - (e_ref[:, :nb] - ef_ref)
    return err, np.abs(e_ref[:, :nb] - ef_ref) <= window_eV


def calibrate(structures, config, progress: bool = False) -> dict:
    """Fit the spread factors ``a, b`` on a validation split of the training structures.

    Parameters
    ----------
    structures : sequence of StructureData
        The training structures only (with H, S and ``n_electrons``).
    config : ModelConfig
        Of the model being fitted; ``config.uncertainty`` sets the split (one held-out share,
        or ``calibration_folds`` > 1 folds each held out once), draws and grid.

    Returns
    -------
    dict
        ``{"scale_epistemic", "scale_noise", "calibration": {"structures": [...], "n",
        "coverage_90", "coverage_68", "spearman_sigma_error", "uncalibrated_coverage_90"}}``
        (indices into ``structures``).
    """
    from ...tb.dos import monkhorst_pack
    from .fit import fit

    uc = config.uncertainty
    n = len(structures)
    if n < 2:
        raise ValueError("calibration needs at least 2 training structures")
    rng = np.random.default_rng(config.fit.seed + 7919)
    order = rng.permutation(n)
    if uc.calibration_folds > 1:
        splits = [np.sort(order[f::uc.calibration_folds]) for f in range(min(uc.calibration_folds, n))]
    else:
        splits = [np.sort(order[:min(max(int(round(uc.calibration_fraction * n)), 1), n - 1)])]
    sub_cfg = dataclasses.replace(config, fit=dataclasses.replace(config.fit, validation_fraction=0.0,
                                                                  structure_weights=()),
                                  uncertainty=dataclasses.replace(uc, calibrate=False))
    errs, ses, sns = [], [], []
    for val in splits:
        train = np.setdiff1d(np.arange(n), val)
        weights = np.asarray(config.fit.structure_weights, dtype=float)[train] if config.fit.structure_weights else None
        sub = fit([structures[int(i)] for i in train], sub_cfg, progress=progress, weights=weights)
        for i in val:
            sd = structures[int(i)]
            if sd.n_electrons is None:
                continue
            kp, wk = monkhorst_pack(uc.kmesh, sd.atoms.pbc)
            parts = eigen_parts(sub, sd.atoms, kp, wk, sd.n_electrons, uc.n_samples, rng)
            err, mask = reference_errors(sd, parts["eps"], parts["fermi_level"], kp, wk, uc.window_eV)
            nb = err.shape[1]
            errs.append(err[mask])
            ses.append(parts["sigma_epi"][:, :nb][mask])
            sns.append(parts["sigma_noise"][:, :nb][mask])
    val = np.sort(np.concatenate(splits))
    if not errs:
        raise ValueError("calibration needs training structures with n_electrons")
    e, se, sn = np.concatenate(errs), np.concatenate(ses), np.concatenate(sns)
    a, b = fit_scales(e, se, sn)
    m = interval_metrics(e, np.sqrt((a * se) ** 2 + (b * sn) ** 2))
    m["uncalibrated_coverage_90"] = interval_metrics(e, np.sqrt(se**2 + sn**2))["coverage_90"]
    m["structures"] = [int(i) for i in val]
    return {"scale_epistemic": a, "scale_noise": b, "calibration": m}

"""Solving the fit's normal equations.

Each ``(block type, L)`` problem of the summed normal equations
(:class:`~acehamil.models.hamiltonian.sums.FitSums`) is solved with ridge (Tikhonov with the
smoothness prior ``lam * mean(diag A^T A) * (1 + degree)^smoothness``) or Bayesian linear regression
with evidence-maximised ``alpha, beta`` (posterior kept), :func:`solve_all`.  Since
``||X||^2 = sum_L ||x_L||^2`` the sum of the ``L`` problems is exactly the least-squares fit of the
blocks.  With energy zeros (``fit.fit_energy_zero``) the coefficients and one energy zero per
training structure are solved jointly from the same sums (:func:`fit_energy_zero`), and the cell
energy-zero law is fitted to those (:func:`fit_density_energy_zero`).  :func:`solve_sums` is the
entry of the fit (:func:`acehamil.models.hamiltonian.fit.fit`) and of the calibration's fold models
(:func:`acehamil.models.hamiltonian.folds.fold_model`).
"""

from __future__ import annotations

import numpy as np

from ...fitting import blr_normal, ridge_normal, ridge_posterior, smoothness_prior
from ...fitting.conditioning import condition_number, data_scale, equilibrate
from .config import ModelConfig
from .matrix_model import MatrixModel
from .sums import FitSums

EV_TO_MEV = 1000.0


def _prior(fam, bt, L: int, normal: dict) -> tuple:
    """Feature degrees and per-column prior factors of the ``(bt, L)`` problem: the prior is
    ``factors * (1 + degree)^smoothness`` (times ``lam * data_scale`` for ridge, see
    :mod:`acehamil.fitting.conditioning`)."""
    nfeat = {LL: (normal[(bt.key, LL)].n if (bt.key, LL) in normal else 0) for LL in bt.L_values()}
    return fam.degrees(bt, nfeat)[L], fam.prior_mask(bt, L, normal[(bt.key, L)].n)


def solve_all(model: MatrixModel, normal: dict, solver, condition: bool = True) -> tuple:
    """Solve every ``(block type, L)`` problem.

    Returns
    -------
    coefficients : dict {bt.key: {L: ndarray}}
    posteriors : dict {bt.key: {L: BLRPosterior}} (BLR only)
    diagnostics : dict {bt.key: {"rss": float, "rows": int, "condition_number": float}}
        With ``"blr_fallback"`` (int: problems solved by ridge because BLR diverged) and ``"blr_not_converged"``
        ({str(L): what it means, :meth:`~acehamil.fitting.BLRPosterior.nonconvergence`}) where they occur.
    """
    coefs, posts, diag = {}, {}, {}
    for fam, bt in model.block_types():
        d = diag.setdefault(bt.key, {"rss": 0.0, "rows": 0, "condition_number": 1.0})
        for L in bt.L_values():
            ne = normal.get((bt.key, L))
            if ne is None:
                continue
            deg, free = _prior(fam, bt, L, normal)
            scale = data_scale(ne)
            c = None
            if ne.yty <= 1e-300:  # all targets zero (e.g. a block forbidden by symmetry in the data)
                c, cond = np.zeros(ne.n), (condition_number(ne.AtA) if condition else float("nan"))
            elif solver.method == "blr" and ne.count >= 2:
                with np.errstate(all="ignore"):
                    c, post = blr_normal(ne, prior_diag=free * smoothness_prior(deg, 1.0, solver.smoothness),
                                         min_ratio=solver.lam * scale)
                if np.all(np.isfinite(c)) and np.isfinite(post.alpha) and np.isfinite(post.beta):
                    posts.setdefault(bt.key, {})[L] = post
                    if not post.converged:  # kept (the numbers are those of the last iteration), and said
                        d.setdefault("blr_not_converged", {})[str(L)] = post.nonconvergence()
                    cond = condition_number(ne.AtA) if condition else float("nan")
                else:  # data fitted exactly (noise precision diverges): fall back to ridge
                    c = None
                    d["blr_fallback"] = d.get("blr_fallback", 0) + 1
            if c is None:
                c, res = ridge_normal(ne, free * smoothness_prior(deg, solver.lam * scale, solver.smoothness), condition=condition)
                cond = res.condition_number_unregularised if condition else float("nan")
                if solver.lam > 0 and ne.count >= 2:  # the ridge posterior (noise from residuals) for error bars
                    posts.setdefault(bt.key, {})[L] = ridge_posterior(ne, c, solver.lam * scale,
                                                                      free * smoothness_prior(deg, 1.0, solver.smoothness))
            coefs.setdefault(bt.key, {})[L] = c
            d["rss"] += ne.residual_sum_of_squares(c)
            d["rows"] += ne.count
            d["condition_number"] = max(d["condition_number"], float(cond)) if condition else float("nan")
    return coefs, posts, diag


def fit_energy_zero(model: MatrixModel, normal: dict, gauge: dict, solver, n_structures: int,
                    condition: bool = True) -> tuple:
    """Joint fit of the coefficients and one energy zero ``V_s`` per structure.

    The targets become ``H_s - V_s S_s``: absolute energies of a periodic DFT
    calculation carry a volume-dependent constant (the mean electrostatic
    potential) that no local model can know.  The joint ridge problem is solved
    from accumulated sums only: per ``(block type, L)`` the coefficients are
    ``c(V) = M^-1 (A^T W y - sum_s V_s g_s)`` with ``g_s = A_s^T W s_s`` and ``M`` the
    ridge matrix, so eliminating them leaves one small linear system for the ``V_s``,

    ``ss_s (V_s + mu) = ys_s - g_s . M^-1 A^T W y + sum_t (g_s . M^-1 g_t) V_t``,  ``sum_s V_s = 0``

    (``ys_s = y_s . W s_s``, ``ss_s = s_s . W s_s``; the gauge ``mean_s V_s = 0`` keeps the mean
    level in the model; a structure without overlap terms gets ``V_s = -mu``): the exact
    minimum, where the block-coordinate descent used before stopped at 500 sweeps up to
    ~0.5 meV away.  The ridge matrices are factorised once; the final coefficients for
    the shifted targets come from ``solver``.

    ``condition``: the diagnostics' condition numbers (an eigen-decomposition per problem; False: NaN).

    Returns
    -------
    coefficients, posteriors, diagnostics
        As :func:`solve_all`, for the shifted targets.
    V : ndarray, shape (n_structures,)
        Energy zero of each training structure, eV.
    """
    import scipy.linalg

    ys = np.zeros(n_structures)
    ss = np.zeros(n_structures)
    for g in gauge.values():
        for s, (_, y_s, s_s) in g.items():
            ys[s] += y_s
            ss[s] += s_s
    fam_of = {bt.key: (fam, bt) for fam, bt in model.block_types()}
    K = np.zeros((n_structures, n_structures))
    rhs = ys.copy()
    for key, ne in normal.items():
        g = gauge.get(key, {})
        if not g:
            continue
        fam, bt = fam_of[key[0]]
        deg, free = _prior(fam, bt, key[1], normal)
        Ms, d = equilibrate(ne.AtA + np.diag(free * smoothness_prior(deg, max(solver.lam, 1e-12) * data_scale(ne), solver.smoothness)))
        idx = np.array(list(g.keys()), dtype=np.int64)
        gs = np.array([v[0] for v in g.values()])  # (m, n_F)
        B = np.column_stack([ne.Aty, gs.T]) / d[:, None]
        try:
            Z = scipy.linalg.cho_solve(scipy.linalg.cho_factor(Ms + 1e-14 * np.eye(ne.n)), B)
        except np.linalg.LinAlgError:
            Z = np.linalg.pinv(Ms) @ B
        Z /= d[:, None]
        rhs[idx] -= gs @ Z[:, 0]
        K[np.ix_(idx, idx)] += gs @ Z[:, 1:]
    # unknowns (V, mu): rows of structures with overlap terms, V_s + mu = 0 for the others, sum V = 0
    n = n_structures
    M = np.zeros((n + 1, n + 1))
    b = np.zeros(n + 1)
    has = ss > 0
    M[:n, :n] = np.where(has[:, None], np.diag(ss) - K, np.eye(n))
    M[:n, n] = np.where(has, ss, 1.0)
    b[:n] = np.where(has, rhs, 0.0)
    M[n, :n] = 1.0
    V = np.linalg.lstsq(M, b, rcond=None)[0][:n]
    shifted = {}
    for key, ne in normal.items():
        g = gauge.get(key, {})
        m = ne.copy()
        m.Aty = ne.Aty - sum((V[s] * v[0] for s, v in g.items()), np.zeros(ne.n))
        m.yty = ne.yty - 2 * sum(V[s] * v[1] for s, v in g.items()) + sum(V[s] ** 2 * v[2] for s, v in g.items())
        shifted[key] = m
    coefs, posts, diag = solve_all(model, shifted, solver, condition=condition)
    return coefs, posts, diag, V


def fit_density_energy_zero(cells, V, species, bonds: bool = False, ends=None) -> tuple:
    """Least-squares ``V_s ~ v0 + sum_Z beta_Z N_Z,s / Omega_s`` over the fully periodic training cells
    (``bonds``: ``+ sum_Z gamma_Z B_Z,s / Omega_s``, the bond ends of
    :func:`acehamil.models.hamiltonian.energy_zero.bond_ends`).

    Parameters
    ----------
    cells : sequence of ase.Atoms
        The training structures, in the order of ``V``.
    V : ndarray, shape (n,)
        Their fitted energy zeros, eV.
    species : sequence of int
    bonds : bool
        Add the bond term (``fit.energy_zero_model = "bonds"``).
    ends : sequence of dict, optional
        With ``bonds``: :func:`~acehamil.models.hamiltonian.energy_zero.bond_ends` of each cell, when the caller
        has them (e.g. once for the calibration's folds, which refit from subsets of the same cells); default
        computed here.

    Returns
    -------
    energy_zero : EnergyZero
        ``v0 = 0`` and no ``beta`` when fewer than two periodic cells (nothing to learn).
    summary : dict
        JSON-able: ``v0_eV``, ``beta_eV_A3`` (and, with ``bonds``, ``gamma_eV_A3_per_bond_end``, ``bond_range``),
        ``n_cells``, ``rms_before_meV``, ``rms_after_meV`` (spread of the ``V_s`` about the training average and
        about the law).

    Examples
    --------
    >>> from ase.build import bulk
    >>> cells = [bulk("Si", "diamond", a=a, cubic=True) for a in (5.3, 5.43, 5.6)]
    >>> V = np.array([0.5 + 20.0 * 8 / c.get_volume() for c in cells])
    >>> ez, _ = fit_density_energy_zero(cells, V, [14])
    >>> round(ez.v0, 6), round(ez.beta[0][1], 6)
    (0.5, 20.0)
    """
    from .energy_zero import EnergyZero, bond_ends

    V = np.asarray(V, dtype=float)
    species = [int(z) for z in species]
    n_col = 1 + len(species) * (2 if bonds else 1)
    rows, vals = [], []
    if ends is not None and len(ends) != len(V):
        raise ValueError(f"need the bond ends of each of the {len(V)} cells, got {len(ends)}")
    for q, (at, v) in enumerate(zip(cells, V)):
        if np.all(at.pbc):
            vol = abs(float(np.linalg.det(at.cell.array)))
            numbers = np.asarray(at.numbers)
            row = [1.0] + [np.count_nonzero(numbers == z) / vol for z in species]
            if bonds:
                e = bond_ends(at, species) if ends is None else ends[q]
                row += [e[z] / vol for z in species]
            rows.append(row)
            vals.append(v)
    A, y = np.asarray(rows).reshape(-1, n_col), np.asarray(vals)
    if len(y) < 2:
        ez = EnergyZero()
        c = np.zeros(n_col)
    else:
        # densities are ~0.05 Å^-3: scale the columns so the minimum-norm solution does not depend on units
        # (in bulk-like cells the bond-end density is ~4x the atom density: the cells that differ, vacancies,
        # interstitials, stretched bonds, decide gamma; a species absent from every cell gets 0)
        scale = np.where(np.abs(A).max(axis=0) > 0, np.abs(A).max(axis=0), 1.0)
        c = np.linalg.lstsq(A / scale, y, rcond=1e-10)[0] / scale
        ez = EnergyZero(v0=c[0], beta=tuple(zip(species, c[1:1 + len(species)])),
                        gamma=tuple(zip(species, c[1 + len(species):])) if bonds else ())
    summary = {**ez.to_dict(), "n_cells": int(len(y)),
               "rms_before_meV": float(np.sqrt(np.mean((y - y.mean()) ** 2)) * EV_TO_MEV) if len(y) else 0.0,
               "rms_after_meV": float(np.sqrt(np.mean((y - A @ c) ** 2)) * EV_TO_MEV) if len(y) else 0.0}
    return ez, summary


def solve_sums(mm: MatrixModel, sums: FitSums, config: ModelConfig, cells, species, condition: bool = True,
               ends=None) -> tuple:
    """Coefficients (and posteriors) of ``mm`` from the summed normal equations of its training structures.

    Parameters
    ----------
    mm : MatrixModel
        Supplies families and block types.
    sums : FitSums
        Sums over the training structures; ``sums.gauge`` keyed ``0..len(cells)-1`` for the
        energy-zero fit (empty: no energy-zero fit).
    config : ModelConfig
    cells : sequence of ase.Atoms
        The training structures, in the order of the gauge keys (the density energy zero).
    species : sequence of int
    condition : bool
        The diagnostics' condition numbers (False: NaN; e.g. the calibration's fold models, which report none).
    ends : sequence of dict, optional
        The cells' bond ends (:func:`fit_density_energy_zero`).

    Returns
    -------
    coefficients, posteriors, diagnostics
        As :func:`solve_all`.
    V : ndarray, shape (len(cells),), or None
        Fitted energy zero of each training structure, eV (energy-zero fit only).
    energy_zero : EnergyZero or None
        The cell energy-zero law (``fit.energy_zero_model = "density"`` or ``"bonds"`` only).
    energy_zero_summary : dict or None
    """
    if not sums.gauge:
        coefs, posts, diag = solve_all(mm, sums.normal, config.solver, condition=condition)
        return coefs, posts, diag, None, None, None
    coefs, posts, diag, V = fit_energy_zero(mm, sums.normal, sums.gauge, config.solver, len(cells), condition=condition)
    ez = summary = None
    if config.fit.energy_zero_model in ("density", "bonds"):
        ez, summary = fit_density_energy_zero(cells, V, species, config.fit.energy_zero_model == "bonds", ends=ends)
    return coefs, posts, diag, V, ez, summary

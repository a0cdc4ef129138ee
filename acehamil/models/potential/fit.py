"""Fitting ACE site-energy potentials: weighted normal equations, k-fold
cross-validation of hyperparameters on the training set, final solve.

Rows and weights (per configuration ``c`` with weight ``w_c`` = per-config
weight times its ``config_type`` factor)::

    energy per atom   (E_c - E_rep) / N_c       weight  w_c / energy_sigma^2
    force components  F_c - F_rep               weight  w_c / force_sigma^2
    stress (Voigt)    sigma_c - sigma_rep       weight  w_c / stress_sigma^2

Features are computed once (for the largest basis); cross-validation over the
regularisation strength, the smoothness-prior exponent, the energy/force
weight balance (``energy_factors``) and degree cut-backs
(feature subsets with ``degree <= max_degree(nu) - shift``) reuses the
accumulated normal equations: energy rows are kept per configuration (exact
validation MAE), force/stress rows as per-fold normal equations.

The prior acts on coefficients of features scaled to unit root-mean-square
weighted design column (per configuration), with strength
``lam * data_scale * (1 + degree)^power``; the E0 columns get a negligible prior.
``lam`` has the one meaning of :mod:`acehamil.fitting.conditioning` (``data_scale``,
the mean diagonal of the scaled normal matrix, is the number of training
configurations).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ...fitting import NormalEquations, blr_normal, ridge_normal, ridge_path
from ...fitting.conditioning import column_scale, data_scale, scale_columns
from .model import VOIGT, ACEPotential, cell_volume, design_rows, feature_degrees, feature_orders, repulsion_terms
from .cv_criterion import CRITERIA, rank_cv, row_score
from .data import Config, summarise_errors
from .repulsion import RepulsionSpec

E0_PRIOR = 1e-6


@dataclass(frozen=True)
class FitSettings:
    """Hyperparameters and weights of a potential fit (defaults in brackets).

    Attributes
    ----------
    solver : {"ridge", "blr"}
        Tikhonov with CV-chosen strength, or Bayesian linear regression (evidence-chosen strength). ["ridge"]
    lam : tuple of float
        Ridge strengths tried by CV, dimensionless (:mod:`acehamil.fitting.conditioning`). [1e-9 .. 1e-3]
    power : tuple of float
        Smoothness-prior exponents tried by CV. [(0, 2)]
    degree_shifts : tuple of int
        Degree cut-backs tried by CV. [(0,)]
    energy_factors : tuple of float
        Multipliers of the energy-row weights tried by CV (energy/force balance). [(1.0,)]
    layer_prior_factors : tuple of float
        Multipliers of the ridge prior on columns appended after the linear layout (the
        multilayer model's second layer) tried by CV: > 1 regularises the second layer
        more than the first. Ignored by fits without appended columns. [(1.0,)]
    energy_sigma, force_sigma, stress_sigma : float
        Expected errors (eV/atom, eV/Å, eV/Å^3) giving row weights ``1/sigma^2``. [1e-3, 0.05, 1e-3]
    config_type_weights : tuple of (str, float)
        Extra weight factor per config_type. [()]
    n_folds : int
        Folds for cross-validation (1 = no CV, first grid point used). [5]
    seed : int
        Fold assignment seed. [0]
    cv_energy_scale, cv_force_scale : float
        ``cv_criterion = "combined"``: CV score = E_rmse / cv_energy_scale + F_rmse / cv_force_scale
        (eV/atom, eV/Å). [1e-3, 0.05]
    cv_criterion : {"combined", "energy_mae"}
        What the CV minimises (:mod:`.cv_criterion`): the combined score above, or the held-out
        energy MAE per atom among settings whose held-out force RMSE is within
        ``cv_force_tolerance`` of the best in the table. ["combined"]
    cv_force_tolerance : float
        Force budget of ``"energy_mae"``, eV/Å. [0.005]
    type_balance : tuple of float
        Exponents ``gamma`` tried by CV of the config-type balance of the energy weights: the energy
        row of configuration ``c`` is weighted by ``(n / (T n_t(c)))^gamma`` (normalised to mean 1;
        ``n`` configurations, ``T`` types, ``n_t`` of type ``t``), so ``gamma = 1`` gives every
        config type the same total energy weight and ``0`` (the default) weights configurations
        alike (:func:`type_balance_factors`). Ridge only. [(0.0,)]
    """

    solver: str = "ridge"
    lam: tuple = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
    power: tuple = (0.0, 2.0)
    degree_shifts: tuple = (0,)
    energy_factors: tuple = (1.0,)
    layer_prior_factors: tuple = (1.0,)
    energy_sigma: float = 1e-3
    force_sigma: float = 0.05
    stress_sigma: float = 1e-3
    config_type_weights: tuple = ()
    n_folds: int = 5
    seed: int = 0
    cv_energy_scale: float = 1e-3
    cv_force_scale: float = 0.05
    cv_criterion: str = "combined"
    cv_force_tolerance: float = 0.005
    type_balance: tuple = (0.0,)

    def __post_init__(self):
        if self.cv_criterion not in CRITERIA:
            raise ValueError(f"cv_criterion must be one of {CRITERIA}, got {self.cv_criterion!r}")
        if not (isinstance(self.cv_force_tolerance, (int, float, np.number)) and not isinstance(self.cv_force_tolerance, bool)
                and np.isfinite(self.cv_force_tolerance) and self.cv_force_tolerance >= 0):
            raise ValueError(f"cv_force_tolerance must be a finite number >= 0 (eV/Å), got {self.cv_force_tolerance!r}")
        if self.solver not in ("ridge", "blr"):
            raise ValueError(f"solver must be 'ridge' or 'blr', got {self.solver!r}")
        for name in ("lam", "power", "degree_shifts", "energy_factors", "layer_prior_factors", "type_balance"):
            vals = tuple(getattr(self, name)) if np.ndim(getattr(self, name)) else (getattr(self, name),)
            if not vals:
                raise ValueError(f"{name} needs at least one value")
            if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and np.isfinite(v) for v in vals):
                raise ValueError(f"{name} must be a list of finite numbers, got {list(vals)!r}")
            object.__setattr__(self, name, vals)
        if any(v <= 0 for v in self.energy_factors):
            raise ValueError(f"energy_factors must be > 0, got {self.energy_factors}")
        if any(not (np.isfinite(v) and v > 0) for v in self.layer_prior_factors):
            raise ValueError(f"layer_prior_factors must be finite and > 0, got {self.layer_prior_factors}")
        if any(v < 0 for v in self.type_balance):
            raise ValueError(f"type_balance exponents must be >= 0, got {self.type_balance}")
        if self.solver == "blr" and any(v != 0 for v in self.type_balance):
            raise ValueError("type_balance needs solver = 'ridge' (the BLR posterior has one energy noise level)")
        if any(v < 0 for v in self.lam + self.power) or any(int(s) != s or s < 0 for s in self.degree_shifts):
            raise ValueError("lam and power must be >= 0, degree_shifts non-negative integers")
        for name in ("energy_sigma", "force_sigma", "stress_sigma", "cv_energy_scale", "cv_force_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.n_folds, bool) or int(self.n_folds) != self.n_folds or self.n_folds < 1:  # true is not 1 fold
            raise ValueError(f"n_folds must be a positive integer, got {self.n_folds}")
        ctw = self.config_type_weights.items() if isinstance(self.config_type_weights, dict) else self.config_type_weights
        try:  # a number here was a TypeError traceback ('int' object is not iterable)
            pairs = tuple((str(k), float(v)) for k, v in ctw)
        except (TypeError, ValueError):
            raise ValueError("config_type_weights must be a table of config_type = weight (e.g. "
                             f"[fit.config_type_weights] with liquid = 0.5), got {self.config_type_weights!r}") from None
        if not all(np.isfinite(v) and v >= 0 for _, v in pairs):
            raise ValueError(f"config_type_weights must be finite and >= 0, got {dict(pairs)}")
        object.__setattr__(self, "config_type_weights", pairs)

    def config_factor(self, config_type: str) -> float:
        return dict(self.config_type_weights).get(config_type, 1.0)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["config_type_weights"] = [list(x) for x in self.config_type_weights]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(eq=False)
class Accumulated:
    """Design data of a training set in reusable form (see module docstring).

    Attributes
    ----------
    energy_rows : ndarray, shape (n_configs, n_cols)
        Per-atom energy design rows.
    energy_targets : ndarray, shape (n_configs,)
        eV/atom (repulsion removed).
    config_weights : ndarray, shape (n_configs,)
    folds : ndarray of int, shape (n_configs,)
    forces, stress : list of NormalEquations (one per fold), rows already weighted by
        ``w_c / sigma^2``; ``stress`` entries may have count 0.
    force_counts : ndarray, shape (n_folds,)
        Unweighted force rows per fold (for RMSE).
    """

    energy_rows: np.ndarray
    energy_targets: np.ndarray
    config_weights: np.ndarray
    folds: np.ndarray
    forces: list
    stress: list
    force_counts: np.ndarray
    force_weight_sums: np.ndarray
    n_cols: int
    seconds: float = 0.0
    n_atoms: int = 0
    n_force_rows: int = 0
    config_types: list = field(default_factory=list)


def accumulate(basis, species, configs, settings: FitSettings, repulsion: RepulsionSpec | None = None, progress: bool = False,
               rows_fn=None, n_extra: int = 0) -> Accumulated:
    """Evaluate design rows of every configuration once and accumulate them.

    Parameters
    ----------
    basis : ACEBasis
    species : tuple of int
    configs : list of Config
    settings : FitSettings
    repulsion : RepulsionSpec, optional
        Its energy/forces/stress are subtracted from the targets.
    progress : bool
        Print progress to stderr.
    rows_fn : callable, optional
        ``atoms, gradients -> DesignRows`` with ``n_extra`` columns appended to the
        linear layout (e.g. a second layer's features); default :func:`design_rows`.
    n_extra : int
        Extra columns ``rows_fn`` appends.
    """
    if not configs:
        raise ValueError("no training configurations")
    from ...structure.neighbours import neighbour_pairs

    t0 = time.perf_counter()
    ns = len(species)
    n_cols = ns * (1 + len(feature_degrees(basis))) + int(n_extra)
    if rows_fn is None:
        def rows_fn(atoms, gradients):
            return design_rows(basis, species, atoms, gradients=gradients)
    nf = int(settings.n_folds)
    folds = np.random.default_rng(settings.seed).permutation(len(configs)) % nf
    E_rows = np.zeros((len(configs), n_cols))
    E_t = np.zeros(len(configs))
    weights = np.zeros(len(configs))
    F = [NormalEquations(n_cols) for _ in range(nf)]
    S = [NormalEquations(n_cols) for _ in range(nf)]
    fcount = np.zeros(nf)
    fwsum = np.zeros(nf)
    n_atoms = n_frows = 0
    for k, c in enumerate(configs):
        if not isinstance(c, Config):
            raise TypeError(f"configs[{k}] is a {type(c).__name__}, expected Config")
        w = c.weight * settings.config_factor(c.config_type)
        weights[k] = w
        need_grad = c.forces is not None or c.stress is not None
        rows = rows_fn(c.atoms, need_grad)
        if repulsion is not None and repulsion.r_core:
            e_rep, _, dEdr_rep, dEde_rep = repulsion_terms(repulsion, c.atoms, neighbour_pairs(c.atoms, repulsion.max_radius))
        else:
            e_rep, dEdr_rep, dEde_rep = 0.0, 0.0, 0.0
        E_rows[k] = rows.energy / c.natoms
        E_t[k] = (c.energy - e_rep) / c.natoms
        f = folds[k]
        if c.forces is not None:
            if c.forces.shape != (c.natoms, 3):
                raise ValueError(f"configs[{k}]: forces must have shape ({c.natoms}, 3), got {c.forces.shape}")
            A = rows.forces.reshape(-1, n_cols)
            y = (c.forces + dEdr_rep).ravel()  # F_target - F_rep, F_rep = -dEdr_rep
            wf = w / settings.force_sigma**2
            F[f].add(A, y, np.full(len(y), wf))
            fcount[f] += len(y)
            fwsum[f] += wf * len(y)
            n_frows += len(y)
        if c.stress is not None:
            vol = cell_volume(c.atoms)
            if vol is None:
                raise ValueError(f"configs[{k}] has a stress but is not periodic in 3-D")
            A = np.array([rows.strain[a, b] for a, b in VOIGT]) / vol
            rep = np.array([dEde_rep[a, b] for a, b in VOIGT]) / vol if np.ndim(dEde_rep) else 0.0
            S[f].add(A, c.stress - rep, np.full(6, w / settings.stress_sigma**2))
        n_atoms += c.natoms
        if progress and (k + 1) % max(1, len(configs) // 10) == 0:
            print(f"  features: {k + 1}/{len(configs)} configs, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return Accumulated(E_rows, E_t, weights, folds, F, S, fcount, fwsum, n_cols, time.perf_counter() - t0, n_atoms, n_frows,
                       [c.config_type for c in configs])


def _columns(basis, species, shift: int, extra_degs=None) -> tuple[np.ndarray, np.ndarray]:
    """Column indices kept for a degree cut-back, and their prior degrees (E0 columns: degree 0).

    ``extra_degs`` (n_extra,): prior degrees of columns appended after the linear layout
    (always kept).
    """
    deg = feature_degrees(basis)
    nu = feature_orders(basis)
    limits = getattr(getattr(basis, "spec", None), "max_degree", None)
    if limits is None:
        limits = [deg[nu == k].max() if np.any(nu == k) else 0 for k in range(1, nu.max() + 1)]
    keep = np.array([d <= limits[n - 1] - shift + 1e-9 for d, n in zip(deg, nu)])
    ns, nB = len(species), len(deg)
    cols = list(range(ns))
    degs = [0.0] * ns
    for s in range(ns):
        cols += list(ns + s * nB + np.nonzero(keep)[0])
        degs += list(deg[keep])
    if extra_degs is not None and len(extra_degs):
        n_lin = ns * (1 + nB)
        cols += list(range(n_lin, n_lin + len(extra_degs)))
        degs += list(np.asarray(extra_degs, dtype=float))
    return np.array(cols), np.array(degs, dtype=float)


def type_balance_factors(config_types, gamma: float) -> np.ndarray:
    """Energy-weight factors balancing config types: ``b_c = (n / (T n_t(c)))^gamma``, normalised to mean 1.

    Parameters
    ----------
    config_types : sequence of str, length n
    gamma : float
        0: all 1; 1: every type gets the same total weight.

    Returns
    -------
    ndarray, shape (n,)

    >>> type_balance_factors(["a", "a", "a", "b"], 1.0).round(3).tolist()
    [0.667, 0.667, 0.667, 2.0]
    """
    types = np.asarray(list(config_types), dtype=object)
    if gamma == 0 or len(types) == 0:
        return np.ones(len(types))
    _, inv, counts = np.unique(types.astype(str), return_inverse=True, return_counts=True)
    b = (len(types) / (len(counts) * counts[inv].astype(float))) ** float(gamma)
    return b / b.mean()


def chosen_energy_factor(acc, chosen: dict):
    """The energy-weight factor of a CV choice: the scalar ``energy_factor``, or per configuration
    ``energy_factor * type_balance_factors(...)`` when ``chosen`` has a non-zero ``type_balance``."""
    gamma = float(chosen.get("type_balance", 0.0))
    if gamma == 0:
        return chosen["energy_factor"]
    n = len(acc.folds)
    types = acc.config_types if len(acc.config_types) == n else ["default"] * n
    return chosen["energy_factor"] * type_balance_factors(types, gamma)


def _system(acc: Accumulated, settings: FitSettings, train: np.ndarray, cols: np.ndarray, e_factor=1.0) -> NormalEquations:
    """Weighted normal equations of the training configurations (boolean mask), restricted to cols.
    ``e_factor``: scalar or per configuration (n_configs,)."""
    e_factor = np.asarray(e_factor)[train] if np.ndim(e_factor) else e_factor
    w = e_factor * acc.config_weights[train] / settings.energy_sigma**2
    ne = NormalEquations(acc.n_cols).add(acc.energy_rows[train], acc.energy_targets[train], w)
    for f in np.unique(acc.folds[train]):
        ne = ne + acc.forces[f] + acc.stress[f]
    return ne.select(cols)


def _scaled_system(acc: Accumulated, settings: FitSettings, train: np.ndarray, cols, e_factor: float) -> tuple:
    """:func:`_system` with every column scaled to unit RMS per training configuration; returns (ne, scale)."""
    ne = _system(acc, settings, train, cols, e_factor)
    d = column_scale(ne, train.sum())
    return scale_columns(ne, d), d


def _prior(degs, power, n_e0, n_extra: int = 0, extra_factor: float = 1.0) -> np.ndarray:
    """Prior diagonal ``(1 + degree)^power`` (E0 columns: ``E0_PRIOR``); the last ``n_extra``
    (appended, e.g. second-layer) columns times ``extra_factor``."""
    P = (1.0 + np.asarray(degs, dtype=float)) ** power
    P[:n_e0] = E0_PRIOR
    if n_extra:
        P[len(P) - n_extra :] *= extra_factor
    return P


def solve(acc: Accumulated, settings: FitSettings, cols, degs, n_species, power, lam=None, train=None, e_factor=1.0,
          n_extra: int = 0, extra_factor: float = 1.0):
    """Solve on the training mask with given hyperparameters; returns (theta_full, info dict).

    ``n_extra``, ``extra_factor``: the last ``n_extra`` columns' prior is multiplied by ``extra_factor``."""
    train = np.ones(len(acc.folds), bool) if train is None else train
    nes, d = _scaled_system(acc, settings, train, cols, e_factor)
    P = _prior(degs, power, n_species, n_extra, extra_factor)
    if settings.solver == "ridge":
        z, res = ridge_normal(nes, lam * data_scale(nes) * P, condition=True)
        info = {"condition_number": res.condition_number, "jitter": res.jitter, "method": res.method}
    else:
        # alpha/beta floored at the smallest ridge strength: nearly interpolated data otherwise send alpha -> 0
        z, post = blr_normal(nes, prior_diag=P, min_ratio=min(settings.lam) * data_scale(nes))
        info = {"alpha": post.alpha, "beta": post.beta, "gamma": post.gamma, "log_evidence": post.log_evidence,
                "converged": post.converged, "posterior": post, "column_scale": d}
    theta = np.zeros(acc.n_cols)
    theta[cols] = z / d
    return theta, info


def _fold_scores(acc, settings, theta, f) -> tuple[float, float, float]:
    m = acc.folds == f
    de = acc.energy_rows[m] @ theta - acc.energy_targets[m]
    e_rmse = float(np.sqrt(np.mean(de**2))) if m.any() else 0.0
    e_mae = float(np.mean(np.abs(de))) if m.any() else 0.0
    ne = acc.forces[f]
    if acc.force_counts[f] > 0:
        f_rmse = float(np.sqrt(ne.residual_sum_of_squares(theta) / acc.force_weight_sums[f]))
    else:
        f_rmse = 0.0
    return e_mae, e_rmse, f_rmse


def cv_fold_solutions(acc: Accumulated, settings: FitSettings, cols, degs, n_species: int, power: float, e_factor: float,
                      fold: int, n_extra: int = 0, extra_factor: float = 1.0) -> dict:
    """Parameter vectors fitted without ``fold``, for every ``lam`` of the grid (the fast CV path).

    The normal equations of the other folds are summed once per fold and every ``lam`` is solved
    from them (:func:`~acehamil.fitting.ridge_path`); equals :func:`solve` with
    ``train=acc.folds != fold``.  BLR: one solve, keyed ``None``.

    Returns
    -------
    dict {lam: ndarray (n_cols,)}
    """
    nes, d = _scaled_system(acc, settings, acc.folds != fold, cols, e_factor)
    P = _prior(degs, power, n_species, n_extra, extra_factor)
    if settings.solver == "ridge":
        scale = data_scale(nes)
        path = ridge_path(nes, P, [lam * scale for lam in settings.lam])
        zs = {lam: path[lam * scale] for lam in settings.lam}
    else:
        zs = {None: blr_normal(nes, prior_diag=P, min_ratio=min(settings.lam) * data_scale(nes))[0]}
    out = {}
    for lam, z in zs.items():
        theta = np.zeros(acc.n_cols)
        theta[cols] = z / d
        out[lam] = theta
    return out


def cross_validate(acc: Accumulated, basis, species, settings: FitSettings, progress: bool = False, extra_degs=None) -> list[dict]:
    """k-fold CV over (degree shift, energy factor, power, lam) on the training set; rows sorted best first
    by ``settings.cv_criterion`` (:func:`~.cv_criterion.rank_cv`).

    With appended columns (``extra_degs``, the multilayer model's second layer) the grid also
    runs over ``settings.layer_prior_factors`` (key ``layer_prior``).

    Each row: ``shift, energy_factor, power, lam, score, energy_mae_meV_per_atom, energy_rmse_meV_per_atom,
    force_rmse_eV_per_A`` (fold means), ``eligible`` (within the force budget of ``"energy_mae"``; always true for
    ``"combined"``), and ``layer_prior`` with appended columns.
    """
    nf = int(settings.n_folds)
    n_extra = 0 if extra_degs is None else len(extra_degs)
    factors = settings.layer_prior_factors if n_extra else (None,)
    grid = []
    for shift in settings.degree_shifts:
        cols, degs = _columns(basis, species, int(shift), extra_degs)
        for ef, power, xf, bal in [(ef, pw, xf, bal) for ef in settings.energy_factors for pw in settings.power for xf in factors
                                   for bal in settings.type_balance]:
            lams = settings.lam if settings.solver == "ridge" else (None,)
            scores = {lam: [] for lam in lams}
            efv = chosen_energy_factor(acc, {"energy_factor": ef, "type_balance": bal})
            for f in range(nf):
                sols = cv_fold_solutions(acc, settings, cols, degs, len(species), power, efv, f, n_extra, 1.0 if xf is None else xf)
                for lam, theta in sols.items():
                    scores[lam].append(_fold_scores(acc, settings, theta, f))
            for lam, sc in scores.items():
                sc = np.array(sc)
                e_mae, e_rmse, f_rmse = sc.mean(axis=0)
                grid.append({"shift": int(shift), "energy_factor": float(ef), "power": float(power), "lam": lam,
                             "n_features": int(len(cols)), "energy_mae_meV_per_atom": e_mae * 1e3,
                             "energy_rmse_meV_per_atom": e_rmse * 1e3, "force_rmse_eV_per_A": f_rmse})
                score = grid[-1]["score"] = row_score(grid[-1], settings)
                if xf is not None:
                    grid[-1]["layer_prior"] = float(xf)
                if bal != 0:
                    grid[-1]["type_balance"] = float(bal)
                if progress:
                    g = grid[-1]
                    lp = ("" if xf is None else f" layer_prior={xf}") + ("" if bal == 0 else f" type_balance={bal}")
                    print(f"  cv shift={shift} efac={ef} power={power}{lp} lam={lam}: E_mae={g['energy_mae_meV_per_atom']:.2f} meV/atom "
                          f"F_rmse={f_rmse:.4f} eV/A score={score:.3f}", file=sys.stderr, flush=True)
    return rank_cv(grid, settings)


def cv_energy_errors(acc: Accumulated, basis, species, settings: FitSettings, chosen: dict, extra_degs=None) -> np.ndarray:
    """Held-out energy error of every training configuration under k-fold CV.

    Configuration ``k`` is predicted by the model fitted, with the hyperparameters
    ``chosen`` (a :attr:`FitResult.chosen` dict), on the folds other than its own;
    this is how well the fit transfers to a configuration it has not seen.

    Parameters
    ----------
    acc : Accumulated
    basis : ACEBasis
    species : sequence of int
    settings : FitSettings
    chosen : dict
        ``shift``, ``energy_factor``, ``power``, ``lam`` (and ``layer_prior`` with appended columns).

    Returns
    -------
    ndarray, shape (n_configs,), eV/atom
        Prediction minus target (repulsion included on both sides).
    """
    cols, degs = _columns(basis, species, int(chosen["shift"]), extra_degs)
    n_extra = 0 if extra_degs is None else len(extra_degs)
    err = np.zeros(len(acc.folds))
    for f in np.unique(acc.folds):
        held = acc.folds == f
        theta, _ = solve(acc, settings, cols, degs, len(species), chosen["power"], chosen["lam"], train=~held,
                         e_factor=chosen_energy_factor(acc, chosen), n_extra=n_extra, extra_factor=chosen.get("layer_prior", 1.0))
        err[held] = acc.energy_rows[held] @ theta - acc.energy_targets[held]
    return err


@dataclass(frozen=True, eq=False)
class FitResult:
    """A fitted potential with its fit report.

    Attributes
    ----------
    potential : ACEPotential
    cv : list of dict
        Cross-validation table, best first (empty without CV).
    chosen : dict
        Hyperparameters used for the final fit.
    info : dict
        Solver diagnostics (condition number or BLR alpha/beta/evidence).
    seconds : dict
        ``features``, ``cv``, ``solve`` wall times, s.
    cv_by_type : dict
        Held-out (CV) energy errors of the training configurations with the chosen
        hyperparameters, per ``config_type`` (see :func:`~.potential_data.summarise_errors`);
        empty without CV.
    """

    potential: ACEPotential
    cv: list
    chosen: dict
    info: dict
    seconds: dict
    cv_by_type: dict = field(default_factory=dict)


def fit_potential(configs, basis, species, settings: FitSettings | None = None, repulsion: RepulsionSpec | None = None,
                  progress: bool = False, accumulated: Accumulated | None = None) -> FitResult:
    """Fit E0 and ACE coefficients to labelled configurations, hyperparameters by k-fold CV.

    Parameters
    ----------
    configs : list of Config
        Training data only (never the test set).
    basis : ACEBasis
        The largest basis; CV may cut its degree back (``settings.degree_shifts``).
    species : sequence of int
    settings : FitSettings, optional
    repulsion : RepulsionSpec, optional
    progress : bool
    accumulated : Accumulated, optional
        Reuse design data from :func:`accumulate` with the same basis, configs, sigmas,
        folds and repulsion (e.g. cached on disk); skips the feature evaluation.

    Returns
    -------
    FitResult
    """
    settings = settings or FitSettings()
    species = tuple(int(z) for z in species)
    if accumulated is not None:
        acc = accumulated
        if len(acc.folds) != len(configs) or acc.n_cols != len(species) * (1 + len(feature_degrees(basis))):
            raise ValueError("accumulated design data do not match these configurations/basis")
    else:
        acc = accumulate(basis, species, configs, settings, repulsion, progress)
    theta, cv, chosen, info, cv_by_type, (t1, t2, t3), cols = select_and_solve(acc, basis, species, settings, progress)
    meta = {"settings": settings.to_dict(), "chosen": chosen, "n_configs": len(configs), "n_atoms": acc.n_atoms,
            "n_active_columns": int(len(cols)),
            "solver_info": {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))}}
    pot = ACEPotential.from_parameter_vector(basis, species, theta, repulsion, meta)
    return FitResult(pot, cv, chosen, info, {"features": acc.seconds, "cv": t2 - t1, "solve": t3 - t2}, cv_by_type)


def select_and_solve(acc: Accumulated, basis, species, settings: FitSettings, progress: bool = False, extra_degs=None):
    """Hyperparameters by k-fold CV (when ``settings.n_folds > 1``), then the final solve on all of ``acc``.

    Returns
    -------
    theta, cv, chosen, info, cv_by_type, (t1, t2, t3) wall-clock marks, cols (active columns)
    """
    n_configs = len(acc.folds)
    t1 = time.perf_counter()
    if settings.n_folds > 1 and n_configs >= settings.n_folds:
        cv = cross_validate(acc, basis, species, settings, progress, extra_degs)
        best = cv[0]
        chosen = {"shift": best["shift"], "energy_factor": best["energy_factor"], "power": best["power"], "lam": best["lam"]}
        if "layer_prior" in best:
            chosen["layer_prior"] = best["layer_prior"]
        if best.get("type_balance", 0.0) != 0:
            chosen["type_balance"] = best["type_balance"]
        # design data cached before config types were stored carry none: one group
        types = acc.config_types if len(acc.config_types) == n_configs else ["default"] * n_configs
        errors = cv_energy_errors(acc, basis, species, settings, chosen, extra_degs)
        cv_by_type = summarise_errors([(t, e, None, None) for t, e in zip(types, errors, strict=True)])
    else:
        cv_by_type = {}
        cv = []
        chosen = {"shift": int(settings.degree_shifts[0]), "energy_factor": float(settings.energy_factors[0]),
                  "power": float(settings.power[0]),
                  "lam": settings.lam[0] if settings.solver == "ridge" else None}
        if extra_degs is not None and len(extra_degs):
            chosen["layer_prior"] = float(settings.layer_prior_factors[0])
        if settings.type_balance[0] != 0:
            chosen["type_balance"] = float(settings.type_balance[0])
    t2 = time.perf_counter()
    cols, degs = _columns(basis, species, chosen["shift"], extra_degs)
    n_extra = 0 if extra_degs is None else len(extra_degs)
    theta, info = solve(acc, settings, cols, degs, len(species), chosen["power"], chosen["lam"], e_factor=chosen_energy_factor(acc, chosen),
                        n_extra=n_extra, extra_factor=chosen.get("layer_prior", 1.0))
    t3 = time.perf_counter()
    return theta, cv, chosen, info, cv_by_type, (t1, t2, t3), cols

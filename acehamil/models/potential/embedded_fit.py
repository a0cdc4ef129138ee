"""Fitting embedded ACE potentials (:mod:`.embedded`) by variable projection and L-BFGS.

The loss is the linear fit's (:mod:`.fit`: weighted energy-per-atom,
force and stress rows, ridge prior ``lam (1 + degree)^power`` on unit-RMS-scaled
linear coefficients) plus a ridge ``lam_density * n_train |theta|^2`` on the
density coefficients ``theta`` (scaled to unit-RMS density features).

Variable projection: for given densities the linear coefficients are the ridge
solution of the residual ``y - nl(theta)`` (one Cholesky factor per fit, reused),
so L-BFGS runs over ``theta`` only; by the envelope theorem the gradient of the
projected loss is the partial gradient at the optimal linear part.  With
``theta = 0`` the model is the linear fit.

Everything an iteration needs is cached once per training set
(:class:`EmbeddingData`): the dense linear design rows, and, for the density
features, per-site values ``B_i`` and per-particle gradients ``dB_i/dvec_p``.
An iteration is then matrix products::

    rho_i^k = B_i . u_k                      (u = theta / feature scale)
    g_p     = sum_k F_k'(rho_i^k) (dB_i/dvec_p . u_k)    -> forces, virial
    dL/du_k = sum_i [q_i F_k' B_i + F_k'' T_ik B_i] + sum_p F_k'(rho_i^k) dB_i/dvec_p . w_p

with ``w_p`` the force/stress adjoint of particle ``p``.  Hyperparameters of the
densities (``lam_density``) are chosen by k-fold CV on the training set (the
same folds as the linear fit); the linear hyperparameters are those the linear
CV chose.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.optimize

from .model import VOIGT, feature_degrees
from .cv_criterion import rank_cv, row_score
from .data import summarise_errors
from .embedded import EmbeddedACEPotential, embed
from .embedded_data import EmbeddingData, density_columns, embedding_data  # noqa: F401  (public here as before)
from .fit import FitResult, FitSettings, _columns, _prior, chosen_energy_factor, fit_potential


@dataclass(frozen=True)
class EmbeddingSettings:
    """Settings of the densities of an embedded fit (defaults in brackets).

    Attributes
    ----------
    embeddings : tuple of str
        One embedding per density (:data:`~.embedded.EMBEDDINGS`). [("fs", "fs")]
    density_max_degree : tuple of float
        Per correlation order nu, the largest feature degree entering the densities. [(9, 6, 4, 3)]
    lam : tuple of float
        Density ridge strengths tried by CV (relative, as :attr:`FitSettings.lam`). [(1e-3, 1e-1)]
    maxiter : int
        L-BFGS iterations per fit. [300]
    init_scale : float
        Standard deviation of each initial density over the training sites. [1.0]
    seed : int
        Initial density directions. [0]
    cv : bool
        Run the k-fold CV of the densities (needed to choose among several ``lam``;
        without it the first ``lam`` is used and no held-out errors are reported). [True]
    keep_base : bool
        Let the CV choose "no densities": when the starting fit (its own CV row) scores better
        than every ``lam``, the result is that fit.  Only :func:`~.embedded_multilayer_fit.fit_embedded_multilayer`,
        whose starting fit has the same model class, supports it. [False]
    """

    embeddings: tuple = ("fs", "fs")
    density_max_degree: tuple = (9, 6, 4, 3)
    lam: tuple = (1e-3, 1e-1)
    maxiter: int = 300
    init_scale: float = 1.0
    seed: int = 0
    cv: bool = True
    keep_base: bool = False

    def __post_init__(self):
        emb = (self.embeddings,) if isinstance(self.embeddings, str) else tuple(self.embeddings)
        if not emb:
            raise ValueError("embeddings needs at least one name")
        for e in emb:
            embed(e, 0.0)
        object.__setattr__(self, "embeddings", tuple(str(e) for e in emb))
        md = tuple(float(x) for x in (self.density_max_degree if np.ndim(self.density_max_degree) else (self.density_max_degree,)))
        lam = tuple(float(x) for x in (self.lam if np.ndim(self.lam) else (self.lam,)))
        if not md or not lam or any(v < 0 for v in lam + md):
            raise ValueError("density_max_degree and lam need non-negative values")
        object.__setattr__(self, "density_max_degree", md)
        object.__setattr__(self, "lam", lam)
        if int(self.maxiter) != self.maxiter or self.maxiter < 1:
            raise ValueError(f"maxiter must be a positive integer, got {self.maxiter}")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _jittered_cholesky(H, unit: float):
    """Cholesky factor of ``H`` (diagonal ~ ``unit``), with the growing relative jitter of
    :func:`acehamil.fitting.solvers.ridge_normal` where ``H`` is numerically singular (a starting fit with an
    almost vanishing prior, e.g. lam 1e-12 times a second-layer factor 3e-4, on rank-deficient columns).

    Returns
    -------
    chol : tuple
        ``scipy.linalg.cho_factor`` output of ``H + jitter * unit * I``.
    jitter : float
        The relative jitter added (0 if none).
    """
    for jit in (0.0, 1e-14, 1e-12, 1e-10, 1e-8):
        try:
            return scipy.linalg.cho_factor(H + (jit * unit) * np.eye(len(H)) if jit else H, lower=True), jit
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the projected normal equations stay singular with a relative jitter of 1e-8")


def _index_or_slice(mask):
    idx = np.flatnonzero(mask)
    return slice(None) if len(idx) == len(mask) else idx


class ProjectedLoss:
    """The variable-projection loss of one training mask (module docstring).

    Parameters
    ----------
    data : EmbeddingData
    settings : FitSettings
    cols : ndarray of int
        Linear columns in use (degree cut-back); ``degs`` their prior degrees.
    power, lam : float
    e_factor : float or ndarray, shape (n_configs,)
        Linear hyperparameters (as chosen by the linear CV; ``e_factor`` per configuration with a
        config-type balance, :func:`~.fit.chosen_energy_factor`).
    embeddings : tuple of str
    lam_density : float
    train : ndarray of bool, shape (n_configs,)
    n_extra, extra_factor : int, float
        The last ``n_extra`` of ``cols`` (appended columns, e.g. a second layer's) have their
        prior multiplied by ``extra_factor`` (as :func:`~.fit.solve`).
    """

    def __init__(self, data: EmbeddingData, settings: FitSettings, cols, degs, power, lam, e_factor, embeddings, lam_density, train,
                 n_extra: int = 0, extra_factor: float = 1.0):
        self.data, self.embeddings = data, tuple(embeddings)
        self.cols = np.asarray(cols)
        train = np.asarray(train, bool)
        n_train = max(int(train.sum()), 1)
        w = data.config_weights * train
        self.wE = e_factor * w / settings.energy_sigma**2
        atom_w = (w * data.has_forces / settings.force_sigma**2)[data.atom_config]
        self.wF = np.repeat(atom_w, 3)
        self.wS = np.repeat((w * data.has_stress / settings.stress_sigma**2)[:, None], 6, axis=1)
        self.use_stress = bool(np.any(self.wS > 0))
        self.AE = data.energy_rows[:, self.cols]
        self.AF = data.force_rows[:, self.cols]
        self.AS = data.stress_rows[:, :, self.cols].reshape(-1, len(self.cols))
        AtA = self.AE.T @ (self.wE[:, None] * self.AE) + self.AF.T @ (self.wF[:, None] * self.AF)
        if self.use_stress:
            AtA += self.AS.T @ (self.wS.ravel()[:, None] * self.AS)
        d = np.sqrt(np.diag(AtA) / n_train)
        self.d = np.where(d > 1e-300, d, 1.0)
        self.prior = lam * n_train * _prior(degs, power, data.n_species, n_extra, extra_factor)
        H = AtA / self.d[:, None] / self.d[None, :] + np.diag(self.prior)
        self.chol, self.jitter = _jittered_cholesky(H, n_train)
        sites = train[data.atom_config]
        dm = np.sqrt(np.mean(data.B[sites] ** 2, axis=0)) if sites.any() else np.ones(data.B.shape[1])
        self.dm = np.where(dm > 1e-300, dm, 1.0)
        self.lam_density = lam_density * n_train
        self.K = len(self.embeddings)
        self.shape = (data.n_species, self.K, data.B.shape[1])
        # per species, the sites and particles of its centres (a full slice when one species: no copies)
        self._sp_atoms = [_index_or_slice(data.atom_species == s) for s in range(data.n_species)]
        self._sp_pairs = [_index_or_slice(data.atom_species[data.pair_i] == s) for s in range(data.n_species)]
        self._starts = np.concatenate([[0], np.cumsum(data.natoms)])
        self._pair_cfg = data.atom_config[data.pair_i]
        self._rhs_scale = 1.0 / self.d

    # -- the nonlinear part --------------------------------------------------------------
    def densities(self, u) -> np.ndarray:
        """``rho`` (n_atoms, K) for raw density coefficients ``u`` (n_species, K, m)."""
        rho = np.zeros((len(self.data.B), self.K))
        for s, at in enumerate(self._sp_atoms):
            rho[at] = self.data.B[at] @ u[s].T
        return rho

    def _nonlinear(self, u):
        data = self.data
        rho = self.densities(u)
        F, dF, ddF = (np.zeros_like(rho) for _ in range(3))
        for k, name in enumerate(self.embeddings):
            F[:, k], dF[:, k], ddF[:, k] = embed(name, rho[:, k])
        e_nl = np.bincount(data.atom_config, F.sum(axis=1), minlength=len(data.natoms)) / data.natoms
        Gc = np.zeros((3, len(data.pair_i), self.K))
        for s, pp in enumerate(self._sp_pairs):
            for x in range(3):
                Gc[x, pp] = data.G[x, pp] @ u[s].T
        dFp = dF[data.pair_i]
        g = np.einsum("xpk,pk->px", Gc, dFp)
        na = len(data.B)
        f_nl = np.stack([np.bincount(data.pair_i, g[:, x], minlength=na) - np.bincount(data.pair_j, g[:, x], minlength=na)
                         for x in range(3)], axis=1)
        s_nl = None
        if self.use_stress:
            W = np.zeros((len(data.natoms), 3, 3))
            np.add.at(W, self._pair_cfg, g[:, :, None] * data.pair_vec[:, None, :])
            W = 0.5 * (W + W.transpose(0, 2, 1))
            vol = np.where(np.isfinite(data.volumes), data.volumes, 1.0)
            s_nl = np.stack([W[:, a, b] for a, b in VOIGT], axis=1) / vol[:, None]
        return rho, dF, ddF, Gc, dFp, e_nl, f_nl.ravel(), s_nl

    def __call__(self, theta):
        """Loss and its gradient with respect to the scaled density coefficients ``theta`` (flat)."""
        data = self.data
        th = np.asarray(theta, dtype=float).reshape(self.shape)
        u = th / self.dm
        rho, dF, ddF, Gc, dFp, e_nl, f_nl, s_nl = self._nonlinear(u)
        rE = data.energy_targets - e_nl
        rF = data.force_targets - f_nl
        rhs = self.AE.T @ (self.wE * rE) + self.AF.T @ (self.wF * rF)
        if self.use_stress:
            rS = (data.stress_targets - s_nl).ravel()
            rhs += self.AS.T @ (self.wS.ravel() * rS)
        z = scipy.linalg.cho_solve(self.chol, rhs * self._rhs_scale)
        a = z / self.d
        rE = rE - self.AE @ a
        rF = rF - self.AF @ a
        vE, vF = self.wE * rE, self.wF * rF
        loss = float(rE @ vE + rF @ vF + z @ (self.prior * z) + self.lam_density * th.ravel() @ th.ravel())
        # adjoints: d(v . nl)/d(site energy) and /d(particle gradient g_p)
        q = (vE / data.natoms)[data.atom_config]
        vFa = vF.reshape(-1, 3)
        w = vFa[data.pair_i] - vFa[data.pair_j]
        if self.use_stress:
            rS = rS - self.AS @ a
            vS = (self.wS.ravel() * rS).reshape(-1, 6)
            loss += float(rS @ vS.ravel())
            vol = np.where(np.isfinite(data.volumes), data.volumes, 1.0)
            M = np.zeros((len(data.natoms), 3, 3))
            for v, (a_, b_) in enumerate(VOIGT):
                M[:, a_, b_] += 0.5 * vS[:, v] / vol
                M[:, b_, a_] += 0.5 * vS[:, v] / vol
            w = w + np.einsum("pab,pb->pa", M[self._pair_cfg], data.pair_vec)
        T = np.einsum("xpk,px->pk", Gc, w)
        Tsite = np.stack([np.bincount(data.pair_i, T[:, k], minlength=len(data.B)) for k in range(self.K)], axis=1)
        site_coef = q[:, None] * dF + ddF * Tsite  # (n_atoms, K)
        grad_u = np.zeros(self.shape)
        for s, at in enumerate(self._sp_atoms):
            grad_u[s] = site_coef[at].T @ data.B[at]
        for s, pp in enumerate(self._sp_pairs):
            for x in range(3):
                grad_u[s] += (dFp[pp] * w[pp, x:x + 1]).T @ data.G[x, pp]
        grad = -2.0 * grad_u / self.dm + 2.0 * self.lam_density * th
        return loss, grad.ravel()

    def linear_part(self, theta) -> np.ndarray:
        """Linear coefficients over ``cols`` for densities ``theta`` (the projection)."""
        u = np.asarray(theta, dtype=float).reshape(self.shape) / self.dm
        _, _, _, _, _, e_nl, f_nl, s_nl = self._nonlinear(u)
        rhs = self.AE.T @ (self.wE * (self.data.energy_targets - e_nl)) + self.AF.T @ (self.wF * (self.data.force_targets - f_nl))
        if self.use_stress:
            rhs += self.AS.T @ (self.wS.ravel() * (self.data.stress_targets - s_nl).ravel())
        return scipy.linalg.cho_solve(self.chol, rhs * self._rhs_scale) / self.d

    def predict(self, theta):
        """Per-atom energies (n_configs,) and forces (3 n_atoms,) of the model ``theta`` (and its projection)."""
        a = self.linear_part(theta)
        u = np.asarray(theta, dtype=float).reshape(self.shape) / self.dm
        _, _, _, _, _, e_nl, f_nl, _ = self._nonlinear(u)
        return self.AE @ a + e_nl, self.AF @ a + f_nl, a

    def initial(self, scale: float, seed: int) -> np.ndarray:
        """Random density directions, each scaled to standard deviation ``scale`` over the training sites."""
        rng = np.random.default_rng(seed)
        th = rng.normal(size=self.shape)
        sites = self.wF.reshape(-1, 3)[:, 0] > 0
        if not sites.any():
            sites = np.ones(len(self.data.B), bool)
        rho = self.densities(th / self.dm)[sites]
        std = np.where(rho.std(axis=0) > 0, rho.std(axis=0), 1.0)
        return (th * scale / std[None, :, None]).ravel()


def minimise(loss: ProjectedLoss, theta0, maxiter: int, progress: bool = False):
    """L-BFGS on the projected loss; returns (theta, scipy OptimizeResult)."""
    t0, count = time.perf_counter(), [0]

    def report(intermediate_result):
        count[0] += 1
        if count[0] % 25 == 0:
            print(f"    L-BFGS {count[0]}: loss {intermediate_result.fun:.6g}, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)

    res = scipy.optimize.minimize(loss, theta0, jac=True, method="L-BFGS-B", callback=report if progress else None,
                                  options={"maxiter": int(maxiter), "maxcor": 30, "ftol": 1e-12, "gtol": 1e-10})
    return res.x, res


def _held_out(data: EmbeddingData, loss: ProjectedLoss, theta, held) -> tuple:
    """Energy errors (eV/atom) of the held-out configurations and their force RMSE (eV/Å)."""
    e, f, _ = loss.predict(theta)
    de = e[held] - data.energy_targets[held]
    rows = np.repeat((held & data.has_forces)[data.atom_config], 3)
    df = f[rows] - data.force_targets[rows]
    return de, (float(np.sqrt(np.mean(df**2))) if len(df) else 0.0)


@dataclass(frozen=True, eq=False)
class EmbeddedFitResult:
    """An embedded potential with its fit report (as :class:`~.fit.FitResult`).

    Attributes
    ----------
    potential : EmbeddedACEPotential
    linear : FitResult
        The linear fit it was initialised from (its CV chose the linear hyperparameters).
    cv : list of dict
        Density CV table, best first: ``lam_density, score, energy_mae_meV_per_atom,
        energy_rmse_meV_per_atom, force_rmse_eV_per_A`` (+ the linear model's row, ``lam_density = None``).
    chosen : dict
    info : dict
        L-BFGS diagnostics of the final fit.
    seconds : dict
    cv_by_type : dict
        Held-out energy errors per config_type with the chosen hyperparameters.
    """

    potential: EmbeddedACEPotential
    linear: FitResult
    cv: list
    chosen: dict
    info: dict
    seconds: dict
    cv_by_type: dict = field(default_factory=dict)


def fit_embedded(configs, basis, species, settings: FitSettings | None = None, emb: EmbeddingSettings | None = None,
                 repulsion=None, progress: bool = False, data: EmbeddingData | None = None,
                 linear: FitResult | None = None) -> EmbeddedFitResult:
    """Fit an embedded ACE potential: linear fit and its CV, then densities by L-BFGS, ``lam_density`` by CV.

    Parameters
    ----------
    configs : list of Config
        Training data only.
    basis : ACEBasis
    species : sequence of int
    settings : FitSettings, optional
        Weights, folds and the linear hyperparameter grids.
    emb : EmbeddingSettings, optional
    repulsion : RepulsionSpec, optional
    progress : bool
    data : EmbeddingData, optional
        Reuse design data from :func:`embedding_data` (same basis, configs, settings, repulsion).
    linear : FitResult, optional
        The linear fit of the same data, basis and settings (skips its CV here).

    Returns
    -------
    EmbeddedFitResult
    """
    settings = settings or FitSettings()
    emb = emb or EmbeddingSettings()
    if emb.keep_base:
        raise ValueError("keep_base needs a starting fit of the same model class (fit_embedded_multilayer), not the linear one")
    species = tuple(int(z) for z in species)
    if data is None:
        data = embedding_data(basis, species, configs, settings, density_columns(basis, emb.density_max_degree), repulsion, progress)
    if len(data.folds) != len(configs) or data.n_cols != len(species) * (1 + len(feature_degrees(basis))):
        raise ValueError("embedding design data do not match these configurations/basis")
    t0 = time.perf_counter()
    if linear is None:
        linear = fit_potential(configs, basis, species, settings, repulsion, progress=progress, accumulated=data.accumulated(settings))
    ch = linear.chosen
    cols, degs = _columns(basis, species, int(ch["shift"]))
    t1 = time.perf_counter()
    theta, a, loss, res, cv, lam_d, cv_by_type, (t2, t3) = fit_densities(data, settings, emb, cols, degs, ch, linear.cv, progress)
    ns, nB = len(species), len(feature_degrees(basis))
    full = np.zeros(data.n_cols)
    full[cols] = a
    dens = densities_from_theta(data, loss, theta, nB)
    chosen = {**ch, "lam_density": lam_d}
    info, meta = fit_record(res, data, settings, emb, chosen, len(configs), len(cols))
    pot = EmbeddedACEPotential(basis, species, full[:ns], full[ns:].reshape(ns, nB), dens, emb.embeddings, repulsion, meta)
    return EmbeddedFitResult(pot, linear, cv, chosen, info,
                             {"features": data.seconds, "linear": t1 - t0, "cv": t2 - t1, "solve": t3 - t2}, cv_by_type)


def fit_record(res, data: EmbeddingData, settings: FitSettings, emb: EmbeddingSettings, chosen: dict, n_configs: int,
               n_cols: int, extra: dict | None = None) -> tuple:
    """``(solver_info, metadata)`` of a finished density fit (``res``: scipy's L-BFGS result), as the potential
    stores them; ``extra`` metadata go before ``solver_info``."""
    info = {"iterations": int(res.nit), "loss": float(res.fun), "converged": bool(res.success), "message": str(res.message),
            "n_density_features": int(len(data.density_cols))}
    meta = {"settings": settings.to_dict(), "embedding_settings": emb.to_dict(), "chosen": chosen, "n_configs": n_configs,
            "n_atoms": int(data.natoms.sum()), "n_active_columns": int(n_cols), **(extra or {}), "solver_info": info}
    return info, meta


def densities_from_theta(data: EmbeddingData, loss: ProjectedLoss, theta, n_features: int) -> np.ndarray:
    """Density coefficients over all ``n_features`` invariant features, shape (n_species, K, n_features)."""
    dens = np.zeros((data.n_species, loss.K, n_features))
    dens[:, :, data.density_cols] = np.asarray(theta).reshape(loss.shape) / loss.dm
    return dens


def density_cv_row(data: EmbeddingData, settings: FitSettings, emb: EmbeddingSettings, cols, degs, chosen: dict,
                   lam_density: float, n_extra: int = 0) -> tuple:
    """One row of the density CV: k-fold held-out errors of densities ``emb`` at ``lam_density``.

    Each fold's L-BFGS fit (``emb.maxiter`` iterations from ``emb.init_scale``, ``emb.seed``) sees the
    other folds only; the linear (and appended, ``n_extra``) hyperparameters are ``chosen``'s, fixed.

    Parameters
    ----------
    data, settings, emb, cols, degs, chosen, n_extra
        As :func:`fit_densities`.
    lam_density : float

    Returns
    -------
    row : dict
        ``lam_density``, ``energy_mae_meV_per_atom``, ``energy_rmse_meV_per_atom`` (fold means,
        meV/atom), ``force_rmse_eV_per_A`` (fold mean), ``score`` (:func:`~.cv_criterion.row_score`).
    errors : ndarray, shape (n_configs,)
        Held-out energy error of every configuration, eV/atom.
    """
    lam_lin = chosen["lam"] if chosen["lam"] is not None else settings.lam[0]
    args = (data, settings, cols, degs, chosen["power"], lam_lin, chosen_energy_factor(data, chosen), emb.embeddings)
    extra = {"n_extra": int(n_extra), "extra_factor": float(chosen.get("layer_prior", 1.0)) if n_extra else 1.0}
    n = len(data.folds)
    errs, sc = np.zeros(n), []
    for f in range(int(settings.n_folds)):
        held = data.folds == f
        loss = ProjectedLoss(*args, lam_density, ~held, **extra)
        theta, _ = minimise(loss, loss.initial(emb.init_scale, emb.seed), emb.maxiter)
        de, f_rmse = _held_out(data, loss, theta, held)
        errs[held] = de
        sc.append((np.mean(np.abs(de)), np.sqrt(np.mean(de**2)), f_rmse))
    e_mae, e_rmse, f_rmse = np.mean(sc, axis=0)
    row = {"lam_density": lam_density, "energy_mae_meV_per_atom": e_mae * 1e3, "energy_rmse_meV_per_atom": e_rmse * 1e3,
           "force_rmse_eV_per_A": float(f_rmse)}
    row["score"] = row_score(row, settings)
    return row, errs


def fit_densities(data: EmbeddingData, settings: FitSettings, emb: EmbeddingSettings, cols, degs, chosen: dict, linear_cv=None,
                  progress: bool = False, n_extra: int = 0, keep_base: bool = False):
    """CV of ``lam_density`` (if ``emb.cv``) and the final L-BFGS fit, the linear hyperparameters fixed.

    Parameters
    ----------
    data : EmbeddingData
    settings : FitSettings
    emb : EmbeddingSettings
    cols, degs : ndarray
        Linear columns in use and their prior degrees (:func:`~.fit._columns`).
    chosen : dict
        The linear (or multilayer) CV's choice: ``power``, ``lam``, ``energy_factor`` (and
        ``layer_prior`` for the last ``n_extra`` columns).
    linear_cv : list of dict, optional
        That CV's table; its best row is listed in the density CV table (``lam_density = None``).
    progress : bool
    n_extra : int
        Appended (second-layer) columns at the end of ``cols``.
    keep_base : bool
        If the starting fit's CV row (``linear_cv[0]``) scores best, skip the final fit and return
        ``theta = a = loss = res = lam_density = None`` (the starting fit is the result).

    Returns
    -------
    theta, a, loss, res, cv, lam_density, cv_by_type, (t_cv_end, t_solve_end)
        Scaled density coefficients, linear coefficients over ``cols``, the final
        :class:`ProjectedLoss`, scipy's result, the CV table, the chosen ``lam_density``,
        held-out energy errors per config type, and two ``perf_counter`` stamps.
    """
    lam_lin = chosen["lam"] if chosen["lam"] is not None else settings.lam[0]
    args = (data, settings, cols, degs, chosen["power"], lam_lin, chosen_energy_factor(data, chosen), emb.embeddings)
    extra = {"n_extra": int(n_extra), "extra_factor": float(chosen.get("layer_prior", 1.0)) if n_extra else 1.0}
    n = len(data.folds)
    nf = int(settings.n_folds)
    cv, cv_errors = [], {}
    if emb.cv and nf > 1 and n >= nf:
        if linear_cv:
            best = linear_cv[0]
            cv.append({"lam_density": None, "score": best["score"], "energy_mae_meV_per_atom": best["energy_mae_meV_per_atom"],
                       "energy_rmse_meV_per_atom": best["energy_rmse_meV_per_atom"], "force_rmse_eV_per_A": best["force_rmse_eV_per_A"]})
        for lam_d in emb.lam:
            row, errs = density_cv_row(data, settings, emb, cols, degs, chosen, lam_d, n_extra)
            cv.append(row)
            cv_errors[lam_d] = errs
            if progress:
                print(f"  embedded cv lam_density={lam_d}: E_mae={row['energy_mae_meV_per_atom']:.2f} meV/atom "
                      f"F_rmse={row['force_rmse_eV_per_A']:.4f} eV/A score={row['score']:.3f}", file=sys.stderr, flush=True)
        # the starting fit's whole table sets the force budget of "energy_mae" (its best row is in ``cv``)
        ref = min(r["force_rmse_eV_per_A"] for r in linear_cv) if linear_cv else None
        cv = rank_cv(cv, settings, force_reference=ref)
        lam_d = cv[0]["lam_density"] if keep_base else next(r["lam_density"] for r in cv if r["lam_density"] is not None)
        types = data.config_types if len(data.config_types) == n else ["default"] * n
        cv_by_type = ({} if lam_d is None  # (the starting fit's own table applies)
                      else summarise_errors([(t, e, None, None) for t, e in zip(types, cv_errors[lam_d], strict=True)]))
    else:
        lam_d, cv_by_type = emb.lam[0], {}
    t2 = time.perf_counter()
    if lam_d is None:  # keep_base: the CV prefers the starting fit (no densities)
        return None, None, None, None, cv, None, cv_by_type, (t2, t2)
    loss = ProjectedLoss(*args, lam_d, np.ones(n, bool), **extra)
    if progress:
        print(f"  embedded final fit: lam_density={lam_d}, linear part at theta=0: loss {loss(0 * loss.initial(1.0, 0))[0]:.6g}",
              file=sys.stderr, flush=True)
    theta, res = minimise(loss, loss.initial(emb.init_scale, emb.seed), emb.maxiter, progress)
    a = loss.linear_part(theta)
    return theta, a, loss, res, cv, lam_d, cv_by_type, (t2, time.perf_counter())

"""An eigenvalue-aware fit: a Bayesian update of the H coefficients from training eigenvalues.

The block fit (:mod:`.fit`) minimises the error of every H entry alike, while users read
eigenvalues.  After it, the posterior of the coefficients is Gaussian, ``theta ~ N(theta0,
Sigma0)``, block diagonal over ``(block type, L)`` (:class:`acehamil.fitting.BLRPosterior`).  The
eigenvalues of training structures (within ``E_F +- window``, each relative to its own Fermi
level, as the calibration and ``evaluate`` read them) are then treated as extra observations,
linearised about the DFT eigenvectors (:func:`.window.window_sensitivities`):

``eps(theta) ~ eps(theta_i) + J (theta - theta_i)``,  observation noise ``r^2 / w_s`` per state

(``w_s`` the structure's fit weight, ``fit.kind_weights``).  The update in observation space
(one ``m x m`` solve, ``m`` the number of states, however many coefficients) is

``theta_{i+1} = theta0 + Sigma0 J^T (J Sigma0 J^T + R)^-1 (eps_DFT - eps(theta_i) - J (theta0 - theta_i))``

(the iterated Kalman / Gauss-Newton form: ``i = 0`` is the plain linear update, each further
iteration relinearises at the exact eigenvalues of the updated model, ``J`` kept).  For eigenvalues
that are exactly linear in ``theta`` it is the exact Gaussian posterior mean; ``r -> inf`` leaves
``theta0``.  The updated posterior ``Sigma1 = Sigma0 - Sigma0 J^T (.)^-1 J Sigma0`` couples the
block types and is not stored: the model keeps ``Sigma0`` (wider than ``Sigma1``), and the
calibration (run after the update, on the updated model) scales its spreads to the errors.

The energy zero is untouched: eigenvalues relative to the Fermi level do not see a ``V S`` shift,
so the per-structure ``V_s`` of the block fit and its density law stay as fitted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

def coefficient_factors(mm) -> dict:
    """``F`` with ``Sigma0 = F F^T`` for every ``(block type, L)`` posterior of ``mm``.

    Returns
    -------
    dict {(bt.key, L): ndarray, shape (n, n)}
        From the BLR eigen-decomposition: ``F = P^-1/2 V (beta s + alpha)^-1/2``.
    """
    out = {}
    for key, per_L in mm.posteriors.items():
        for L, post in per_L.items():
            out[(key, L)] = post.eigvecs / np.sqrt(post.prior_diag)[:, None] / np.sqrt(post.beta * post.eigvals + post.alpha)
    return out


def update(coefficients: dict, factors: dict, J: dict, innovation, noise_var, theta_from: dict | None = None) -> dict:
    """``theta0 + Sigma0 J^T (J Sigma0 J^T + diag(noise_var))^-1 innovation``, per ``(block type, L)``.

    Parameters
    ----------
    coefficients : dict {key: {L: ndarray (n,)}}
        ``theta0`` (the prior mean).
    factors : dict {(key, L): ndarray (n, n)}
        :func:`coefficient_factors` of the prior.
    J : dict {(key, L): ndarray (m, n)}
        Sensitivities of the ``m`` observations (eV per unit coefficient).
    innovation : ndarray, shape (m,), eV
        ``eps_DFT - eps(theta_i) - J (theta0 - theta_i)``.
    noise_var : ndarray, shape (m,), eV^2
        Observation noise variance of each row (``inf``: the row is ignored).

    Returns
    -------
    dict {key: {L: ndarray}}
        The updated coefficients (new arrays; ``coefficients`` is not modified).  Keys without a
        factor or without sensitivities keep ``theta0``.

    Examples
    --------
    >>> F = {("a", 0): np.eye(2)}
    >>> J = {("a", 0): np.array([[1.0, 0.0]])}
    >>> out = update({"a": {0: np.zeros(2)}}, F, J, np.array([1.0]), np.array([1.0]))
    >>> np.round(out["a"][0], 12).tolist()  # prior variance 1, noise 1: half-way to the observation
    [0.5, 0.0]
    """
    return posterior_update(coefficients, factors, J, innovation, noise_var)[0]


def posterior_update(coefficients: dict, factors: dict, J: dict, innovation, noise_var) -> tuple:
    """:func:`update`, and the whitened loadings ``B`` of the updated covariance.

    Returns
    -------
    coefficients : dict {key: {L: ndarray}}
        As :func:`update`.
    B : dict {(key, L): ndarray (m_used, n)}
        ``L^-1 J F`` (``G = J Sigma0 J^T + R = L L^T`` over the rows of finite noise): the updated
        covariance is ``Sigma1 = F (I - B^T B) F^T`` per key (its diagonal block over ``(key, L)``;
        :func:`updated_posteriors` with ``C = I - B^T B``), and across keys ``-F_a B_a^T B_b F_b^T``.
    """
    import scipy.linalg

    innovation = np.asarray(innovation, dtype=float)
    noise_var = np.broadcast_to(np.asarray(noise_var, dtype=float), innovation.shape)
    if innovation.ndim != 1:
        raise ValueError(f"innovation must be 1-D, got shape {innovation.shape}")
    if np.any(~(noise_var > 0)):
        raise ValueError("noise variances must be > 0 (inf: row ignored)")
    keys = [k for k in J if k in factors]
    m = len(innovation)
    for k in keys:
        if J[k].shape[0] != m:
            raise ValueError(f"sensitivities {k} have {J[k].shape[0]} rows, the innovation {m}")
    use = np.isfinite(noise_var)
    A = {k: J[k][use] @ factors[k] for k in keys}  # J F: the observations' loadings on whitened coefficients
    G = np.zeros((int(use.sum()),) * 2)
    for a in A.values():
        G += a @ a.T
    G[np.diag_indices_from(G)] += noise_var[use]
    Lg = scipy.linalg.cholesky(G, lower=True)  # G >= R > 0: positive definite
    B = {k: scipy.linalg.solve_triangular(Lg, A[k], lower=True) for k in keys}
    u = scipy.linalg.solve_triangular(Lg, innovation[use], lower=True)  # z = L^-T u = G^-1 innovation
    out = {key: {L: np.array(c, dtype=float, copy=True) for L, c in per_L.items()} for key, per_L in coefficients.items()}
    for k in keys:
        key, L = k
        out[key][L] = np.asarray(coefficients[key][L], dtype=float) + factors[k] @ (B[k].T @ u)
    return out, B


def updated_posteriors(posteriors: dict, coefficients: dict, C: dict) -> dict:
    """Posteriors with mean ``coefficients`` and, for every ``(key, L)`` of ``C``, the diagonal block
    ``Sigma1 = F C F^T`` of the updated covariance (``C`` its whitened block, ``F`` the prior's
    :func:`coefficient_factors`; ``C = I - B^T B`` from :func:`posterior_update`), in the
    :class:`acehamil.fitting.BLRPosterior` form (new ``eigvals``, ``eigvecs``, ``proj`` rotated with them;
    ``alpha``, ``beta``, ``prior_diag`` kept), so every reader of ``Sigma`` (draws, first-order spreads,
    leverages) reads the updated one.  The coupling between keys that the eigenvalue observations add
    (they fix sums over block types) is dropped: a spread over several keys differs from the exact
    ``Sigma1``'s by the cross terms; per key it is never larger than under ``Sigma0``.

    ``P^1/2 Sigma1 P^1/2 = V D C D V^T`` with ``D = (beta s + alpha)^-1/2``: its eigenpairs
    ``(mu, U)`` give ``eigvecs = V U`` and ``eigvals = (1/mu - alpha) / beta``.
    """
    out = {key: dict(per_L) for key, per_L in posteriors.items()}
    for key, per_L in posteriors.items():
        for L, post in per_L.items():
            mean = np.asarray(coefficients.get(key, {}).get(L, post.mean), dtype=float)
            W = C.get((key, L))
            if W is None:
                out[key][L] = dataclasses.replace(post, mean=mean)
                continue
            d = 1.0 / np.sqrt(post.beta * post.eigvals + post.alpha)
            mu, U = np.linalg.eigh(d[:, None] * (0.5 * (W + W.T)) * d[None, :])
            top = 1.0 / post.alpha  # Sigma1 <= Sigma0 <= the prior
            mu = np.clip(mu, top * 1e-15, top)
            s = np.maximum((1.0 / mu - post.alpha) / post.beta, 0.0)
            out[key][L] = dataclasses.replace(post, mean=mean, eigvals=s, eigvecs=post.eigvecs @ U, proj=U.T @ post.proj)
    return out


def flat_difference(a: dict, b: dict, keys) -> dict:
    """``a - b`` per ``(key, L)`` in ``keys``."""
    return {k: np.asarray(a[k[0]][k[1]]) - np.asarray(b[k[0]][k[1]]) for k in keys}


def apply_J(J: dict, delta: dict) -> np.ndarray:
    """``sum_k J[k] @ delta[k]`` over the keys of ``J``, shape (m,)."""
    m = next(iter(J.values())).shape[0] if J else 0
    out = np.zeros(m)
    for k, Jk in J.items():
        if k in delta:
            out += Jk @ delta[k]
    return out


def stack_observations(obs: list) -> tuple:
    """Rows of several structures' observations stacked: ``(J {key: (m, n)}, err (m,), structure (m,))``.

    ``obs`` is a list of ``(index, err (m_s,), J {key: (m_s, n)})``."""
    keys = sorted({k for _, _, J in obs for k in J}, key=str)
    err = np.concatenate([e for _, e, _ in obs]) if obs else np.zeros(0)
    struct = np.concatenate([np.full(len(e), i) for i, e, _ in obs]) if obs else np.zeros(0, dtype=int)
    J = {}
    for k in keys:
        n = next(Js[k].shape[1] for _, _, Js in obs if k in Js)
        J[k] = np.concatenate([Js[k] if k in Js else np.zeros((len(e), n)) for _, e, Js in obs])
    return J, err, struct


def structure_observations(model, sd, spec: dict, rng, pairs=None):
    """``(err (m,), J {key: (m, n)})`` of one training structure (:func:`.window.window_sensitivities`),
    or None without ``n_electrons`` or window states.  ``err`` is exact; ``J`` sums over every block, or with
    ``spec["bond_cut"]`` > 0 over the on-site blocks and the bonds shorter than it (the features of the longer
    bonds, most of the cost, are not evaluated; their share of the response is then left out of the update)."""
    from .window import window_sensitivities

    w = window_sensitivities(model, sd, tuple(spec["kmesh"]), float(spec["window_eV"]), pairs=pairs,
                             max_states=int(spec["states"]), rng=rng, epistemic_cut=float(spec.get("bond_cut", 0.0)))
    if w is None:
        return None
    return w["err"], w["sens"]["J"]


def with_coefficients(model, coefficients):
    """``model`` with H coefficients ``coefficients``; each posterior's mean moves with them (the draws of
    :func:`.uncertainty.sample_matrix` are centred on it), its covariance is kept; S and energy zero kept."""
    posts = {key: {L: (dataclasses.replace(p, mean=np.asarray(coefficients[key][L], dtype=float))
                       if key in coefficients and L in coefficients[key] else p) for L, p in per.items()}
             for key, per in model.H.posteriors.items()}
    return dataclasses.replace(model, H=dataclasses.replace(model.H, coefficients=coefficients, posteriors=posts))


def observed_structures(kinds, weights, per_kind: int, seed: int) -> np.ndarray:
    """Indices of the structures whose eigenvalues the update observes: every one of weight > 0, or
    at most ``per_kind`` of each kind (``info["kind"]``; None is a kind), drawn seeded.

    Examples
    --------
    >>> observed_structures(["a", "a", "a", None], [1, 1, 0, 1], 1, 0).size
    2
    """
    w = np.asarray(weights, dtype=float)
    idx = np.flatnonzero(w > 0)
    if per_kind <= 0:
        return idx
    kinds = ["\0none" if kinds[i] is None else str(kinds[i]) for i in idx]
    rng = np.random.default_rng([int(seed), 6007])
    out = []
    for kind in sorted(set(kinds)):
        members = idx[[k == kind for k in kinds]]
        out.append(members if len(members) <= per_kind else rng.choice(members, int(per_kind), replace=False))
    return np.sort(np.concatenate(out))


@dataclasses.dataclass(frozen=True)
class Observations:
    """The eigenvalue observations of an update, taken once.

    Attributes
    ----------
    coefficients : dict {key: {L: ndarray}}
        The H coefficients at which ``err`` was computed.
    J : dict {(key, L): ndarray (m, n)}
        Sensitivities of the ``m`` window states (DFT eigenvectors, relative to the Fermi level), eV.
    err : ndarray, shape (m,), eV
        Model minus DFT at ``coefficients``.
    structure : ndarray of int, shape (m,)
        The structure (index into the fit's list) of each row.
    noise_var : ndarray, shape (m,), eV^2
        ``r^2 / w_s``.
    """

    coefficients: dict
    J: dict
    err: np.ndarray
    structure: np.ndarray
    noise_var: np.ndarray

    def rows(self, keep) -> "Observations":
        """Only the rows of the structures in ``keep``."""
        sel = np.isin(self.structure, np.asarray(keep, dtype=int))
        return dataclasses.replace(self, J={k: v[sel] for k, v in self.J.items()}, err=self.err[sel],
                                   structure=self.structure[sel], noise_var=self.noise_var[sel])


def observe(model, structures, weights, spec: dict, pairs=None, seed: int = 0, progress: bool = False) -> Observations:
    """The window eigenvalues of the observed training structures (:func:`observed_structures`) under ``model``.

    Parameters
    ----------
    model : HamiltonianModel
    structures : sequence of StructureData
        The fitted structures.
    weights : sequence of float, shape (len(structures),)
        Their fit weights (``r^2 / w`` is each row's noise variance; weight 0: not observed).
    spec : dict
        ``[fit] eigenvalue_update`` (:data:`acehamil.models.hamiltonian.config.EIGENVALUE_UPDATE_DEFAULTS` keys).
    pairs : sequence of NeighbourPairs or None, optional
        One per structure (the fit's), reused.
    """
    from ...progress import Progress

    weights = np.asarray(weights, dtype=float)
    chosen = observed_structures([sd.info.get("kind") for sd in structures], weights, int(spec["per_kind"]), seed)
    bar = Progress(len(chosen), "eigenvalue update", progress)
    rows = []
    for k in chosen:
        k = int(k)
        o = structure_observations(model, structures[k], spec, np.random.default_rng([int(seed), 31, k]),
                                   pairs=None if pairs is None else pairs[k])
        bar.step()
        if o is not None:
            rows.append((k, o[0], o[1]))
    J, err, struct = stack_observations(rows)
    r = float(spec["noise_meV"]) * 1e-3
    return Observations(model.H.coefficients, J, err, struct.astype(int), r**2 / weights[struct.astype(int)])


def update_model(model, obs: Observations, keep=None):
    """``model`` (its posterior the prior) updated by the rows of ``obs`` (of the structures in ``keep``,
    default all), their errors linearised from ``obs.coefficients`` to ``model``'s: one update, no relinearisation.

    A fold of the calibration (:func:`.calibrate.cross_validated_errors`) applies the update of its own
    fitted structures to its own refitted model this way, without evaluating features again."""
    o = obs if keep is None else obs.rows(keep)
    factors = coefficient_factors(model.H)
    keys = [k for k in o.J if k in factors]
    J = {k: o.J[k] for k in keys}
    if not len(o.err):
        return model
    err = o.err + apply_J(J, flat_difference(model.H.coefficients, o.coefficients, keys))
    return with_coefficients(model, update(model.H.coefficients, factors, J, -err, o.noise_var))


def eigenvalue_update(model, structures, weights, spec: dict, pairs=None, seed: int = 0, progress: bool = False) -> tuple:
    """The fit's eigenvalue update: ``spec["iterations"]`` updates from the block fit's posterior.

    The first takes the observations at ``theta0``; each further one takes them again at the updated
    model (exact eigenvalues, same DFT eigenvectors, so ``J`` is unchanged) and updates ``theta0``
    with the innovation relinearised there (iterated Kalman form).

    Returns
    -------
    model : HamiltonianModel
        With the updated H coefficients (posterior, S and energy zero of ``model``).
    obs : Observations
        Of the last iteration (at the coefficients before it), for the calibration's folds.
    report : dict
        ``n_structures``, ``n_states``, ``mae_meV_before``, ``mae_meV_after`` (in-sample, window states of
        the observed structures; "after" linearised), per iteration.
    """
    import time

    t0, c0 = time.perf_counter(), time.process_time()
    current, report, obs = model, {"iterations": []}, None
    for _ in range(int(spec["iterations"])):
        obs = observe(current, structures, weights, spec, pairs=pairs, seed=seed, progress=progress)
        if not len(obs.err):
            break
        updated = update_model(model, obs)
        keys = list(obs.J)
        after = obs.err + apply_J(obs.J, flat_difference(updated.H.coefficients, obs.coefficients, keys))
        report["iterations"].append({"n_structures": int(len(np.unique(obs.structure))), "n_states": int(len(obs.err)),
                                     "mae_meV_before": float(1e3 * np.mean(np.abs(obs.err))),
                                     "mae_meV_after_linear": float(1e3 * np.mean(np.abs(after)))})
        current = updated
    report["seconds"] = time.perf_counter() - t0
    report["seconds_cpu"] = time.process_time() - c0
    return current, obs, report


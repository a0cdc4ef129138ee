"""The eigenvalue update from the calibration's held-out eigenvalues, and the calibration of its result.

``[fit] eigenvalue_update`` with ``source = "calibration"`` (docs/models.md, "Transfer"): the update of
:mod:`.eigen_update` (``theta1 = theta0 + Sigma0 J^T (J Sigma0 J^T + R)^-1 (eps_DFT - eps(theta0))``) without
eigen-solves of its own, and with the updated posterior kept, so the spreads are calibrated on the
updated models' errors and variances.

One calibration pass (:func:`.calibrate.cross_validated_errors`, ``keep_observations``) gives, for each
held-out training structure ``i``: the exact window errors under its fold model ``theta_f(i)`` (what the
spreads are calibrated on), the exact errors ``err0_i`` of the same states under the full model ``theta0``
and under every other fold model (one mapped pass, an eigenvalue solve each, no features) and their
sensitivities ``J_i`` (on-site
blocks and bonds shorter than ``epistemic_bond_cut``, at the reference's eigenvectors).  With H linear in
theta, ``eps(theta) - eps_DFT ~= err0_i + J_i (theta - theta0)`` (:func:`moved_errors`).

* The full model is updated from the exact ``err0`` of every held-out structure of fit weight > 0 (at most
  ``spec["states"]`` rows each, seeded), noise ``R = r^2 / w_s``.
* Each fold model is updated from the rows of the structures it was fitted on, its own posterior the
  prior, their exact errors under the fold model as innovations (``err_folds``: every observed structure is
  predicted under every fold model in the same mapped pass, ``predict_many``, one ``eigvalsh`` per model;
  moving ``err0`` along the cut ``J`` instead biased the folds' updates and left the spreads over-covering,
  docs/models.md "Transfer" item 15); its held-out structures' errors and
  epistemic variances become the updated fold model's: ``err_i + J_i (theta_f1 - theta_f)`` and
  ``J_i Sigma_f1 J_i^T`` over the diagonal blocks of ``Sigma_f1`` (what the stored model keeps,
  :func:`.eigen_update.updated_posteriors`).
* The spread factors are fitted to those (:func:`.calibrate.fit_factors`).
* ``spec["onsite_prior"]`` c (default 1) scales the prior covariance of the on-site blocks, ``c Sigma0``, for the
  full model and the folds alike (:func:`prior_scales`); the stored posterior is the update's under that prior.

The six updates (full model and five folds) are done in the information form, in coordinates whitened by
the full model's factors ``F0`` (``theta = theta0 + F0 z``, ``A_i = J_i F0``): the precision ``Q_f +
sum_i A_i^T R_i^-1 A_i`` (``Q_0 = I``) over all ``N`` coefficients is formed once per fold as the total
minus the fold's own rows, then one Cholesky factor and its inverse, ``O(m N^2 + N^3)``: independent of
the square of the number of observed states ``m`` (the observation-space form of :func:`.eigen_update.update`
costs ``O(m^2 N)`` per update; the same numbers, tests/test_eigen_calibrated.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .eigen_update import apply_J, coefficient_factors, flat_difference, updated_posteriors


def coefficient_factors_of(post) -> np.ndarray:
    """``F`` with ``Sigma = F F^T`` of one posterior (as :func:`.eigen_update.coefficient_factors`)."""
    return post.eigvecs / np.sqrt(post.prior_diag)[:, None] / np.sqrt(post.beta * post.eigvals + post.alpha)


def calibrated_update(structures, model, parts, weights, spec: dict, progress: bool = False, designs=None,
                      mapper=None, seed: int = 0) -> tuple:
    """The calibration pass, the update of the model and its folds, and the spread factors (module docstring).

    Parameters
    ----------
    structures, model, parts, designs, mapper
        As :func:`.calibrate.calibrate` (the training structures, the block fit, its per-structure sums).
    weights : array, shape (len(structures),)
        Fit weights: ``R = r^2 / w_s`` per row; weight 0 is not observed (still held out and scored).
    spec : dict
        ``[fit] eigenvalue_update`` (``noise_meV``, ``states``).
    seed : int
        Of the choice of rows when a structure has more than ``states``.

    Returns
    -------
    model : HamiltonianModel
        Coefficients ``theta1``, posteriors holding the diagonal blocks of ``Sigma1``.
    report : dict
        ``source``, ``n_structures``, ``n_states``, ``mae_meV_before``, ``mae_meV_after_linear`` (in sample,
        the observed rows, linearised), ``calibration_mae_meV_before`` / ``_after`` (the folds' held-out
        errors, all held-out rows), ``seconds``, ``seconds_cpu`` (the updates alone).
    uncertainty : dict
        :func:`.calibrate.fit_factors` of the updated folds (what ``report["uncertainty"]`` holds).
    """
    from .calibrate import cross_validated_errors

    observed = np.flatnonzero(np.asarray(weights, dtype=float) > 0)  # the only errors under the model it needs
    cv = cross_validated_errors(structures, model, parts, progress=progress, designs=designs, mapper=mapper,
                                keep_observations=observed)
    return update_from_cv(model, cv, weights, spec, seed=seed, mapper=mapper)


def update_from_cv(model, cv: dict, weights, spec: dict, seed: int = 0, mapper=None) -> tuple:
    """:func:`calibrated_update` after its calibration pass: ``cv`` from :func:`.calibrate.cross_validated_errors`
    with ``keep_observations`` (not modified); the same returns.  ``mapper``: as :func:`update_parts`'."""
    from .calibrate import fit_factors

    up = update_parts(model, cv, weights, spec, seed=seed, mapper=mapper)
    return up["model"], up["report"], fit_factors({**cv, "err": up["err"], "sigma_epi": up["sigma_epi"]})


def update_parts(model, cv: dict, weights, spec: dict, seed: int = 0, mapper=None) -> dict:
    """The updates of :func:`update_from_cv` before the spread factors are fitted.

    ``mapper`` (as the calibration's, default serial) runs the six updates (full model and folds), each a
    factorisation of its own (LAPACK, which releases the GIL); the result does not depend on it.

    Returns
    -------
    dict
        ``model`` (the updated full model), ``report`` (as :func:`calibrated_update`'s), ``err`` and
        ``sigma_epi`` (shape (rows of ``cv``,), eV: the held-out rows under the updated fold models, linearised),
        ``fold_coefficients`` (list over ``cv["folds"]`` of ``{key: {L: ndarray}}``: the updated fold models'
        coefficients; what a grouped CV of the update's settings scores, ``benchmarks/transfer_update.py``).
    """
    import time

    from .sums import serial_map

    t0, c0 = time.perf_counter(), time.process_time()
    weights = np.asarray(weights, dtype=float)
    rows = _chosen_rows(cv["structure"], int(spec["states"]), seed)
    r2 = (float(spec["noise_meV"]) * 1e-3) ** 2
    observed = [i for i in sorted(rows) if weights[i] > 0]
    space = _Whitened(model.H.posteriors, cv["J"], prior_scales(model.H.posteriors, spec))
    theta0 = model.H.coefficients
    fold_of = {int(i): f for f, val in enumerate(cv["folds"]) for i in val}

    # every observed row in the whitened coordinates, and the information (precision and gradient) per fold
    nf = len(cv["folds"])
    A_of = {i: space.rows(_rows_of(cv, i, rows[i])) for i in observed}  # whitened once, read by every fold
    run = serial_map if mapper is None else mapper
    err0, stacked = [], []
    for f in range(nf):  # one symmetric rank-m_f product per fold (upper triangle), A^T R^-1 A: a task each
        members = [i for i in observed if fold_of[i] == f]
        A = [A_of[i] for i in members]
        e = [cv["err_model"][rows[i]] for i in members]
        err0.extend(zip(A, e))
        sq = np.sqrt(np.concatenate([np.full(len(x), weights[i] / r2) for i, x in zip(members, e)])) if members else np.zeros(0)
        stacked.append((np.concatenate(A) if members else np.zeros((0, space.N)), sq,
                        np.concatenate(e) if members else np.zeros(0)))
    info, grad = map(list, zip(*run(_information, (space.N,), stacked))) if nf else ([], [])
    del stacked
    info_all, grad_all = sum(info), sum(grad)
    # each fold's innovations: its training structures' exact errors under the fold model (cv["err_folds"]),
    # written about theta0 for the linear model e0 + A z (e_f - A z_f); moving err0 along the cut J instead
    # left the folds' updates biased and the spreads over-covering (docs/models.md "Transfer" item 15)
    fold_grad = []
    for f in range(nf):
        zf = space.z_of(cv["fold_models"][f].H, theta0)
        g = np.zeros(space.N)
        for i in observed:
            if fold_of[i] != f:
                A = A_of[i]
                e = cv["err_folds"][i][f][rows[i] - _first_row(cv, i)] - A @ zf
                g += (weights[i] / r2) * (A.T @ e)
        fold_grad.append(g)

    # six independent updates, one task each (a factorisation each: LAPACK releases the GIL, so ``mapper``'s
    # threads run them side by side): the full model (prior N(0, I) in z), then each fold from its own posterior
    # with the rows of the structures it was fitted on, and what that does to the fold's held-out rows (whitened
    # once: those of the observed rows when they are all of them)
    def held_rows(val):
        out = []
        for i in (int(i) for i in val):
            if i not in cv["J"]:
                continue
            sel = np.flatnonzero(cv["structure"] == i)
            whole = i in A_of and np.array_equal(rows[i], sel)
            out.append((i, sel, A_of[i] if whole else space.rows(cv["J"][i])))
        return out

    def tasks():
        yield None, None, grad_all, []
        for f, val in enumerate(cv["folds"]):
            yield cv["fold_models"][f].H, info[f], fold_grad[f], held_rows(val)

    results = iter(run(_fold_update, (space, theta0, info_all, cv["J"]), tasks()))
    z1, C = next(results)
    new = {k: np.array(cv[k], dtype=float, copy=True) for k in ("err", "sigma_epi")}
    fold_coefficients = []
    for held, moved, var, coefficients in results:
        fold_coefficients.append(coefficients)
        for (i, sel, _), dm, v in zip(held, moved, var):
            new["err"][sel] += dm
            new["sigma_epi"][sel] = np.sqrt(np.maximum(v, 0.0))
    coefs = space.coefficients(theta0, z1)
    updated = dataclasses.replace(model, H=dataclasses.replace(
        model.H, coefficients=coefs, posteriors=updated_posteriors(model.H.posteriors, coefs, space.unwhitened(C))))
    before = np.concatenate([e for _, e in err0]) if err0 else np.zeros(0)
    after = np.concatenate([e + A @ z1 for A, e in err0]) if err0 else np.zeros(0)
    report = {"source": "calibration", "n_structures": len(observed), "n_states": int(len(before)),
              "mae_meV_before": float(1e3 * np.mean(np.abs(before))) if len(before) else float("nan"),
              "mae_meV_after_linear": float(1e3 * np.mean(np.abs(after))) if len(after) else float("nan"),
              "calibration_mae_meV_before": float(1e3 * np.mean(np.abs(cv["err"]))),
              "calibration_mae_meV_after": float(1e3 * np.mean(np.abs(new["err"]))),
              "seconds": time.perf_counter() - t0, "seconds_cpu": time.process_time() - c0}
    return {"model": updated, "report": report, "err": new["err"], "sigma_epi": new["sigma_epi"],
            "fold_coefficients": fold_coefficients}


def prior_scales(posteriors: dict, spec: dict) -> dict:
    """``{(key, L): c}``: the update's prior covariance of each coefficient block is ``c Sigma0`` (the block fit's
    posterior scaled); ``c = spec["onsite_prior"]`` for the on-site blocks (keys ``onsite/...``), 1 elsewhere.

    Why: BLR's noise per (block type, L) is set by each block fit's misfit, 3-10 meV for the on-site blocks
    against 0.3-0.5 meV off-site on the example, so ``Sigma0`` lets the update fit the window eigenvalues
    cheapest by moving the on-site levels, and the on-site H error is what it adds (docs/models.md "Transfer"
    item 16).  ``c < 1`` holds the on-site blocks nearer the block fit.

    Examples
    --------
    >>> prior_scales({"onsite/14-14/0-0": {0: None}, "offsite/14-14/0-0": {0: None}}, {"onsite_prior": 0.1})
    {('onsite/14-14/0-0', 0): 0.1}
    """
    c = float(spec.get("onsite_prior", 1.0))
    if c == 1.0:
        return {}
    return {(key, L): c for key, per in posteriors.items() if str(key).startswith("onsite/") for L in per}


def _information(n: int, A, sq, e) -> tuple:
    """``(A^T R^-1 A`` (upper triangle, :func:`_gram_upper`), ``A^T R^-1 e)`` of one fold's observed rows ``A (m, n)``,
    ``sq = R^-1/2`` (m,), errors ``e`` (m,)."""
    return _gram_upper(A * sq[:, None], n), A.T @ (sq**2 * e)


def _fold_update(space, theta0: dict, info_all, J: dict, sub, info_f, grad_f, held: list) -> tuple:
    """One of :func:`update_parts`' updates: the fold model ``sub`` (MatrixModel) updated from its own
    posterior by the observed rows of its training structures (precision ``info_all - info_f``, gradient
    ``grad_f``), and what that does to its held-out structures' rows ``held`` ([(i, rows, A_i = J_i F0)]);
    or, ``sub`` None, the full model (prior N(0, I) in z, precision ``info_all``, gradient ``grad_f``).

    Returns
    -------
    held : list
        ``held``, as given.
    moved : list of ndarray (m_i,), eV
        ``A_i (z_f1 - z_f)``: each held-out structure's errors move by these.
    var : list of ndarray (m_i,), eV^2
        Their epistemic variances under the updated fold posterior, over its diagonal blocks (``Sigma_f1 =
        F0 C_f F0^T``); blocks the update leaves alone keep the fold's variance.
    coefficients : dict {key: {L: ndarray}}
        The updated fold model's.

    With ``sub`` None instead ``(z1, C)``, :func:`_posterior`'s.
    """
    if sub is None:
        return _posterior(None, np.zeros(space.N), info_all, grad_f, space)
    Q, zf = space.prior_of(sub, theta0)
    # the precision Q + (info_all - info_f), built in the Fortran order LAPACK factorises in place (_solved)
    lam = np.empty(info_all.shape, order="F")
    np.subtract(info_all, info_f, out=lam)
    lam += Q
    rhs = Q @ zf - grad_f
    del Q  # (one N x N matrix less per task while the factor and its inverse are formed)
    zf1, Cf = _solved(lam, rhs, space)
    Ff = {k: np.sqrt(space.scale.get(k, 1.0)) * F for k, F in coefficient_factors(sub).items()}
    moved, var = [], []
    for i, sel, A in held:
        moved.append(A @ (zf1 - zf))
        v = np.zeros(len(sel))
        for q, k in enumerate(space.keys):  # over the diagonal blocks of Sigma_f1 = F0 Cf F0^T
            a = A[:, space.off[q]:space.off[q + 1]]
            v += np.einsum("rn,nm,rm->r", a, Cf[k], a, optimize=True)
        for k, Jk in J[i].items():  # blocks the update leaves alone keep the fold's variance
            if k not in space.index and k in Ff:
                v += np.sum((Jk @ Ff[k]) ** 2, axis=1)
        var.append(v)
    return held, moved, var, space.coefficients(sub.coefficients, zf1 - zf)


class _Whitened:
    """Coordinates ``z`` with ``theta = theta0 + F0 z`` over the keys ``(key, L)`` that have sensitivities;
    ``F0 F0^T = c Sigma0`` per key (``scale`` {(key, L): c}, :func:`prior_scales`; 1 when absent).

    Attributes
    ----------
    keys : list of (key, L)
    off : ndarray of int, shape (len(keys) + 1,)
        Offsets of each key's block in ``z`` (length ``N``).
    index : dict {(key, L): position in keys}
    scale : dict {(key, L): c}
    """

    def __init__(self, posteriors: dict, J: dict, scale: dict | None = None):
        have = {(key, L) for key, per in posteriors.items() for L in per}
        self.keys = sorted({k for Ji in J.values() for k in Ji if k in have}, key=str)
        self.index = {k: q for q, k in enumerate(self.keys)}
        self.scale = dict(scale or {})
        root = {k: np.sqrt(self.scale.get(k, 1.0)) for k in self.keys}
        self.F0 = {(key, L): root[(key, L)] * coefficient_factors_of(posteriors[key][L]) for key, L in self.keys}
        self.F0inv = {(key, L): _inverse_factor(posteriors[key][L]) / root[(key, L)] for key, L in self.keys}
        self.off = np.concatenate([[0], np.cumsum([self.F0[k].shape[0] for k in self.keys])]).astype(int)
        self.N = int(self.off[-1])

    def rows(self, Ji: dict) -> np.ndarray:
        """``J F0`` of some rows (``Ji`` {(key, L): (m, n)}), shape (m, N); keys without rows are 0."""
        m = next(iter(Ji.values())).shape[0] if Ji else 0
        A = np.zeros((m, self.N))
        for k, Jk in Ji.items():
            q = self.index.get(k)
            if q is not None:
                A[:, self.off[q]:self.off[q + 1]] = Jk @ self.F0[k]
        return A

    def coefficients(self, theta0: dict, z) -> dict:
        """``theta0 + F0 z`` (new arrays; keys outside the coordinates keep ``theta0``)."""
        out = {key: {L: np.array(c, dtype=float, copy=True) for L, c in per.items()} for key, per in theta0.items()}
        for q, (key, L) in enumerate(self.keys):
            out[key][L] = out[key][L] + self.F0[(key, L)] @ z[self.off[q]:self.off[q + 1]]
        return out

    def z_of(self, mm, theta0: dict) -> np.ndarray:
        """``F0^-1 (theta_mm - theta0)`` of a model's coefficients, shape (N,)."""
        z = np.zeros(self.N)
        for q, (key, L) in enumerate(self.keys):
            diff = np.asarray(mm.coefficients[key][L], dtype=float) - np.asarray(theta0[key][L], dtype=float)
            z[self.off[q]:self.off[q + 1]] = self.F0inv[(key, L)] @ diff
        return z

    def unwhitened(self, C: dict) -> dict:
        """Whitened covariance blocks ``C`` (of ``F0 C F0^T``) relative to the unscaled factors: ``c C`` per key."""
        return {k: self.scale.get(k, 1.0) * v for k, v in C.items()}

    def prior_of(self, mm, theta0: dict) -> tuple:
        """The posterior of ``mm`` (a fold model) in these coordinates, its covariance scaled as ``Sigma0``'s:
        precision ``Q`` (N, N), block diagonal, ``F0^T (c Sigma_f)^-1 F0``, and mean ``z_f = F0^-1 (theta_f -
        theta0)`` (N,)."""
        Q, z = np.zeros((self.N, self.N)), np.zeros(self.N)
        for q, (key, L) in enumerate(self.keys):
            M = _inverse_factor(mm.posteriors[key][L]) @ self.F0[(key, L)] / np.sqrt(self.scale.get((key, L), 1.0))
            sl = slice(self.off[q], self.off[q + 1])
            Q[sl, sl] = M.T @ M
            diff = np.asarray(mm.coefficients[key][L], dtype=float) - np.asarray(theta0[key][L], dtype=float)
            z[sl] = self.F0inv[(key, L)] @ diff
        return Q, z


def _inverse_factor(post) -> np.ndarray:
    """``F^-1 = (beta s + alpha)^1/2 V^T P^1/2`` of a posterior (:func:`.eigen_update.coefficient_factors` inverted)."""
    return np.sqrt(post.beta * post.eigvals + post.alpha)[:, None] * (post.eigvecs.T * np.sqrt(post.prior_diag))


def _posterior(Q, z_prior, info, grad, space) -> tuple:
    """Mean and whitened diagonal covariance blocks of ``N(z_prior, Q^-1)`` updated by the observations
    ``0 = e0 + A z + noise``: precision ``Lam = Q + info`` (``info = A^T R^-1 A``, its upper triangle read;
    ``Q`` None: the identity), mean ``Lam^-1 (Q z_prior - grad)`` (``grad = A^T R^-1 e0``).

    Returns
    -------
    z : ndarray, shape (N,)
    C : dict {(key, L): ndarray (n, n)}
        The diagonal blocks of ``Lam^-1`` (from the inverse Cholesky factor: ``Lam^-1 = U^-1 U^-T``).
    """
    if Q is None:  # the identity
        lam = np.array(info, order="F")
        lam[np.diag_indices_from(lam)] += 1.0
        rhs = z_prior - grad
    else:
        lam = np.empty(info.shape, order="F")
        np.add(Q, info, out=lam)
        rhs = Q @ z_prior - grad
    return _solved(lam, rhs, space)


def _solved(lam, rhs, space) -> tuple:
    """:func:`_posterior` from the precision ``lam`` (its upper triangle read) and ``rhs``; ``lam`` is
    overwritten: a Fortran-ordered ``lam`` is factorised and inverted in place (``cholesky`` copies any other
    layout first; the same LAPACK calls on the same values, so the same numbers, with two N x N matrices fewer)."""
    import scipy.linalg

    U = scipy.linalg.cholesky(lam, lower=False, overwrite_a=True, check_finite=False)  # reads the upper triangle
    del lam
    z = scipy.linalg.cho_solve((U, False), rhs)
    Uinv, bad = scipy.linalg.lapack.dtrtri(U, lower=0, overwrite_c=1)  # upper: Lam^-1 = Uinv Uinv^T
    del U
    if bad:
        raise np.linalg.LinAlgError(f"eigenvalue update: triangular inverse failed (info {bad})")
    C = {}
    for q, k in enumerate(space.keys):
        X = Uinv[space.off[q]:space.off[q + 1], space.off[q]:]  # rows of the key; zero left of the diagonal
        C[k] = X @ X.T
    return z, C


def _gram_upper(A, n: int) -> np.ndarray:
    """``A^T A``, shape (n, n), its upper triangle filled (BLAS ``syrk``; the lower one is not used)."""
    import scipy.linalg

    if A.shape[0] == 0:
        return np.zeros((n, n))
    return scipy.linalg.blas.dsyrk(1.0, A, trans=1, lower=0)


def _first_row(cv, i: int) -> int:
    """Index of structure ``i``'s first row in ``cv`` (a structure's rows are contiguous)."""
    return int(np.flatnonzero(cv["structure"] == i)[0])


def _rows_of(cv, i: int, rows) -> dict:
    """``J`` of structure ``i``'s rows ``rows`` (indices into ``cv``'s rows)."""
    return {k: v[np.asarray(rows) - _first_row(cv, i)] for k, v in cv["J"][i].items()}


def moved_errors(cv: dict, i: int, rows, theta: dict, theta0: dict) -> np.ndarray:
    """The errors of structure ``i``'s rows ``rows`` under coefficients ``theta``, moved from the full model's.

    ``err0_i + J_i (theta - theta0)``: ``err0_i`` the exact errors under the model ``theta0`` the calibration
    ran for (``cv["err_model"]``, :func:`.calibrate.cross_validated_errors` with ``keep_observations``), H
    linear in theta, ``J`` at the reference's eigenvectors (first order in how far the model's differ) and
    over the blocks the calibration's ``epistemic_bond_cut`` keeps.  ``theta = theta0``: exact.

    Returns
    -------
    ndarray, shape (len(rows),), eV
    """
    rows = np.asarray(rows)
    e = cv["err_model"][rows]
    if theta is theta0:
        return e.copy()
    Ji = _rows_of(cv, i, rows)
    return e + apply_J(Ji, flat_difference(theta, theta0, list(Ji)))


def _chosen_rows(structure, states: int, seed: int) -> dict:
    """``{i: row indices}``: at most ``states`` rows of each structure (a seeded choice, order kept).

    Examples
    --------
    >>> r = _chosen_rows(np.array([3, 3, 3, 5]), 2, 0)
    >>> sorted(r), len(r[3]), r[5].tolist()
    ([3, 5], 2, [3])
    """
    out = {}
    for i in np.unique(structure):
        idx = np.flatnonzero(structure == i)
        if len(idx) > states:
            idx = np.sort(np.random.default_rng([int(seed), 8111, int(i)]).choice(idx, states, replace=False))
        out[int(i)] = idx
    return out

"""Eigenvalue uncertainties of a Hamiltonian model, and their calibration on training data.

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

The reported spread is ``sigma^2 = (a sigma_epi)^2 + (b sigma_noise)^2 + (c sigma_shared)^2 + (d sqrt(score))^2``.
The BLR evidence treats the block errors as independent, but a linear model's errors are
systematic (the same environment gives the same error on many blocks), so ``a = b = 1, c = 0``
is not calibrated.  :func:`calibrate` cross-validates over the training structures (each
fold's model refitted from the per-structure normal-equation sums, :func:`fold_model`),
predicts each held-out structure once and takes the first-order variances of the three parts
of its eigenvalues (:mod:`.linear_response`: exact linear response, no draws, so no Monte-Carlo
noise in the calibration; the draws of :func:`eigen_parts` are their finite-size version), and
fits ``a, b, c, d`` by maximum likelihood of the errors (:func:`.intervals.fit_scales`) (each structure's score taken against
its fold's training structures), then one common factor so that 90 % of them lie within
``1.645 sigma``.  Only training structures are used.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...threads import with_inner_threads
from .intervals import Z68, Z90, fit_scales, interval_metrics


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


def fold_splits(n: int, folds: int, fraction: float, seed: int) -> list:
    """Held-out index sets of the calibration: ``folds`` > 1 disjoint folds covering ``0..n-1``,
    or one split of ``round(fraction n)`` structures (seeded permutation)."""
    if n < 2:
        raise ValueError("calibration needs at least 2 training structures")
    order = np.random.default_rng(seed).permutation(n)
    if folds > 1:
        return [np.sort(order[f::folds]) for f in range(min(folds, n))]
    return [np.sort(order[:min(max(int(round(fraction * n)), 1), n - 1)])]


def held_out_subset(kinds, per_kind: int, seed: int) -> np.ndarray:
    """Weight of each training structure as a held-out structure of the calibration: 0 (not
    predicted) or ``n_kind / per_kind`` for the ``per_kind`` structures drawn at random (seeded)
    among the ``n_kind`` of their kind (``info["kind"]``; None is a kind), 1 for every structure of
    a kind with at most ``per_kind`` (``per_kind = 0``: all, weight 1).  The weighted likelihood of
    the chosen structures is an unbiased estimate of that of all of them.

    Examples
    --------
    >>> w = held_out_subset(["a", "a", "a", "a", None, "b"], 2, 0)
    >>> sorted(w.tolist()), float(w[:4].sum())
    ([0.0, 0.0, 1.0, 1.0, 2.0, 2.0], 4.0)
    """
    kinds = ["\0none" if k is None else str(k) for k in kinds]
    w = np.ones(len(kinds))
    if int(per_kind) <= 0:
        return w
    rng = np.random.default_rng([int(seed), 104729])
    for kind in sorted(set(kinds)):
        members = np.array([i for i, k in enumerate(kinds) if k == kind])
        if len(members) > per_kind:
            w[members] = 0.0
            w[rng.choice(members, int(per_kind), replace=False)] = len(members) / per_kind
    return w


def fold_model(model, parts, keep, cells, ends=None):
    """``model`` with its H coefficients refitted without the structures not in ``keep``.

    Parameters
    ----------
    model : HamiltonianModel
        Fitted on all ``len(parts)`` structures.
    parts : sequence of FitSums
        Per-structure H sums of that fit (:func:`acehamil.models.hamiltonian.sums.structure_sums`).
    keep : sequence of int
        Structures of the fold's fit.
    cells : sequence of ase.Atoms
        All training structures (the density energy zero of the fold).
    ends : sequence of dict, optional
        Bond ends of every cell (:func:`fold_ends`; default: computed for the fold's cells when needed).

    Returns
    -------
    HamiltonianModel
        H refitted from the summed normal equations (a subtraction and a solve: no features
        are evaluated); S is the full model's (its errors, ~1e-6, do not matter here).
    """
    from .fit import solve_sums
    from .sums import FitSums

    keep = [int(k) for k in keep]
    sums = FitSums.subset(parts, keep)
    # no condition numbers: the fold model reports none (an eigen-decomposition per problem saved)
    coefs, posts, _, _, ez, _ = solve_sums(model.H, sums, model.config, [cells[k] for k in keep],
                                           model.orbital_basis.species, condition=False,
                                           ends=None if ends is None else [ends[k] for k in keep])
    H = dataclasses.replace(model.H, coefficients=coefs, posteriors=posts)
    return dataclasses.replace(model, H=H, energy_zero=ez, report={})


def fold_ends(model, cells):
    """Bond ends of every cell (:func:`.energy_zero.bond_ends`) when the fold models' energy zero needs them
    (``fit.energy_zero_model = "bonds"``), else None: computed once for all folds (:func:`fold_model`)."""
    from .energy_zero import bond_ends

    if model.config.fit.energy_zero_model != "bonds":
        return None
    return [bond_ends(at, model.orbital_basis.species) for at in cells]


def held_out_parts(model, sd, kmesh, window_eV: float, pairs=None, max_states: int = 0, rng=None,
                   epistemic_cut: float = 0.0, extra_coefficients=None) -> dict | None:
    """Eigenvalue errors of ``model`` on one reference structure and the first-order parts of their
    spread (:mod:`.linear_response`: no draws, no Monte-Carlo noise).

    The sensitivities are taken in the eigenbasis of the reference (its eigenvectors, Fermi
    level and window), the error is exact: the model's prediction (from the same features) is
    solved with the reference overlap on the same k-points (S errors, ~1e-6, do not matter here).
    Each eigenvalue is relative to its own Fermi level; the spread includes the linear response
    of the Fermi level (:func:`.linear_response.fermi_weights`).

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    sd : StructureData
        With H, S and ``n_electrons``.
    kmesh : 3 ints
        Monkhorst-Pack grid (time-reversal reduced).
    window_eV : float
        Eigenvalues within ``E_F +- window_eV`` of the reference.
    max_states : int
        At most this many of them (a random choice with ``rng``; 0 = all).
    rng : numpy.random.Generator, optional
    epistemic_cut : float, Å
        > 0: ``sigma_epi`` from the on-site blocks and the bonds shorter than this
        (:func:`.linear_response.sensitivities`); 0: all blocks.
    extra_coefficients : dict {key: {L: ndarray}} or list of them, optional
        Also the errors of these H coefficients on the same states (``err_extra``, :func:`window_sensitivities`).

    Returns
    -------
    dict or None
        ``err``, ``sigma_epi``, ``sigma_noise``, ``sigma_shared`` (m,), eV, over the ``m`` chosen
        reference eigenvalues within the window (k-major order), and ``J`` ({(key, L): (m, n)}, eV per unit
        coefficient: the sensitivities ``sigma_epi`` was taken from, ``sigma_epi^2 = |J F|^2`` with
        ``Sigma = F F^T``); None without ``n_electrons``.
    """
    from .linear_response import variances

    w = window_sensitivities(model, sd, kmesh, window_eV, pairs=pairs, max_states=max_states, rng=rng,
                             epistemic_cut=epistemic_cut, extra_coefficients=extra_coefficients)
    if w is None:
        return None
    ve, vn, vs = variances(model.H, w["sens"])
    out = {"err": w["err"], "sigma_epi": np.sqrt(ve), "sigma_noise": np.sqrt(vn), "sigma_shared": np.sqrt(vs),
           "J": w["sens"]["J"]}
    if extra_coefficients is not None:
        out["err_extra"] = w["err_extra"]
    return out


def window_sensitivities(model, sd, kmesh, window_eV: float, pairs=None, max_states: int = 0, rng=None,
                         epistemic_cut: float = 0.0, extra_coefficients=None) -> dict | None:
    """Errors of ``model``'s window eigenvalues on one reference structure (each relative to its own
    Fermi level) and their first-order sensitivities, in the reference's eigenbasis
    (:func:`held_out_parts`, which takes the variances from them; :mod:`.eigen_update`, which fits them).

    Returns
    -------
    dict or None
        ``err`` (m,), eV (model - reference, the ``m`` chosen window states, k-major order), ``sens``
        (:func:`.linear_response.sensitivities` of those rows, relative to the Fermi level), ``states``
        (m,) flat indices ``k * nbands + n`` of the chosen states; with ``extra_coefficients`` (H coefficients
        of the same model, or a list of them) also ``err_extra`` ((m,), or (n_sets, m) for a list), eV: their
        errors on the same states, exact (with ``epistemic_cut`` > 0 every prediction comes from one mapped
        pass, :meth:`MatrixModel.predict_many`; one more eigenvalue solve each, no features); None without
        ``n_electrons`` or without a window state.
    """
    from ...structure import RealSpaceMatrix
    from ...tb.bloch import BlochAssembler
    from ...tb.dos import monkhorst_pack
    from ...tb.smearing import fermi_level
    from .linear_response import fermi_weights, sensitivities

    if sd.n_electrons is None:
        return None
    kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
    e_ref, C, reduce_ = _reference_solve(sd.H[0], sd.S, kp)
    ef_ref = fermi_level(e_ref[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    mask = np.abs(e_ref - ef_ref) <= window_eV
    phi = fermi_weights(e_ref, wk, ef_ref, 0.01).reshape(-1)
    win = np.flatnonzero(mask.reshape(-1))
    if len(win) == 0:
        return None
    if max_states and len(win) > max_states:
        win = np.sort((rng if rng is not None else np.random.default_rng(0)).choice(win, int(max_states), replace=False))
    fermi = np.flatnonzero(phi > 1e-9)  # the states that move E_F (a few, at small smearing)
    nb = e_ref.shape[1]
    reference = (C[fermi // nb, :, fermi % nb], kp[fermi // nb], phi[fermi] / phi[fermi].sum())
    both = None
    single = isinstance(extra_coefficients, dict)
    extras = None if extra_coefficients is None else ([extra_coefficients] if single else list(extra_coefficients))
    if extras is not None and epistemic_cut > 0:  # every prediction in one mapped pass
        both = model.H.predict_many(sd.atoms, model.H.pattern(sd.atoms, pairs), [model.H.coefficients, *extras])
    sens = sensitivities(model.H, sd.atoms, C[win // nb, :, win % nb], kp[win // nb], reference, pairs=pairs,
                         epistemic_cut=epistemic_cut, data=None if both is None else both[0])
    pat = sens["pattern"]
    # one sparsity analysis for every prediction of the structure (same pattern): BlochAssembler.dense_of
    asm = BlochAssembler(RealSpaceMatrix(pat.norb, pat.i, pat.j, pat.shift, sens["data"]))
    eps = reduce_(asm.dense(kp))
    ef = fermi_level(eps[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    err = ((eps - ef) - (e_ref - ef_ref)).reshape(-1)[win]
    out = {"err": err, "sens": sens, "states": win}
    if extras is not None:
        errs = []
        for q, c in enumerate(extras):
            data = (both[1 + q] if both is not None else
                    dataclasses.replace(model.H, coefficients=c).predict_data(sd.atoms, pat))
            eps = reduce_(asm.dense_of(data, kp))
            ef = fermi_level(eps[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
            errs.append(((eps - ef) - (e_ref - ef_ref)).reshape(-1)[win])
        out["err_extra"] = errs[0] if single else np.array(errs)
    return out


def _reference_solve(H, S, kpts) -> tuple:
    """Eigenvalues and S-orthonormal eigenvectors of the reference ``H, S`` on ``kpts``, and a
    function giving the eigenvalues of another ``H`` (same orbitals) with the same overlap: S(k)
    is assembled and factorised once per k (the reference's S is a validated training overlap;
    a Cholesky failure raises ``numpy.linalg.LinAlgError``).

    Returns
    -------
    eps : ndarray, shape (nk, norb), eV
    vecs : ndarray, shape (nk, norb, norb), complex (``vecs[k][:, n]``, ``C^H S C = 1``)
    eigenvalues : callable ``ndarray (nk, norb, norb) -> ndarray (nk, norb)``
        Of another ``H``'s Bloch sums on ``kpts`` (:meth:`BlochAssembler.dense`).
    """
    from ...tb.bloch import BlochAssembler

    Sk = BlochAssembler(S).dense(kpts)
    X = np.linalg.inv(np.linalg.cholesky(Sk))  # L^-1 per k
    Xh = np.conj(np.swapaxes(X, 1, 2))

    def reduced(hk):
        a = X @ hk @ Xh
        return 0.5 * (a + np.conj(np.swapaxes(a, 1, 2)))

    eps, Y = np.linalg.eigh(reduced(BlochAssembler(H).dense(kpts)))
    return eps, Xh @ Y, lambda hk: np.linalg.eigvalsh(reduced(hk))


def cross_validated_errors(structures, model, parts, progress: bool = False, designs=None, mapper=None,
                           eigenvalue_observations=None, keep_observations=False) -> dict:
    """Eigenvalue errors and uncalibrated spreads of every training structure, predicted by a
    model fitted without it (the calibration folds of ``model.config.uncertainty``).

    Each fold's model is refitted from the summed normal equations (:func:`fold_model`); each
    held-out structure is featurised once, for its prediction and the first-order spreads of its
    eigenvalues (:func:`held_out_parts`).  The held-out structures are independent tasks, run by
    ``mapper`` (the fit's engine, e.g. :func:`acehamil.threads.thread_mapper`; default serial):
    each draws its window eigenvalues from its own seeded generator, so the result does not depend
    on the engine.

    With ``eigenvalue_observations`` (:class:`.eigen_update.Observations` of the fit's eigenvalue update), each
    fold's model is updated by the observations of the fold's own training structures
    (:func:`.eigen_update.update_model`, linearised: no features again), as the fit updated the model.

    Returns
    -------
    dict of 1-D arrays over the eigenvalues within ``E_F +- window_eV`` of every held-out structure
        ``err``, ``sigma_epi``, ``sigma_noise``, ``sigma_shared`` (eV), ``structure`` (index into
        ``structures``), ``score`` (the structure's largest extrapolation score against the
        fold's training structures), ``weight`` (:func:`held_out_subset`: 1 unless
        ``calibration_per_kind`` leaves structures out); and ``folds`` (list of index arrays).
        With ``keep_observations`` (True, or the indices of the structures whose errors under ``model`` are
        wanted) also ``J`` ({structure: {(key, L): (m_s, n)}}, the sensitivities of each held-out structure's
        rows, in row order), ``err_model`` (the same rows' errors under ``model``, exact; NaN for structures
        not asked for), ``err_folds`` ({structure asked for: {fold g: (m_s,)}}: its errors under every other
        fold model, exact; all predictions of a structure from one mapped pass) and ``fold_models`` (the fold
        models, in the order of ``folds``): what
        :func:`.eigen_calibrated.calibrated_update` updates without evaluating features again.
    """
    from ...progress import Progress
    from .sums import serial_map
    from .uncertainty import designs_of, onsite_leverage, reference_of

    config = model.config
    uc = config.uncertainty
    n = len(structures)
    if len(parts) != n:
        raise ValueError(f"need one FitSums per structure ({n}), got {len(parts)}")
    seed = config.fit.seed + 7919
    folds = fold_splits(n, uc.calibration_folds, uc.calibration_fraction, seed)
    cells = [sd.atoms for sd in structures]
    pairs = [None] * n if designs is None else [d.pairs for d in designs]
    onsite = [designs_of(model.H, at, designs, k) for k, at in enumerate(cells)]
    weight = held_out_subset([sd.info.get("kind") for sd in structures], int(uc.calibration_per_kind), seed)
    run = serial_map if mapper is None else mapper
    fold_models, J, err_folds = [], {}, {}
    wanted = (set(range(n)) if keep_observations is True else
              {int(i) for i in keep_observations} if keep_observations is not False else set())

    ends = fold_ends(model, cells)  # once for every fold
    # with observations, every fold model first: each observed structure is also predicted under the others
    # (independent refits, one task each on the engine: their sums and eigen-solves release the GIL)
    subs = (list(run(fold_model, (model, parts), ((np.setdiff1d(np.arange(n), val), cells, ends) for val in folds)))
            if keep_observations is not False else None)
    others = {}  # structure -> the folds whose errors it carries beyond its own (err_extra rows 1..)

    def tasks():
        for f, val in enumerate(folds):
            keep = np.setdiff1d(np.arange(n), val)
            sub = subs[f] if subs is not None else fold_model(model, parts, keep, cells, ends)
            if keep_observations is not False:
                fold_models.append(sub)
            if eigenvalue_observations is not None:
                from .eigen_update import update_model

                sub = update_model(sub, eigenvalue_observations, keep)
            ref = reference_of(onsite_leverage(sub.H, onsite[k], len(cells[k])) for k in keep)
            for i in val:
                i = int(i)
                if weight[i] > 0:
                    extra = ()
                    if i in wanted:
                        others[i] = [g for g in range(len(folds)) if g != f]
                        extra = ([model.H.coefficients, *(subs[g].H.coefficients for g in others[i])],)
                    yield (sub, ref, structures[i], onsite[i], pairs[i], i, *extra)

    cols = {k: [] for k in ("err", "structure", "score", "weight", *(f"sigma_{q}" for q in PARTS))}
    bar = Progress(int(np.count_nonzero(weight > 0)), "calibrate", progress)
    common = (tuple(uc.kmesh), float(uc.window_eV), int(uc.calibration_states), seed, float(uc.epistemic_bond_cut))
    for r in run(held_out_task, common, tasks()):
        bar.step()
        if r is None:
            continue
        p, i, score = r
        m = len(p["err"])
        if keep_observations is not False:
            J[i] = p["J"]
            cols.setdefault("err_model", []).append(p["err_extra"][0] if "err_extra" in p else np.full(m, np.nan))
            if "err_extra" in p:
                err_folds[i] = dict(zip(others[i], p["err_extra"][1:]))
        for key in ("err", *(f"sigma_{q}" for q in PARTS)):
            cols[key].append(p[key])
        cols["structure"].append(np.full(m, i))
        cols["score"].append(np.full(m, score))
        cols["weight"].append(np.full(m, weight[i]))
    if not cols["err"]:
        raise ValueError(_no_eigenvalues_message(structures, folds, weight, uc))
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["folds"] = folds
    if keep_observations is not False:
        out["J"], out["fold_models"], out["err_folds"] = J, fold_models, err_folds
    return out


def _no_eigenvalues_message(structures, folds, weight, uc) -> str:
    """Why no held-out eigenvalue entered the calibration: no electron count, or none within the window."""
    held = [int(i) for val in folds for i in val if weight[int(i)] > 0]
    without = sum(structures[i].n_electrons is None for i in held)
    split = (f"{len(folds)} folds" if uc.calibration_folds > 1 else
             f"calibration_folds = 1, calibration_fraction = {uc.calibration_fraction:g}")
    if without == len(held):
        return f"calibration needs training structures with n_electrons (none of the {len(held)} held out has one)"
    return (f"calibration found no eigenvalue within E_F +- {uc.window_eV:g} eV (window_eV) on the "
            f"{'x'.join(map(str, uc.kmesh))} k-mesh of its {len(held)} held-out structure(s) ({split}"
            f"{f'; {without} without n_electrons' if without else ''}): each has a gap wider than 2 x window_eV around E_F; "
            "widen [uncertainty] window_eV or hold out more structures")


def held_out_task(kmesh, window_eV: float, max_states: int, seed: int, epistemic_cut: float, model, reference: dict,
                  sd, designs: dict, pairs, index: int, extra_coefficients=None):
    """One held-out structure of the calibration (the task :func:`cross_validated_errors` maps):
    ``designs`` its on-site designs, ``pairs`` its neighbour list (None: built), ``extra_coefficients``
    (optional) H coefficients whose errors on the same states are also returned (``err_extra``).

    Returns
    -------
    tuple or None
        ``(held_out_parts(...), index, score)``, ``score`` the structure's largest extrapolation
        score against ``reference`` (NaN without one); None without ``n_electrons``.
    """
    from .uncertainty import onsite_leverage, score_of

    p = held_out_parts(model, sd, kmesh, window_eV, pairs=pairs, max_states=max_states,
                       rng=np.random.default_rng([seed, index]), epistemic_cut=epistemic_cut,
                       extra_coefficients=extra_coefficients)
    if p is None:
        return None
    natoms = len(sd.atoms)
    score = score_of(onsite_leverage(model.H, designs, natoms), reference, natoms)
    return p, index, float(np.nanmax(score)) if np.any(np.isfinite(score)) else float("nan")


@with_inner_threads
def calibrate(structures, model, parts, progress: bool = False, designs=None, mapper=None,
              eigenvalue_observations=None) -> dict:
    """Fit the spread factors ``a, b, c`` and the extrapolation part ``d`` on held-out folds of the
    training structures.

    Parameters
    ----------
    structures : sequence of StructureData
        The training structures only (with H, S and ``n_electrons``).
    model : HamiltonianModel
        Fitted on all ``structures``; ``model.config.uncertainty`` sets the folds (one held-out
        share, or ``calibration_folds`` > 1 folds each held out once), draws and grid.
    parts : sequence of FitSums
        The per-structure H sums of that fit: each fold model is refitted from them (a
        subtraction and a solve, :func:`fold_model`), no features are evaluated again.
    designs : sequence of StructureDesigns, optional
        One per structure, from the fit (:class:`acehamil.models.hamiltonian.sums.StructureDesigns`):
        its neighbour list and on-site designs are reused (none are built again).
    mapper : callable ``(fn, common, tasks) -> iterable``, optional
        Runs the held-out structures (the fit's engine; default serial); same result for any.
    eigenvalue_observations : Observations, optional
        Of the fit's eigenvalue update: each fold model is updated as the fit's was
        (:func:`cross_validated_errors`).

    Returns
    -------
    dict
        ``{"scale_epistemic", "scale_noise", "scale_shared", "extrapolation_sigma_eV" (d, eV: the
        extrapolation part at score 1, :func:`extrapolation_sigma`), "calibration": {"structures": [...], "n",
        "coverage_90", "coverage_68", "spearman_sigma_error", "uncalibrated_coverage_90", "folds"}}``
        (indices into ``structures``; figures over the held-out eigenvalues of the folds).

    Runs inside :func:`acehamil.threads.inner_threads` (one BLAS thread unless ``--threads`` /
    ``limit_threads`` chose more): its dense products are small, and on the 2-core machine
    BLAS' default threading took the README job's calibration from ~33 s to 78 s CPU.
    """
    cv = cross_validated_errors(structures, model, parts, progress=progress, designs=designs, mapper=mapper,
                                eigenvalue_observations=eigenvalue_observations)
    return fit_factors(cv)


def fit_factors(cv: dict) -> dict:
    """The spread factors and coverage figures of :func:`calibrate` from the held-out errors and parts
    ``cv`` (:func:`cross_validated_errors`' keys ``err``, ``sigma_*``, ``score``, ``weight``, ``structure``,
    ``folds``)."""
    e, parts_ = cv["err"], [cv[f"sigma_{p}"] for p in PARTS]
    # the extrapolation part: d sqrt(score) per structure, the score against the fold's own training structures
    sx = EXTRAPOLATION_UNIT * np.sqrt(np.where(np.isfinite(cv["score"]), np.maximum(cv["score"], 0.0), 0.0))
    w = cv["weight"]
    uniform = bool(np.all(w == w[0]))
    a, b, c, d = fit_scales(e, *parts_, sx, weights=None if uniform else w)
    se, sn, ss = parts_
    sig = np.sqrt((a * se) ** 2 + (b * sn) ** 2 + (c * ss) ** 2 + (d * sx) ** 2)
    m = interval_metrics(e, sig)
    m["uncalibrated_coverage_90"] = interval_metrics(e, np.sqrt(se**2 + sn**2))["coverage_90"]
    if not uniform:  # the coverages as estimates over all training structures
        e_abs = np.abs(e)
        m["coverage_90"] = float(np.sum(w * (e_abs <= Z90 * sig)) / w.sum())
        m["coverage_68"] = float(np.sum(w * (e_abs <= Z68 * sig)) / w.sum())
        m["uncalibrated_coverage_90"] = float(np.sum(w * (e_abs <= Z90 * np.sqrt(se**2 + sn**2))) / w.sum())
    m["structures"] = [int(i) for i in np.unique(cv["structure"])]
    m["folds"] = len(cv["folds"])
    return {"scale_epistemic": a, "scale_noise": b, "scale_shared": c, "extrapolation_sigma_eV": d * EXTRAPOLATION_UNIT,
            "calibration": m}

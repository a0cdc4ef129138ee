"""Calibration of a Hamiltonian model's eigenvalue spread on its training data.

The spread's parts and their calibrated sum ``sigma^2 = (a sigma_epi)^2 + (b sigma_noise)^2 +
(c sigma_shared)^2 + (d sqrt(score))^2`` are described in :mod:`.spread`.
The BLR evidence treats the block errors as independent, but a linear model's errors are
systematic (the same environment gives the same error on many blocks), so ``a = b = 1, c = 0``
is not calibrated.  :func:`calibrate` cross-validates over the training structures (each
fold's model refitted from the per-structure normal-equation sums, :func:`.folds.fold_model`),
predicts each held-out structure once and takes the first-order variances of the three parts
of its eigenvalues (:func:`.window.held_out_parts`, :mod:`.linear_response`: exact linear response, no
draws, so no Monte-Carlo noise in the calibration; the draws of :func:`.spread.eigen_parts` are their
finite-size version), and fits ``a, b, c, d`` by maximum likelihood of the errors
(:func:`.intervals.fit_scales`) (each structure's score taken against its fold's training structures),
then one common factor so that 90 % of them lie within ``1.645 sigma``.  Only training structures are used.

The functions that lived here before the split keep working from this module (re-exported below).
"""

from __future__ import annotations

import numpy as np

from ...threads import with_inner_threads
from .folds import calibration_folds, fold_ends, fold_model, fold_splits, held_out_subset
from .intervals import Z68, Z90, fit_scales, interval_metrics
from .spread import EXTRAPOLATION_UNIT, PARTS
from .window import held_out_parts

# re-exported (their home was this module): listed in __all__
from .spread import SPLIT_AMPLITUDE, combine, default_samples, eigen_parts, extrapolation_sigma, scales_of
from .window import reference_errors, window_sensitivities

__all__ = [
    "calibrate", "cross_validated_errors", "fit_factors", "held_out_task",
    # re-exported
    "EXTRAPOLATION_UNIT", "PARTS", "SPLIT_AMPLITUDE", "combine", "default_samples", "eigen_parts",
    "extrapolation_sigma", "fold_ends", "fold_model", "fold_splits", "held_out_parts", "held_out_subset",
    "reference_errors", "scales_of", "window_sensitivities",
]


def cross_validated_errors(structures, model, parts, progress: bool = False, designs=None, mapper=None,
                           eigenvalue_observations=None, keep_observations=False) -> dict:
    """Eigenvalue errors and uncalibrated spreads of every training structure, predicted by a
    model fitted without it (the calibration folds of ``model.config.uncertainty``).

    Each fold's model is refitted from the summed normal equations (:func:`.folds.fold_model`); each
    held-out structure is featurised once, for its prediction and the first-order spreads of its
    eigenvalues (:func:`.window.held_out_parts`).  The held-out structures are independent tasks, run by
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
        fold's training structures), ``weight`` (:func:`.folds.held_out_subset`: 1 unless
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
    folds = calibration_folds(n, config)
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
        subtraction and a solve, :func:`.folds.fold_model`), no features are evaluated again.
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
        extrapolation part at score 1, :func:`.spread.extrapolation_sigma`), "calibration": {"structures": [...], "n",
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

"""Errors of a fitted model against reference (DFT) structures.

Matrix errors are taken over the blocks the model predicts (on-site blocks and
bonds within the off-site cutoff); reference blocks outside that range are
reported separately as ``unmodelled_max_abs`` (the truncation of the model).
Each matrix entry is attributed to its fitted block type: ``(a, b)`` and
``(b, a)`` on-site blocks, and both directions of a bond, count for the
canonical type (species ``zi <= zj``, shells ``a <= b`` for equal species).

Eigenvalue errors: the model's and the reference's generalized eigenvalues on
a Monkhorst-Pack grid (and along the standard band path), band by band,
relative to each one's own Fermi level (see :func:`eigenvalue_errors`);
``mae_meV`` averages over the reference eigenvalues within
``E_F +- window_eV``.
"""

from __future__ import annotations

import numpy as np

EV_TO_MEV = 1000.0


def as_matrices(prediction):
    """A :class:`~acehamil.models.hamiltonian.model.ModelMatrices` from a prediction: itself, or a
    predicted :class:`~acehamil.structure.StructureData` (``H[0]``, ``S``, ``H_draws`` as the draws)."""
    from .model import ModelMatrices

    if isinstance(prediction, ModelMatrices):
        return prediction
    if not getattr(prediction, "H", None) or getattr(prediction, "S", None) is None:
        raise TypeError(f"a prediction must be ModelMatrices or a StructureData with H and S, got {type(prediction).__name__}")
    from ...tb.draws import extrapolation_sigma_of

    draws = () if prediction.H_draws is None else (prediction.H_draws,)
    return ModelMatrices(prediction.H[0], prediction.S, draws, sigma_extrapolation=extrapolation_sigma_of(prediction))


def _predictions(model, structures, predictions, n_samples: int = 0, rng=None) -> list:
    """One prediction per structure: the given ones, else :meth:`HamiltonianModel.matrices` (with
    ``n_samples`` calibrated draws)."""
    if predictions is None:
        return [model.matrices(sd.atoms, n_samples=n_samples, rng=rng) for sd in structures]
    predictions = [as_matrices(p) for p in predictions]
    if len(predictions) != len(structures):
        raise ValueError(f"{len(predictions)} predictions for {len(structures)} structures")
    for k, (p, sd) in enumerate(zip(predictions, structures)):
        if p.S.natoms != len(sd.atoms):
            raise ValueError(f"prediction {k} has {p.S.natoms} atoms, structure {k} has {len(sd.atoms)}")
    return predictions


def _small_unique(code: np.ndarray) -> tuple:
    """``np.unique(code, return_inverse=True)`` of non-negative integer codes: by a count over the
    code range where that is not much larger than the array (no sort: ~25x faster for the 10^5
    entries of a 16-atom H), else by ``np.unique``.  Same arrays either way.

    Examples
    --------
    >>> u, inv = _small_unique(np.array([7, 3, 7, 0]))
    >>> u.tolist(), inv.tolist()
    ([0, 3, 7], [2, 1, 2, 0])
    """
    code = np.asarray(code, dtype=np.int64).reshape(-1)
    top = int(code.max(initial=-1)) + 1
    if len(code) == 0 or code.min() < 0 or top > 4 * len(code) + (1 << 20):
        uniq, inv = np.unique(code, return_inverse=True)
        return uniq, np.asarray(inv).reshape(-1)
    uniq = np.flatnonzero(np.bincount(code, minlength=top))
    where = np.zeros(top, dtype=np.int64)
    where[uniq] = np.arange(len(uniq))
    return uniq, where[code]


def _entry_keys(matrix, numbers, basis) -> tuple:
    """Canonical block-type key of every entry of ``matrix``: (keys list, key index per entry)."""
    rows, cols, vals, bidx = matrix.coo()
    lay = basis.layout(numbers)
    shell = lay.orbital_shell
    ai, aj = lay.orbital_atom[rows], lay.orbital_atom[cols]
    zi, zj = np.asarray(numbers)[ai], np.asarray(numbers)[aj]
    sa, sb = shell[rows], shell[cols]
    onsite = (matrix.i[bidx] == matrix.j[bidx]) & np.all(matrix.shift[bidx] == 0, axis=1)
    swap = (zi > zj) | ((zi == zj) & (sa > sb))
    z1, z2 = np.where(swap, zj, zi), np.where(swap, zi, zj)
    s1, s2 = np.where(swap, sb, sa), np.where(swap, sa, sb)
    # one int64 per entry (mixed radix: species < 119, shell < ns), sorted like the rows (o, z1, z2, s1, s2)
    ns = int(max(s1.max(initial=0), s2.max(initial=0))) + 1
    code = (((onsite.astype(np.int64) * 119 + z1) * 119 + z2) * ns + s1) * ns + s2
    uniq, inv = _small_unique(code)
    rows = []
    for c in uniq.tolist():
        c, d = divmod(c, ns)
        c, cc = divmod(c, ns)
        c, b = divmod(c, 119)
        o, a = divmod(c, 119)
        rows.append((o, a, b, cc, d))
    keys = [f"{'onsite' if o else 'offsite'}/{a}-{b}/{c}-{d}" for o, a, b, c, d in rows]
    return keys, np.asarray(inv).reshape(-1), vals


def matrix_residuals(pred, ref) -> tuple:
    """Residuals ``pred - ref`` on the predicted pattern, and the largest unmodelled ``|ref|``.

    Returns
    -------
    resid : ndarray, shape (pred.data.size,)
    unmodelled_max_abs : float
    """
    ref_vals, used = ref.on_pattern(pred)
    unused = ~used[np.repeat(np.arange(ref.nblocks), np.diff(ref.offsets))]
    un = float(np.abs(ref.data[unused]).max(initial=0.0))
    return pred.data - ref_vals, un


def block_errors(model, structures, which: str = "H", predictions=None) -> dict:
    """Per block type RMSE and MAE of H (meV) or S (dimensionless).

    For H, ``*_aligned`` errors are taken after removing the best constant
    ``V S`` (least squares over the predicted blocks) per structure: the energy
    zero of periodic DFT is arbitrary (it moves with the volume), so H is only
    defined up to ``V S``; ``energy_zero_eV`` lists the ``V`` found.

    Parameters
    ----------
    model : HamiltonianModel
    structures : sequence of StructureData
    which : {"H", "S"}
    predictions : sequence, optional
        The model's prediction of each structure (:class:`~acehamil.models.hamiltonian.model.ModelMatrices`
        or predicted StructureData); default: predicted here (:meth:`HamiltonianModel.matrices`).

    Returns
    -------
    dict
        ``{"rmse", "mae", "rmse_aligned", "mae_aligned", "energy_zero_eV", "n_entries", "unmodelled_max_abs",
        "per_block": {key: {"rmse", "mae", "rmse_aligned", "mae_aligned", "n"}},
        "per_structure": [{"rmse", "rmse_aligned", "onsite_rmse_aligned", "n"}, ...]}``; meV for H.
    """
    if which not in ("H", "S"):
        raise ValueError(f"which must be 'H' or 'S', got {which!r}")
    predictions = _predictions(model, structures, predictions)
    unit = EV_TO_MEV if which == "H" else 1.0
    acc = {"raw": ({}, {}, {}), "aligned": ({}, {}, {})}
    tot = {"raw": [0.0, 0.0], "aligned": [0.0, 0.0]}
    tot_n = 0
    unmod = 0.0
    zeros = []
    per_structure = []
    for sd, pm in zip(structures, predictions):
        ref = sd.H[0] if which == "H" else sd.S
        if ref is None:
            raise ValueError(f"reference structure has no {which}")
        pred = pm.H if which == "H" else pm.S  # H with the cell's energy zero V S (HamiltonianModel.matrices)
        res, un = matrix_residuals(pred, ref)
        unmod = max(unmod, un)
        keys, kidx, _ = _entry_keys(pred, sd.atoms.numbers, sd.basis)
        variants = {"raw": res * unit}
        if which == "H" and sd.S is not None:
            s_ref = -matrix_residuals(pred.with_data(np.zeros(pred.data.size)), sd.S)[0]
            V = -float(res @ s_ref) / float(s_ref @ s_ref)  # best energy zero: ref ~ pred + V S
            zeros.append(V)
            variants["aligned"] = (res + V * s_ref) * unit
        else:
            variants["aligned"] = variants["raw"]
        for name, r in variants.items():
            sq, ab, cnt = acc[name]
            for k, key in enumerate(keys):
                rk = r[kidx == k]
                sq[key] = sq.get(key, 0.0) + float(rk @ rk)
                ab[key] = ab.get(key, 0.0) + float(np.abs(rk).sum())
                cnt[key] = cnt.get(key, 0) + int(rk.size)
            tot[name][0] += float(r @ r)
            tot[name][1] += float(np.abs(r).sum())
        tot_n += res.size
        ra = variants["aligned"]
        on = np.isin(kidx, [k for k, key in enumerate(keys) if key.startswith("onsite/")])
        per_structure.append({"rmse": float(np.sqrt(np.mean(variants["raw"] ** 2))) if res.size else 0.0,
                              "rmse_aligned": float(np.sqrt(np.mean(ra ** 2))) if res.size else 0.0,
                              "onsite_rmse_aligned": float(np.sqrt(np.mean(ra[on] ** 2))) if on.any() else 0.0,
                              "n": int(res.size)})
    sq, ab, cnt = acc["raw"]
    sqa, aba, _ = acc["aligned"]
    per = {k: {"rmse": float(np.sqrt(sq[k] / cnt[k])), "mae": float(ab[k] / cnt[k]), "n": cnt[k],
               "rmse_aligned": float(np.sqrt(sqa[k] / cnt[k])), "mae_aligned": float(aba[k] / cnt[k])} for k in sorted(sq)}
    n = max(tot_n, 1)
    return {
        "rmse": float(np.sqrt(tot["raw"][0] / n)),
        "mae": float(tot["raw"][1] / n),
        "rmse_aligned": float(np.sqrt(tot["aligned"][0] / n)),
        "mae_aligned": float(tot["aligned"][1] / n),
        "energy_zero_eV": zeros,
        "n_entries": int(tot_n),
        "unmodelled_max_abs": unmod * unit,
        "per_block": per,
        "per_structure": per_structure,
    }


def eigenvalue_errors(model, structures, kmesh=(6, 6, 6), window_eV: float = 2.0, path_points: int = 60,
                      uncertainty: bool | None = None, n_samples: int | None = None, seed: int = 0,
                      predictions=None, return_values: bool = False, mapper=None) -> dict:
    """Eigenvalue errors (meV) within ``E_F +- window_eV`` on a k-grid and along the band path.

    Absolute eigenvalues of a periodic DFT calculation carry an arbitrary,
    volume-dependent constant (the average electrostatic potential), which a
    local model cannot know; so the headline ``mae_meV`` compares energies
    relative to each one's own Fermi level (computed the same way, from
    ``n_electrons`` on the same k-grid: mid-gap for an insulator).  The
    unaligned error is ``mae_meV_absolute`` and the Fermi-level difference
    ``fermi_shift_meV`` (model - reference, mean over structures).  Without
    ``n_electrons`` both use the reference ``fermi_level`` (no alignment).
    Errors are band by band, k-weighted, over the reference eigenvalues in the window.
    ``kmesh`` is one Monkhorst-Pack grid for every structure, or None: each structure on its
    own grid scaled with its cell (:func:`eval_kmesh`; 6x6x6 for the 8-atom Si cell, 3x3x3
    for 64 atoms); the grid of each is in ``per_structure[i]["kmesh"]``.

    With ``uncertainty`` (default: when the model carries posteriors) the model's
    eigenvalues come with calibrated spreads (first order, as the calibration:
    :func:`.propagation.eigen_sigma`, ``n_samples`` epistemic draws seeded by ``seed`` and the
    structure's index) and the result gains
    ``"uncertainty": {"coverage_90", "coverage_68", "spearman_sigma_error", "n",
    "mean_sigma_meV", "per_structure": [{"coverage_90", "coverage_68", "spearman_sigma_error",
    "n", "mae_meV", "mean_sigma_meV"}, ...]}`` over the same grid eigenvalues (unweighted
    counts; coverage_90: ``|err| <= 1.645 sigma``, coverage_68: ``|err| <= sigma``).  With
    ``return_values`` it also holds ``"values": {"err", "sigma"}`` (arrays, eV, the pooled
    eigenvalues; not JSON-able), for pooling over calls.

    ``predictions`` (one per structure, as :func:`block_errors`) are used instead of predicting
    again; with ``uncertainty`` their draws (calibrated, ``ModelMatrices.draws == (delta,)`` or a
    StructureData's ``H_draws``) give the spreads, and a prediction without draws gets none.

    ``mapper`` (``(fn, common, tasks) -> iterable`` in task order, as for
    :func:`~acehamil.models.hamiltonian.fit.fit`, e.g. :func:`acehamil.threads.thread_mapper`)
    runs the per-structure eigen-solves; the results do not depend on it.

    Returns
    -------
    dict
        ``{"mae_meV", "max_meV", "mae_meV_absolute", "fermi_shift_meV", "window_eV", "kmesh",
        "band_path_mae_meV", "n", "per_structure": [{"mae_meV", "max_meV", "mae_meV_absolute",
        "band_path_mae_meV"}, ...]}`` (+ ``"uncertainty"``).
    """
    from .intervals import interval_metrics
    from .sums import serial_map
    from .uncertainty import has_posterior

    if uncertainty is None:
        uncertainty = has_posterior(model.H)
    run = serial_map if mapper is None else mapper
    if predictions is None and uncertainty:
        # predicted here: the first-order spreads of propagation.eigen_sigma, as calibrated (each structure's
        # epistemic draws from its own seeded generator: the same for any mapper)
        from .spread import default_samples

        K = n_samples or default_samples(model)
        if K < 2:
            raise ValueError("n_samples must be >= 2: one posterior draw has no spread (coverage and sigma would be "
                             "meaningless)")
        tasks = [(sd, None, model, (int(seed), k), int(K)) for k, sd in enumerate(structures)]
    else:
        if predictions is None:
            predictions = [model.matrices(sd.atoms) for sd in structures]
        predictions = _predictions(model, structures, predictions)
        tasks = [(sd, pm) for sd, pm in zip(structures, predictions)]
    acc = {"grid": [], "grid_abs": [], "path": [], "w": []}
    unc = {"err": [], "sigma": [], "per": []}
    shifts = []
    per_structure = []
    for r in run(_structure_eigen_errors, (None if kmesh is None else tuple(kmesh), float(window_eV), int(path_points),
                                           bool(uncertainty)), tasks):
        shifts.append(r["shift"])
        for key in acc:
            acc[key].append(r[key])
        if r["err"] is not None:
            err, sig = r["err"], r["sigma"]
            unc["err"].append(err)
            unc["sigma"].append(sig)
            per = interval_metrics(err, sig)
            per.update(mae_meV=float(np.abs(err).mean() * EV_TO_MEV) if err.size else float("nan"),
                       mean_sigma_meV=float(sig.mean() * EV_TO_MEV) if sig.size else float("nan"))
            unc["per"].append(per)
        g1, w1 = r["grid"], r["w"]
        nan = float("nan")
        per_structure.append({"kmesh": r["kmesh"],
                              "mae_meV": float((w1 * g1).sum() / w1.sum() * EV_TO_MEV) if g1.size else nan,
                              "max_meV": float(g1.max() * EV_TO_MEV) if g1.size else nan,
                              "mae_meV_absolute": float((w1 * r["grid_abs"]).sum() / w1.sum() * EV_TO_MEV) if g1.size else nan,
                              "band_path_mae_meV": float(r["path"].mean() * EV_TO_MEV) if r["path"].size else nan})
    g = np.concatenate(acc["grid"]) if acc["grid"] else np.zeros(0)
    ga = np.concatenate(acc["grid_abs"]) if acc["grid_abs"] else np.zeros(0)
    w = np.concatenate(acc["w"]) if acc["w"] else np.zeros(0)
    p = np.concatenate(acc["path"]) if acc["path"] else np.zeros(0)
    nan = float("nan")
    extra = {}
    if unc["err"]:
        e_all, s_all = np.concatenate(unc["err"]), np.concatenate(unc["sigma"])
        extra["uncertainty"] = {**interval_metrics(e_all, s_all),
                                "mean_sigma_meV": float(s_all.mean() * EV_TO_MEV) if s_all.size else nan,
                                "per_structure": unc["per"]}
        if return_values:
            extra["uncertainty"]["values"] = {"err": e_all, "sigma": s_all}
    return {
        **extra,
        "mae_meV": float((w * g).sum() / w.sum() * EV_TO_MEV) if g.size else nan,
        "max_meV": float(g.max() * EV_TO_MEV) if g.size else nan,
        "mae_meV_absolute": float((w * ga).sum() / w.sum() * EV_TO_MEV) if ga.size else nan,
        "fermi_shift_meV": float(np.mean(shifts) * EV_TO_MEV) if shifts else nan,
        "window_eV": float(window_eV),
        "kmesh": "per structure" if kmesh is None else list(kmesh),
        "band_path_mae_meV": float(p.mean() * EV_TO_MEV) if p.size else nan,
        "n": int(g.size),
        "per_structure": per_structure,
    }


#: k-point density of the per-structure grids of :func:`eigenvalue_errors` with ``kmesh=None`` (Å):
#: ``n_i = ceil(EVAL_K_DENSITY |b_i|)``, 6x6x6 for the 8-atom 5.43 Å Si cell (the grid of every
#: figure in docs/models.md), 6x6x3 for its 1x1x2 supercells, 3x3x3 for 64 atoms.
EVAL_K_DENSITY = 32.5


def eval_kmesh(atoms) -> tuple:
    """Per-structure grid of :func:`eigenvalue_errors` (``kmesh=None``): :func:`acehamil.tb.kpath.kmesh_for`
    at :data:`EVAL_K_DENSITY`.

    Examples
    --------
    >>> from ase.build import bulk
    >>> si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    >>> eval_kmesh(si8), eval_kmesh(si8 * (1, 1, 2)), eval_kmesh(si8 * (2, 2, 2))
    ((6, 6, 6), (6, 6, 3), (3, 3, 3))
    """
    from ...tb.kpath import kmesh_for

    return kmesh_for(atoms, EVAL_K_DENSITY)


def _named_solve(H, S, kpts, sd, whose: str):
    """:func:`acehamil.tb.eigen.solve` whose OverlapError names the structure and whose S failed (a reference
    dataset's S not positive definite was reported as if the model's)."""
    from ...tb.eigen import OverlapError, solve

    try:
        return solve(H, S, kpts)
    except OverlapError as err:
        raise OverlapError(f"structure {sd.info.get('name', '?')!r}, {whose}: {err}", err.kpoint, err.index,
                           err.smallest_eigenvalue, err.condition) from None


def _structure_eigen_errors(kmesh, window_eV: float, path_points: int, uncertainty: bool, sd, pm, model=None,
                            seed=None, n_samples: int = 0) -> dict:
    """The eigenvalue errors of one structure (the task :func:`eigenvalue_errors` maps).

    ``pm`` the prediction (its draws give the spreads), or None: ``model`` predicts, with the
    first-order spreads of :func:`.propagation.eigen_sigma` (``n_samples`` epistemic draws seeded by
    ``seed``) when ``uncertainty`` and the structure has an electron count.

    Returns
    -------
    dict
        ``grid``, ``grid_abs``, ``w`` (the k-weights), ``path``: absolute errors (eV) of the reference
        eigenvalues in the window, Fermi-aligned and not, on the grid and along the band path;
        ``shift``: model - reference Fermi level (eV); ``err``, ``sigma``: signed errors and spreads
        on the grid (eV; None without draws).
    """
    from ...tb.bands import band_path
    from ...tb.dos import monkhorst_pack
    from ...tb.draws import eigenvalue_draws, fermi_levels, relative_sigma
    from ...tb.smearing import fermi_level

    if kmesh is None:
        kmesh = eval_kmesh(sd.atoms)
    kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
    sigma = None
    if pm is None and uncertainty and sd.n_electrons is not None:
        from .propagation import eigen_sigma

        # the spreads of the bands that come within the window (+1 eV: the reference's window
        # eigenvalues may belong to a model band just outside it); all bands if that misses any
        r = eigen_sigma(model, sd.atoms, kp, wk, sd.n_electrons, n_samples, np.random.default_rng(seed),
                        window_eV=window_eV + 1.0)
        H, S, e_mod, sigma = r["H"], r["S"], r["eps"], r["sigma"]
    elif pm is None:
        pm = model.matrices(sd.atoms)
    if pm is not None:
        H, S = pm.H, pm.S
    if pm is not None and uncertainty and sd.n_electrons is not None and len(pm.draws) == 1:
        e_mod, draws = eigenvalue_draws(H, S, pm.draws[0], kp)
        ef_d, efd = fermi_levels(e_mod, draws, wk, sd.n_electrons)
        # the extrapolation part (one spread per structure, spread.extrapolation_sigma) in quadrature
        sigma = np.sqrt(relative_sigma(e_mod, draws, ef_d, efd) ** 2 + float(getattr(pm, "sigma_extrapolation", 0.0)) ** 2)
    elif sigma is None:
        e_mod = _named_solve(H, S, kp, sd, "the model's prediction")
    e_ref = _named_solve(sd.H[0], sd.S, kp, sd, "the reference data")
    nb = min(e_ref.shape[1], e_mod.shape[1])
    e_ref, e_mod = e_ref[:, :nb], e_mod[:, :nb]
    if sd.n_electrons is not None:
        ef_ref = fermi_level(e_ref[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
        ef_mod = fermi_level(e_mod[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    elif sd.fermi_level is not None:
        ef_ref = ef_mod = float(sd.fermi_level)
    else:
        raise ValueError(f"reference structure {sd.info.get('name', '?')!r} has neither fermi_level nor n_electrons: no "
                         "eigenvalue window")
    mask = np.abs(e_ref - ef_ref) <= window_eV
    out = {"shift": ef_mod - ef_ref,
           "grid": np.abs((e_mod - ef_mod) - (e_ref - ef_ref))[mask],
           "grid_abs": np.abs(e_mod - e_ref)[mask],
           "w": np.broadcast_to(wk[:, None], e_ref.shape)[mask],
           "err": None, "sigma": None, "kmesh": [int(n) for n in kmesh]}
    if sigma is not None:
        out["err"] = ((e_mod - ef_mod) - (e_ref - ef_ref))[mask]
        out["sigma"] = sigma[:, :nb][mask]
        if np.any(np.isnan(out["sigma"])):  # a window eigenvalue on a band without spread: all bands
            r = eigen_sigma(model, sd.atoms, kp, wk, sd.n_electrons, n_samples, np.random.default_rng(seed))
            out["sigma"] = r["sigma"][:, :nb][mask]
    kpath = band_path(sd.atoms, npoints=path_points).kpts
    p_ref = _named_solve(sd.H[0], sd.S, kpath, sd, "the reference data")
    p_mod = _named_solve(H, S, kpath, sd, "the model's prediction")
    nb = min(p_ref.shape[1], p_mod.shape[1])
    p_ref, p_mod = p_ref[:, :nb], p_mod[:, :nb]
    on_path = np.abs(p_ref - ef_ref) <= window_eV
    out["path"] = np.abs((p_mod - ef_mod) - (p_ref - ef_ref))[on_path]
    return out


def evaluate(model, structures, kmesh=(6, 6, 6), window_eV: float = 2.0, uncertainty: bool | None = None,
             n_samples: int | None = None, predictions=None, seed: int = 0, mapper=None) -> dict:
    """The ``acehamil evaluate --json`` contract.

    Each structure is predicted by the model (:meth:`HamiltonianModel.matrices`; with ``uncertainty``
    the eigenvalues' spreads are first order, :func:`.propagation.eigen_sigma`, ``n_samples`` epistemic
    draws seeded by ``seed`` and the structure's index), or ``predictions`` (one per structure:
    ModelMatrices or predicted StructureData, e.g. from :meth:`HamiltonianModel.predict_structure`)
    are used as given, their draws giving the spreads.
    ``mapper`` runs the per-structure eigen-solves (see :func:`eigenvalue_errors`).

    Returns
    -------
    dict
        ``{"H": {"rmse_meV", "mae_meV", "rmse_meV_aligned", "mae_meV_aligned", "energy_zero_eV",
        "unmodelled_max_abs_meV", "per_block": {key: {"rmse_meV", "mae_meV", "rmse_meV_aligned", "mae_meV_aligned", "n"}}},
        "S": {"rmse", "mae", "unmodelled_max_abs", "per_block": {...}},
        "eigenvalues": {"mae_meV", "max_meV", "mae_meV_absolute", "fermi_shift_meV", "window_eV", "kmesh",
        "band_path_mae_meV", "n", "uncertainty": {...}},
        "per_structure": [{"name", "kind", "H_rmse_meV", "H_rmse_meV_aligned", "onsite_rmse_meV_aligned",
        "S_rmse", "eig_mae_meV", "eig_max_meV", "eig_mae_meV_absolute", "band_path_mae_meV"}, ...],
        "n_structures"}``; ``"uncertainty"`` (see :func:`eigenvalue_errors`) when the model
        carries posteriors and ``uncertainty`` is not False (with ``predictions``: when they
        carry draws).  ``kind`` is the structure's ``info["kind"]`` (None when absent).
    """
    from ...errors import UserError
    from ...structure.validate import check_same_basis
    from .uncertainty import has_posterior

    structures = list(structures)
    if not structures:
        raise UserError("no structures to evaluate")
    for k, sd in enumerate(structures):
        check_same_basis(model.orbital_basis, sd.basis, sd.atoms.numbers, f"structure {k} ({sd.info.get('name', '?')!r})")
    if uncertainty is None:
        uncertainty = has_posterior(model.H)
    given = predictions is not None
    if not given:  # the block errors from the plain prediction; the eigenvalues' spreads first order (as calibrated)
        predictions = [model.matrices(sd.atoms) for sd in structures]
    predictions = _predictions(model, structures, predictions)
    h = block_errors(model, structures, "H", predictions)
    s = block_errors(model, structures, "S", predictions)
    e = eigenvalue_errors(model, structures, kmesh=kmesh, window_eV=window_eV, uncertainty=uncertainty,
                          predictions=predictions if (given or not uncertainty) else None, mapper=mapper,
                          n_samples=n_samples, seed=seed)
    per = [{"name": sd.info.get("name"), "kind": sd.info.get("kind"),
            "H_rmse_meV": hk["rmse"], "H_rmse_meV_aligned": hk["rmse_aligned"],
            "onsite_rmse_meV_aligned": hk["onsite_rmse_aligned"], "S_rmse": sk["rmse"],
            "eig_mae_meV": ek["mae_meV"], "eig_max_meV": ek["max_meV"], "eig_mae_meV_absolute": ek["mae_meV_absolute"],
            "band_path_mae_meV": ek["band_path_mae_meV"], "kmesh": ek["kmesh"]}
           for sd, hk, sk, ek in zip(structures, h["per_structure"], s["per_structure"], e.pop("per_structure"))]
    return {
        "H": {
            "rmse_meV": h["rmse"], "mae_meV": h["mae"], "rmse_meV_aligned": h["rmse_aligned"], "mae_meV_aligned": h["mae_aligned"],
            "energy_zero_eV": h["energy_zero_eV"], "unmodelled_max_abs_meV": h["unmodelled_max_abs"],
            "per_block": {k: {"rmse_meV": v["rmse"], "mae_meV": v["mae"], "rmse_meV_aligned": v["rmse_aligned"],
                              "mae_meV_aligned": v["mae_aligned"], "n": v["n"]} for k, v in h["per_block"].items()},
        },
        "S": {"rmse": s["rmse"], "mae": s["mae"], "unmodelled_max_abs": s["unmodelled_max_abs"], "per_block": s["per_block"]},
        "eigenvalues": e,
        "per_structure": per,
        "n_structures": len(structures),
    }


def by_kind(per_structure, default_kind: str = "unlabelled") -> dict:
    """Mean errors per structure kind from :func:`evaluate`'s ``per_structure`` records.

    Parameters
    ----------
    per_structure : list of dict
    default_kind : str
        Kind of records whose ``kind`` is None.

    Returns
    -------
    dict {kind: {"n", "H_rmse_meV_aligned", "H_rmse_meV", "onsite_rmse_meV_aligned", "eig_mae_meV",
    "eig_max_meV", "eig_mae_meV_absolute"}}
        Means over the kind's structures (``eig_max_meV``: the largest), in order of first appearance.

    Examples
    --------
    >>> recs = [{"kind": "a", "H_rmse_meV_aligned": 1.0, "H_rmse_meV": 2.0, "onsite_rmse_meV_aligned": 0.5,
    ...          "eig_mae_meV": 10.0, "eig_max_meV": 30.0, "eig_mae_meV_absolute": 12.0},
    ...         {"kind": "a", "H_rmse_meV_aligned": 3.0, "H_rmse_meV": 4.0, "onsite_rmse_meV_aligned": 1.5,
    ...          "eig_mae_meV": 20.0, "eig_max_meV": 50.0, "eig_mae_meV_absolute": 22.0}]
    >>> t = by_kind(recs)["a"]
    >>> t["n"], t["eig_mae_meV"], t["eig_max_meV"]
    (2, 15.0, 50.0)
    """
    keys = ("H_rmse_meV_aligned", "H_rmse_meV", "onsite_rmse_meV_aligned", "eig_mae_meV", "eig_max_meV",
            "eig_mae_meV_absolute")
    groups = {}
    for r in per_structure:
        groups.setdefault(r.get("kind") or default_kind, []).append(r)
    out = {}
    for kind, rs in groups.items():
        t = {k: float(np.mean([x[k] for x in rs])) for k in keys}
        t["eig_max_meV"] = float(max(x["eig_max_meV"] for x in rs))
        t["n"] = len(rs)
        out[kind] = t
    return out

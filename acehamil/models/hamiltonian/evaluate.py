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

from .model import add_overlap

EV_TO_MEV = 1000.0


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
    code = np.column_stack([onsite.astype(np.int64), z1, z2, s1, s2])
    uniq, inv = np.unique(code, axis=0, return_inverse=True)
    keys = [f"{'onsite' if o else 'offsite'}/{a}-{b}/{c}-{d}" for o, a, b, c, d in uniq.tolist()]
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


def block_errors(model, structures, which: str = "H") -> dict:
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

    Returns
    -------
    dict
        ``{"rmse", "mae", "rmse_aligned", "mae_aligned", "energy_zero_eV", "n_entries", "unmodelled_max_abs",
        "per_block": {key: {"rmse", "mae", "rmse_aligned", "mae_aligned", "n"}}}``; meV for H.
    """
    if which not in ("H", "S"):
        raise ValueError(f"which must be 'H' or 'S', got {which!r}")
    mm = model.H if which == "H" else model.S
    unit = EV_TO_MEV if which == "H" else 1.0
    acc = {"raw": ({}, {}, {}), "aligned": ({}, {}, {})}
    tot = {"raw": [0.0, 0.0], "aligned": [0.0, 0.0]}
    tot_n = 0
    unmod = 0.0
    zeros = []
    for sd in structures:
        ref = sd.H[0] if which == "H" else sd.S
        if ref is None:
            raise ValueError(f"reference structure has no {which}")
        pred = mm.predict(sd.atoms)
        if which == "H" and getattr(model, "energy_zero", None) is not None:  # the cell's energy zero V S
            pred = add_overlap(pred, model.S.predict(sd.atoms), model.energy_zero.value(sd.atoms))
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
    }


def eigenvalue_errors(model, structures, kmesh=(6, 6, 6), window_eV: float = 2.0, path_points: int = 60,
                      uncertainty: bool | None = None, n_samples: int | None = None, seed: int = 0) -> dict:
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

    With ``uncertainty`` (default: when the model carries posteriors) the model's
    eigenvalues come with calibrated spreads (:mod:`acehamil.models.hamiltonian.calibrate`,
    ``n_samples`` posterior draws, seeded by ``seed``) and the result gains
    ``"uncertainty": {"coverage_90", "coverage_68", "spearman_sigma_error", "n",
    "mean_sigma_meV", "per_structure": [{"coverage_90", "coverage_68", "spearman_sigma_error",
    "n", "mae_meV", "mean_sigma_meV"}, ...]}`` over the same grid eigenvalues (unweighted
    counts; coverage_90: ``|err| <= 1.645 sigma``, coverage_68: ``|err| <= sigma``).

    Returns
    -------
    dict
        ``{"mae_meV", "max_meV", "mae_meV_absolute", "fermi_shift_meV", "window_eV", "kmesh",
        "band_path_mae_meV", "n"}`` (+ ``"uncertainty"``).
    """
    from ...tb.bands import band_path
    from ...tb.dos import monkhorst_pack
    from ...tb.eigen import solve
    from ...tb.smearing import fermi_level

    from .calibrate import default_samples, eigen_parts, interval_metrics
    from .uncertainty import has_posterior

    if uncertainty is None:
        uncertainty = has_posterior(model.H)
    rng = np.random.default_rng(seed)
    acc = {"grid": [], "grid_abs": [], "path": [], "w": [], "wp": []}
    unc = {"err": [], "sigma": [], "per": []}
    shifts = []
    for sd in structures:
        kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
        sigma = None
        if uncertainty and sd.n_electrons is not None:
            parts = eigen_parts(model, sd.atoms, kp, wk, sd.n_electrons, n_samples or default_samples(model), rng,
                                split=False)
            H, S, e_mod, sigma = parts["H"], parts["S"], parts["eps"], parts["sigma"]
        else:
            H, S = model.predict(sd.atoms)
            e_mod = solve(H, S, kp)
        e_ref = solve(sd.H[0], sd.S, kp)
        nb = min(e_ref.shape[1], e_mod.shape[1])
        e_ref, e_mod = e_ref[:, :nb], e_mod[:, :nb]
        if sd.n_electrons is not None:
            ef_ref = fermi_level(e_ref[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
            ef_mod = fermi_level(e_mod[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
        elif sd.fermi_level is not None:
            ef_ref = ef_mod = float(sd.fermi_level)
        else:
            raise ValueError("reference structure has neither fermi_level nor n_electrons: no eigenvalue window")
        shifts.append(ef_mod - ef_ref)
        mask = np.abs(e_ref - ef_ref) <= window_eV
        wgt = np.broadcast_to(wk[:, None], e_ref.shape)[mask]
        acc["grid"].append(np.abs((e_mod - ef_mod) - (e_ref - ef_ref))[mask])
        acc["grid_abs"].append(np.abs(e_mod - e_ref)[mask])
        acc["w"].append(wgt)
        if sigma is not None:
            err = ((e_mod - ef_mod) - (e_ref - ef_ref))[mask]
            sig = sigma[:, :nb][mask]
            unc["err"].append(err)
            unc["sigma"].append(sig)
            per = interval_metrics(err, sig)
            per.update(mae_meV=float(np.abs(err).mean() * EV_TO_MEV) if err.size else float("nan"),
                       mean_sigma_meV=float(sig.mean() * EV_TO_MEV) if sig.size else float("nan"))
            unc["per"].append(per)
        kpath = band_path(sd.atoms, npoints=path_points).kpts
        p_ref, p_mod = solve(sd.H[0], sd.S, kpath), solve(H, S, kpath)
        nb = min(p_ref.shape[1], p_mod.shape[1])
        p_ref, p_mod = p_ref[:, :nb], p_mod[:, :nb]
        pm = np.abs(p_ref - ef_ref) <= window_eV
        acc["path"].append(np.abs((p_mod - ef_mod) - (p_ref - ef_ref))[pm])
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
    return {
        **extra,
        "mae_meV": float((w * g).sum() / w.sum() * EV_TO_MEV) if g.size else nan,
        "max_meV": float(g.max() * EV_TO_MEV) if g.size else nan,
        "mae_meV_absolute": float((w * ga).sum() / w.sum() * EV_TO_MEV) if ga.size else nan,
        "fermi_shift_meV": float(np.mean(shifts) * EV_TO_MEV) if shifts else nan,
        "window_eV": float(window_eV),
        "kmesh": list(kmesh),
        "band_path_mae_meV": float(p.mean() * EV_TO_MEV) if p.size else nan,
        "n": int(g.size),
    }


def evaluate(model, structures, kmesh=(6, 6, 6), window_eV: float = 2.0, uncertainty: bool | None = None,
             n_samples: int | None = None) -> dict:
    """The ``acehamil evaluate --json`` contract.

    Returns
    -------
    dict
        ``{"H": {"rmse_meV", "mae_meV", "rmse_meV_aligned", "mae_meV_aligned", "energy_zero_eV",
        "unmodelled_max_abs_meV", "per_block": {key: {"rmse_meV", "mae_meV", "rmse_meV_aligned", "mae_meV_aligned", "n"}}},
        "S": {"rmse", "mae", "unmodelled_max_abs", "per_block": {...}},
        "eigenvalues": {"mae_meV", "max_meV", "mae_meV_absolute", "fermi_shift_meV", "window_eV", "kmesh",
        "band_path_mae_meV", "n", "uncertainty": {...}},
        "n_structures"}``; ``"uncertainty"`` (see :func:`eigenvalue_errors`) when the model
        carries posteriors and ``uncertainty`` is not False.
    """
    from ...errors import UserError
    from ...structure.validate import check_same_basis

    structures = list(structures)
    if not structures:
        raise UserError("no structures to evaluate")
    for k, sd in enumerate(structures):
        check_same_basis(model.orbital_basis, sd.basis, sd.atoms.numbers, f"structure {k} ({sd.info.get('name', '?')!r})")
    h = block_errors(model, structures, "H")
    s = block_errors(model, structures, "S")
    return {
        "H": {
            "rmse_meV": h["rmse"], "mae_meV": h["mae"], "rmse_meV_aligned": h["rmse_aligned"], "mae_meV_aligned": h["mae_aligned"],
            "energy_zero_eV": h["energy_zero_eV"], "unmodelled_max_abs_meV": h["unmodelled_max_abs"],
            "per_block": {k: {"rmse_meV": v["rmse"], "mae_meV": v["mae"], "rmse_meV_aligned": v["rmse_aligned"],
                              "mae_meV_aligned": v["mae_aligned"], "n": v["n"]} for k, v in h["per_block"].items()},
        },
        "S": {"rmse": s["rmse"], "mae": s["mae"], "unmodelled_max_abs": s["unmodelled_max_abs"], "per_block": s["per_block"]},
        "eigenvalues": eigenvalue_errors(model, structures, kmesh=kmesh, window_eV=window_eV, uncertainty=uncertainty,
                                         n_samples=n_samples),
        "n_structures": len(structures),
    }

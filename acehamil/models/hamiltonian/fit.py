"""Fitting H and S models to DFT matrices.

For every block type and coupled ``L`` the design rows (one per block and
component ``M``) and targets (the irreducible part ``x_L`` of the DFT block)
of each training structure are summed into normal equations
(:func:`acehamil.models.hamiltonian.sums.structure_sums`, one
:class:`~acehamil.models.hamiltonian.sums.FitSums` per structure; the sums add,
so memory does not grow with the number of structures and a parallel engine
can map-reduce them).  Each ``(block type, L)`` problem is then solved with
ridge or Bayesian linear regression (:mod:`.solve`); the training structures are
checked once each (:mod:`.training_set`).

Sub-sampling: a family (on-site per species, off-site per species pair) whose
training set has more than ``max_blocks_per_type`` centres is sampled at the
rate ``cap / count`` with a per-structure seeded stream
(:class:`~acehamil.models.hamiltonian.sums.Sampling`); for same-species bonds
both directions of a bond are kept or dropped together.

The functions that lived here before the split keep working from this module (re-exported below).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ...progress import Progress
from ...threads import inner_threads, with_inner_threads
from .config import ModelConfig
from .folds import FoldSums, calibration_keeps
from .model import HamiltonianModel, electrons_per_species
from .sampling import Sampling
from .solve import EV_TO_MEV, solve_sums
from .sums import FitSums, StructureDesigns, batch_parts, pick_h, pick_s, serial_map
from .training_set import TrainingSubset, checked_counts

# re-exported (their home was this module): listed in __all__
from .solve import fit_density_energy_zero, fit_energy_zero, solve_all
from .training_set import S_CHECK_MAX_ORBITALS, check_training_structure

__all__ = [
    "fit", "format_report", "kind_factors", "w_mean",
    # re-exported
    "EV_TO_MEV", "S_CHECK_MAX_ORBITALS", "check_training_structure", "checked_counts", "fit_density_energy_zero",
    "fit_energy_zero", "solve_all", "solve_sums",
]


def kind_factors(structures, kind_weights) -> np.ndarray:
    """Weight factor of each structure from its ``info["kind"]``, shape (n,); all 1 without ``kind_weights``.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> kind_factors([NS(info={"kind": "a"}), NS(info={}), NS(info={"kind": "b"})], (("a", 0.5),)).tolist()
    [0.5, 1.0, 1.0]
    """
    n = len(structures)
    if not kind_weights:
        return np.ones(n)
    table = dict(kind_weights)
    return np.array([table.get(structures[k].info.get("kind"), 1.0) for k in range(n)], dtype=float)


@with_inner_threads  # the per-block solves (BLR evidence, energy zero) and small products: one BLAS thread unless requested
def fit(structures, config: ModelConfig | None = None, progress: bool = True, weights=None, mapper=None) -> HamiltonianModel:
    """Fit H and S models.

    Parameters
    ----------
    structures : sequence of StructureData
        Training structures (a lazy dataset is fine: each is read once per
        pass; three passes: counting, fitting, validation).  All share one
        orbital basis and carry H (spin 0 is fitted) and S.
    config : ModelConfig
        Default: ``ModelConfig()``.  ``config.fit.validation_fraction`` of the
        structures are held out to report validation errors.
    progress : bool
        Progress bar on stderr.
    weights : sequence of float, optional
        One per structure (overrides ``config.fit.structure_weights``); the factors of
        ``config.fit.kind_weights`` multiply either.  Structures whose weight is 0 are not
        fitted at all (not in ``report["train_structures"]``).
    mapper : callable ``(fn, common, tasks) -> iterable``, optional
        The engine of the normal-equation sums: must yield ``fn(*common, *task)`` for each
        task, in task order (:func:`~acehamil.models.hamiltonian.sums.serial_map`, the
        default; :func:`acehamil.distributed.dask_mapper` runs the batches on Dask workers).
        A task is one batch of ``config.fit.batch_structures`` structures; the result does not
        depend on the engine.

    Returns
    -------
    HamiltonianModel
        With ``report`` = {"H": {block key: stats}, "S": ..., "seconds": ...}; stats hold
        ``n_blocks``, ``train_rmse`` (meV for H), ``condition_number`` and, with a
        validation split, ``val_rmse`` / ``val_mae``.
    """
    config = config or ModelConfig()
    n = len(structures)
    if n == 0:
        raise ValueError("no training structures")
    first = structures[0]
    orbital_basis = first.basis
    w_all = np.asarray(weights if weights is not None else (config.fit.structure_weights or np.ones(n)), dtype=float)
    if w_all.shape != (n,):
        raise ValueError(f"need one weight per structure ({n}), got {w_all.shape}")
    w_all = w_all * kind_factors(structures, config.fit.kind_weights)
    # a structure of weight 0 adds nothing to the sums but its rows would still count as data for BLR's noise
    # estimate (and its energy zero would be a free unknown): it is left out altogether, before the seeded
    # split and sampling, so the fit equals the fit of the other structures alone
    used = np.nonzero(w_all > 0)[0]
    if len(used) == 0:
        raise ValueError("every training structure has weight 0 (structure_weights x kind_weights): nothing to fit")
    rng = np.random.default_rng(config.fit.seed)
    order = used[rng.permutation(len(used))]
    n_val = int(round(config.fit.validation_fraction * len(used)))
    if config.fit.validation_fraction > 0 and len(used) >= 2:
        n_val = min(max(n_val, 1), len(used) - 1)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    t0 = time.perf_counter()
    template = HamiltonianModel.build(config, orbital_basis)
    report = {"train_structures": train_idx.tolist(), "validation_structures": val_idx.tolist()}
    fitted = {}
    checked = set()  # structures validated so far (each once per fit)
    electrons = []
    energy_zero = None
    run = serial_map if mapper is None else mapper
    train = TrainingSubset(structures, train_idx, orbital_basis, checked)

    def count_tasks():  # counting pass: centres per family of H and S (the sampling plans), electrons
        for k in range(len(train)):
            sd, where = train.unchecked(k)
            electrons.append((np.asarray(sd.atoms.numbers), sd.n_electrons))
            yield (sd, where, keep_within)

    keep_within = float(config.fit.keep_bonds_within)  # stratified off-site H sampling (sums.Rates), 0 = plain
    # one neighbour list per structure for the whole fit (H and S sums, extrapolation reference, calibration); each
    # structure's full check runs in its task, on the fit's engine (the checks of one beside those of the next)
    counted = list(run(checked_counts, ((template.H, template.S), template.reach), count_tasks()))
    checked.update(int(i) for i in train_idx)
    if len(counted) > len(train):
        raise RuntimeError("the fit's mapper returned more results than tasks")
    if len(counted) < len(train) or not all(isinstance(c, tuple) and len(c) == 2 for c in counted):
        raise RuntimeError(f"the fit's mapper returned {len(counted)} centre counts for {len(train)} structures "
                           f"(one result per task, in task order)")
    pairs = [c[1] for c in counted]
    # the plans in the order H, S: each advances the fit's generator past its pass (as one plan per pass did)
    plans = {name: Sampling.plan([c[0][m] for c in counted], config.fit.max_blocks_per_type, rng,
                                 keep_within=keep_within if name == "H" else 0.0)
             for m, name in enumerate(("H", "S"))}
    onsite = [None] * len(train)
    for name, mm, pick in (("H", template.H, pick_h), ("S", template.S, pick_s)):
        sampling = plans[name]
        rates = sampling.rates
        gauge = name == "H" and config.fit.fit_energy_zero
        bar = Progress(len(train), f"fit {name}", progress)

        cells = []

        starts = range(0, len(train), config.fit.batch_structures)
        ranges = [range(b0, min(len(train), b0 + config.fit.batch_structures)) for b0 in starts]
        # the calibration's folds refit from each structure's own sums: then one task per structure,
        # added per batch as batch_parts adds them (the same numbers as without calibration)
        keep_parts = name == "H" and config.uncertainty.calibrate
        task_ranges = [range(k, k + 1) for k in range(len(train))] if keep_parts else ranges

        def tasks():
            for ks in task_ranges:
                batch = [train[k] for k in ks]
                cells.extend(sd.atoms for sd in batch)
                yield (batch, [float(w_all[train_idx[k]]) for k in ks], [sampling.rng(k) for k in ks], list(ks),
                       [pairs[k] for k in ks])

        def parts():
            results = iter(run(batch_parts, (mm, pick, rates, gauge), tasks()))
            for ks in task_ranges:
                part = next(results, None)
                if not (isinstance(part, tuple) and len(part) == 2 and isinstance(part[0], FitSums)):
                    raise RuntimeError(f"the fit's mapper returned {type(part).__name__} for a batch, not batch_parts' "
                                       f"(FitSums, designs) (one result per task, in task order)")
                for k, d in zip(ks, part[1]):
                    if name == "H":
                        onsite[k] = d
                    bar.step()
                yield part[0]
            # run the mapper to its end, so that what it holds (a thread pool, a BLAS limit) is released now
            if next(results, None) is not None:
                raise RuntimeError("the fit's mapper returned more results than tasks")

        if keep_parts:
            # each fold's sums built as the structures' sums arrive (FoldSums: the numbers of FitSums.subset),
            # the fit's total batch by batch as before; no structure's sums kept beyond its batch
            h_parts = FoldSums(len(train), calibration_keeps(len(train), config))
            sums = FitSums()
            stream = parts()
            for ks in ranges:
                batch = [next(stream) for _ in ks]
                for k, part in zip(ks, batch):
                    h_parts.add(k, part)
                sums._accumulate(FitSums.total(batch))
            if next(stream, None) is not None:  # pragma: no cover  (parts() yields one per task)
                raise RuntimeError("the fit's mapper returned more results than tasks")
        else:
            sums = FitSums.total(parts())
        counts = sums.counts
        _check_offsite_blocks(name, counts, mm, config)
        coefs, posts, diag, V, ez, ez_summary = solve_sums(mm, sums, config, cells, orbital_basis.species)
        if V is not None:
            report["energy_zero_eV"] = {int(train_idx[k]): float(v) for k, v in enumerate(V)}
        if ez is not None:
            energy_zero, report["energy_zero_model"] = ez, ez_summary
        unit = EV_TO_MEV if name == "H" else 1.0
        rep = {}
        for fam, bt in mm.block_types():
            d = diag.get(bt.key, {})
            entries = counts.get(bt.key, 0) * (2 * bt.l1 + 1) * (2 * bt.l2 + 1)
            rep[bt.key] = {
                "n_blocks": int(counts.get(bt.key, 0)),
                "train_rmse": float(np.sqrt(d.get("rss", 0.0) / w_mean(w_all) / max(entries, 1)) * unit),
                "condition_number": float(d.get("condition_number", float("nan"))),
                "n_features": int(sum(len(c) for c in coefs.get(bt.key, {}).values())),
            }
            for key in ("blr_fallback", "blr_not_converged"):  # the docs said the report carries them; it did not
                if key in d:
                    rep[bt.key][key] = d[key]
        report[name] = rep
        report[f"{name}_sampling_rates"] = dict(rates)
        if getattr(rates, "keep_within", 0.0) > 0:
            report[f"{name}_keep_bonds_within"] = rates.keep_within
        fitted[name] = (coefs, posts)
    warn_blr_not_converged(report)
    designs = [StructureDesigns(pairs[k], onsite[k]) for k in range(len(train))]
    model = HamiltonianModel.build(config, orbital_basis, fitted["H"][0], fitted["S"][0], report,
                                   fitted["H"][1], fitted["S"][1], energy_zero)
    eig_obs = None
    update_spec = dict(config.fit.eigenvalue_update)
    from_calibration = update_spec.get("source") == "calibration"  # eigen_update.calibrated_update, below
    if from_calibration and not (config.uncertainty.calibrate and model.H.posteriors):
        raise ValueError("[fit] eigenvalue_update source 'calibration' needs [uncertainty] calibrate = true and a "
                         "posterior of the H coefficients (solver.method 'blr')")
    if update_spec and not from_calibration:
        from .eigen_update import eigenvalue_update

        if not model.H.posteriors:
            raise ValueError("[fit] eigenvalue_update needs a posterior of the H coefficients (solver.method 'blr', or "
                             "'ridge' with lam > 0)")
        with inner_threads():  # per-structure features and small products: one BLAS thread unless requested
            model, eig_obs, report["eigenvalue_update"] = eigenvalue_update(
                model, [train[k] for k in range(len(train))], w_all[train_idx], dict(config.fit.eigenvalue_update),
                pairs=pairs, seed=config.fit.seed, progress=progress)
    report["seconds_fit"] = time.perf_counter() - t0
    if len(val_idx):
        from .evaluate import block_errors

        val = TrainingSubset(structures, val_idx, orbital_basis, checked)
        for name in ("H", "S"):
            errs = block_errors(model, [val[k] for k in range(len(val))], which=name)
            for key, st in errs["per_block"].items():
                if key in report[name]:
                    report[name][key]["val_rmse"] = st["rmse"]
                    report[name][key]["val_mae"] = st["mae"]
            report[f"{name}_validation"] = {"rmse": errs["rmse"], "mae": errs["mae"]}
    valence = electrons_per_species(electrons)
    report["valence_electrons"] = None if valence is None else {str(z): v for z, v in valence.items()}
    if model.H.posteriors and not from_calibration:  # (from_calibration: taken under the updated posterior, below)
        from .uncertainty import extrapolation_reference

        with inner_threads():  # per-structure features and small products: one BLAS thread unless requested
            report["extrapolation_reference"] = extrapolation_reference(model, [train[k] for k in range(len(train))],
                                                                        designs=designs)
    if config.uncertainty.calibrate:
        from .calibrate import calibrate

        t1, c1 = time.perf_counter(), time.process_time()
        if from_calibration:  # the update from the calibration's held-out eigenvalues, then its calibration
            from .eigen_calibrated import calibrated_update
            from .uncertainty import extrapolation_reference

            with inner_threads():
                model, report["eigenvalue_update"], report["uncertainty"] = calibrated_update(
                    [train[k] for k in range(len(train))], model, h_parts, w_all[train_idx], update_spec,
                    progress=progress, designs=designs, mapper=mapper, seed=config.fit.seed)
                # the leverages' reference under the updated posterior
                report["extrapolation_reference"] = extrapolation_reference(
                    model, [train[k] for k in range(len(train))], designs=designs)
        else:
            report["uncertainty"] = calibrate([train[k] for k in range(len(train))], model, h_parts,
                                              progress=progress, designs=designs, mapper=mapper,
                                              eigenvalue_observations=eig_obs)
        report["uncertainty"]["seconds"] = time.perf_counter() - t1
        report["uncertainty"]["seconds_cpu"] = time.process_time() - c1  # this process (BLAS threads included)
    return dataclasses.replace(model, report=report, valence_electrons=valence)


def w_mean(w) -> float:
    return float(np.mean(w)) if len(w) else 1.0


def _check_offsite_blocks(name: str, counts: dict, mm, config) -> None:
    """UserError when the off-site family of ``name`` found no block in the training structures: ``r_cut`` shorter
    than every bond (r_cut = 1e-9 fitted a model without hopping; its test 'H RMSE 0.000 meV', over the blocks it
    predicts, beside an eigenvalue MAE of 1.6 eV)."""
    keys = [bt.key for _, bt in mm.block_types() if bt.key.startswith("offsite/")]
    if keys and not any(counts.get(k, 0) for k in keys):
        from ...errors import UserError

        table = f"{name.lower()}_offsite"
        raise UserError(f"[{table}] r_cut = {getattr(config, table).r_cut:g} Å: no atom pair of the training structures "
                        f"is that close, so the {name} model would have no off-site block (no hopping); use an r_cut "
                        "beyond the nearest-neighbour distance")


class FitWarning(UserWarning):
    """Something in a fit the user should know: the fit went on, the report records it."""


def warn_blr_not_converged(report: dict) -> None:
    """One :class:`FitWarning` for every ``(block type, L)`` problem of the fit whose BLR evidence iteration did not
    converge (``report[H|S][key]["blr_not_converged"]``, kept in the model file's report), saying what it means.
    Before, the fixture model's on-site p-p L=2 ran to alpha 4.5e164 in 500 iterations without a word."""
    note = blr_not_converged_message(report)
    if note:
        import warnings

        warnings.warn(note, FitWarning, stacklevel=3)


def blr_not_converged_message(report: dict) -> str | None:
    """The words of :func:`warn_blr_not_converged` (None when every BLR problem converged)."""
    items = [f"{name} {key} L={L}: {why}" for name in ("H", "S") for key, st in report.get(name, {}).items()
             if isinstance(st, dict) for L, why in st.get("blr_not_converged", {}).items()]
    if not items:
        return None
    shown = "; ".join(items[:3]) + (f"; and {len(items) - 3} more" if len(items) > 3 else "")
    return (f"BLR's evidence maximisation did not converge for {len(items)} (block type, L) problem(s), recorded in "
            f"the model's fit report as blr_not_converged: {shown}")


def format_report(report: dict) -> str:
    """Per block type table of a fit report: n blocks, train RMSE, validation RMSE/MAE (only with a
    validation split), and the condition number of the column-scaled normal matrix, with a note on
    what large values mean."""
    lines = []
    with_val = any("val_rmse" in st for name in ("H", "S") for st in report.get(name, {}).values())
    big = False
    for name, unit in (("H", "meV"), ("S", "")):
        head = f"{name} blocks{'':<22}{'n':>8}{'rmse_train':>12}"
        head += f"{'rmse_val':>12}{'mae_val':>12}" if with_val else ""
        lines.append(head + f"{'cond(AtA)':>11}  {unit}")
        for key, st in report.get(name, {}).items():
            row = f"  {key:<28}{st['n_blocks']:>8}{st['train_rmse']:>12.4g}"
            if with_val:
                row += f"{st.get('val_rmse', float('nan')):>12.4g}{st.get('val_mae', float('nan')):>12.4g}"
            cond = st["condition_number"]
            big = big or (cond == cond and cond > 1e12)
            lines.append(row + f"{cond:>11.2g}")
    if not with_val:
        lines.append("(no validation split: set [fit] validation_fraction > 0 for validation errors)")
    if big:
        lines.append("cond(AtA): condition number of the column-scaled normal matrix before regularisation; values "
                     "above ~1e12 mean nearly redundant features, which the ridge/BLR prior makes solvable (the "
                     "solved system is regularised; the errors above are what matters)")
    return "\n".join(lines)

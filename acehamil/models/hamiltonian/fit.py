"""Fitting H and S models to DFT matrices.

For every block type and coupled ``L`` the design rows (one per block and
component ``M``) and targets (the irreducible part ``x_L`` of the DFT block)
of each training structure are summed into normal equations
(:func:`acehamil.models.hamiltonian.sums.structure_sums`, one
:class:`~acehamil.models.hamiltonian.sums.FitSums` per structure; the sums add,
so memory does not grow with the number of structures and a parallel engine
can map-reduce them).  Each ``(block type, L)`` problem is then solved with
ridge (Tikhonov with the smoothness prior ``lam * mean(diag A^T A) * (1 +
degree)^smoothness``) or Bayesian linear regression with evidence-maximised
``alpha, beta`` (posterior kept).  Since ``||X||^2 = sum_L ||x_L||^2`` the sum of
the ``L`` problems is exactly the least-squares fit of the blocks.

Sub-sampling: a family (on-site per species, off-site per species pair) whose
training set has more than ``max_blocks_per_type`` centres is sampled at the
rate ``cap / count`` with a per-structure seeded stream
(:class:`~acehamil.models.hamiltonian.sums.Sampling`); for same-species bonds
both directions of a bond are kept or dropped together.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ...fitting import blr_normal, ridge_normal, ridge_posterior, smoothness_prior
from ...fitting.conditioning import condition_number, data_scale, equilibrate
from ...progress import Progress
from ...threads import inner_threads, with_inner_threads
from .config import ModelConfig
from .matrix_model import MatrixModel
from .model import HamiltonianModel, electrons_per_species
from .sums import FitSums, Sampling, StructureDesigns, batch_parts, counts_and_pairs, pick_h, pick_s, serial_map

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
    train = _Subset(structures, train_idx, orbital_basis, checked)

    def count_tasks():  # counting pass: centres per family of H and S (the sampling plans), electrons
        for k in range(len(train)):
            sd, where = train.unchecked(k)
            electrons.append((np.asarray(sd.atoms.numbers), sd.n_electrons))
            yield (sd, where)

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
    plans = {name: Sampling.plan([c[0][m] for c in counted], config.fit.max_blocks_per_type, rng)
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
        # added per batch as batch_sums does (the same numbers as without calibration)
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
            h_parts = list(parts())
            sums = FitSums.total(FitSums.total(h_parts[k] for k in ks) for ks in ranges)
        else:
            sums = FitSums.total(parts())
        counts = sums.counts
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
        report[name] = rep
        report[f"{name}_sampling_rates"] = rates
        fitted[name] = (coefs, posts)
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

        val = _Subset(structures, val_idx, orbital_basis, checked)
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


class _Subset:
    """Indexable view of some structures of a (lazy) dataset, checking the orbital basis.

    The full check (atoms, Hermiticity of H and S: :func:`~acehamil.structure.validate.validate_structure`)
    runs on the first access of each structure only (``checked``, shared by the views of one
    fit): the fit reads every structure in several passes, and repeating the check cost about
    a fifth of the example's fit.
    """

    def __init__(self, structures, idx, basis, checked: set | None = None):
        self.structures, self.idx, self.basis = structures, np.asarray(idx, dtype=np.int64), basis
        self.checked = set() if checked is None else checked

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, k):
        sd, where = self.unchecked(k)
        if where is not None:
            check_training_structure(sd, where)
            self.checked.add(int(self.idx[k]))
        return sd

    def unchecked(self, k) -> tuple:
        """``(sd, where)``: structure ``k`` after the cheap checks (basis, H and S present), and the name of
        the full check (:func:`check_training_structure`) it still needs (None once checked)."""
        i = int(self.idx[k])
        sd = self.structures[i]
        if sd.basis != self.basis:
            raise ValueError(f"structure {i} has a different orbital basis from structure 0")
        if not sd.H or sd.S is None:
            raise ValueError(f"structure {i} lacks H or S")
        return sd, (None if i in self.checked else f"training structure {i} ({sd.info.get('name', '?')!r})")


def check_training_structure(sd, where: str) -> None:
    """The full check of a training structure (atoms, Hermitian H and S, positive-definite S(Gamma)):
    UserError naming ``where``."""
    from ...structure.validate import validate_structure

    validate_structure(sd, where)
    _check_reference_overlap(sd, where)


def checked_counts(models, reach: float, sd, where) -> tuple:
    """The fit's counting task for one structure: its full check (:func:`check_training_structure`, unless
    ``where`` is None: checked before), then :func:`~acehamil.models.hamiltonian.sums.counts_and_pairs`."""
    if where is not None:
        check_training_structure(sd, where)
    return counts_and_pairs(models, reach, sd.atoms)


#: Training structures up to this many orbitals get the S(Gamma) check (a dense eigenvalue solve).
S_CHECK_MAX_ORBITALS = 1000


def _check_reference_overlap(sd, where: str) -> None:
    """UserError unless the reference S(Gamma) is positive definite: a DFT overlap always is, so one that
    is not is damaged data (or data in another orbital convention), not something to fit."""
    if sd.S.norb > S_CHECK_MAX_ORBITALS:
        return
    from ...errors import UserError

    rows, cols, vals, _ = sd.S.coo()
    S0 = np.zeros((sd.S.norb, sd.S.norb))
    np.add.at(S0, (rows, cols), vals)  # S(Gamma): every cell shift with phase 1
    try:
        np.linalg.cholesky(0.5 * (S0 + S0.T))  # cheaper than eigenvalues; they are computed only for the message
        return
    except np.linalg.LinAlgError:
        smin = float(np.linalg.eigvalsh(0.5 * (S0 + S0.T))[0])
    if not smin > 0:
        raise UserError(f"{where}: the reference overlap S(Gamma) is not positive definite (smallest eigenvalue "
                        f"{smin:.3g}); an overlap from DFT always is: damaged data or another orbital convention?")


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

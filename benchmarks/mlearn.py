"""The Zuo et al. 2020 (J. Phys. Chem. A 124, 731) benchmark: Si, Ge, Li, Mo.

For each element: fit on ``<El>_training.xyz`` only, hyperparameters (ridge
strength, prior exponent, degree cut-back and, if several are given, the
cutoff) chosen by 5-fold cross-validation on the training set; then evaluate
once on ``<El>_test.xyz``.  Prints energy MAE (meV/atom) and force MAE (eV/Å)
next to the published GAP and MTP values.

Models (``--models``): ``linear`` (the default ACE potential) and ``embedded``
(linear part + Finnis-Sinclair-like embedded densities,
:mod:`acehamil.models.potential.embedded`), fitted at the cutoff and with the
linear hyperparameters the linear CV chose; its density ridge is chosen by the
same 5-fold training CV; ``multilayer`` (linear first layer + a second, message-passing
layer with invariant and L = 1 messages, :mod:`acehamil.models.potential.multilayer`),
linear in its parameters and fitted jointly with the linear fit's CV grids (one
feature pass serves the linear and the multilayer fit); ``embedded_multilayer``
(the CV-chosen multilayer fit plus embedded densities in its first layer, fitted
like the embedded model with the multilayer fit's hyperparameters,
:mod:`acehamil.models.potential.embedded_multilayer_fit`).

Usage::

    nice python benchmarks/mlearn.py [--elements Si Ge Li Mo] [--models linear embedded] [--json] [--save-dir out/]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir(root: Path = ROOT) -> Path:
    """The shared reference data folder: ``$ACEHAMIL_SHARED_DATA``, else the first existing ``shared/data`` beside
    the checkout ``root`` or any folder above it, else beside the main checkout of a git worktree (its
    ``--git-common-dir``'s parent: ``ROOT.parent / "shared"`` named /work/wt/shared/data inside the worktree
    /work/wt/NAME, which does not exist).  When none exists: the first candidate, for the not-found message."""
    import os
    import subprocess

    env = os.environ.get("ACEHAMIL_SHARED_DATA")
    if env:
        return Path(env)
    candidates = [p / "shared" / "data" for p in (root, *root.parents)]
    try:
        common = subprocess.run(["git", "-C", str(root), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        common = ""
    if common:
        main = Path(common).resolve().parent
        candidates += [main / "shared" / "data", main.parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), root.parent / "shared" / "data")


DATA = shared_data_dir() / "mlearn"

#: Published test-set MAEs (energy meV/atom, force eV/Å), from the data README.
PUBLISHED = {
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06)},
    "Ge": {"GAP": (2.06, 0.05), "MTP": (1.79, 0.05)},
    "Li": {"GAP": (0.49, 0.01), "MTP": (0.49, 0.01)},
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
}
#: Candidate cutoffs (Å) per element; CV on the training set picks among them.
CUTOFFS = {"Si": (5.0,), "Ge": (5.0, 6.0), "Li": (5.0,), "Mo": (5.0, 6.0)}
BASIS = {"n_max": 10, "max_nu": 4, "max_degree": (18, 14, 10, 8)}
#: Embedded-model settings (EmbeddingSettings keywords).
#: Multilayer settings (MessageSpec keywords; cutoffs default to the basis cutoff).
MULTILAYER = {"n_message": 6, "n_pass": 6, "embeddings": ("identity", "fs")}
#: CV grid of the second layer's prior relative to the first (FitSettings.layer_prior_factors); first (0.1, 1, 10, 100),
#: widened to 0.01 after Ge's training-CV optimum sat on its lower edge (0.1).
LAYER_PRIOR_FACTORS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
#: Candidate cutoffs (Å) of the second layer's messages (r_message = r_pass) per element; the training CV score
#: picks one. None: the basis cutoff; the other value lies between the second and third neighbour shells of the
#: element's crystal (diamond Si 3.84 / 4.50, Ge 4.00 / 4.69; bcc Li 3.44 / 4.87, Mo 3.16 / 4.47), fixed before any fit.
LAYER_CUTOFFS = {"Si": (None, 4.2), "Ge": (None, 4.5), "Li": (None, 4.2), "Mo": (None, 4.0)}
#: Training-CV grids of the linear and multilayer fits (``--lam``, ``--power``, ``--energy-factors`` replace them).
GRIDS = {"lam": (1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4), "power": (0.0, 1.0, 2.0),
         "energy_factors": (0.3, 1.0, 3.0, 10.0, 30.0)}
EMBEDDED = {"embeddings": ("fs", "fs"), "density_max_degree": (9, 6, 4, 3), "lam": (1e-3, 1e-1), "maxiter": 300, "init_scale": 1.0}


def _cached_accumulate(cache_dir, el, basis, species, train, settings, repulsion, progress):
    """Design data of the training set, cached on disk by (element, basis spec, weights, folds, repulsion)."""
    from acehamil.models.potential.fit import accumulate

    if cache_dir is None:
        return accumulate(basis, species, train, settings, repulsion, progress)
    key = json.dumps([el, basis.spec.to_dict(), settings.energy_sigma, settings.force_sigma, settings.stress_sigma,
                      settings.config_type_weights, settings.n_folds, settings.seed,
                      repulsion.to_dict() if repulsion else None], sort_keys=True, default=str)
    path = Path(cache_dir) / f"{el}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"
    if path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    acc = accumulate(basis, species, train, settings, repulsion, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(acc, fh)
    return acc


def _cached_multilayer(cache_dir, el, basis, species, train, settings, mspec, repulsion, progress):
    """Message layer and joint design data (linear + second layer), cached like :func:`_cached_accumulate`."""
    from acehamil.models.potential.embedded_fit import density_columns
    from acehamil.models.potential.multilayer_fit import accumulate_multilayer, accumulate_multilayer_from_linear, multilayer_layer

    def build():
        layer = multilayer_layer(mspec, species, train)
        emb_path = None
        if cache_dir is not None:  # the embedded fit's cached linear rows (same basis, weights, folds, repulsion)
            emb_path = _embedded_cache_path(cache_dir, el, basis, settings, density_columns(basis, EMBEDDED["density_max_degree"]),
                                            repulsion)
        if emb_path is not None and emb_path.is_file():
            if progress:
                print(f"  linear rows from {emb_path}", file=sys.stderr, flush=True)
            with open(emb_path, "rb") as fh:
                data = pickle.load(fh)
            return layer, accumulate_multilayer_from_linear(data, train, settings, layer, progress)
        return layer, accumulate_multilayer(basis, species, train, settings, layer, repulsion, progress)

    if cache_dir is None:
        return build()
    key = json.dumps(["multilayer", el, basis.spec.to_dict(), mspec.to_dict(), settings.energy_sigma, settings.force_sigma,
                      settings.stress_sigma, settings.config_type_weights, settings.n_folds, settings.seed,
                      repulsion.to_dict() if repulsion else None], sort_keys=True, default=str)
    path = Path(cache_dir) / f"{el}_ml_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"
    if path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    out = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(out, fh, protocol=4)
    return out


def _embedded_cache_path(cache_dir, el, basis, settings, cols, repulsion) -> Path:
    key = json.dumps(["embedded", el, basis.spec.to_dict(), settings.energy_sigma, settings.force_sigma, settings.stress_sigma,
                      settings.config_type_weights, settings.n_folds, settings.seed, cols.tolist(),
                      repulsion.to_dict() if repulsion else None], sort_keys=True, default=str)
    return Path(cache_dir) / f"{el}_emb_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"


def _cached_embedding_data(cache_dir, el, basis, species, train, settings, emb, repulsion, progress):
    """Design data of the embedded fit, cached like :func:`_cached_accumulate` (plus the density features)."""
    from acehamil.models.potential.embedded_fit import density_columns, embedding_data

    cols = density_columns(basis, emb.density_max_degree)
    if cache_dir is None:
        return embedding_data(basis, species, train, settings, cols, repulsion, progress)
    path = _embedded_cache_path(cache_dir, el, basis, settings, cols, repulsion)
    if path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    data = embedding_data(basis, species, train, settings, cols, repulsion, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    return data


#: ``--cv-only``: training CV only, the test set is not read (exploring a CV axis without scoring the test set).
CV_ONLY = [False]


def _pick(tables, settings) -> int:
    """Index of the winning CV table among candidates (cutoffs, layer cutoffs) by ``settings.cv_criterion``.

    Each table's own best row competes; with ``"energy_mae"`` the force budget is set by the smallest
    held-out force RMSE over all the tables, so every candidate is judged by the same budget."""
    from acehamil.models.potential.cv_criterion import rank_cv

    if not all(tables):
        return 0
    ref = min(r["force_rmse_eV_per_A"] for t in tables for r in t)
    heads = [dict(t[0], _k=k) for k, t in enumerate(tables)]
    return rank_cv(heads, settings, force_reference=ref)[0]["_k"]


def _row(el, model, rc, res, potential, test, train, train_metrics, fit_seconds, seconds) -> dict:
    from acehamil.models.potential.data import error_metrics

    m_test = error_metrics(potential, test) if test is not None else {"all": None}  # None: --cv-only
    m_train = error_metrics(potential, train, per_config_type=False) if train_metrics else {"all": None}
    return {
        "element": el, "model": model, "r_cut": rc, "chosen": res.chosen, "cv_best": res.cv[0] if res.cv else None,
        "cv_by_type": res.cv_by_type, "n_features": potential.n_features,
        "n_active_columns": potential.metadata["n_active_columns"],
        "n_density_features": potential.metadata.get("solver_info", {}).get("n_density_features", 0),
        "n_densities": getattr(potential, "n_densities", 0),
        "fit_seconds": fit_seconds, "seconds": seconds,
        "train": m_train["all"], "test": m_test["all"], "test_per_config_type": {k: v for k, v in m_test.items() if k != "all"},
        "published": PUBLISHED[el],
    }


def run_element(el: str, data_dir: Path, cutoffs, basis_kw: dict, solver: str, progress: bool, save_dir=None,
                cache_dir=None, train_metrics=False, models=("linear",), emb=None, ml=None, degree_shifts=(0, 2, 4),
                layer_prior_factors=LAYER_PRIOR_FACTORS, grids=None, cv_criterion="combined", cv_force_tolerance=0.005) -> list:
    from acehamil.models.potential.config import core_repulsion, make_basis
    from acehamil.io.labelled import read_configs
    from acehamil.models.potential.fit import FitSettings, fit_potential

    from acehamil.models.potential.embedded_fit import EmbeddingSettings

    emb = emb or EmbeddingSettings()
    train = read_configs(data_dir / f"{el}_training.xyz")
    species = tuple(sorted({int(z) for c in train for z in c.atoms.numbers}))
    grids = {**GRIDS, **(grids or {})}
    settings = FitSettings(solver=solver, lam=tuple(grids["lam"]), power=tuple(grids["power"]),
                           degree_shifts=tuple(degree_shifts), energy_factors=tuple(grids["energy_factors"]), energy_sigma=1e-3,
                           force_sigma=0.05, n_folds=5, layer_prior_factors=tuple(layer_prior_factors),
                           cv_criterion=cv_criterion, cv_force_tolerance=cv_force_tolerance,
                           type_balance=tuple(grids.get("type_balance", (0.0,))))
    repulsion = core_repulsion(train, species)
    ml = dict(MULTILAYER if ml is None else ml)
    if ("multilayer" in models or "embedded_multilayer" in models) and "embedded" not in models:
        return _run_multilayer(el, data_dir, train, species, settings, repulsion, cutoffs, basis_kw, ml, progress, save_dir,
                               cache_dir, train_metrics, models, emb)
    cands, kept = [], (None, None)
    t0 = time.perf_counter()
    for rc in cutoffs:
        basis = make_basis(species, r_cut=rc, **basis_kw)
        if progress:
            print(f"{el}: r_cut={rc} {basis}", file=sys.stderr, flush=True)
        data = None
        if "embedded" in models:  # one feature pass serves both models
            data = _cached_embedding_data(cache_dir, el, basis, species, train, settings, emb, repulsion, progress)
            acc = data.accumulated(settings)
        else:
            acc = _cached_accumulate(cache_dir, el, basis, species, train, settings, repulsion, progress)
        res = fit_potential(train, basis, species, settings, repulsion, progress=progress, accumulated=acc)
        cands.append((rc, res, basis, acc.seconds))
        k = _pick([c[1].cv for c in cands], settings)
        if k == len(cands) - 1:  # keep the current winner's design data only
            kept = (k, data)
        del data, acc
    fit_seconds = time.perf_counter() - t0
    rc, res, basis, feature_seconds = cands[k]
    data = kept[1] if kept[0] == k else None
    if "embedded" in models and data is None:  # an earlier candidate won with the last one's force budget: its data again
        data = _cached_embedding_data(cache_dir, el, basis, species, train, settings, emb, repulsion, progress)
    fits = {}
    if "linear" in models:
        fits["linear"] = (res, res.potential, fit_seconds, {**res.seconds, "features": feature_seconds})
    if "embedded" in models:
        from acehamil.models.potential.embedded_fit import fit_embedded

        t1 = time.perf_counter()
        eres = fit_embedded(train, basis, species, settings, emb, repulsion, progress=progress, data=data, linear=res)
        # fit time: the linear fit it starts from (its features and CV) plus the embedded part
        fits["embedded"] = (eres, eres.potential, fit_seconds + time.perf_counter() - t1, {**eres.seconds, "features": data.seconds})
    test = None if CV_ONLY[0] else read_configs(data_dir / f"{el}_test.xyz")  # read only now: evaluation, never tuning
    rows = []
    for model, (r, pot, secs, detail) in fits.items():
        rows.append(_row(el, model, rc, r, pot, test, train, train_metrics, secs, detail))
        if save_dir is not None:
            from acehamil.io.potential_file import save_potential

            Path(save_dir).mkdir(parents=True, exist_ok=True)
            save_potential(Path(save_dir) / (f"{el}.h5" if model == "linear" else f"{el}_{model}.h5"), pot)
    return rows


def _run_multilayer(el, data_dir, train, species, settings, repulsion, cutoffs, basis_kw, ml, progress, save_dir, cache_dir,
                    train_metrics, models, emb=None) -> list:
    """Linear and multilayer fits from one joint feature pass per cutoff; each model's cutoff by its own CV score.

    ``embedded_multilayer``: the CV-chosen multilayer fit (cutoffs, layer and hyperparameters) plus embedded
    densities in its first layer (:func:`~acehamil.models.potential.embedded_multilayer_fit.fit_embedded_multilayer`,
    density settings ``emb``)."""
    from acehamil.io.labelled import read_configs
    from acehamil.models.potential.config import make_basis
    from acehamil.models.potential.multilayer import MessageSpec
    from acehamil.models.potential.multilayer_fit import fit_multilayer, linear_from_accumulated

    best, cands, cv_layer = {}, {}, []
    layer_cutoffs = ml.get("layer_cutoffs") or (None,)
    for rc in cutoffs:
        basis = make_basis(species, r_cut=rc, **basis_kw)
        for k, lc in enumerate(layer_cutoffs):  # candidate second-layer cutoffs (r_message = r_pass), CV picks
            t0 = time.perf_counter()
            mspec = MessageSpec(n_message=ml["n_message"], r_message=lc or ml.get("r_message") or rc, n_pass=ml["n_pass"],
                                r_pass=lc or ml.get("r_pass") or rc, embeddings=tuple(ml["embeddings"]))
            if progress:
                print(f"{el}: r_cut={rc} {basis}; {mspec}", file=sys.stderr, flush=True)
            layer, acc = _cached_multilayer(cache_dir, el, basis, species, train, settings, mspec, repulsion, progress)
            t1 = time.perf_counter()
            fits = {}
            if "linear" in models and k == 0:  # the linear fit does not depend on the second layer
                fits["linear"] = linear_from_accumulated(acc, basis, species, settings, repulsion, progress)
            fits["multilayer"] = fit_multilayer(train, basis, species, settings, repulsion=repulsion, progress=progress,
                                                accumulated=acc, layer=layer)
            for name, res in fits.items():
                score = res.cv[0]["score"] if res.cv else 0.0
                secs = (t1 - t0) + res.seconds["cv"] + res.seconds["solve"]
                cands.setdefault(name, []).append((score, rc, res, secs, {**res.seconds, "features": acc.seconds}))
                best[name] = cands[name][_pick([c[2].cv for c in cands[name]], settings)]
                if progress:
                    print(f"  {name} r_cut={rc} layer cutoffs={mspec.r_message}/{mspec.r_pass}: CV score {score:.3f}",
                          file=sys.stderr, flush=True)
                if name == "multilayer":
                    cv_layer.append({"r_cut": rc, "r_message": mspec.r_message, "r_pass": mspec.r_pass, "cv_score": score,
                                     "cv_best": res.cv[0] if res.cv else None})
    if "embedded_multilayer" in models:  # densities on top of the CV-chosen multilayer fit (same cutoffs, layer, hyperparameters)
        from acehamil.models.potential.embedded_multilayer_fit import fit_embedded_multilayer

        score, rc, res, secs, detail = best["multilayer"]
        basis = make_basis(species, r_cut=rc, **basis_kw)
        t0 = time.perf_counter()
        data = _cached_embedding_data(cache_dir, el, basis, species, train, settings, emb, repulsion, progress)
        t1 = time.perf_counter()
        eres = fit_embedded_multilayer(train, basis, species, settings, emb=emb, repulsion=repulsion, progress=progress,
                                       data=data, multilayer=res)
        del data
        best["embedded_multilayer"] = (score, rc, eres, secs + time.perf_counter() - t0,
                                       {**eres.seconds, "embedding_data_load": t1 - t0})
    test = None if CV_ONLY[0] else read_configs(data_dir / f"{el}_test.xyz")  # read only now: evaluation, never tuning
    rows = []
    for name, (score, rc, res, secs, detail) in best.items():
        if name not in models:
            continue
        row = _row(el, name, rc, res, res.potential, test, train, train_metrics, secs, detail)
        if name == "embedded_multilayer":
            row["message_spec"] = res.potential.layer.spec.to_dict()
            row["n_layer2_features"] = int(res.potential.weights.size)
            row["optimiser"] = res.info
            row["density_cv"] = res.cv  # with the multilayer fit's own CV row (lam_density None)
        if name == "multilayer":
            row["layer_cutoff_cv"] = cv_layer
            row["message_spec"] = res.potential.layer.spec.to_dict()
            row["n_layer2_features"] = int(res.potential.weights.size)
        rows.append(row)
        if save_dir is not None:
            from acehamil.io.potential_file import save_potential

            Path(save_dir).mkdir(parents=True, exist_ok=True)
            save_potential(Path(save_dir) / (f"{el}.h5" if name == "linear" else f"{el}_{name}.h5"), res.potential)
    return rows


def table(rows) -> str:
    out = [f"{'El':<4}{'model':<10}{'E MAE':>8}{'F MAE':>8}   {'GAP E|F':>12}   {'MTP E|F':>12}   {'E<=min?':>8}{'F<=min+.005?':>13}  {'fit s':>7}",
           f"{'':<14}{'meV/at':>8}{'eV/A':>8}"]
    for r in rows:
        g, m = r["published"]["GAP"], r["published"]["MTP"]
        if r["test"] is None:  # --cv-only
            cv = r["cv_best"] or {}
            out.append(f"{r['element']:<4}{r.get('model', 'linear'):<10} (test not read) CV: E_mae {cv.get('energy_mae_meV_per_atom', 0):.3f} "
                       f"meV/atom, F_rmse {cv.get('force_rmse_eV_per_A', 0):.4f} eV/A, chosen {r['chosen']}")
            continue
        e, f = r["test"]["energy_mae_meV_per_atom"], r["test"]["force_mae_eV_per_A"]
        out.append(f"{r['element']:<4}{r.get('model', 'linear'):<10}{e:>8.2f}{f:>8.3f}   {g[0]:>6.2f}|{g[1]:<5.2f}   {m[0]:>6.2f}|{m[1]:<5.2f}   "
                   f"{str(e <= min(g[0], m[0])):>8}{str(f <= min(g[1], m[1]) + 0.005):>13}  {r['fit_seconds']:>7.0f}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--elements", nargs="+", default=list(PUBLISHED))
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--solver", default="ridge", choices=("ridge", "blr"))
    p.add_argument("--r-cut", type=float, nargs="+", help="candidate cutoffs (Å) for every element (CV picks)")
    p.add_argument("--n-max", type=int, default=BASIS["n_max"])
    p.add_argument("--max-nu", type=int, default=BASIS["max_nu"])
    p.add_argument("--max-degree", type=float, nargs="+", default=list(BASIS["max_degree"]))
    p.add_argument("--weight-l", type=float, default=BASIS.get("weight_l", 1.0), help="degree weight of l (n + weight_l * l)")
    p.add_argument("--save-dir", type=Path, help="write <El>.h5 potentials here")
    p.add_argument("--cache-dir", type=Path, help="cache training design data here (re-runs skip the features)")
    p.add_argument("--train-metrics", action="store_true", help="also evaluate the training-set errors (slow)")
    p.add_argument("--models", nargs="+", default=["linear", "embedded"], choices=("linear", "embedded", "multilayer", "embedded_multilayer"))
    p.add_argument("--n-message", type=int, default=MULTILAYER["n_message"], help="multilayer: radial functions of the messages")
    p.add_argument("--n-pass", type=int, default=MULTILAYER["n_pass"], help="multilayer: radial functions of the second layer")
    p.add_argument("--r-message", type=float, help="multilayer: message cutoff, Å (default: the basis cutoff)")
    p.add_argument("--r-pass", type=float, help="multilayer: second-layer cutoff, Å (default: the basis cutoff)")
    p.add_argument("--layer-cutoffs", type=float, nargs="+",
                   help="multilayer: candidate cutoffs (Å) of both layers of messages (r_message = r_pass), chosen by the "
                        "training CV score; 'rc' in LAYER_CUTOFFS means the basis cutoff (default: LAYER_CUTOFFS[element])")
    p.add_argument("--no-layer-cutoff-cv", action="store_true",
                   help="multilayer: no CV over LAYER_CUTOFFS (r_message/r_pass from --r-message/--r-pass or the basis cutoff)")
    p.add_argument("--message-embeddings", nargs="+", default=list(MULTILAYER["embeddings"]),
                   help="multilayer: embeddings of the invariant messages")
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDED["embeddings"]), help="embedded: one embedding per density")
    p.add_argument("--density-max-degree", type=float, nargs="+", default=list(EMBEDDED["density_max_degree"]),
                   help="embedded: per nu, largest degree of the density features")
    p.add_argument("--lam-density", type=float, nargs="+", default=list(EMBEDDED["lam"]), help="embedded: CV grid of the density ridge")
    p.add_argument("--maxiter", type=int, default=EMBEDDED["maxiter"], help="embedded: L-BFGS iterations per fit")
    p.add_argument("--no-density-cv", action="store_true",
                   help="embedded: no CV of the densities (first --lam-density used, fixed a priori; saves 5 fits)")
    p.add_argument("--keep-base", action="store_true",
                   help="embedded_multilayer: the density CV may keep the multilayer fit without densities (its CV row scores best)")
    p.add_argument("--init-scale", type=float, default=EMBEDDED["init_scale"], help="embedded: initial density spread")
    p.add_argument("--degree-shifts", type=int, nargs="+", default=[0, 2, 4],
                   help="CV grid of degree cut-backs (every linear fit of the benchmark chose 0)")
    p.add_argument("--layer-prior-factors", type=float, nargs="+", default=list(LAYER_PRIOR_FACTORS),
                   help="multilayer: CV grid of the second layer's ridge prior relative to the first's")
    p.add_argument("--lam", type=float, nargs="+", default=list(GRIDS["lam"]), help="CV grid of the ridge strength")
    p.add_argument("--power", type=float, nargs="+", default=list(GRIDS["power"]), help="CV grid of the prior exponent")
    p.add_argument("--energy-factors", type=float, nargs="+", default=list(GRIDS["energy_factors"]),
                   help="CV grid of the energy-row weight factor")
    p.add_argument("--cv-criterion", default="combined", choices=("combined", "energy_mae"),
                   help="what the training CV minimises: E_rmse/1 meV + F_rmse/0.05 eV/A, or the held-out energy MAE per "
                        "atom among settings whose held-out force RMSE is within --cv-force-tolerance of the best")
    p.add_argument("--cv-force-tolerance", type=float, default=0.005, help="force budget of --cv-criterion energy_mae, eV/A")
    p.add_argument("--type-balance", type=float, nargs="+", default=[0.0],
                   help="CV grid of the config-type balance exponent of the energy weights (FitSettings.type_balance)")
    p.add_argument("--cv-only", action="store_true", help="training CV and fit only; the test set is not read")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"mlearn data not found at {args.data}: give --data DIR or set ACEHAMIL_SHARED_DATA to the folder that "
              "holds mlearn/", file=sys.stderr)
        return 2
    CV_ONLY[0] = args.cv_only
    basis_kw = {"n_max": args.n_max, "max_nu": args.max_nu, "max_degree": tuple(args.max_degree), "weight_l": args.weight_l}
    from acehamil.models.potential.embedded_fit import EmbeddingSettings

    emb = EmbeddingSettings(embeddings=tuple(args.embeddings), density_max_degree=tuple(args.density_max_degree),
                            lam=tuple(args.lam_density), maxiter=args.maxiter, init_scale=args.init_scale,
                            cv=not args.no_density_cv, keep_base=args.keep_base)
    if args.layer_cutoffs and (args.r_message or args.r_pass or args.no_layer_cutoff_cv):
        p.error("--layer-cutoffs excludes --r-message, --r-pass and --no-layer-cutoff-cv")
    ml = {"n_message": args.n_message, "n_pass": args.n_pass, "r_message": args.r_message, "r_pass": args.r_pass,
          "embeddings": tuple(args.message_embeddings)}
    rows = []
    for el in args.elements:
        cut = tuple(args.r_cut) if args.r_cut else CUTOFFS[el]
        if args.layer_cutoffs:
            layer_cutoffs = tuple(args.layer_cutoffs)
        elif args.no_layer_cutoff_cv or args.r_message or args.r_pass:
            layer_cutoffs = None
        else:
            layer_cutoffs = LAYER_CUTOFFS[el]
        new = run_element(el, args.data, cut, basis_kw, args.solver, not args.quiet, args.save_dir, args.cache_dir,
                          args.train_metrics, tuple(args.models), emb, {**ml, "layer_cutoffs": layer_cutoffs}, args.degree_shifts,
                          args.layer_prior_factors, {"lam": args.lam, "power": args.power, "energy_factors": args.energy_factors,
                                                  "type_balance": args.type_balance},
                          args.cv_criterion, args.cv_force_tolerance)
        rows += new
        if not args.quiet:
            print(table(new), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"basis": basis_kw, "embedding": emb.to_dict(), "multilayer": ml, "models": args.models,
                          "layer_prior_factors": args.layer_prior_factors, "lam": args.lam, "power": args.power,
                          "energy_factors": args.energy_factors, "cv_criterion": args.cv_criterion,
                          "cv_force_tolerance": args.cv_force_tolerance, "type_balance": args.type_balance, "results": rows}, indent=2,
                         default=float))
    else:
        print(table(rows))
        print("training-set CV, held-out energy MAE | max per config_type (meV/atom):")
        for r in rows:
            parts = [f"{k} {v['energy_mae_meV_per_atom']:.2f}|{v['energy_max_abs_meV_per_atom']:.1f}" for k, v in r["cv_by_type"].items()]
            print(f"  {r['element']:<4}{r['model']:<10}" + "  ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Density settings of the embedded multilayer model by training CV, on one fixed multilayer fit.

``benchmarks/mlearn.py --models multilayer embedded_multilayer`` runs one density setting (its
``lam_density`` grid) per process and forms the second layer's design rows again in each.  This
benchmark forms them once and scores several density settings (number and kind of embedding
channels, ``lam_density``, L-BFGS iterations, initial spread) by the same k-fold training CV
(:func:`~acehamil.models.potential.embedded_fit.density_cv_row`) on the same folds, against the
multilayer fit without densities.  The winner is picked by the fit's ``cv_criterion`` over every row
of every setting, with one force budget (the multilayer table's); with ``--final`` it is fitted on the
whole training set and scored **once** on the test set (never before: the test file is read last).

Each setting is ``EMBEDDINGS:LAM[:MAXITER[:INIT]]`` with the embeddings comma-separated, e.g.
``fs,fs:1e-3`` (two ``fs`` channels) or ``fs:1e-2:400``.

Usage::

    nice python benchmarks/density_cv.py Mo --r-cut 5 --layer-cutoff 4.0 --energy-factor 30 --power 2 --lam 1e-12 \\
        --layer-prior 0.01 --settings fs:1e-3 fs,fs:1e-3 fs,fs,fs:1e-3 --cache-dir /tmp/cache [--final] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mlearn  # noqa: E402  (the benchmark's data, basis, caches and published figures)


def parse_setting(text: str, defaults) -> "EmbeddingSettings":  # noqa: F821
    """``EMBEDDINGS:LAM[:MAXITER[:INIT]]`` -> EmbeddingSettings (other fields from ``defaults``)."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"a density setting is EMBEDDINGS:LAM[:MAXITER[:INIT]], got {text!r}")
    kw = {"embeddings": tuple(parts[0].split(",")), "lam": (float(parts[1]),)}
    if len(parts) > 2:
        kw["maxiter"] = int(parts[2])
    if len(parts) > 3:
        kw["init_scale"] = float(parts[3])
    return replace(defaults, **kw)


def label(emb) -> str:
    return f"{','.join(emb.embeddings)}:{emb.lam[0]:g}:{emb.maxiter}:{emb.init_scale:g}"


def main(argv=None) -> int:
    from acehamil.io.labelled import read_configs
    from acehamil.models.potential.config import core_repulsion, make_basis
    from acehamil.models.potential.cv_criterion import rank_cv
    from acehamil.models.potential.data import error_metrics
    from acehamil.models.potential.embedded_fit import EmbeddingSettings, density_cv_row
    from acehamil.models.potential.embedded_multilayer_fit import fit_embedded_multilayer, with_layer_columns
    from acehamil.models.potential.fit import FitSettings, _columns
    from acehamil.models.potential.multilayer import MessageSpec
    from acehamil.models.potential.multilayer_fit import fit_multilayer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("element", choices=sorted(mlearn.PUBLISHED))
    p.add_argument("--data", type=Path, default=mlearn.DATA)
    p.add_argument("--r-cut", type=float, required=True)
    p.add_argument("--layer-cutoff", type=float, help="r_message = r_pass, Å (default: the basis cutoff)")
    p.add_argument("--energy-factor", type=float, required=True)
    p.add_argument("--power", type=float, required=True)
    p.add_argument("--lam", type=float, required=True)
    p.add_argument("--layer-prior", type=float, required=True)
    p.add_argument("--settings", nargs="+", required=True, help="density settings EMBEDDINGS:LAM[:MAXITER[:INIT]]")
    p.add_argument("--init-scale", type=float, default=0.3, help="default initial density spread")
    p.add_argument("--maxiter", type=int, default=200, help="default L-BFGS iterations")
    p.add_argument("--cv-criterion", default="energy_mae", choices=("combined", "energy_mae"))
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--final", action="store_true", help="fit the CV's choice on all training data and score the test set once")
    p.add_argument("--save", type=Path, help="with --final: write the chosen potential here")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    el = args.element
    base_emb = EmbeddingSettings(density_max_degree=mlearn.EMBEDDED["density_max_degree"], maxiter=args.maxiter,
                                 init_scale=args.init_scale)
    embs = [parse_setting(s, base_emb) for s in args.settings]
    t_start, cpu_start = time.perf_counter(), time.process_time()
    train = read_configs(args.data / f"{el}_training.xyz")
    species = tuple(sorted({int(z) for c in train for z in c.atoms.numbers}))
    settings = FitSettings(lam=(args.lam,), power=(args.power,), degree_shifts=(0,), energy_factors=(args.energy_factor,),
                           energy_sigma=1e-3, force_sigma=0.05, n_folds=5, layer_prior_factors=(args.layer_prior,),
                           cv_criterion=args.cv_criterion)
    repulsion = core_repulsion(train, species)
    basis = make_basis(species, r_cut=args.r_cut, **mlearn.BASIS)
    rl = args.layer_cutoff or args.r_cut
    mspec = MessageSpec(n_message=mlearn.MULTILAYER["n_message"], r_message=rl, n_pass=mlearn.MULTILAYER["n_pass"], r_pass=rl,
                        embeddings=tuple(mlearn.MULTILAYER["embeddings"]))
    # linear rows with density features first: the multilayer cache builds on them (one feature pass)
    data = mlearn._cached_embedding_data(args.cache_dir, el, basis, species, train, settings, base_emb, repulsion, True)
    layer, acc = mlearn._cached_multilayer(args.cache_dir, el, basis, species, train, settings, mspec, repulsion, True)
    mres = fit_multilayer(train, basis, species, settings, repulsion=repulsion, accumulated=acc, layer=layer)
    del acc
    t0 = time.perf_counter()
    full = with_layer_columns(data, train, mres.potential.layer, progress=True)
    t_layer = time.perf_counter() - t0
    ch = mres.chosen
    extra = np.tile(mres.potential.layer.feature_degrees(), len(species))
    cols, degs = _columns(basis, species, int(ch["shift"]), extra)
    base = dict(mres.cv[0], setting="none (multilayer)")
    rows = [base]
    print(f"{el}: multilayer CV E_mae {base['energy_mae_meV_per_atom']:.4f} meV/atom F_rmse {base['force_rmse_eV_per_A']:.5f}; "
          f"chosen {ch}; layer rows {t_layer:.0f} s", file=sys.stderr, flush=True)
    for emb in embs:
        t1, c1 = time.perf_counter(), time.process_time()
        row, _ = density_cv_row(full, settings, emb, cols, degs, ch, emb.lam[0], n_extra=len(extra))
        row = dict(row, setting=label(emb), cv_wall_s=time.perf_counter() - t1, cv_cpu_s=time.process_time() - c1)
        rows.append(row)
        print(f"  {row['setting']}: E_mae {row['energy_mae_meV_per_atom']:.4f} meV/atom E_rmse {row['energy_rmse_meV_per_atom']:.4f} "
              f"F_rmse {row['force_rmse_eV_per_A']:.5f} ({row['cv_cpu_s']:.0f} s CPU, {row['cv_wall_s']:.0f} s wall)",
              file=sys.stderr, flush=True)
    ref = min(r["force_rmse_eV_per_A"] for r in mres.cv)  # the multilayer table's budget, as fit_densities
    ranked = rank_cv(rows, settings, force_reference=ref)
    out = {"element": el, "chosen_multilayer": ch, "force_reference": ref, "cv": ranked, "winner": ranked[0]["setting"]}
    print(f"{el}: CV winner {ranked[0]['setting']}", file=sys.stderr, flush=True)
    if args.final:
        win = next((e for e in embs if label(e) == ranked[0]["setting"]), None)
        if win is None:
            pot, info = mres.potential, {}
        else:
            t2 = time.perf_counter()
            eres = fit_embedded_multilayer(train, basis, species, settings, emb=replace(win, cv=False), repulsion=repulsion,
                                           progress=True, data=data, multilayer=mres, layer_data=full)
            pot, info = eres.potential, dict(eres.info, final_fit_wall_s=time.perf_counter() - t2)
        test = read_configs(args.data / f"{el}_test.xyz")  # read only now, once, for the CV's choice
        m = error_metrics(pot, test)
        out.update(test=m["all"], test_per_config_type={k: v for k, v in m.items() if k != "all"}, optimiser=info,
                   published=mlearn.PUBLISHED[el])
        print(f"{el}: test E MAE {m['all']['energy_mae_meV_per_atom']:.3f} meV/atom, F MAE {m['all']['force_mae_eV_per_A']:.4f} eV/A "
              f"(min(GAP, MTP) {min(v[0] for v in mlearn.PUBLISHED[el].values())})", file=sys.stderr, flush=True)
        if args.save:
            from acehamil.io.potential_file import save_potential

            save_potential(args.save, pot)
    out.update(wall_s=time.perf_counter() - t_start, cpu_s=time.process_time() - cpu_start,
               peak_rss_GB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    text = json.dumps(out, indent=2, default=float)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

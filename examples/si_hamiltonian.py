"""Learn H and S of silicon, predict held-out structures, plot bands and DOS (model vs DFT).

Steps (the README's main job): read the shipped PySCF datasets, fit equivariant ACE
models of H and S on the training structures (``[data]`` in the TOML) with calibrated
error bars, save the model, predict the held-out structures (never used in fitting) into a
dataset file, report their H/S/eigenvalue errors per structure kind (``evaluation.json``),
and plot the bands (with the model's 90 % error band) and DOS of one of them.  Each
held-out structure is predicted once; its H/S and eigenvalue errors all come from that
prediction.

``--full`` adds what takes several times longer: the eigenvalue error bars of every
held-out structure against their errors (coverage), and the per-kind scores of the
out-of-distribution test-only set ``data/si_test_ood.h5`` (strained, strongly rattled,
vacancy and 64-atom cells; never fitted, never used to choose settings).

Usage::

    python examples/si_hamiltonian.py [--config examples/si_hamiltonian.toml] [--out si_hamiltonian_out] [--full]

Then, e.g., ``acehamil bands si_hamiltonian_out/predicted.h5``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(HERE / "si_hamiltonian.toml"))
    p.add_argument("--out", default="si_hamiltonian_out")
    p.add_argument("--full", action="store_true",
                   help="also score the error bars of every held-out structure and the out-of-distribution set")
    p.add_argument("--ood", default=str(HERE.parent / "data" / "si_test_ood.h5"),
                   help="out-of-distribution test-only dataset scored with --full ('' to skip)")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset, write_dataset
    from acehamil.io.models import load_model, save_model
    from acehamil.models.hamiltonian.evaluate import by_kind, evaluate
    from acehamil.models.hamiltonian.fit import fit, format_report

    t_start, c_start = time.perf_counter(), time.process_time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = read_model_config(args.config)
    ds = read_dataset(cfg.data.train)
    train_idx = cfg.data.training_indices(len(ds))
    test_idx = cfg.data.test_indices(len(ds))
    files = [cfg.data.train] if isinstance(cfg.data.train, str) else list(cfg.data.train)
    print(f"datasets {', '.join(Path(f).name for f in files)}: {len(ds)} structures; fitting on {len(train_idx)}, "
          f"holding out {test_idx}")

    t0 = time.perf_counter()
    model = fit([ds[i] for i in train_idx], cfg, progress=not args.quiet)
    unc = model.report.get("uncertainty", {})
    print(f"fit: {time.perf_counter() - t0:.1f} s" + (f" (of which error-bar calibration {unc['seconds']:.1f} s)"
                                                       if "seconds" in unc else ""))
    if not args.quiet:
        print(format_report(model.report))
    save_model(model, out / "model.h5")
    model = load_model(out / "model.h5")  # what a user gets back from the file

    test = [ds[i] for i in test_idx]
    n_draws = model.config.uncertainty.n_samples if unc else 0
    predicted = []
    for k, (i, sd) in enumerate(zip(test_idx, test)):
        # draws (the error bars) for the plotted structure always, for every one with --full
        pred = model.predict_structure(sd.atoms, info={"name": f"predicted {ds.names[i]}"},
                                       n_samples=n_draws if (k == 0 or args.full) else 0,
                                       rng=np.random.default_rng(k))
        predicted.append(replace(pred, n_electrons=sd.n_electrons))
        print(f"held-out {ds.names[i]}: smallest eigenvalue of predicted S(k) = {pred.info['overlap_min_eigenvalue']:.4f}")
    write_dataset(out / "predicted.h5", [replace(x, H_draws=None) for x in predicted])

    # every error below from the one prediction per structure above
    res = evaluate(model, test, kmesh=(6, 6, 6), window_eV=2.0, uncertainty=args.full, predictions=predicted)
    print(f"held-out H RMSE {res['H']['rmse_meV_aligned']:.3f} meV modulo the energy zero V*S "
          f"({res['H']['rmse_meV']:.3f} meV absolute), S RMSE {res['S']['rmse']:.2e}, "
          f"eigenvalue MAE within E_F +- 2 eV {res['eigenvalues']['mae_meV']:.3f} meV "
          f"(band path {res['eigenvalues']['band_path_mae_meV']:.3f} meV)")
    if "uncertainty" in res["eigenvalues"]:
        u = res["eigenvalues"]["uncertainty"]
        print(f"held-out error bars: {u['coverage_90']:.2f} of the eigenvalue errors within the 90 % interval, "
              f"{u['coverage_68']:.2f} within 68 %")
    res["held_out_by_kind"] = print_kinds(by_kind(res["per_structure"], UNLABELLED),
                                          "held-out structures (never fitted), by kind:")
    if args.full and args.ood and Path(args.ood).exists():
        res["out_of_distribution"] = print_kinds(score_ood(model, read_dataset(args.ood)),
                                                 "out-of-distribution test set (never fitted):")
    elif not args.full:
        print("(out-of-distribution test set and held-out error-bar coverage: rerun with --full)")
    res["seconds"] = {"wall": time.perf_counter() - t_start, "cpu": time.process_time() - c_start}
    (out / "evaluation.json").write_text(json.dumps(res, indent=1, default=float))
    plot(test[0], predicted[0], out)
    print(f"wrote {out}/model.h5, predicted.h5, evaluation.json, bands.png, dos.png "
          f"({time.perf_counter() - t_start:.0f} s wall, {time.process_time() - c_start:.0f} s CPU)")
    return 0


#: Kind of the shipped structures that carry no ``info["kind"]`` (data/si8_szv.h5).
UNLABELLED = "si8-rattle0.05-0.15"


def kmesh_for(atoms) -> tuple:
    """About 6 k-points per 5.43 Å of each cell vector (6x6x6 for the 8-atom cell)."""
    return tuple(int(max(1, round(6 * 5.43 / x))) for x in np.linalg.norm(np.asarray(atoms.cell.array), axis=1))


def score_ood(model, ds) -> dict:
    """Errors per structure kind of a test set, each structure predicted once on its own k-mesh."""
    from acehamil.models.hamiltonian.evaluate import by_kind, evaluate

    per = []
    for sd in ds:
        per += evaluate(model, [sd], kmesh=kmesh_for(sd.atoms), window_eV=2.0, uncertainty=False)["per_structure"]
    return by_kind(per, UNLABELLED)


def print_kinds(table: dict, title: str) -> dict:
    """Print a per-kind table of :func:`acehamil.models.hamiltonian.evaluate.by_kind`; returns it."""
    print(title)
    print(f"  {'kind':<30}{'n':>3}{'H rmse aligned':>16}{'absolute':>10}{'eig MAE':>9}{'max':>7}{'absolute':>10}{'on-site':>9}  meV")
    for kind, t in table.items():
        print(f"  {kind:<30}{t['n']:>3}{t['H_rmse_meV_aligned']:>16.2f}{t['H_rmse_meV']:>10.2f}{t['eig_mae_meV']:>9.1f}"
              f"{t['eig_max_meV']:>7.0f}{t['eig_mae_meV_absolute']:>10.1f}{t['onsite_rmse_meV_aligned']:>9.1f}")
    return table


def plot(ref, pred, out: Path) -> None:
    """Bands along the standard path and DOS of one held-out structure, model vs DFT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from acehamil.tb.bands import band_structure
    from acehamil.tb.dos import density_of_states

    # energies relative to each one's own Fermi level (from n_electrons): the absolute energy zero of
    # periodic DFT moves with the volume and is not a local quantity (see docs/models.md)
    b_ref = band_structure(ref, npoints=120)
    b_mod = band_structure(pred, npoints=120, kpts=b_ref.path.kpts)
    ef, ef_mod = b_ref.fermi_level, b_mod.fermi_level
    kax = b_ref.axis  # path length, labels (Γ), breaks: no line is drawn across a jump of the path
    x, xt, labels = kax.x, kax.ticks, kax.labels
    sigma = None
    if pred.H_draws is not None:  # the model's calibrated error bars (posterior draws, docs/uncertainty.md)
        from acehamil.tb.draws import band_uncertainty

        sigma = band_uncertainty(pred, b_ref.path.kpts)[1]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for sl in kax.segments():
        if sigma is not None:
            e = b_mod.energies[0, sl] - ef_mod
            for n in range(e.shape[1]):
                ax.fill_between(x[sl], e[:, n] - 1.645 * sigma[sl, n], e[:, n] + 1.645 * sigma[sl, n],
                                color="tab:red", alpha=0.25, lw=0)
        ax.plot(x[sl], b_ref.energies[0, sl] - ef, color="k", lw=1.6)
        ax.plot(x[sl], b_mod.energies[0, sl] - ef_mod, color="tab:red", lw=1.0, ls="--")
    for q in kax.breaks:
        ax.axvline(x[q], color="0.3", lw=1.0)
    ax.plot([], [], color="k", label="DFT (PySCF)")
    ax.plot([], [], color="tab:red", ls="--", label="ACE model" + (f" (90 % band: median +-{1645 * float(np.median(sigma)):.0f} meV)"
                                                                     if sigma is not None else ""))
    ax.set_xticks(xt, labels)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(-13, 8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("E - E_F (eV)")
    nb = min(b_ref.energies.shape[-1], b_mod.energies.shape[-1])
    dev = (b_mod.energies[0, :, :nb] - ef_mod) - (b_ref.energies[0, :, :nb] - ef)
    err = np.abs(dev)[np.abs(b_ref.energies[0, :, :nb] - ef) <= 2.0]
    ax.set_title(f"held-out Si: bands, MAE within E_F +- 2 eV = {err.mean() * 1e3:.1f} meV")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "bands.png", dpi=120)
    plt.close(fig)

    d_ref = density_of_states(ref, kmesh=(8, 8, 8), width=0.1, fermi_level=ef)
    d_mod = density_of_states(pred, kmesh=(8, 8, 8), width=0.1, energies=d_ref.energies - ef + ef_mod, fermi_level=ef_mod)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(d_ref.energies - ef, d_ref.dos, color="k", lw=1.5, label="DFT (PySCF)")
    ax.plot(d_mod.energies - ef_mod, d_mod.dos, color="tab:red", lw=1.0, ls="--", label="ACE model")
    ax.set_xlim(-13, 8)
    ax.set_xlabel("E - E_F (eV)")
    ax.set_ylabel("DOS (states/eV/cell)")
    ax.set_title(f"DOS, max |model - DFT| = {np.abs(d_mod.dos - d_ref.dos).max():.3f} states/eV")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dos.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

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

The per-structure work (the fit's normal-equation sums, the predictions, the eigenvalue errors, the
figures beside them) runs on ``--threads`` threads (default: the usable cores, at most 4), BLAS at
one thread each; the results do not depend on the number.  ``evaluation.json["seconds"]`` holds the
wall and CPU seconds of every phase (``benchmarks/main_job.py`` times the whole job).

Usage::

    python examples/si_hamiltonian.py [--config examples/si_hamiltonian.toml] [--out si_hamiltonian_out] [--full]
                                      [--threads N]

Then, e.g., ``acehamil bands si_hamiltonian_out/predicted.h5``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

_T0 = time.perf_counter()  # start of the script (before numpy's import)

from contextlib import contextmanager
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
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for the per-structure work (default: $ACEHAMIL_THREADS, else the usable cores, at most 4)")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)

    clock = Phases()
    with clock("imports"):
        from acehamil.io.config import read_model_config
        from acehamil.io.dataset import read_dataset, write_dataset
        from acehamil.io.models import load_model, save_model
        from acehamil.models.hamiltonian.evaluate import by_kind, evaluate
        from acehamil.models.hamiltonian.fit import fit, format_report
        from acehamil.threads import blas_limits, thread_mapper, threads_from_env, usable_cores

    # the per-structure work (normal-equation sums, predictions, eigenvalue errors, plots) runs on
    # n threads, BLAS at one thread each (results do not depend on n)
    n_threads = args.threads or threads_from_env() or min(4, usable_cores())
    if n_threads < 1:
        p.error(f"--threads must be >= 1, got {n_threads}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with clock("read"):
        cfg = read_model_config(args.config)
        ds = read_dataset(cfg.data.train)
        train_idx = cfg.data.training_indices(len(ds))
        test_idx = cfg.data.test_indices(len(ds))
        # structures read on the job's threads: h5py serialises its own calls, the checks, checksums and
        # unfolding of one run beside the reading of the next (same structures, same order)
        with ThreadPoolExecutor(n_threads) as pool:
            train = list(pool.map(ds.__getitem__, train_idx))
            test = list(pool.map(ds.__getitem__, test_idx))
    files = [cfg.data.train] if isinstance(cfg.data.train, str) else list(cfg.data.train)
    print(f"datasets {', '.join(Path(f).name for f in files)}: {len(ds)} structures; fitting on {len(train_idx)}, "
          f"holding out {test_idx}")

    with clock("fit"):
        # also for one thread: the sums at one BLAS thread, so the model does not depend on --threads (with
        # the default all-core BLAS the ill-conditioned H sums differ at rounding level, coefficients by ~0.5 %)
        model = fit(train, cfg, progress=not args.quiet, mapper=thread_mapper(n_threads))
    unc = model.report.get("uncertainty", {})
    if "seconds" in unc:
        clock.split("fit", "calibration", unc["seconds"], unc.get("seconds_cpu"))
    print(f"fit: {clock.wall['fit'] + clock.wall.get('calibration', 0.0):.1f} s" +
          (f" (of which error-bar calibration {unc['seconds']:.1f} s)" if "seconds" in unc else ""))
    if not args.quiet:
        print(format_report(model.report))
    with clock("save/load"):
        save_model(model, out / "model.h5")
        model = load_model(out / "model.h5")  # what a user gets back from the file

    n_draws = model.config.uncertainty.n_samples if unc else 0

    def predict(k):
        # draws (the error bars) for the plotted structure always, for every one with --full
        pred = model.predict_structure(test[k].atoms, info={"name": f"predicted {ds.names[test_idx[k]]}"},
                                       n_samples=n_draws if (k == 0 or args.full) else 0, rng=np.random.default_rng(k))
        return replace(pred, n_electrons=test[k].n_electrons)

    # one structure per thread, BLAS at one thread each: the eigen-solves and feature products
    # release the GIL; every result is computed as it would be serially
    with blas_limits(1), ThreadPoolExecutor(n_threads) as pool:
        with clock("predict"):
            predicted = list(pool.map(predict, range(len(test))))
        for i, pred in zip(test_idx, predicted):
            print(f"held-out {ds.names[i]}: smallest eigenvalue of predicted S(k) = {pred.info['overlap_min_eigenvalue']:.4f}")
        # the figures are drawn beside the evaluation (matplotlib holds the GIL, the eigen-solves do not)
        plots = pool.submit(timed, plot, test[0], predicted[0], out)
        with clock("write"):
            write_dataset(out / "predicted.h5", [replace(x, H_draws=None) for x in predicted])
        # every error below from the one prediction per structure above
        with clock("evaluate"):
            res = evaluate(model, test, kmesh=(6, 6, 6), window_eV=2.0, uncertainty=args.full, predictions=predicted,
                           mapper=thread_mapper(n_threads))
        if args.full and args.ood and Path(args.ood).exists():
            with clock("out-of-distribution"):
                ood = score_ood(model, read_dataset(args.ood), pool)
        with clock("plots (after the evaluation)"):
            plot_seconds = plots.result()
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
        res["out_of_distribution"] = print_kinds(ood, "out-of-distribution test set (never fitted):")
    elif not args.full:
        print("(out-of-distribution test set and held-out error-bar coverage: rerun with --full)")
    res["seconds"] = clock.summary()
    res["seconds"]["plots_thread_wall"] = plot_seconds  # the figures' own wall time, beside the evaluation
    (out / "evaluation.json").write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {out}/model.h5, predicted.h5, evaluation.json, bands.png, dos.png "
          f"({res['seconds']['wall']:.0f} s wall, {res['seconds']['cpu']:.0f} s CPU since start; {clock.line()})")
    return 0


class Phases:
    """Wall and CPU seconds of each step of the job (``evaluation.json["seconds"]``).

    CPU time is the process's (all threads); the totals count from the start of the script (wall)
    and of the process (CPU), numpy's import included.
    """

    def __init__(self):
        self.wall, self.cpu = {}, {}

    @contextmanager
    def __call__(self, name: str):
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c

    def split(self, name: str, part: str, wall: float, cpu: float | None = None) -> None:
        """Move ``wall`` (and ``cpu``; default: in proportion) seconds of phase ``name`` into phase ``part``."""
        f = min(1.0, wall / self.wall[name]) if self.wall[name] > 0 else 0.0
        self.wall[part] = f * self.wall[name]
        self.cpu[part] = f * self.cpu[name] if cpu is None else min(cpu, self.cpu[name])
        self.wall[name] -= self.wall[part]
        self.cpu[name] -= self.cpu[part]

    def summary(self) -> dict:
        """``{"wall", "cpu", "phases": {name: {"wall", "cpu"}}}``."""
        return {"wall": time.perf_counter() - _T0, "cpu": time.process_time(),
                "phases": {k: {"wall": self.wall[k], "cpu": self.cpu[k]} for k in self.wall}}

    def line(self) -> str:
        return ", ".join(f"{k} {self.wall[k]:.1f}/{self.cpu[k]:.1f}" for k in self.wall) + " s wall/CPU"


#: Kind of the shipped structures that carry no ``info["kind"]`` (data/si8_szv.h5).
UNLABELLED = "si8-rattle0.05-0.15"


def kmesh_for(atoms) -> tuple:
    """About 6 k-points per 5.43 Å of each cell vector (6x6x6 for the 8-atom cell)."""
    return tuple(int(max(1, round(6 * 5.43 / x))) for x in np.linalg.norm(np.asarray(atoms.cell.array), axis=1))


def score_ood(model, ds, pool) -> dict:
    """Errors per structure kind of a test set, each structure predicted once on its own k-mesh
    (one structure per thread of ``pool``)."""
    from acehamil.models.hamiltonian.evaluate import by_kind, evaluate

    def one(sd):
        return evaluate(model, [sd], kmesh=kmesh_for(sd.atoms), window_eV=2.0, uncertainty=False)["per_structure"]

    return by_kind([r for rs in pool.map(one, ds) for r in rs], UNLABELLED)


def timed(fn, *args) -> float:
    """Wall seconds of ``fn(*args)``."""
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    fig = Figure(figsize=(6, 4.8), layout="constrained")  # no pyplot: no global state, safe beside other threads
    FigureCanvasAgg(fig)
    ax = fig.subplots()
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
    fig.legend(loc="outside lower center", ncols=2, fontsize="small", frameon=False)  # below the axes: hides no band
    fig.savefig(out / "bands.png", dpi=120)

    d_ref = density_of_states(ref, kmesh=(8, 8, 8), width=0.1, fermi_level=ef)
    d_mod = density_of_states(pred, kmesh=(8, 8, 8), width=0.1, energies=d_ref.energies - ef + ef_mod, fermi_level=ef_mod)
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(d_ref.energies - ef, d_ref.dos, color="k", lw=1.5, label="DFT (PySCF)")
    ax.plot(d_mod.energies - ef_mod, d_mod.dos, color="tab:red", lw=1.0, ls="--", label="ACE model")
    ax.set_xlim(-13, 8)
    ax.set_xlabel("E - E_F (eV)")
    ax.set_ylabel("DOS (states/eV/cell)")
    ax.set_title(f"DOS, max |model - DFT| = {np.abs(d_mod.dos - d_ref.dos).max():.3f} states/eV")
    ax.legend()
    fig.savefig(out / "dos.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())

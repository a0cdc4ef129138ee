"""Where does an H model fail on structures unlike its training cells?  (issue 12 diagnosis)

Fits a configuration (default ``examples/si_hamiltonian.toml``) on ``--train`` structures and,
for every ``--probe`` structure, prints

* the per-atom on-site errors (s level, mean p level; meV, after the structure's best energy
  zero ``V S`` is removed) and their spread, grouped by coordination (neighbours < 2.75 Å);
* with ``--eig``: H RMSE (aligned/absolute) and eigenvalue MAE within E_F +- 2 eV;
* with ``--oracle``: the eigenvalue MAE with the model's on-site blocks replaced by DFT's, with
  its off-site blocks replaced, and with the bonds shorter than 3 / 4.2 / 6 / 8 Å replaced (which
  blocks the eigenvalue error comes from).

``--onsite-variants JSON ...`` instead refits only the on-site H blocks for each variant of the
configuration (e.g. ``'{"h_onsite": {"r_cut": 6.5}}'``), with each training structure's energy
zero fixed by the full fit, and prints the on-site s/p RMSE per probe file: a cheap validation of
on-site settings.  Use training candidates as probes (never a test set).

Structures are given as ``FILE[:i-j]`` (inclusive index range).  Example::

    python benchmarks/transfer_diagnosis.py --train data/si8_szv.h5:0-33 --probe data/si_train_mixed.h5:0-11 --oracle
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def structures(spec: str) -> list:
    """``[(label, StructureData)]`` of ``FILE[:i-j]``; the label is ``file-stem:name``."""
    from acehamil.io.dataset import read_dataset

    path, _, rng = spec.partition(":")
    ds = read_dataset(path)
    idx = range(len(ds))
    if rng:
        a, _, b = rng.partition("-")
        idx = range(int(a), min(len(ds), int(b or a) + 1))
    return [(f"{Path(path).stem}:{ds.names[i]}", ds[i]) for i in idx]


def kmesh_for(atoms) -> tuple:
    return tuple(int(max(1, round(6 * 5.43 / x))) for x in np.linalg.norm(np.asarray(atoms.cell.array), axis=1))


def energy_zero(H, sd) -> float:
    """Least-squares ``V`` with ``H_pred ~ H_ref + V S_ref`` over the predicted blocks, eV."""
    from acehamil.models.hamiltonian.evaluate import matrix_residuals

    res, _ = matrix_residuals(H, sd.H[0])
    s_ref = -matrix_residuals(H.with_data(np.zeros(H.data.size)), sd.S)[0]
    return -float(res @ s_ref) / float(s_ref @ s_ref)


def onsite_blocks(m, natoms: int) -> np.ndarray:
    return np.array([m.block(m.find(a, a, (0, 0, 0))) for a in range(natoms)])


def onsite_errors(H, sd, V: float) -> np.ndarray:
    """Per-atom ``(s error, mean p error)`` in meV of predicted on-site blocks (s, p basis), aligned by ``V``."""
    n = len(sd.atoms)
    e = (onsite_blocks(H, n) - onsite_blocks(sd.H[0], n) + V * onsite_blocks(sd.S, n)) * 1e3
    return np.column_stack([e[:, 0, 0], np.einsum("nii->n", e[:, 1:, 1:]) / 3])


def eigenvalue_mae(H, S, sd) -> float:
    from acehamil.tb.dos import monkhorst_pack
    from acehamil.tb.eigen import solve
    from acehamil.tb.smearing import fermi_level

    kp, wk = monkhorst_pack(kmesh_for(sd.atoms), sd.atoms.pbc)
    er, em = solve(sd.H[0], sd.S, kp), solve(H, S, kp)
    fr, fm = (fermi_level(e[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2) for e in (er, em))
    m = np.abs(er - fr) <= 2
    w = np.broadcast_to(wk[:, None], er.shape)[m]
    return float((w * np.abs((em - fm) - (er - fr))[m]).sum() / w.sum() * 1e3)


def oracle(H, S, sd, V: float) -> str:
    """Eigenvalue MAE with some of the model's blocks replaced by DFT's (same energy zero)."""
    ref = sd.H[0].with_data(sd.H[0].data - V * sd.S.data)
    pos, cell = sd.atoms.positions, sd.atoms.cell.array
    dist = np.linalg.norm(pos[H.j] - pos[H.i] + H.shift @ cell, axis=1)

    def replaced(mask):
        d = H.data.copy()
        for p in np.nonzero(mask)[0]:
            q = ref.find(H.i[p], H.j[p], H.shift[p])
            d[H.offsets[p]:H.offsets[p + 1]] = ref.data[ref.offsets[q]:ref.offsets[q + 1]] if q >= 0 else 0.0
        return eigenvalue_mae(H.with_data(d), S, sd)

    on = dist == 0
    out = f"eig model {eigenvalue_mae(H, S, sd):.1f}, DFT on-site {replaced(on):.1f}, DFT off-site {replaced(~on):.1f}"
    return out + "".join(f", DFT bonds < {rc} Å {replaced(~on & (dist < rc)):.1f}" for rc in (3.0, 4.2, 6.0, 8.0))


def apply(cfg, variant: dict):
    for table, kv in variant.items():
        kv = {k: tuple(x) if isinstance(x, list) else x for k, x in kv.items()}
        cfg = replace(cfg, **{table: replace(getattr(cfg, table), **kv)})
    return cfg


def onsite_study(cfg, model, train, probes, variants) -> None:
    """Refit the on-site H blocks only, per variant, with the full fit's training energy zeros."""
    from acehamil.models.hamiltonian.model import MatrixModel
    from acehamil.models.hamiltonian.solve import solve_all
    from acehamil.models.hamiltonian.sums import FitSums, pick_h, structure_sums

    ez = model.report["energy_zero_eV"]
    V_train = [ez[k] for k in sorted(ez, key=int)]
    shifted = [replace(sd, H=(sd.H[0].with_data(sd.H[0].data - v * sd.S.data),)) for sd, v in zip(train, V_train)]
    V_probe = [energy_zero(model.predict(sd.atoms)[0], sd) for _, sd in probes]
    for text in variants:
        c = apply(cfg, json.loads(text))
        mm = replace(MatrixModel.build("H", train[0].basis, c.h_onsite, c.h_offsite), offsite=())
        # every block of every structure (rates {}: no sampling, the generator is not drawn from), weight 1
        sums = FitSums.total(structure_sums(mm, sd, pick_h, {}, 1.0, np.random.default_rng(0), index=k)
                             for k, sd in enumerate(shifted))
        coefs, _, _ = solve_all(mm, sums.normal, c.solver)
        mm = replace(mm, coefficients=coefs)
        per = {}
        for (label, sd), V in zip(probes, V_probe):
            per.setdefault(label.split(":")[0], []).append(onsite_errors(mm.predict(sd.atoms), sd, V))
        nf = sum(len(x) for b in coefs.values() for x in b.values())
        rows = " | ".join(f"{k}: s {np.sqrt(np.mean(np.concatenate(v)[:, 0] ** 2)):.1f} p {np.sqrt(np.mean(np.concatenate(v)[:, 1] ** 2)):.1f}"
                          for k, v in per.items())
        print(f"{text}: {nf} on-site coefficients | {rows} meV rms", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--train", nargs="+", required=True, help="FILE[:i-j] ...")
    p.add_argument("--probe", nargs="+", required=True, help="FILE[:i-j] ... (training candidates, not test data)")
    p.add_argument("--set", default="{}", help="JSON config override for the full fit, e.g. '{\"solver\": {\"lam\": 1e-7}}'")
    p.add_argument("--eig", action="store_true", help="H and eigenvalue errors per probe")
    p.add_argument("--oracle", action="store_true", help="eigenvalue MAE with DFT blocks substituted")
    p.add_argument("--onsite-variants", nargs="*", default=None, help="JSON overrides: refit on-site H only, per variant")
    args = p.parse_args(argv)

    from ase.neighborlist import neighbor_list

    from acehamil.io.config import read_model_config
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.models.hamiltonian.fit import fit

    cfg = apply(read_model_config(args.config), json.loads(args.set))
    train = [sd for spec in args.train for _, sd in structures(spec)]
    probes = [x for spec in args.probe for x in structures(spec)]
    t0 = time.perf_counter()
    model = fit(train, cfg, progress=False)
    print(f"fit on {len(train)} structures: {time.perf_counter() - t0:.1f} s", flush=True)
    if args.onsite_variants is not None:
        onsite_study(cfg, model, train, probes, args.onsite_variants or ["{}"])
        return 0
    by_cn = {}
    for label, sd in probes:
        H, S = model.predict(sd.atoms)
        V = energy_zero(H, sd)
        e = onsite_errors(H, sd, V)
        cn = np.bincount(neighbor_list("i", sd.atoms, 2.75), minlength=len(sd.atoms))
        for c, row in zip(cn, e):
            by_cn.setdefault(int(c), []).append(row)
        line = (f"{label:30s} {len(sd.atoms):3d} atoms  V {V * 1e3:7.1f} meV  on-site s rms {np.sqrt(np.mean(e[:, 0] ** 2)):6.1f} "
                f"(mean {e[:, 0].mean():6.1f}, std {e[:, 0].std():5.1f})  p rms {np.sqrt(np.mean(e[:, 1] ** 2)):6.1f}")
        if args.eig:
            r = evaluate(model, [sd], kmesh=kmesh_for(sd.atoms), uncertainty=False)
            line += (f" | H {r['H']['rmse_meV_aligned']:.2f} aligned, {r['H']['rmse_meV']:.2f} absolute; eig MAE "
                     f"{r['eigenvalues']['mae_meV']:.1f} (max {r['eigenvalues']['max_meV']:.0f}, absolute {r['eigenvalues']['mae_meV_absolute']:.0f})")
        if args.oracle:
            line += " | " + oracle(H, S, sd, V)
        print(line, flush=True)
    for c in sorted(by_cn):
        e = np.array(by_cn[c])
        print(f"coordination {c}: {len(e)} atoms, on-site s rms {np.sqrt(np.mean(e[:, 0] ** 2)):.1f}, p rms {np.sqrt(np.mean(e[:, 1] ** 2)):.1f} meV")
    return 0


if __name__ == "__main__":
    sys.exit(main())

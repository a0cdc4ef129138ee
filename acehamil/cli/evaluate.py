"""``acehamil evaluate model.h5 TEST.h5 [--json]``: errors of a model on reference structures.

JSON contract (``--json``)::

    {"H": {"rmse_meV", "mae_meV", "rmse_meV_aligned", "mae_meV_aligned", "energy_zero_eV", "unmodelled_max_abs_meV",
           "per_block": {key: {"rmse_meV", "mae_meV", "rmse_meV_aligned", "mae_meV_aligned", "n"}}},
     "S": {"rmse", "mae", "unmodelled_max_abs", "per_block": {key: {"rmse", "mae", "n"}}},
     "eigenvalues": {"mae_meV", "max_meV", "mae_meV_absolute", "fermi_shift_meV", "window_eV": 2.0, "kmesh" ([n1, n2, n3] or "per structure"),
                     "band_path_mae_meV", "n",
                     "uncertainty": {"coverage_90", "coverage_68", "spearman_sigma_error", "n", "mean_sigma_meV",
                                     "per_structure": [...]}},
     "per_structure": [{"name", "kind", "H_rmse_meV", "H_rmse_meV_aligned", "onsite_rmse_meV_aligned", "S_rmse",
                        "eig_mae_meV", "eig_max_meV", "eig_mae_meV_absolute", "band_path_mae_meV", "kmesh"}, ...],
     "n_structures"}

``eigenvalues.uncertainty`` (models with a posterior, see ``docs/uncertainty.md``): the
fraction of eigenvalue errors inside the predicted 90 % (``1.645 sigma``) and 68 %
(``sigma``) intervals, and Spearman's rank correlation of sigma with ``|error|``, over the
same eigenvalues as ``mae_meV``.

Matrix errors are over the blocks the model predicts (``*_aligned``: modulo the
best constant ``V S`` per structure, the arbitrary energy zero of periodic DFT);
eigenvalue errors over the reference eigenvalues within ``E_F +- window`` on a
Monkhorst-Pack grid, relative to each one's own Fermi level, and along the
standard band path (``band_path_mae_meV``).  ``per_structure`` gives the same errors per
structure (``kind``: the structure's ``info["kind"]``, e.g. from ``acehamil generate``); the
table output adds means per kind when the structures carry kinds.  See ``docs/models.md``.
"""

from __future__ import annotations

import math

from ._select import select_indices


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="errors of a fitted H/S model on a dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file (acehamil fit)")
    p.add_argument("test", help="dataset file with reference H and S")
    p.add_argument("--index", default=":", help="structures to use (ASE-style, default all)")
    p.add_argument("--kmesh", type=int, nargs=3, default=None, metavar=("N1", "N2", "N3"),
                   help="Monkhorst-Pack grid for eigenvalues, the same for every structure (default: per structure, "
                        "scaled with its cell: n_i = ceil(32.5 Å |b_i|), 6 6 6 for the 8-atom Si cell, 3 3 3 for 64 atoms)")
    p.add_argument("--window", type=float, default=2.0, help="eV around E_F for eigenvalue errors")
    p.add_argument("--json", action="store_true", help="print the JSON contract instead of a table")
    p.add_argument("--no-uncertainty", action="store_true", help="skip the eigenvalue uncertainty (first-order spreads)")
    p.add_argument("--samples", type=int, default=None, help="epistemic posterior draws of the first-order spreads (default: the model's n_samples)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..io.dataset import read_dataset
    from ..io.models import load_model
    from ..io.safe_write import dumps_strict
    from ..models.hamiltonian.evaluate import evaluate
    from ._tbcommon import check_mesh_and_samples

    if not args.window > 0:
        raise UserError(f"--window must be > 0 eV, got {args.window}")
    if args.kmesh is not None and min(args.kmesh) < 1:
        raise UserError(f"--kmesh entries must be >= 1, got {list(args.kmesh)}")
    if args.samples is not None and args.samples < 2:
        raise UserError(f"--samples must be >= 2 (a spread needs two draws; --no-uncertainty skips them), got {args.samples}")
    model = load_model(args.model)
    ds = read_dataset(args.test)
    idx = select_indices(args.index, len(ds), "--index", str(args.test))
    data = [ds[i] for i in idx]
    check_mesh_and_samples(args.kmesh, args.samples, data, lambda sd: sd.layout.norb)
    for i, sd in zip(idx, data):  # an S-only structure (DeepH without hamiltonians.h5) was an IndexError
        if not sd.H:
            raise UserError(f"{args.test} structure {i} ({sd.info.get('name', '?')!r}) has no Hamiltonian (S only): "
                            "evaluate compares H, S and eigenvalues with a reference that has all three")
    res = evaluate(model, data, kmesh=None if args.kmesh is None else tuple(args.kmesh), window_eV=args.window,
                   uncertainty=False if args.no_uncertainty else None, n_samples=args.samples)
    if args.json:
        print(dumps_strict(res))
        return 0
    print(f"{len(idx)} structures")
    print(f"H: RMSE {res['H']['rmse_meV']:.4f} meV, MAE {res['H']['mae_meV']:.4f} meV; modulo the energy zero "
          f"RMSE {res['H']['rmse_meV_aligned']:.4f} meV, MAE {res['H']['mae_meV_aligned']:.4f} meV "
          f"(largest unmodelled |H| {res['H']['unmodelled_max_abs_meV']:.3g} meV)")
    for key, st in res["H"]["per_block"].items():
        print(f"  {key:<28} RMSE {st['rmse_meV']:10.4f}  MAE {st['mae_meV']:10.4f}  n {st['n']}")
    print(f"S: RMSE {res['S']['rmse']:.3e}, MAE {res['S']['mae']:.3e}")
    e = res["eigenvalues"]
    if not math.isfinite(e["mae_meV"]):  # printed as 'MAE nan meV' before: say why there is no figure
        print(f"eigenvalues within E_F +- {e['window_eV']} eV: none on {_grids(e, res['per_structure'])} (every "
              f"structure has a gap wider than 2 x {e['window_eV']} eV around its E_F): no eigenvalue errors; widen "
              f"--window")
    else:
        print(f"eigenvalues within E_F +- {e['window_eV']} eV: MAE {e['mae_meV']:.3f} meV (max {e['max_meV']:.3f}) on "
              f"{_grids(e, res['per_structure'])}; band path MAE {e['band_path_mae_meV']:.3f} meV")
    kinds = [r["kind"] for r in res["per_structure"] if r["kind"]]
    if kinds:
        from ..models.hamiltonian.evaluate import by_kind

        print(f"per kind (means over structures; meV): {'kind':<28}{'n':>3}{'H rmse aligned':>16}{'eig MAE':>9}{'max':>7}")
        for kind, t in by_kind(res["per_structure"]).items():
            print(f"{'':<40}{kind:<28}{t['n']:>3}{t['H_rmse_meV_aligned']:>16.2f}{t['eig_mae_meV']:>9.1f}{t['eig_max_meV']:>7.0f}")
    u = e.get("uncertainty")
    if u and u.get("n", 1):  # no eigenvalue in the window: no coverage to print (it was 'nan ... (n 0)')
        rho = u["spearman_sigma_error"]  # undefined when the errors (or sigmas) are all equal: it printed 'nan'
        rho = f"{rho:.3f}" if math.isfinite(rho) else "undefined (the errors or the sigmas are all equal)"
        print(f"uncertainty: coverage of 90 % intervals {u['coverage_90']:.3f}, of 68 % intervals {u['coverage_68']:.3f}, "
              f"Spearman(sigma, |error|) {rho}, mean sigma {u['mean_sigma_meV']:.2f} meV (n {u['n']})")
    return 0


def _grids(e: dict, per_structure: list) -> str:
    """"a 6x6x6 grid", or the per-structure grids (each distinct one once) of an evaluation."""
    if isinstance(e["kmesh"], list):
        return f"a {'x'.join(map(str, e['kmesh']))} grid"
    seen = list(dict.fromkeys("x".join(map(str, r["kmesh"])) for r in per_structure))
    return f"per-structure grids ({', '.join(seen)}; scaled with each cell)"

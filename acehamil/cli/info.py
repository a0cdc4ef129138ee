"""``acehamil info FILE [--json]``: what a dataset or model file holds.

For a dataset, the ``--json`` output is a contract for scripts::

    {"kind": "dataset", "nstructures": n, "format_version": v, "conventions_version": c,
     "structures": [{"name", "natoms", "norb", "species", "nblocks_H", "periodic",
                     "n_electrons", "fermi_level", "basis", "reference_bands"}, ...]}

For a Hamiltonian model: ``{"kind": "hamiltonian_model", "basis", "valence_electrons",
"solver", "train_structures", "seconds_fit", "block_types": {"H": n, "S": n}}``.

For a site-energy potential (``acehamil fit-potential``): ``{"kind": "ace_potential", "model" (linear,
embedded, multilayer, embedded_multilayer), "species", "r_cut_A", "max_nu", "n_features", "e0_eV",
"repulsion", "posterior" (calibrated error bars stored), "fit"}`` (``fit``: the stored fit facts that
are plain numbers or strings).

With ``--band-error`` (datasets) each structure's Bloch-sum bands are compared with its stored
``reference_bands`` (the DFT code's own eigenvalues; :mod:`acehamil.io.band_check`), and
``--json`` adds ``"band_errors": [{"name", "natoms", "occupied", "near_ef", "all", "checked_max_meV",
...}, ...]`` (meV).  Read-only: works on datasets made by any version of the generator.
"""

from __future__ import annotations

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("info", help="summarise an acehamil dataset or model file")
    p.add_argument("path", help="dataset, H/S model or potential .h5 file")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="datasets: list the structures without reading and checking each one (checksums, atoms, "
                        "matrices); faster for large files, and for inspecting a damaged one")
    p.add_argument("--band-error", action="store_true",
                   help="measure each structure's band error against its stored reference bands (meV)")
    p.set_defaults(func=run)


def _kind(path) -> str:
    from ..io.hdf5 import open_h5

    with open_h5(path) as f:
        return str(f.attrs.get("acehamil_kind", "dataset"))


def summary(path, verify: bool = True) -> dict:
    """The JSON contract of ``acehamil info --json`` as a dict.

    With ``verify`` every structure of a dataset is read and checked as :func:`acehamil.io.dataset.read_dataset`
    checks it for the other commands (checksum, atoms, finite and Hermitian matrices); the first bad one raises.
    """
    from ..io.hdf5 import open_h5

    kind = _kind(path)
    if kind == "hamiltonian_model":
        return model_summary(path)
    if kind == "ace_potential":
        return potential_summary(path)
    from ..io.dataset import read_dataset

    ds = read_dataset(path)
    with open_h5(path) as f:
        fmt, conv = int(f.attrs["format_version"]), int(f.attrs["conventions_version"])
    rows = ds.summary()
    if verify:
        for n in range(len(ds)):  # every structure as the other commands read it: checksum, atoms, matrices
            ds[n]
    return {"kind": "dataset", "nstructures": len(ds), "format_version": fmt, "conventions_version": conv,
            "structures": rows}


def model_summary(path) -> dict:
    """Basis, electrons per species and fit facts of an H/S model file, after loading it with every check of
    :func:`acehamil.io.models.load_model` (header, checksum, finite coefficients and posteriors, feature counts):
    ``info`` never summarises a file that ``predict`` would refuse."""
    import json

    from ase.data import chemical_symbols

    from ..io.hdf5 import open_h5
    from ..io.models import load_model

    load_model(path)
    with open_h5(path) as f:
        cfg = json.loads(f.attrs["config"])
        basis = json.loads(f.attrs["orbital_basis"])
        report = json.loads(f.attrs["report"])
        val = f.attrs.get("valence_electrons")
        ntypes = {n: sum(1 for _ in _leaves(f[n]["coefficients"])) for n in ("H", "S") if n in f}
    shells = {chemical_symbols[int(z)]: [f"{s[0]}{'spdfghi'[s[1]]}" for s in v] for z, v in basis.items()}
    return {
        "kind": "hamiltonian_model",
        "basis": shells,
        "valence_electrons": None if val is None else {chemical_symbols[int(z)]: v for z, v in json.loads(val).items()},
        "solver": cfg.get("solver", {}).get("method"),
        "train_structures": len(report.get("train_structures", [])),
        "seconds_fit": report.get("seconds_fit"),
        "coefficient_sets": ntypes,
    }


def potential_summary(path) -> dict:
    """Species, basis and fit facts of a site-energy potential file, after loading it (and its posterior)
    with every check of :func:`acehamil.io.potential_file.load_potential` (header, checksum, basis
    fingerprint): ``info`` never summarises a file that ``evaluate-potential`` would refuse."""
    from ase.data import chemical_symbols

    from ..io.hdf5 import open_h5
    from ..io.potential_file import load_posterior, load_potential

    pot = load_potential(path)
    posterior = load_posterior(path)
    with open_h5(path) as f:
        model = f.attrs.get("model", "linear")
    model = model.decode() if isinstance(model, bytes) else str(model)
    spec = pot.basis.spec
    species = [chemical_symbols[int(z)] for z in pot.species]
    meta = pot.metadata if isinstance(pot.metadata, dict) else {}
    fit = {k: v for k, v in meta.items()
           if isinstance(v, (str, bool, int)) or (isinstance(v, float) and np.isfinite(v))}
    return {
        "kind": "ace_potential",
        "model": model,
        "species": species,
        "r_cut_A": float(spec.radial.r_cut),
        "max_nu": int(spec.max_nu),
        "n_features": int(np.asarray(pot.coef).shape[-1]),
        "e0_eV": {sym: float(e) for sym, e in zip(species, np.asarray(pot.e0, dtype=float))},
        "repulsion": pot.repulsion is not None,
        "posterior": posterior is not None,
        "fit": fit,
    }


def _leaves(group):
    out = []
    group.visititems(lambda name, obj: out.append(name) if hasattr(obj, "shape") else None)
    return out


def _shells(basis: dict) -> str:
    return "; ".join(f"{sym} {' '.join(sh)}" for sym, sh in basis.items())


def run(args) -> int:
    s = summary(args.path, verify=getattr(args, "verify", True))
    if getattr(args, "band_error", False):
        from ..io.band_check import dataset_band_errors

        if s.get("kind", "dataset") != "dataset":
            raise ValueError(f"{args.path}: --band-error needs a dataset (with reference bands), not a {s['kind']} file")

        s["band_errors"] = dataset_band_errors(args.path)
    if args.json:
        from ..io.safe_write import dumps_strict

        print(dumps_strict(s))
        return 0
    if s["kind"] == "ace_potential":
        print(f"{args.path}: {s['model']} ACE site-energy potential for {' '.join(s['species'])}, r_cut "
              f"{s['r_cut_A']:g} A, correlation order {s['max_nu']}, {s['n_features']} features per species; "
              f"E0 " + ", ".join(f"{k} {v:.4f} eV" for k, v in s["e0_eV"].items()) +
              f"; {'with' if s['repulsion'] else 'no'} core repulsion; "
              f"{'calibrated error bars stored' if s['posterior'] else 'no error bars stored'}")
        for k, v in s["fit"].items():
            print(f"  {k}: {v}")
        return 0
    if s["kind"] == "hamiltonian_model":
        val = s["valence_electrons"]
        print(f"{args.path}: H/S model, basis {_shells(s['basis'])}; fitted on {s['train_structures']} structures "
              f"({s['solver']}, {s['seconds_fit'] or 0:.1f} s)")
        print("  valence electrons per atom: " + (", ".join(f"{k} {v:g}" for k, v in val.items()) if val else
              "not stored (a model written before they were recorded: refit, or predict from a dataset that carries n_electrons)"))
        return 0
    rows = s["structures"]
    print(f"{args.path}: {s['nstructures']} structures (format {s['format_version']}, conventions {s['conventions_version']})")
    bases = {_shells(r["basis"]) for r in rows}
    if len(bases) == 1:
        print(f"  basis: {bases.pop()}")
    for r in rows[:20]:
        ne = "-" if r["n_electrons"] is None else f"{r['n_electrons']:g}"
        ef = "-" if r["fermi_level"] is None else f"{r['fermi_level']:.3f}"
        rb = "" if r["reference_bands"] is None else f"  ref bands {r['reference_bands'][0]}x{r['reference_bands'][1]}"
        print(f"  {r['name']:<24} atoms {r['natoms']:>4}  orbitals {r['norb']:>5}  H blocks {r['nblocks_H']:>6}  "
              f"{'periodic' if r['periodic'] else 'cluster '}  {' '.join(r['species']):<6} electrons {ne:>5}  "
              f"E_F {ef:>8} eV{rb}")
    if len(rows) > 20:
        print(f"  ... {len(rows) - 20} more")
    if "band_errors" in s:
        from ..io.band_check import format_band_errors

        print("band error of the stored H, S against the reference bands:")
        print(format_band_errors(s["band_errors"]))
    return 0

"""Large systems: predict H, S of big Si cells, KPM DOS and shift-invert eigenpairs of big tiled cells.

Usage::

    python benchmarks/large.py --model model.h5 --json                 # defaults below
    python benchmarks/large.py --model model.h5 --predict-reps 11 11 11 --skip kpm eigs
    python benchmarks/large.py --model model.h5 --predict-reps 23 23 24 --stream /tmp --skip kpm eigs --json
    python benchmarks/large.py --model model.h5 --cell-reps 3 3 3 --kpm-tile 4 4 4 --eigs-tile 2 2 2

Stages, each in a fresh child process (so its peak resident memory, ``ru_maxrss``, is its own):

``predict``  H and S of a rattled (0.05 Å, so not a tiling) ``reps`` supercell of the 8-atom cubic
             Si cell with the example model; wall and CPU time, peak memory; with ``--stream DIR``
             predicted in chunks of atoms straight into a dataset file (``acehamil.io.stream``;
             memory independent of the size), whose size is reported.
``kpm``      A predicted ``cell-reps`` cell is tiled ``kpm-tile`` times and the DOS of the tiled
             system computed at Gamma by KPM: ``--kpm-operator tiled`` (default) on
             :class:`acehamil.tb.tiled.TiledOperator` (FFT over the tiles, built from the cell's
             blocks; no supercell matrix), ``sparse`` on the explicitly tiled sparse matrices
             (:mod:`acehamil.structure.supercell`, S^-1 by LU or CG).  The Fermi level is compared
             with the exact one of the tiled system = dense levels of the cell on the
             commensurate k-grid (``fermi_error_meV``; computed after the timing).
``eigs``     The ``n`` eigenpairs nearest E_F of the ``eigs-tile`` tiled cell: ``--eigs-method
             tiled`` (default; exact, one dense cell solve per tile wave vector) or
             ``shift-invert`` (sparse LU of the explicit supercell); shift-invert eigenvalues are
             checked against the cell's dense levels on the commensurate k-grid.

Every figure carries wall time, CPU time (user + system of the child) and the 1-minute load
average before and after, because the development machine is shared (2 cores).
Without ``--model`` the example configuration is fitted first (``benchmarks/predict.py``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _si(reps, seed=0):
    import numpy as np
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * tuple(reps)
    atoms.rattle(0.05, rng=np.random.default_rng(seed))
    return atoms


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _predict_child(model_path, reps, stream, queue):
    from acehamil.io.models import load_model

    model = load_model(model_path)
    atoms = _si(reps)
    base = {"natoms": len(atoms), "norb": int(model.orbital_basis.layout(atoms.numbers).norb), "predict_mode": "memory"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    if stream is None:
        H, S = model.predict(atoms, check_overlap=False)  # times the prediction only, as before predict checked S
        base["nblocks"] = int(H.nblocks)
    else:
        from acehamil.io.stream import predict_to_file

        out_dir, chunk_atoms, precision, _ = stream
        path = Path(out_dir) / f"large_predict_{len(atoms)}.h5"
        summary = predict_to_file(model, atoms, path, name=f"si-{len(atoms)}", chunk_atoms=chunk_atoms,
                                  precision=precision, progress=True)
        base.update(predict_mode="stream", nblocks=summary["nblocks"], chunk_atoms=chunk_atoms, precision=precision,
                    file_GB=path.stat().st_size / 1024**3, matrices_GB_uncompressed=summary["stored_bytes"] / 1024**3)
    base.update(seconds_predict=time.perf_counter() - t0, cpu_seconds_predict=_cpu() - c0,
                peak_memory_GB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                peak_memory_GB_before_predict=before, load_predict=[load0, os.getloadavg()[0]])
    if stream is not None:
        # the streamed file is a dataset: its summary reads no matrix values
        from acehamil.io.dataset import read_dataset

        t1 = time.perf_counter()
        row = read_dataset(path).summary()[0]
        base.update(seconds_file_summary=time.perf_counter() - t1, file_nblocks_H=row["nblocks_H"])
        if not stream[3]:
            path.unlink()
    queue.put(base)


def _cell(model_path, cell_reps, drop_tol):
    """Predicted cell as StructureData, entries with |value| <= drop_tol set to zero (so that the
    dense reference and the sparse solvers see the same matrices)."""
    import numpy as np

    from acehamil.io.models import load_model
    from acehamil.structure import StructureData
    from acehamil.tb.sparse import dropped_norm_bound

    model = load_model(model_path)
    atoms = _si(cell_reps, seed=1)
    H, S = model.predict(atoms, check_overlap=False)  # times the prediction only, as before predict checked S
    bound = {"H": dropped_norm_bound(H, drop_tol), "S": dropped_norm_bound(S, drop_tol)} if drop_tol > 0 else None
    if drop_tol > 0:
        H = H.with_data(np.where(np.abs(H.data) > drop_tol, H.data, 0.0))
        S = S.with_data(np.where(np.abs(S.data) > drop_tol, S.data, 0.0))
    return StructureData(atoms, model.orbital_basis, H=(H,), S=S, n_electrons=4.0 * len(atoms)), bound


def _dense_levels(sd, tile):
    """Levels of the tiled system: the cell's dense levels on the commensurate k-grid."""
    import numpy as np

    from acehamil.tb.eigen import solve

    k = np.array([[a / tile[0], b / tile[1], c / tile[2]] for a in range(tile[0]) for b in range(tile[1])
                  for c in range(tile[2])])
    return np.sort(solve(sd.H[0], sd.S, k).ravel())


def _kpm_child(model_path, cell_reps, tile, drop_tol, moments, vectors, s_method, operator, queue):
    import numpy as np

    from acehamil.structure.supercell import tile_structure
    from acehamil.tb import solvers

    sd, bound = _cell(model_path, cell_reps, drop_tol)
    ntiles = int(np.prod(tile))
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    if operator == "tiled":
        res = solvers.dos(sd, "kpm", n_moments=moments, n_vectors=vectors, supercell=tile)
    else:
        res = solvers.dos(tile_structure(sd, tile), "kpm", n_moments=moments, n_vectors=vectors, s_method=s_method)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    load1 = os.getloadavg()[0]
    t1 = time.perf_counter()
    eps = _dense_levels(sd, tile)
    nv = int(round(sd.n_electrons * ntiles / 2))
    ef_exact = 0.5 * (eps[nv - 1] + eps[nv])
    exact, _ = _exact_kpm(eps, res)
    queue.put({"norb_kpm": int(sd.H[0].norb) * ntiles, "natoms_kpm": len(sd.atoms) * ntiles, "seconds_kpm_dos": seconds,
               "kpm_operator": operator, "seconds_dense_reference": time.perf_counter() - t1,
               "kpm_dos_max_z": float(np.max(np.abs(res.dos - exact) / (res.dos_error + 1e-8 * exact.max()))),
               "kpm_dos_frac_within_3sigma": float(np.mean(np.abs(res.dos - exact) <= 3 * res.dos_error + 1e-8 * exact.max())),
               "kpm_dos_max_rel_error": float(np.abs(res.dos - exact).max() / exact.max()),
               "cpu_seconds_kpm_dos": cpu, "peak_memory_GB_kpm": peak, "load_kpm": [load0, load1],
               "kpm_moments": moments, "kpm_vectors": vectors, "kpm_resolution_meV": 1000 * res.resolution,
               "fermi_level_kpm": res.fermi_level, "fermi_level_exact": float(ef_exact),
               "fermi_error_meV": 1000 * (res.fermi_level - ef_exact), "gap_exact_eV": float(eps[nv] - eps[nv - 1]),
               "drop_tol": drop_tol, "dropped_norm_bound_eV": bound})


def _eigs_child(model_path, cell_reps, tile, n, drop_tol, method, queue):
    import numpy as np

    from acehamil.structure.supercell import tile_structure
    from acehamil.tb import solvers

    sd, _ = _cell(model_path, cell_reps, drop_tol)
    ntiles = int(np.prod(tile))
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu()
    if method == "tiled":  # E_F from the electron count inside (exact levels)
        res = solvers.eigenpairs(sd, near="fermi", n=n, supercell=tile, eigenvectors=True)
        ef = res.sigma
    else:
        big = tile_structure(sd, tile)
        eps = _dense_levels(sd, tile)
        nv = int(round(big.n_electrons / 2))
        ef = 0.5 * (eps[nv - 1] + eps[nv])
        t0, c0 = time.perf_counter(), _cpu()
        res = solvers.eigenpairs(big, near=ef, n=n, method="shift-invert", tol=1e-10)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    if method == "tiled":
        eps = _dense_levels(sd, tile)
    ref = np.sort(eps[np.argsort(np.abs(eps - ef), kind="stable")[:n]])
    queue.put({"norb_eigs": int(sd.H[0].norb) * ntiles, "eigs_method": method, "seconds_eigs": seconds, "cpu_seconds_eigs": cpu,
               "peak_memory_GB_eigs": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
               "load_eigs": [load0, os.getloadavg()[0]], "eigs_n": n,
               "eigs_max_error_eV": float(np.abs(res.energies - ref).max()), "eigs_residual_eV": res.residual})


def _exact_kpm(eps, res):
    """The same kernel and bounds applied to the exact levels (the dense reference of a KPM DOS)."""
    import numpy as np

    from acehamil.tb.kpm import kpm_dos_from_levels

    return kpm_dos_from_levels(eps[None, :], np.ones(1), res.energies, res.bounds, res.n_moments)


def _run(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:  # a child that dies never answers: do not wait for it forever
        try:
            out = q.get(timeout=5)
            break
        except Exception:  # noqa: BLE001 - queue.Empty
            if not p.is_alive():
                raise RuntimeError(f"stage {target.__name__} failed (exit code {p.exitcode}); see its traceback above")
    p.join()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model file (default: fit examples/si_hamiltonian.toml first)")
    p.add_argument("--predict-reps", type=int, nargs=3, default=[11, 11, 11],
                   help="cubic 8-atom cells (11^3: 10648 atoms; 23 23 24: 101,568 atoms)")
    p.add_argument("--stream", metavar="DIR", default=None,
                   help="predict in atom chunks straight into DIR/large_predict_N.h5 (acehamil.io.stream), deleted after "
                        "measuring unless --keep")
    p.add_argument("--chunk-atoms", type=int, default=None, help="atoms per chunk with --stream")
    p.add_argument("--precision", default="float64", choices=["float64", "float32"], help="stored values with --stream")
    p.add_argument("--keep", action="store_true", help="keep the streamed file")
    p.add_argument("--cell-reps", type=int, nargs=3, default=[2, 2, 2], help="predicted cell tiled for kpm/eigs")
    p.add_argument("--kpm-tile", type=int, nargs=3, default=[16, 16, 16], help="16^3 x 256 orbitals = 1,048,576")
    p.add_argument("--kpm-moments", type=int, default=1024)
    p.add_argument("--kpm-vectors", type=int, default=4)
    p.add_argument("--s-solver", default="auto", choices=["auto", "lu", "cg"], help="sparse KPM only")
    p.add_argument("--kpm-operator", default="tiled", choices=["tiled", "sparse"])
    p.add_argument("--eigs-method", default="tiled", choices=["tiled", "shift-invert"])
    p.add_argument("--eigs-tile", type=int, nargs=3, default=[7, 7, 8], help="392 x 256 orbitals = 100,352")
    p.add_argument("--eigs-n", type=int, default=20)
    p.add_argument("--drop-tol", type=float, default=0.0, help="drop |entries| <= this before kpm/eigs (0: none)")
    p.add_argument("--skip", nargs="*", default=[], choices=["predict", "kpm", "eigs"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = {"threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(), "natoms": None, "norb": None,
              "seconds_predict": None, "peak_memory_GB": None, "seconds_kpm_dos": None, "seconds_eigs": None,
              "fermi_error_meV": None}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from predict import fit_shipped

            model = str(Path(tmp) / "model.h5")
            fit_shipped(ROOT / "examples" / "si_hamiltonian.toml", Path(model))
        if "predict" not in args.skip:
            from acehamil.models.hamiltonian.chunked import CHUNK_ATOMS

            stream = None if args.stream is None else (args.stream, args.chunk_atoms or CHUNK_ATOMS, args.precision, args.keep)
            result.update(_run(_predict_child, model, args.predict_reps, stream))
        if "kpm" not in args.skip:
            result.update(_run(_kpm_child, model, args.cell_reps, args.kpm_tile, args.drop_tol, args.kpm_moments,
                               args.kpm_vectors, args.s_solver, args.kpm_operator))
        if "eigs" not in args.skip:
            result.update(_run(_eigs_child, model, args.cell_reps, args.eigs_tile, args.eigs_n, args.drop_tol,
                               args.eigs_method))
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Is the on-site error floor of disordered cells long-range or local?  (issue 12)

A cheap, on-site-only study on the TRAINING data of a configuration (default
``examples/si_hamiltonian.toml``; its ``[data] test`` structures are the held-out
candidates; never a test-only file).  Per atom the targets are the on-site s level
``H_ii[s, s]`` and the mean p level ``tr H_ii[p, p] / 3`` (eV); the linear model is

    level_i = c . [1, f_i] + V_s      (one energy zero V_s per structure, fitted)

with ``f_i`` the invariant (L = 0) features of the configuration's on-site basis, plus
one optional extra feature set:

* ``charge``: screened-Coulomb (Yukawa, ``exp(-r/lam)/r``, lattice-summed to 5 lam) sums
  ``sum_j K(r_ij) (q_j - <q>)`` of four local "charge" descriptors ``q_j`` (radial moments of
  atom j's neighbours within 3.2 Å) and the potential of the local dipoles
  ``p_j = sum_k w(r_jk) r_jk / r_jk`` -- long-range, linear, invariant features;
* ``mulliken``: the same kernel on the DFT reference's own Mulliken charges (an ORACLE:
  unknown at prediction; it asks whether point-charge electrostatics explains the floor);
* ``inner``: the L = 0 features of a second, short-range (first-shell, r_cut 3 Å) ACE basis of
  higher correlation order than the main one (docs/models.md).

Prints per structure kind the rms s error (meV, each structure's residual mean removed, as
the aligned error) for the training and the held-out structures, the correlation of the s
and p residuals of the local model (a shift common to all orbitals of an atom reads 1) and
the correlation of the local model's residuals between neighbours at 0-2.7 Å (a smooth
long-range potential field reads clearly > 0).  CPU time and load are printed beside wall time.

    python benchmarks/onsite_floor.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the short-range (first-shell) basis of the ``inner`` feature set
INNER = {"r_cut": 3.0, "max_nu": 3, "max_degree": (8, 6, 4), "n_max": 6}


def invariant_features(fam, atoms) -> np.ndarray:
    """L = 0 features of every atom, shape (natoms, n)."""
    return fam.features(fam.environments(atoms, None, np.arange(len(atoms))))[(0, 1)][:, :, 0]


def yukawa_sum(atoms, B, lam: float) -> np.ndarray:
    """``sum_{j, T} exp(-r/lam)/r (B_j - mean B)``, lattice sum to 5 lam, shape (natoms, n_B)."""
    from acehamil.structure.neighbours import neighbour_pairs

    nl = neighbour_pairs(atoms, 5.0 * lam)
    K = np.exp(-nl.dist / lam) / nl.dist
    Bc = B - B.mean(axis=0)
    out = np.zeros((len(atoms), B.shape[1]))
    np.add.at(out, nl.i, K[:, None] * Bc[nl.j])
    return out


def charge_features(atoms, lam: float = 4.0) -> np.ndarray:
    """Yukawa sums of local charge descriptors and the potential of local dipoles, shape (natoms, 5)."""
    from acehamil.structure.neighbours import neighbour_pairs

    nl = neighbour_pairs(atoms, 3.2)
    x = nl.dist / 3.2
    w = (1 - x ** 2) ** 2
    q = np.zeros((len(atoms), 4))
    np.add.at(q, nl.i, w[:, None] * x[:, None] ** np.arange(4))
    p = np.zeros((len(atoms), 3))
    np.add.at(p, nl.i, w[:, None] * nl.vec / nl.dist[:, None])
    far = neighbour_pairs(atoms, 5.0 * lam)
    K = np.exp(-far.dist / lam) / far.dist
    dK = -K * (1 / far.dist + 1 / lam)
    pot = np.einsum("pa,pa->p", p[far.j], -far.vec) * (-dK) / far.dist
    dip = np.zeros(len(atoms))
    np.add.at(dip, far.i, pot)
    return np.column_stack([yukawa_sum(atoms, q, lam), dip])


def mulliken_charges(sd, k_per_cell: float = 4.0) -> np.ndarray:
    """Mulliken charges of the reference H, S (valence 4 per Si, lowest 2 N bands filled), shape (natoms, 1)."""
    import scipy.linalg as sl

    from acehamil.tb.bloch import bloch_sum
    from acehamil.tb.dos import monkhorst_pack

    a = sd.atoms
    mesh = tuple(int(max(1, round(k_per_cell * 5.43 / x))) for x in np.linalg.norm(a.cell.array, axis=1))
    kp, wk = monkhorst_pack(mesh, a.pbc)
    Hk, Sk = bloch_sum(sd.H[0], kp), bloch_sum(sd.S, kp)
    nocc = int(round(sd.n_electrons if sd.n_electrons else 4 * len(a))) // 2
    pop = np.zeros(Hk.shape[1])
    for h, s, w in zip(Hk, Sk, wk):
        _, c = sl.eigh(h, s)
        c = c[:, :nocc]
        pop += w * 2 * np.real(np.conj(c) * (s @ c)).sum(axis=1)
    pop /= np.sum(wk)
    return (4.0 - np.bincount(sd.layout.orbital_atom, weights=pop, minlength=len(a)))[:, None]


def fit_levels(rows, extra: str | None, test: set, n_structures: int, lam: float = 1e-8):
    """Ridge fit of the s and p levels with per-structure energy zeros; per-atom residuals (eV) per structure."""
    def design(r):
        return np.hstack([np.ones((len(r["ys"]), 1)), r["local"]] + ([r[extra]] if extra else []))

    nf = design(rows[0]).shape[1]
    A, y = [], []
    for r in rows:
        if r["s"] in test:
            continue
        X = design(r)
        n = len(X)
        V = np.zeros((2 * n, n_structures))
        V[:, r["s"]] = 1.0
        bx = np.zeros((2 * n, 2 * nf))
        bx[:n, :nf], bx[n:, nf:] = X, X
        A.append(np.hstack([bx, V]))
        y.append(np.concatenate([r["ys"], r["yp"]]))
    A, y = np.vstack(A), np.concatenate(y)
    scale = np.sqrt((A ** 2).mean(axis=0)) + 1e-12
    As = A / scale
    reg = np.full(A.shape[1], lam)
    reg[0] = reg[nf] = 1e-12
    c = np.linalg.solve(As.T @ As + np.diag(reg * len(y)), As.T @ y) / scale
    out = []
    for r in rows:
        X = design(r)
        es, ep = X @ c[:nf] - r["ys"], X @ c[nf:2 * nf] - r["yp"]
        v = np.mean(np.concatenate([es, ep]))
        out.append(np.column_stack([es - v, ep - v]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "si_hamiltonian.toml"))
    p.add_argument("--lam", type=float, default=4.0, help="Å, screening length of the long-range kernel")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from acehamil.io.config import read_model_config
    from acehamil.io.dataset import read_dataset
    from acehamil.models.hamiltonian.onsite import OnsiteFamily
    from acehamil.structure.neighbours import neighbour_pairs

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = read_model_config(args.config)
    ds = read_dataset(cfg.data.train)
    test = set(cfg.data.test_indices(len(ds)))
    z = int(ds[0].atoms.numbers[0])
    lmax = max(ds[0].basis.lvalues(z))
    fam = OnsiteFamily(z, cfg.h_onsite, (z,), lmax)
    inner = OnsiteFamily(z, replace(cfg.h_onsite, **INNER), (z,), lmax)
    rows = []
    for s in range(len(ds)):
        sd = ds[s]
        if set(sd.atoms.numbers) != {z} or list(sd.basis.lvalues(z)) != [0, 1]:
            raise ValueError("this study handles one species with one s and one p shell")
        H = sd.H[0]
        blk = np.array([H.block(H.find(i, i, (0, 0, 0))) for i in range(len(sd.atoms))])
        rows.append({"s": s, "kind": sd.info.get("kind", "si8-rattle0.05-0.15-strain2"), "atoms": sd.atoms,
                     "ys": blk[:, 0, 0], "yp": np.trace(blk[:, 1:, 1:], axis1=1, axis2=2) / 3,
                     "local": invariant_features(fam, sd.atoms),
                     "charge": charge_features(sd.atoms, args.lam),
                     "mulliken": yukawa_sum(sd.atoms, mulliken_charges(sd), args.lam),
                     "inner": invariant_features(inner, sd.atoms)})
    results = {}
    for extra in (None, "charge", "mulliken", "inner"):
        res = fit_levels(rows, extra, test, len(ds))
        per = {}
        for r, e in zip(rows, res):
            per.setdefault(("held-out " if r["s"] in test else "train ") + r["kind"], []).append(e)
        results[extra or "local"] = {k: float(np.sqrt(np.mean(np.concatenate(v)[:, 0] ** 2)) * 1e3) for k, v in sorted(per.items())}
        if extra is None:
            e = np.concatenate([x for r, x in zip(rows, res) if r["s"] not in test])
            results["corr_s_p_local"] = float(np.corrcoef(e[:, 0], e[:, 1])[0, 1])
            num, den = 0.0, 0.0
            for r, x in zip(rows, res):
                if r["s"] in test:
                    continue
                m = x.mean(axis=1)
                nl = neighbour_pairs(r["atoms"], 2.7)
                num += float(np.sum(m[nl.i] * m[nl.j])) / max(len(nl.i), 1)
                den += float(np.mean(m ** 2))
            results["neighbour_corr_local"] = num / den
    results["seconds_wall"] = time.perf_counter() - t0
    results["seconds_cpu"] = time.process_time() - c0
    results["load"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"on-site s level rms (meV, aligned); long-range kernel lam = {args.lam} Å")
    kinds = list(results["local"])
    print(f"{'extra features':10s} " + " ".join(f"{k[:24]:>24s}" for k in kinds))
    for name in ("local", "charge", "mulliken", "inner"):
        print(f"{name:10s} " + " ".join(f"{results[name][k]:24.1f}" for k in kinds))
    print(f"local model: corr(s residual, p residual) {results['corr_s_p_local']:.2f}; "
          f"neighbour residual correlation (< 2.7 Å) {results['neighbour_corr_local']:+.2f}")
    print(f"{results['seconds_wall']:.0f} s wall, {results['seconds_cpu']:.0f} s CPU, load {results['load']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

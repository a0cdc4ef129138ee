"""First-order eigenvalue spreads of a prediction: the noise parts analytically, the epistemic part from
coefficient draws over the blocks it was calibrated on.

The calibration (:mod:`acehamil.models.hamiltonian.calibrate`) fits its factors to *first-order*
variances (:mod:`acehamil.models.hamiltonian.linear_response`); this module gives a prediction's
eigenvalues the same quantity, cheaply enough for every state of a k-grid:

* **noise** and **shared noise** (independent per block component, or shared by every block of a
  type): with ``w_n = Re[x_p exp(2 pi i k.T_n)]`` the weights of a state on centre ``n`` (``x_p =
  conj(c_i) (x) c_j`` the same for every centre of the atom pair ``p = (i, j)``), projected on the
  irreducible parts ``y_p = P^T x_p``, the sums over the centres of a pair are Bloch sums of
  constants: ``sum_n Re[y e^{i theta_n}]^2 = 1/2 N_p |y|^2 + 1/2 Re[y^2 sum_n e^{2 i theta_n}]``.  The
  cost per state is one small projection per atom pair, not per block (an 8-atom cell has 64 pairs
  and 2828 blocks within 12 Å).  The Fermi level's linear response (``eps_n - sum_f phi_f eps_f``,
  :func:`~acehamil.models.hamiltonian.linear_response.fermi_weights`) enters through one more Bloch
  sum per pair.  Exact, no draws (tested equal to
  :func:`~acehamil.models.hamiltonian.linear_response.sensitivities`);
* **epistemic**: ``K`` coefficient draws pushed through the features of the on-site blocks and the
  bonds shorter than ``[uncertainty] epistemic_bond_cut`` (the blocks the factor ``a`` was fitted on;
  all blocks when 0), their first-order shifts ``Re c^H dH(k) c`` relative to each draw's linear
  Fermi-level shift.  Monte-Carlo noise ~``1/sqrt(2K)`` on this part only.

``sigma^2 = (a sigma_epi)^2 + (b sigma_noise)^2 + (c sigma_shared)^2 + x^2`` as in
:func:`acehamil.models.hamiltonian.spread.combine`.
"""

from __future__ import annotations

import numpy as np

from .blocks import transpose_sign
from .matrix_model import shell_offsets

#: Bytes of the largest temporaries of :func:`noise_variances` and :func:`epistemic_shifts` per block of
#: states (the work is split over k-points and bands to stay near it, whatever the cell size).
_WORK_BYTES = 32 * 2**20


def _family_noise_setup(mm, fam, bts, so, ni: int, nj: int):
    """The noise metric of a family on its atom-pair blocks and the shared-noise projections per block type.

    Returns
    -------
    M : ndarray, shape (ni nj, ni nj)
        ``sum_{bt, L} (f / beta_L) P_L P_L^T`` embedded at the type's rows and columns of the
        ``(ni, nj)`` block of an atom pair (``f`` = 2 for a symmetrised type), so that a state's noise
        variance on a centre with weights ``w`` (flat block) is ``w^T M w``.
    shared : list of (sym, positions (d1 d2,), P (d1 d2, n_M), weights (n_M,))
        Per block type: where its entries sit in the pair block, its projections (with the factor 2 of
        a type that is not its own transpose), and ``1/beta_L`` per column (0 where a symmetrised type's
        shared draw vanishes).
    """
    from .linear_response import block_projections
    from .uncertainty import posterior

    M = np.zeros((ni * nj, ni * nj))
    shared = []
    one = np.zeros(1, dtype=np.int64)
    for bt in bts:
        Ls = [L for L in bt.L_values() if L in mm.coefficients.get(bt.key, {})
              and np.size(mm.coefficients[bt.key][L]) and posterior(mm, bt, L) is not None]
        if not Ls:
            continue
        sym = fam.symmetrised(bt)
        rows, cols, P, cuts = block_projections(bt, Ls, so, one, one)
        pos = (rows[0][:, None] * nj + cols[0][None, :]).reshape(-1)
        beta = np.concatenate([np.full(2 * L + 1, posterior(mm, bt, L).beta) for L in Ls])
        f_noise = 2.0 if sym else 1.0  # symmetrised: the pair (n, rev n) is one draw of unit variance, seen twice
        M[np.ix_(pos, pos)] += (P * (f_noise / beta)) @ P.T
        ws = np.concatenate([np.full(2 * L + 1, 0.0 if (sym and transpose_sign(L) < 0) else 1.0 / posterior(mm, bt, L).beta)
                             for L in Ls])
        shared.append((sym, pos, P, ws))
    return M, shared


def _re_dot(a, b) -> np.ndarray:
    """``Re sum(a * b)`` over every axis but the first and the last, shape (a.shape[0], a.shape[-1]) (complex
    ``a``, ``b`` of one shape; the real parts only, without the complex product)."""
    a, b = np.asarray(a), np.asarray(b)
    a2, b2 = a.reshape(a.shape[0], -1, a.shape[-1]), b.reshape(b.shape[0], -1, b.shape[-1])
    return (a2.real * b2.real).sum(axis=1) - (a2.imag * b2.imag).sum(axis=1)


def _re_rows(a, b) -> np.ndarray:
    """``Re sum(a * b, axis=1)`` of complex ``a``, ``b`` of shape (n, d), shape (n,)."""
    af, bf = a.view(a.real.dtype), b.view(b.real.dtype)  # (n, 2 d): re, im interleaved
    return np.einsum("nd,nd->n", af[:, 0::2], bf[:, 0::2]) - np.einsum("nd,nd->n", af[:, 1::2], bf[:, 1::2])


def _unique_rows(x) -> tuple:
    """``np.unique(x, axis=0, return_inverse=True)`` of integer rows (n, 3), by one integer code per row."""
    x = np.asarray(x, dtype=np.int64).reshape(-1, 3)
    if len(x) == 0:
        return x.copy(), np.zeros(0, np.int64)
    lo = x.min(axis=0)
    span = x.max(axis=0) - lo + 1
    code = ((x[:, 0] - lo[0]) * span[1] + (x[:, 1] - lo[1])) * span[2] + (x[:, 2] - lo[2])
    u, first, inv = np.unique(code, return_index=True, return_inverse=True)
    return x[first], np.asarray(inv).reshape(-1)


def noise_variances(mm, atoms, pat, vecs, kpts, fermi=None, parts=("noise", "shared"), dtype=np.float64) -> tuple:
    """First-order noise and shared-noise variances (unscaled, eV^2) of every state on a k-grid.

    Parameters
    ----------
    mm : MatrixModel
        With posteriors (its ``beta`` per ``(block type, L)``).
    atoms : ase.Atoms
    pat : Pattern
        The prediction's block pattern (``mm.pattern(atoms)``).
    vecs : ndarray, complex, shape (nk, norb, nb)
        S-orthonormal eigenvectors of the prediction (lattice gauge, :func:`acehamil.tb.eigen.solve`).
    kpts : ndarray, shape (nk, 3), fractional
    fermi : (vecs (nf, norb), kpts (nf, 3), weights (nf,)), optional
        States whose weighted sum is subtracted from every state (the Fermi level's response):
        the variances are then those of ``eps_n - sum_f weights_f eps_f``.
    parts : sequence of {"noise", "shared"}
        The parts computed (the other is returned as zeros).
    dtype : float64 or float32
        Of the per-state products (complex128 or complex64; the Bloch sums and the result stay float64):
        float32 halves their memory traffic (the 8-atom cell's window: ~21 -> ~12 ms), the variances to
        ~1e-7 of their largest (:func:`eigen_sigma`).

    Returns
    -------
    var_noise, var_shared : ndarray, shape (nk, nb), eV^2
        ``(1/beta) sum_n |T_n^T g_n|^2`` and ``(1/beta) |sum_n kappa_n g_n|^2`` summed over the
        ``(block type, L)`` models, as :func:`~acehamil.models.hamiltonian.linear_response.variances`.

    Notes
    -----
    Per family, with ``x_p = conj(c_i) (x) c_j`` the state's ``(ni, nj)`` block of the atom pair ``p = (i, j)``
    (the same for every centre ``(i, j, T)`` of the pair) and ``M`` the family's noise metric
    (:func:`_family_noise_setup`), the centres of a pair sum to ``1/2 N_p x^H M x + 1/2 Re[F_p x^T M x]``
    (``N_p`` centres, ``F_p = sum_T exp(4 pi i k.T)``).  Both quadratic forms factor into per-atom
    matrices, ``x^H M x = vec(rho_i)^T M' vec(rho_j)`` with ``rho_i = c_i c_i^H``, so the sum over pairs
    is one product with the ``(natoms, natoms)`` matrices ``N`` and ``F(k)``: no per-pair temporaries, the
    work per state grows with the number of atom pairs, the memory with the number of atoms.  The
    Fermi reference enters through one Bloch matrix of its block weights per k-point and the shared
    part through ``c^H K(k) c`` (``K`` the Bloch sums of the ``kappa`` of every pair).
    """
    from .uncertainty import _family_centres

    vecs = np.asarray(vecs)
    k = np.asarray(kpts, dtype=float).reshape(-1, 3)
    nk, norb, nb = vecs.shape
    if len(k) != nk:
        raise ValueError(f"{nk} eigenvector sets for {len(k)} k-points")
    orb0 = np.concatenate([[0], np.cumsum(pat.norb)]).astype(np.int64)
    if norb != orb0[-1]:
        raise ValueError(f"eigenvectors have {norb} orbitals, the structure {orb0[-1]}")
    if not set(parts) <= {"noise", "shared"}:
        raise ValueError(f"parts must be a subset of ('noise', 'shared'), got {parts!r}")
    if fermi is not None:
        fv, fk, fw = (np.asarray(x) for x in fermi)
        if fv.ndim != 2 or fv.shape[1] != norb or fk.shape != (len(fv), 3) or fw.shape != (len(fv),):
            raise ValueError("fermi must be (vecs (nf, norb), kpts (nf, 3), weights (nf,))")
    want_n, want_s = "noise" in parts, "shared" in parts
    rx = np.dtype(dtype)
    if rx not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {rx}")
    cx = np.result_type(rx, np.complex64)
    so = shell_offsets(mm.orbital_basis)
    var_n, var_s = np.zeros((nk, nb)), np.zeros((nk, nb))
    if not (want_n or want_s) or nb == 0:
        return var_n, var_s
    for fam, sel, _, _, rev in _family_centres(mm, atoms, pat):
        ci, cj, cs = (np.asarray(x) for x in fam.centre_blocks(atoms, pat.pairs, sel))
        I, li = np.unique(ci, return_inverse=True)
        J, lj = np.unique(cj, return_inverse=True)
        li, lj = np.asarray(li).reshape(-1), np.asarray(lj).reshape(-1)
        ni, nj = int(pat.norb[I[0]]), int(pat.norb[J[0]])
        if np.any(pat.norb[I] != ni) or np.any(pat.norb[J] != nj):
            raise ValueError(f"{fam.name}: the atoms of one side of a family differ in orbitals")  # pragma: no cover
        M, shared = _family_noise_setup(mm, fam, fam.block_types(mm.orbital_basis), so, ni, nj)
        if not shared:
            continue
        nI, nJ, q = len(I), len(J), ni * nj
        oI = (orb0[I][:, None] + np.arange(ni)).reshape(-1)
        oJ = (orb0[J][:, None] + np.arange(nj)).reshape(-1)
        Mr = M.reshape(ni, nj, ni, nj).transpose(0, 2, 3, 1).reshape(ni * ni, nj * nj)  # Mr[(a,c),(d,b)] = M[(a,b),(c,d)]
        N = np.zeros((nI, nJ))
        np.add.at(N, (li, lj), 1.0)
        pair = li * nJ + lj
        upair, pid = np.unique(pair, return_inverse=True)
        pid = np.asarray(pid).reshape(-1)
        npairs = len(upair)
        own = np.asarray(rev) == np.arange(len(ci))
        syms = sorted({s for s, *_ in shared})
        kappa = {s: (np.where(own, np.sqrt(2.0), 1.0) if s else np.ones(len(ci))) for s in syms}
        # Sums over a pair's centres of exp(i theta_n) X_n.  Small cells have few cells and many centres per
        # pair: the centres are grouped by (cell, pair) once and each sum is one product with that table.
        # Larger cells (about one centre per pair and cell) sum over the centres themselves.
        cells, cell_of = _unique_rows(cs)
        tables = len(cells) * npairs * (q + 3) * 8 <= _WORK_BYTES
        if tables:
            slot = cell_of * npairs + pid
            o = np.argsort(slot, kind="stable")
            used, first = np.unique(slot[o], return_index=True)

            def table(X):
                """Per-centre ``X`` (n, ...) summed into its (cell, pair) slot: (ncells, npairs, ...)."""
                T = np.zeros((len(cells) * npairs,) + X.shape[1:])
                T[used] = np.add.reduceat(X[o], first, axis=0)
                return T.reshape((len(cells), npairs) + X.shape[1:])

            X_of = {"N": table(np.ones(len(ci)))}
            X_of.update({s: table(kappa[s]) for s in syms})
            phase_points = cells.astype(float)
        else:
            o = np.argsort(pid, kind="stable")
            starts = np.searchsorted(pid[o], np.arange(npairs))
            X_of = {"N": np.ones(len(ci))[o]}
            X_of.update({s: kappa[s][o] for s in syms})
            phase_points = np.asarray(cs, dtype=float)[o]
        # the Fermi reference: its real block weights r on every centre (or (cell, pair) slot), (.., ni nj)
        const, t_ref = 0.0, {s: np.zeros(q) for s in syms}
        if fermi is not None:
            if tables:  # r depends on the pair and the cell only: one product over the reference states
                Xf = (np.conj(fv[:, oI].reshape(len(fv), nI, ni))[:, upair // nJ, :, None]
                      * fv[:, oJ].reshape(len(fv), nJ, nj)[:, upair % nJ, None, :]).reshape(len(fv), npairs * q)
                Ef = fw[:, None] * np.exp(2j * np.pi * (fk @ cells.T.astype(float)))  # (nf, ncells)
                r = (Ef.T.real @ Xf.real - Ef.T.imag @ Xf.imag).reshape(len(cells), npairs, q)
                MR = r @ M  # M is symmetric
                X_of["B"] = X_of["N"][..., None] * MR
                const = float(np.sum(X_of["N"][..., None] * MR * r)) if want_n else 0.0
                t_ref = {s: np.einsum("cp,cpq->q", X_of[s], r) for s in syms}
            else:
                r = np.zeros((len(o), q))
                oi, oj = orb0[ci[o]][:, None] + np.arange(ni), orb0[cj[o]][:, None] + np.arange(nj)
                for f0 in range(len(fv)):
                    ph = np.exp(2j * np.pi * (phase_points @ fk[f0]))
                    r += fw[f0] * (np.conj(fv[f0][oi])[:, :, None] * (fv[f0][oj] * ph[:, None])[:, None, :]).real.reshape(-1, q)
                MR = r @ M
                X_of["B"] = MR
                const = float(np.sum(MR * r)) if want_n else 0.0
                t_ref = {s: kappa[s][o] @ r for s in syms}

        def pair_sum(E, name):
            """``sum_{n in p} exp(i theta_n) X_n`` of every pair, (kc, npairs, ...); ``E`` per cell or per centre."""
            X = X_of[name]
            if tables:
                T = X.reshape(len(cells), -1)
                return (E.real @ T + 1j * (E.imag @ T)).reshape((len(E), npairs) + X.shape[2:])
            return np.add.reduceat(E.reshape(E.shape + (1,) * (X.ndim - 1)) * X[None], starts, axis=1)

        def dense(X, kc):
            """Per-pair values (kc, npairs, ...) -> (kc, nI, nJ, ...)."""
            out = np.zeros((kc, nI * nJ) + X.shape[2:], dtype=X.dtype)
            out[:, upair] = X
            return out.reshape((kc, nI, nJ) + X.shape[2:])

        per_k = 16 * (3 * nI * nJ + (norb * norb if fermi is not None else 0) + len(phase_points) * (q + 2))
        per_state = 16 * 4 * (nI * ni * ni + nJ * nj * nj) + 16 * (nI * ni + nJ * nj)
        kc_max = max(1, min(nk, _WORK_BYTES // max(1, per_k), _WORK_BYTES // max(1, per_state * nb)))
        bc = max(1, min(nb, _WORK_BYTES // max(1, per_state)))
        MrC = Mr.astype(cx)  # rows @ MrC: the rows' (MrT @ x) of the bands-last form
        for k0 in range(0, nk, kc_max):
            k1 = min(nk, k0 + kc_max)
            kc = k1 - k0
            E = np.exp(2j * np.pi * (k[k0:k1] @ phase_points.T))  # (kc, ncells or n)
            F2 = dense(pair_sum(E * E, "N"), kc) if want_n else None
            Kap = {s: dense(pair_sum(E, s), kc) for s in syms} if want_s else {}
            Bm = None
            if fermi is not None and want_n:  # the Bloch matrix of the reference's metric-weighted block weights
                B = dense(pair_sum(E, "B"), kc)  # (kc, nI, nJ, q)
                Bm = B.reshape(kc, nI, nJ, ni, nj).transpose(0, 1, 3, 2, 4).reshape(kc, nI * ni, nJ * nj)
            del E
            for b0 in range(0, nb, bc):
                b1 = min(nb, b0 + bc)
                m = b1 - b0
                CI = vecs[k0:k1, :, b0:b1][:, oI].astype(cx, copy=False)  # (kc, nI ni, m): bands last throughout
                CJ = vecs[k0:k1, :, b0:b1][:, oJ].astype(cx, copy=False)
                CIr, CJr = CI.reshape(kc, nI, ni, m), CJ.reshape(kc, nJ, nj, m)
                if want_n:
                    # bands before orbitals: each metric product is one matrix product over all states and atoms
                    CIt = CIr.transpose(0, 1, 3, 2)  # (kc, nI, m, ni)
                    CJt = CJr.transpose(0, 1, 3, 2)
                    # rho_i[a, c] = c_ia conj(c_ic), rho_j[d, b] = c_jd conj(c_jb): x^H M x = rho_i . Mr . rho_j
                    rhoI = (CIt[..., :, None] * np.conj(CIt)[..., None, :]).reshape(kc * nI * m, ni * ni)
                    rhoJ = (CJt[..., :, None] * np.conj(CJt)[..., None, :]).reshape(kc, nJ, m * nj * nj)
                    NrJ = (N.astype(rx, copy=False) @ rhoJ.view(rx)).view(cx).reshape(kc * nI * m, nj * nj)  # real N on j
                    v = 0.5 * _re_rows(rhoI, NrJ @ MrC).reshape(kc, nI, m).sum(axis=1)
                    # sigma_i[a, c] = conj(c_ia c_ic), tau_j[d, b] = c_jd c_jb: x^T M x = sigma_i . Mr . tau_j
                    tauJ = (CJt[..., :, None] * CJt[..., None, :]).reshape(kc, nJ, m * nj * nj)
                    FtJ = (F2.astype(cx, copy=False) @ tauJ).reshape(kc * nI * m, nj * nj)
                    sigI = np.conj(CIt[..., :, None] * CIt[..., None, :]).reshape(kc * nI * m, ni * ni)
                    v += 0.5 * _re_rows(sigI, FtJ @ MrC).reshape(kc, nI, m).sum(axis=1) + const
                    if Bm is not None:
                        v -= 2.0 * _re_dot(np.conj(CI), Bm.astype(cx, copy=False) @ CJ)
                    var_n[k0:k1, b0:b1] += v
                if want_s:
                    Z = {}
                    for s_ in syms:  # sum over pairs of kappa-weighted blocks, sum_ij Kap_ij conj(c_i) c_j^T: (kc, ni nj, m)
                        KC = (Kap[s_] @ CJ.reshape(kc, nJ, nj * m)).reshape(kc, nI, nj, m)
                        Z[s_] = np.einsum("kiam,kibm->kabm", np.conj(CIr), KC).reshape(kc, q, m)
                    for s_, pos, P, ws in shared:
                        t = np.einsum("qM,kqm->kmM", P, Z[s_][:, pos].real) - (t_ref[s_][pos] @ P)
                        var_s[k0:k1, b0:b1] += (t * t) @ ws
    return var_n, var_s


def epistemic_shifts(H, delta, vecs, kpts) -> np.ndarray:
    """First-order shifts ``Re c^H dH_d(k) c`` of some states under real-space draws, shape (K, nk, nb), eV.

    Only the entries some draw touches (e.g. inside an epistemic bond cut) enter
    (:func:`touched_draws`, then :func:`draw_shifts`).  The same numbers as
    :func:`acehamil.tb.draws.first_order_shifts` of :func:`acehamil.tb.draws.bloch_perturbations` (tested).

    Parameters
    ----------
    H : RealSpaceMatrix
        The pattern of ``delta``.
    delta : ndarray, shape (K, H.data.size), eV
    vecs : ndarray, complex, shape (nk, norb, nb)
        S-orthonormal eigenvectors.
    kpts : ndarray, shape (nk, 3), fractional
    """
    delta = np.asarray(delta, dtype=float)
    if delta.ndim != 2 or delta.shape[1] != H.data.size:
        raise ValueError(f"delta must have shape (K, {H.data.size}), got {delta.shape}")
    nz = np.flatnonzero(np.any(delta != 0, axis=0))
    return draw_shifts(touched_draws(H, nz, delta[:, nz]), vecs, kpts)


def touched_draws(H, positions, values) -> dict:
    """Real-space draws on some entries of ``H``'s pattern, prepared for :func:`draw_shifts`.

    An entry ``(r, c, T)`` weighs ``Re[conj(c_r) c_c exp(2 pi i k.T)]`` in a state's shift, and its
    transpose partner ``(c, r, -T)`` the same, so every entry is taken as ``(min(r, c), max(r, c), +-T)``
    (exact for any draws: only the Hermitian part of ``dH(k)`` moves an eigenvalue to first order)
    and the draws of entries on one ``(orbital pair, cell)`` slot are summed.

    Parameters
    ----------
    H : RealSpaceMatrix
        The pattern (its data are not used).
    positions : array of int, shape (ne,)
        Positions of the touched entries in ``H.data``, distinct.
    values : ndarray, shape (K, ne), eV
        The draws on them.

    Returns
    -------
    dict
        ``K``, ``norb``, ``qr``, ``qc`` (nq,) the orbital pairs ``r' <= c'``, ``cells`` (ncells, 3), ``slots``
        (nslots,) ``pair * ncells + cell`` ascending, ``d`` (nslots, K) the summed draws.
    """
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=float)
    K = values.shape[0] if values.ndim == 2 else 0
    if values.shape != (K, len(pos)):
        raise ValueError(f"values must have shape (K, {len(pos)}), got {values.shape}")
    n = H.norb
    if len(pos) == 0 or K == 0:
        return {"K": K, "norb": n, "qr": np.zeros(0, np.int64), "qc": np.zeros(0, np.int64), "cells": np.zeros((0, 3)),
                "slots": np.zeros(0, np.int64), "d": np.zeros((0, K))}
    off = H.offsets
    if pos.min() < 0 or pos.max() >= off[-1]:
        raise ValueError("positions outside the matrix data")
    b = np.searchsorted(off, pos, side="right") - 1
    nj = H.norb_per_atom[H.j[b]]
    local = pos - off[b]
    ao = H.atom_offsets
    r, c = ao[H.i[b]] + local // nj, ao[H.j[b]] + local % nj
    flip = r > c
    T = np.asarray(H.shift, dtype=np.int64)[b] * np.where(flip, -1, 1)[:, None]
    r, c = np.where(flip, c, r), np.where(flip, r, c)
    cells, cell_of = _unique_rows(T)
    uq, q_of = np.unique(r.astype(np.int64) * n + c, return_inverse=True)
    slot = np.asarray(q_of).reshape(-1) * len(cells) + cell_of
    o = np.argsort(slot, kind="stable")
    used, first = np.unique(slot[o], return_index=True)
    d = np.add.reduceat(np.ascontiguousarray(values[:, o].T), first, axis=0)  # (nslots, K), by pair then cell
    return {"K": K, "norb": n, "qr": uq // n, "qc": uq % n, "cells": cells, "slots": used, "d": d}


def draw_shifts(draws: dict, vecs, kpts, dtype=np.float64) -> np.ndarray:
    """First-order shifts ``Re c^H dH_d(k) c`` of some states under :func:`touched_draws`, shape (K, nk, nb), eV.

    Few cells per orbital pair (small cells): the ``(cell, pair)`` table of the draws is Bloch-summed by
    one product per block of k-points (``A_q = sum_T cos(2 pi k.T) d``, ``B_q`` with the sine) and the
    shifts are ``A Re x_q - B Im x_q`` with ``x_q = conj(c_r') c_c'`` the state's orbital pairs, one product
    per k-point (at most ``norb (norb + 1) / 2`` pairs).  About one cell per pair (larger cells): each state's
    real weight on every slot and one product with the draws.  Work in blocks of k-points and states
    whose temporaries stay near ``_WORK_BYTES``.

    ``dtype``: of the Bloch tables, weights and products (float64, or float32: about 2.5 times faster on
    the 8-atom cell's window, the shifts to ~1e-7 of their largest, :func:`eigen_sigma`); the result is float64.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    vecs = np.asarray(vecs)
    k = np.asarray(kpts, dtype=float).reshape(-1, 3)
    nk, n, nb = vecs.shape
    if len(k) != nk or n != draws["norb"]:
        raise ValueError(f"vecs {vecs.shape} do not match {len(k)} k-points and {draws['norb']} orbitals")
    K, qr, qc, cells, used, d = (draws[x] for x in ("K", "qr", "qc", "cells", "slots", "d"))
    out = np.zeros((K, nk, nb))
    if len(used) == 0 or nb == 0:
        return out
    nq, ncells = len(qr), len(cells)
    if ncells * nq * K * 8 <= _WORK_BYTES:
        tab = np.zeros((ncells, K, nq), dtype=dtype)
        tab[used % ncells, :, used // ncells] = d
        tab = tab.reshape(ncells, K * nq)
        kc_max = max(1, min(nk, _WORK_BYTES // max(1, 8 * 2 * K * nq)))
        for k0 in range(0, nk, kc_max):
            k1 = min(nk, k0 + kc_max)
            kc = k1 - k0
            theta = 2 * np.pi * (k[k0:k1] @ cells.T.astype(float))  # (kc, ncells)
            A = (np.cos(theta).astype(dtype) @ tab).reshape(kc, K, nq)
            B = (np.sin(theta).astype(dtype) @ tab).reshape(kc, K, nq)
            bc = max(1, min(nb, _WORK_BYTES // max(1, 16 * 3 * kc * nq)))
            for b0 in range(0, nb, bc):
                b1 = min(nb, b0 + bc)
                C = vecs[k0:k1, :, b0:b1]
                X = np.conj(C[:, qr]) * C[:, qc]  # (kc, nq, m)
                out[:, k0:k1, b0:b1] = (A @ X.real.astype(dtype) - B @ X.imag.astype(dtype)).transpose(1, 0, 2)
        return out
    sr, sc, sT = qr[used // ncells], qc[used // ncells], cells[used % ncells].astype(float)
    dT = np.ascontiguousarray(d.T, dtype=dtype)  # (K, nslots)
    ns = len(used)
    states = max(1, _WORK_BYTES // (8 * 5 * ns))
    kc_max = max(1, min(nk, states // max(1, nb)))
    bc = max(1, min(nb, states))
    for k0 in range(0, nk, kc_max):
        k1 = min(nk, k0 + kc_max)
        kc = k1 - k0
        theta = 2 * np.pi * (sT @ k[k0:k1].T)  # (nslots, kc)
        cs, sn = np.cos(theta).astype(dtype)[:, :, None], np.sin(theta).astype(dtype)[:, :, None]
        for b0 in range(0, nb, bc):
            b1 = min(nb, b0 + bc)
            C = np.ascontiguousarray(vecs[k0:k1, :, b0:b1].transpose(1, 0, 2), dtype=np.result_type(dtype, np.complex64))
            X = np.conj(C[sr]) * C[sc]  # (nslots, kc, m)
            W = X.real * cs - X.imag * sn
            out[:, k0:k1, b0:b1] = (dT @ W.reshape(ns, -1)).reshape(K, kc, b1 - b0)
    return out


def window_bands(eps, fermi_level: float, window_eV: float) -> slice:
    """The bands that come within ``window_eV`` of ``fermi_level`` at some k (a contiguous slice)."""
    inside = np.flatnonzero(np.any(np.abs(np.asarray(eps) - fermi_level) <= window_eV, axis=0))
    if len(inside) == 0:
        return slice(0, 0)
    return slice(int(inside[0]), int(inside[-1]) + 1)


def eigen_sigma(model, atoms, kpts, weights, n_electrons, n_samples: int, rng, kpath=None, pairs=None,
                window_eV: float | None = None, dtype=np.float32) -> dict:
    """Eigenvalues of the prediction and their calibrated first-order spread, relative to the Fermi level.

    The noise parts analytically (:func:`noise_variances`), the epistemic part from ``n_samples``
    coefficient draws over the blocks it was calibrated on (``[uncertainty] epistemic_bond_cut``,
    :func:`epistemic_shifts`), the extrapolation part of the structure in quadrature; the Fermi
    level's response at fixed electron count to first order
    (:func:`~acehamil.models.hamiltonian.linear_response.fermi_weights` on ``kpts``), as the
    calibration.

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    atoms : ase.Atoms
    kpts : array, shape (nk, 3), fractional
        The grid on which the Fermi level is found.
    weights : array, shape (nk,)
    n_electrons : float
    n_samples : int
        Epistemic draws ``K`` (>= 2).
    rng : numpy.random.Generator
    kpath : array, shape (np, 3), optional
        More k-points (a band path): their eigenvalues and spreads, relative to the grid's Fermi level.
    pairs : NeighbourPairs, optional
    window_eV : float, optional
        Spreads only of the bands that come within ``window_eV`` of the Fermi level (where the
        spread is calibrated, ``[uncertainty] window_eV``); NaN for the others.  None: every band.
    dtype : float32 or float64
        Of the per-state products of the spreads (:func:`draw_shifts`, :func:`noise_variances`): float32
        (default) halves their memory traffic; the spreads differ from float64's by ~1e-7 relative
        (tested below 1e-5), far below the Monte-Carlo noise of the epistemic draws (~1/sqrt(2K)).

    Returns
    -------
    dict
        ``eps (nk, nb)``, ``sigma (nk, nb)`` eV, ``fermi_level`` (eV), ``H``, ``S`` (the prediction),
        ``sigma_extrapolation`` (eV), ``extrapolation_score`` (natoms,); with ``kpath``:
        ``path_eps``, ``path_sigma``.
    """
    from ...structure.neighbours import neighbour_pairs
    from ...tb.smearing import fermi_level
    from .spread import scales_of
    from .linear_response import fermi_weights
    from .uncertainty import coefficient_draw_sets

    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 2):
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if window_eV is not None and not (np.isfinite(window_eV) and window_eV > 0):
        raise ValueError(f"window_eV must be a positive number or None, got {window_eV!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    a, b, c = scales_of(model)
    nl = pairs if pairs is not None else neighbour_pairs(atoms, model.reach)
    m = model.matrices(atoms, nl)  # the plain prediction
    H, S = m.H, m.S
    pat = model.H.pattern(atoms, nl)
    # the epistemic draws on the on-site blocks and the bonds inside epistemic_bond_cut only (all when 0),
    # through the mapped feature path (the draws as coefficient sets), compact: only the entries they touch
    cut = float(model.config.uncertainty.epistemic_bond_cut)
    where, values = model.H.predict_many(atoms, pat, coefficient_draw_sets(model.H, int(n_samples), rng),
                                         bond_cut=cut if cut > 0 else None, compact=True)
    draws = touched_draws(H, where, values)
    del where, values
    score, sigma_x = model.extrapolation(atoms, nl)
    kp = np.asarray(kpts, dtype=float).reshape(-1, 3)
    w = np.asarray(weights, dtype=float)
    eps, vecs_of = _eigen(H, S, kp)
    ef = fermi_level(eps[None], w, float(n_electrons), 0.01, "fermi-dirac", 2)
    phi = fermi_weights(eps, w, ef, 0.01)
    nk, nb = eps.shape
    flat = phi.reshape(-1)
    f = np.flatnonzero(flat > 1e-9)  # the states that move E_F (a few, at small smearing)
    kf, kf_of = np.unique(f // nb, return_inverse=True)
    fermi = (vecs_of(kf)[np.asarray(kf_of).reshape(-1), :, f % nb], kp[f // nb], flat[f] / flat[f].sum())
    sx2 = float(sigma_x) ** 2
    # each draw's Fermi-level shift, from the states that carry it (each state as its own k-point)
    shift_ef = draw_shifts(draws, fermi[0][:, :, None], fermi[1])[:, :, 0] @ fermi[2]  # (K,)
    parts = tuple(name for name, x in (("noise", b), ("shared", c)) if x != 0)
    step = max(1, _VECS_BYTES // max(1, 16 * H.norb * H.norb))  # k-points whose eigenvectors are held at once

    def spread(kk, ee, vecs):
        bands = slice(0, ee.shape[1]) if window_eV is None else window_bands(ee, ef, window_eV)
        sig = np.full(ee.shape, np.nan)
        if bands.stop > bands.start:
            for k0 in range(0, len(kk), step):
                k1 = min(len(kk), k0 + step)
                Cw = np.ascontiguousarray(vecs(np.arange(k0, k1), bands))
                de = draw_shifts(draws, Cw, kk[k0:k1], dtype=dtype)  # (K, kc, nbw)
                var_e = np.mean((de - shift_ef[:, None, None]) ** 2, axis=0)
                vn, vs = noise_variances(model.H, atoms, pat, Cw, kk[k0:k1], fermi, parts=parts, dtype=dtype)
                sig[k0:k1, bands] = np.sqrt(a * a * var_e + b * b * vn + c * c * vs + sx2)
        return sig

    out = {"eps": eps, "sigma": spread(kp, eps, vecs_of), "fermi_level": ef, "H": H, "S": S,
           "sigma_extrapolation": float(sigma_x), "extrapolation_score": score}
    if kpath is not None:
        kk = np.asarray(kpath, dtype=float).reshape(-1, 3)
        pe, p_vecs = _eigen(H, S, kk)
        out["path_eps"], out["path_sigma"] = pe, spread(kk, pe, p_vecs)
    return out


#: Largest array of eigenvectors :func:`eigen_sigma` holds (bytes): beyond it the eigenvalues come first and
#: the eigenvectors are solved again chunk by chunk of k-points (memory bounded whatever the grid and the cell).
_VECS_BYTES = 256 * 2**20


def _eigen(H, S, kpts) -> tuple:
    """``(eps (nk, nb), vecs_of)`` with ``vecs_of(idx, bands=slice(None))`` the S-orthonormal eigenvectors
    ``(len(idx), norb, nbands)`` at ``kpts[idx]``: small matrices from the factors of one stacked solve (only
    the bands asked for are formed), else all held (one solve) when they fit in :data:`_VECS_BYTES`, else
    solved on demand."""
    from ...tb.eigen import solve, solve_factored

    if 2 * len(kpts) * H.norb * H.norb * 16 <= _VECS_BYTES:
        fac = solve_factored(H, S, kpts)
        if fac is not None:
            eps, xh, y = fac
            return eps, lambda idx, bands=slice(None): xh[np.asarray(idx, dtype=np.int64)] @ y[np.asarray(idx, dtype=np.int64)][:, :, bands]
    if len(kpts) * H.norb * H.norb * 16 <= _VECS_BYTES:
        eps, C = solve(H, S, kpts, eigenvectors=True)
        return eps, lambda idx, bands=slice(None): C[np.asarray(idx, dtype=np.int64)][:, :, bands]
    eps = solve(H, S, kpts)
    return eps, lambda idx, bands=slice(None): solve(H, S, kpts[np.asarray(idx, dtype=np.int64)],
                                                     eigenvectors=True)[1][:, :, :eps.shape[1]][:, :, bands]

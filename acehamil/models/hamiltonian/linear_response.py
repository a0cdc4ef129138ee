"""First-order (linear-response) eigenvalue variances of a Hamiltonian model, without draws.

For a state ``n`` at ``k`` with S-orthonormal eigenvector ``c`` (S fixed), a change ``dH`` of
the real-space blocks moves the eigenvalue by ``d eps = sum_e w_e dH_e`` with, for the entry
``e = (i a, j b, T)``, ``w_e = Re[conj(c_ia) c_jb exp(2 pi i k.T)]`` (the Bloch convention of
:mod:`acehamil.tb.bloch`).  Every ``(block type, L)`` model is linear in its coefficients,
``x_L = D_L c_L`` per centre, so the sensitivity of a state to the coefficients is

``J_L = sum_centres g_n^T D_L,n``  (shape ``(n_F,)`` per state),

with ``g_n`` the weights of the centre's block projected onto its irreducible parts (the
adjoint of :func:`acehamil.models.hamiltonian.blocks.assemble`, and of the symmetrisation and
partner transposition of the prediction).  The three parts of the spread of
:mod:`acehamil.models.hamiltonian.uncertainty` then have exact first-order variances:

* epistemic: ``J Sigma J^T`` (``Sigma`` the coefficient posterior);
* noise: ``(1/beta) sum_n |T_n^T g_n|^2`` (``T`` the symmetrised noise map of ``sample_matrix``);
* shared noise: ``(1/beta) |sum_n kappa_n g_n|^2``.

Rows may be linear combinations of states (``A``): the eigenvalue relative to the Fermi
level is ``eps_n - sum_m phi_m eps_m`` with ``phi`` the normalised ``-df/deps`` weights
(the linear response of ``E_F`` at fixed electron count), so its variance is that of the
row ``A = e_n - phi``.  No Monte-Carlo noise, and one feature evaluation gives the
prediction (for any coefficients) and all sensitivities.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as _sparse

from ...so3 import cg_real
from ...structure.blocks import scatter_blocks
from .blocks import assemble, transpose_sign
from .matrix_model import shell_offsets


def fermi_weights(eps, weights, fermi_level: float, width: float = 0.01) -> np.ndarray:
    """``phi_kn = w_k f'(eps_kn) / sum w f'``: how ``E_F`` (fixed electron count, Fermi-Dirac
    smearing ``width``) moves with each eigenvalue, ``d E_F = sum phi d eps``.

    Parameters
    ----------
    eps : ndarray, shape (nk, nb), eV
    weights : ndarray, shape (nk,)
    fermi_level : float, eV
    width : float, eV

    Returns
    -------
    ndarray, shape (nk, nb), sums to 1

    Examples
    --------
    >>> phi = fermi_weights(np.array([[-1.0, 0.2, 0.4]]), np.ones(1), 0.3, 0.01)
    >>> np.round(phi, 6).tolist()
    [[0.0, 0.5, 0.5]]
    """
    x = np.abs((np.asarray(eps, dtype=float) - float(fermi_level)) / float(width))
    # log of f' = e^-|x| / (1 + e^-|x|)^2, shifted by its maximum (no underflow in a gap)
    lg = -x - 2 * np.log1p(np.exp(-x)) + np.log(np.asarray(weights, dtype=float))[:, None]
    p = np.exp(lg - lg.max())
    return p / p.sum()


def sensitivities(mm, atoms, vecs, kstates, reference=None, coefficients=None, pairs=None,
                  max_particles: int = 200_000, epistemic_cut: float = 0.0, data=None) -> dict:
    """The prediction of ``mm`` and the first-order sensitivities of some state combinations.

    Parameters
    ----------
    mm : MatrixModel
        Supplies families, block types and posteriors.
    atoms : ase.Atoms
    vecs : ndarray, complex, shape (nr, norb)
        S-orthonormal eigenvectors of the ``nr`` states of the rows (lattice gauge,
        :func:`acehamil.tb.eigen.solve`).
    kstates : ndarray, shape (nr, 3)
        Fractional k-point of each state.
    reference : (vecs (nf, norb), kpts (nf, 3), weights (nf,)), optional
        A combination of states subtracted from every row: the rows are then ``eps_n - sum_f
        weights_f eps_f`` (e.g. relative to the Fermi level, :func:`fermi_weights`).
    coefficients : dict {bt.key: {L: ndarray}}, optional
        Of the prediction (default ``mm.coefficients``).
    pairs : NeighbourPairs, optional
    epistemic_cut : float, Å
        > 0: ``J`` sums over the on-site blocks and the bonds shorter than this only (the features
        of longer bonds, most of the cost, are not evaluated; the prediction ``data`` then comes
        from :meth:`MatrixModel.predict_data`, all blocks, and the noise parts still sum over every
        block).  0: all blocks, exact.
    data : ndarray, optional
        With ``epistemic_cut`` > 0: that prediction on ``mm.pattern(atoms, pairs)``, when the caller has it
        (e.g. from :meth:`MatrixModel.predict_many` with other coefficient sets); returned as ``data``.

    Returns
    -------
    dict
        ``data`` (ndarray, the predicted block data on ``pattern``, eV; without any energy zero),
        ``pattern``; ``J``, ``noise``, ``shared``: dicts keyed ``(bt.key, L)`` of ``(nr, n_F)``,
        ``(nr,)`` and ``(nr,)``: the rows' sensitivity to the coefficients, and their
        first-order noise and shared-noise variances in units of ``1/beta``.
    """
    from .uncertainty import _family_centres

    coefficients = mm.coefficients if coefficients is None else coefficients
    vecs = np.asarray(vecs)
    kstates = np.asarray(kstates, dtype=float)
    if vecs.ndim != 2 or kstates.shape != (vecs.shape[0], 3):
        raise ValueError(f"vecs (nr, norb) and kstates (nr, 3) disagree: {vecs.shape}, {kstates.shape}")
    if reference is not None:
        rv, rk, rw = (np.asarray(x) for x in reference)
        if rv.ndim != 2 or rv.shape[1] != vecs.shape[1] or rk.shape != (len(rv), 3) or rw.shape != (len(rv),):
            raise ValueError("reference must be (vecs (nf, norb), kpts (nf, 3), weights (nf,))")
    pat = mm.pattern(atoms, pairs)
    orb0 = np.concatenate([[0], np.cumsum(pat.norb)]).astype(np.int64)
    if vecs.shape[1] != orb0[-1]:
        raise ValueError(f"eigenvectors have {vecs.shape[1]} orbitals, the structure {orb0[-1]}")
    so = shell_offsets(mm.orbital_basis)
    cut = float(epistemic_cut)
    if not cut >= 0:
        raise ValueError(f"epistemic_cut must be >= 0 Å, got {epistemic_cut}")
    if cut > 0:  # the prediction by the fast (mapped) path; features only for the short bonds' sensitivities
        if data is None:
            data = dataclasses.replace(mm, coefficients=coefficients).predict_data(atoms, pat)
        elif np.shape(data) != (int(pat.offsets[-1]),):
            raise ValueError(f"data must be the prediction on the pattern, shape ({int(pat.offsets[-1])},), got {np.shape(data)}")
    else:
        data = np.zeros(int(pat.offsets[-1]))
    pos, cell = np.asarray(atoms.get_positions(), dtype=float), np.asarray(atoms.cell.array, dtype=float)
    nr = len(vecs)
    J, noise, shared = {}, {}, {}
    for fam, sel, blk, rblk, rev in _family_centres(mm, atoms, pat):
        bts = fam.block_types(mm.orbital_basis)
        n = len(sel)
        ci, cj, cs = fam.centre_blocks(atoms, pat.pairs, sel)
        # centres whose features enter J: all, or the on-site blocks and the bonds shorter than the cut
        use = np.arange(n)
        if cut > 0:
            use = np.flatnonzero(np.linalg.norm(pos[cj] - pos[ci] + np.asarray(cs, dtype=float) @ cell, axis=1) < cut)
        # the features of those centres, once: the prediction and the sensitivities.  Each design part is
        # (centres, D (m, n_cols, 2L+1), feature columns or None): two-centre bonds carry only their nonzero columns
        designs, n_coef = {}, {}
        for bt in bts:
            for L in bt.L_values():
                c = coefficients.get(bt.key, {}).get(L)
                if c is not None and c.size:
                    n_coef[(bt.key, L)] = c.size
        env = fam.environments(atoms, pat.pairs, sel[use]) if len(use) else None
        for s0, s1, chunk in (env.chunks(max_particles) if env is not None else ()):
            parts_of = fam.feature_parts(chunk) if hasattr(fam, "feature_parts") else [
                (np.arange(s1 - s0), fam.features(chunk), None)]
            for idx, feats, colmap in parts_of:
                for bt in bts:
                    for L, D in fam.design(feats, bt, len(idx)).items():
                        c = coefficients.get(bt.key, {}).get(L)
                        if c is None or D.shape[1] == 0:
                            continue
                        fcols = None if colmap is None else colmap[(L, bt.parity)]
                        if fcols is None and c.shape != (D.shape[1],):
                            raise ValueError(f"{bt.key} L={L}: {c.shape[0]} coefficients, {D.shape[1]} features")
                        designs.setdefault((bt.key, L), []).append((use[s0 + idx], D, fcols))
        off, nc = pat.offsets[blk], pat.norb[pat.j[blk]]
        for bt in (bts if cut == 0 else ()):
            sym = fam.symmetrised(bt)
            raw = {}
            for L in bt.L_values():
                for idx, D, fcols in designs.get((bt.key, L), ()):
                    c = coefficients[bt.key][L]
                    h = raw.setdefault(L, np.zeros((n, 2 * L + 1)))
                    h[idx] += np.einsum("nfM,f->nM", D, c if fcols is None else c[fcols])
            parts = {L: (0.5 * (h + transpose_sign(L) * h[rev]) if sym else h) for L, h in raw.items()}
            X = assemble(parts, bt.l1, bt.l2, n)
            ra, cb = so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b]
            scatter_blocks(data, off, nc, ra, cb, X)
            if not bt.symmetric:
                scatter_blocks(data, pat.offsets[rblk], pat.norb[pat.j[rblk]], cb, ra, X.transpose(0, 2, 1))
        shifts = np.asarray(cs, dtype=float).T
        own = np.asarray(rev) == np.arange(n)
        sym_of = {bt.key: fam.symmetrised(bt) for bt in bts}
        # the designs as (centres * (2L+1), features) matrices, once: J of a chunk of rows is one product each
        flat = {key: [(idx, np.ascontiguousarray(D.transpose(0, 2, 1)).reshape(-1, D.shape[1]), fcols)
                      for idx, D, fcols in parts] for key, parts in designs.items()}
        del designs
        plan = []  # per block type: orbitals of its blocks, projections onto its L, the reference's part
        kappa_plus = np.where(own, np.sqrt(2.0), 1.0)  # kappa of an L with (-1)^L = +1 (symmetrised types)
        # the blocks of one atom pair (i, j) differ only by their cell shift T: a state's weights there are
        # Re(Z) cos(theta) - Im(Z) sin(theta), Z = conj(c_i) c_j^T of the pair, theta = 2 pi k.T, so the
        # products and projections are formed once per atom pair (a few dozen) instead of once per block
        pair_ids, pair_first, pair_of = np.unique(np.asarray(ci, dtype=np.int64) * len(orb0) + np.asarray(cj),
                                                  return_index=True, return_inverse=True)
        pair_of = pair_of.reshape(-1)
        n_pairs = len(pair_ids)
        # the reversed pair (j, i) of each pair; blocks sorted by pair, for sums over the blocks of each pair
        reverse_pair = np.searchsorted(pair_ids, (pair_ids % len(orb0)) * len(orb0) + pair_ids // len(orb0))
        by_pair = np.argsort(pair_of, kind="stable")
        seg = np.flatnonzero(np.r_[True, np.diff(pair_of[by_pair]) != 0])
        any_sym = any(fam.symmetrised(bt) for bt in bts)
        if any_sym and (np.any(reverse_pair >= n_pairs) or np.any(pair_ids[np.minimum(reverse_pair, n_pairs - 1)]
                                                                    != (pair_ids % len(orb0)) * len(orb0) + pair_ids // len(orb0))):
            raise RuntimeError(f"{fam.name}: symmetrised blocks without their reversed atom pair")  # pragma: no cover
        for bt in bts:
            Ls = [L for L in bt.L_values() if (bt.key, L) in n_coef]
            if not Ls:
                continue
            rows, cols, P, cuts = block_projections(bt, Ls, so, orb0[ci], orb0[cj])
            sym = sym_of[bt.key]
            sgn = np.concatenate([np.full(2 * L + 1, float(transpose_sign(L))) for L in Ls])
            ref = None
            if reference is not None:  # the reference row's weights, per block (its states lie at other k)
                re, im = _pair_projections(rv, rows[pair_first], cols[pair_first], P)  # (nf, n_pairs, q)
                th = 2 * np.pi * (rk @ shifts)  # (nf, n)
                g_ref = (np.einsum("f,fn,fnq->nq", rw, np.cos(th), re[:, pair_of])
                         - np.einsum("f,fn,fnq->nq", rw, np.sin(th), im[:, pair_of]))
                gr = 0.5 * (g_ref + sgn * g_ref[rev]) if sym else g_ref  # symmetrised as the rows' weights
                kap = kappa_plus if sym else np.ones(n)
                q = gr.shape[1]
                # sum over the blocks of each pair of cos(theta) gr as one sparse product: (R, n) @ (n, n_pairs q)
                Mgr = _sparse.csr_matrix((gr.reshape(-1), (np.repeat(np.arange(n), q),
                                                           (pair_of[:, None] * q + np.arange(q)).reshape(-1))),
                                         shape=(n, n_pairs * q))
                ref = (gr, Mgr, np.einsum("nq,nq->q", gr, gr), kap @ g_ref)
            plan.append((bt, Ls, rows[pair_first], cols[pair_first], P, cuts, sgn, sym, ref))
            for L in Ls:
                J[(bt.key, L)] = np.zeros((nr, n_coef[(bt.key, L)]))
                noise[(bt.key, L)] = np.zeros(nr)
                shared[(bt.key, L)] = np.zeros(nr)
        # the rows' weights at the centres of each design part, gathered chunk by chunk: J is one product per
        # part after the loop (all rows at once: the design matrix is read once, not once per chunk of rows)
        gathered = {key: [np.empty((nr, len(idx), D2.shape[0] // max(1, len(idx)))) for idx, D2, _ in parts]
                    for key, parts in flat.items()}
        short = {key: [idx for idx, _, _ in parts] for key, parts in flat.items()}
        # rows per chunk: ~2 MB of (rows, blocks) arrays
        step = max(1, int(2**18 // max(1, n)))
        for r0 in range(0, nr, step):
            r1 = min(nr, r0 + step)
            theta = 2 * np.pi * (kstates[r0:r1] @ shifts)  # (R, n)
            cos, sin = np.cos(theta), np.sin(theta)
            # per pair, sums over its blocks: a row's weights at block n of pair p are cos_n A_p - sin_n B_p
            # (A, B the pair's projections), so sums of squares over the blocks need only these
            cs, sn = cos[:, by_pair], sin[:, by_pair]
            C2 = np.add.reduceat(cs * cs, seg, axis=1)  # (R, n_pairs)
            CS = np.add.reduceat(cs * sn, seg, axis=1)
            S2 = np.add.reduceat(sn * sn, seg, axis=1)
            C1, S1 = np.add.reduceat(cs, seg, axis=1), np.add.reduceat(sn, seg, axis=1)
            if any_sym:
                kp = kappa_plus[by_pair]
                CK, SK = np.add.reduceat(cs * kp, seg, axis=1), np.add.reduceat(sn * kp, seg, axis=1)
            for bt, Ls, rows, cols, P, cuts, sgn, sym, ref in plan:
                R = r1 - r0
                re, im = _pair_projections(vecs[r0:r1], rows, cols, P)  # (R, n_pairs, q) each
                # every L at once: the adjoint of family.symmetrise (column signs (-1)^L), the noise maps of
                # uncertainty.sample_matrix: zeta = (z + s z[rev]) / sqrt 2 (symmetrised), and the shared part
                # kappa zs, kappa = (1 + s) (1/sqrt 2 own partner, 1/2 else) symmetrised (0 for s = -1), 1 else.
                # The reversed block (j, i, -T) of a block of pair (i, j) has cos, -sin and the pair (j, i).
                if sym:
                    A = 0.5 * (re + sgn * re[:, reverse_pair])
                    B = 0.5 * (im - sgn * im[:, reverse_pair])
                    t = np.einsum("rp,rpq->rq", CK, re) - np.einsum("rp,rpq->rq", SK, im)
                else:
                    A, B = re, im
                    t = np.einsum("rp,rpq->rq", C1, re) - np.einsum("rp,rpq->rq", S1, im)
                sq = (np.einsum("rp,rpq->rq", C2, A * A) - 2 * np.einsum("rp,rpq->rq", CS, A * B)
                      + np.einsum("rp,rpq->rq", S2, B * B))
                gr = None
                if ref is not None:  # rows minus the reference: sum (g - gr)^2 = sum g^2 - 2 sum g gr + sum gr^2
                    gr, Mgr, gr2, tk = ref
                    q = gr.shape[1]
                    X = (cos @ Mgr).reshape(R, n_pairs, q)
                    Y = (sin @ Mgr).reshape(R, n_pairs, q)
                    sq += gr2 - 2 * (np.einsum("rpq,rpq->rq", A, X) - np.einsum("rpq,rpq->rq", B, Y))
                    t -= tk
                for q, L in enumerate(Ls):
                    key, sl = (bt.key, L), slice(cuts[q], cuts[q + 1])
                    for G, idx in zip(gathered.get(key, ()), short.get(key, ())):
                        pi = pair_of[idx]
                        g = cos[:, idx, None] * A[:, pi, sl] - sin[:, idx, None] * B[:, pi, sl]
                        G[r0:r1] = g if gr is None else g - gr[idx, sl]
                    noise[key][r0:r1] = (2.0 if sym else 1.0) * sq[:, sl].sum(axis=1)
                    if not (sym and transpose_sign(L) < 0):
                        shared[key][r0:r1] = np.sum(t[:, sl] ** 2, axis=1)
        for key, parts in flat.items():
            for G, (idx, D2, fcols) in zip(gathered[key], parts):
                Jp = G.reshape(nr, -1) @ D2
                if fcols is None:
                    J[key] += Jp
                else:
                    J[key][:, fcols] += Jp
    return {"data": data, "pattern": pat, "J": J, "noise": noise, "shared": shared}


def block_projections(bt, Ls, so, first_i, first_j) -> tuple:
    """Orbitals of the blocks of type ``bt`` and the projections of a block onto its ``L`` components.

    Parameters
    ----------
    bt : BlockType
    Ls : sequence of int
        The type's fitted ``L`` values.
    so : dict
        :func:`~acehamil.models.hamiltonian.matrix_model.shell_offsets` of the model's basis.
    first_i, first_j : int array, shape (n,)
        First orbital of each block's row and column atom.

    Returns
    -------
    rows : int array, shape (n, 2 l1 + 1)
    cols : int array, shape (n, 2 l2 + 1)
    P : float array, shape ((2 l1 + 1)(2 l2 + 1), sum_L (2 L + 1))
        Clebsch-Gordan projections onto every ``L`` at once; times 2 for a type that is not its own
        transpose (its partner block (j, i, -T) holds X^T, with the same weights).
    cuts : int array, shape (len(Ls) + 1,)
        Column ranges of each ``L`` in ``P``.
    """
    d1, d2 = 2 * bt.l1 + 1, 2 * bt.l2 + 1
    ra, cb = so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b]
    rows, cols = first_i[:, None] + ra + np.arange(d1), first_j[:, None] + cb + np.arange(d2)
    P = np.concatenate([cg_real(bt.l1, bt.l2, L).reshape(d1 * d2, 2 * L + 1) for L in Ls], axis=1)
    P = P * (1.0 if bt.symmetric else 2.0)
    cuts = np.cumsum([0] + [2 * L + 1 for L in Ls])
    return rows, cols, P, cuts


def _pair_projections(vecs, rows, cols, P) -> tuple:
    """``Re(Z) P`` and ``Im(Z) P`` of ``Z = conj(c_rows) c_cols^T`` per state and atom pair.

    ``vecs`` (ns, norb) complex, ``rows`` (m, d1) / ``cols`` (m, d2) the orbitals of ``m`` atom pairs'
    blocks, ``P`` (d1 d2, q) the projections of :func:`block_projections`.  The weights of a block
    of the pair at cell shift ``T`` are ``Re(Z) cos(theta) - Im(Z) sin(theta)`` (theta = 2 pi k.T,
    the real part of ``Z exp(i theta)``), so its projections are ``cos re - sin im``.  Returns two arrays
    (ns, m, q)."""
    U = np.conj(vecs[:, rows])  # (ns, m, d1)
    V = vecs[:, cols]  # (ns, m, d2)
    Z = (U[..., :, None] * V[..., None, :]).reshape(U.shape[0] * U.shape[1], -1)
    return (Z.real @ P).reshape(U.shape[0], U.shape[1], -1), (Z.imag @ P).reshape(U.shape[0], U.shape[1], -1)


def variances(mm, sens: dict) -> tuple:
    """First-order ``(var_epistemic, var_noise, var_shared)`` of the rows of :func:`sensitivities`
    under the posteriors of ``mm`` (unscaled), each ``(nr,)``, eV^2."""
    nr = next(iter(sens["J"].values())).shape[0] if sens["J"] else 0
    ve, vn, vs = np.zeros(nr), np.zeros(nr), np.zeros(nr)
    for (key, L), Jl in sens["J"].items():
        post = mm.posteriors.get(key, {}).get(L)
        if post is None:
            continue
        F = post.eigvecs / np.sqrt(post.prior_diag)[:, None] / np.sqrt(post.beta * post.eigvals + post.alpha)
        ve += np.sum((Jl @ F) ** 2, axis=1)
        vn += sens["noise"].get((key, L), 0.0) / post.beta
        vs += sens["shared"].get((key, L), 0.0) / post.beta
    return ve, vn, vs

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
:func:`acehamil.models.hamiltonian.calibrate.combine`.
"""

from __future__ import annotations

import numpy as np

from .linear_response import block_projections
from .blocks import transpose_sign
from .matrix_model import shell_offsets

#: Rows (states) per block of work in :func:`noise_variances` (bounds the temporaries).
_ROW_BLOCK = 4096


def _pair_weights(vecs, rows, cols, P) -> np.ndarray:
    """``y = P^T vec(conj(c_rows) c_cols^T)`` of each state on each atom pair, (nk, nb, npairs, n_M) complex.

    ``vecs`` (nk, norb, nb); ``rows`` (npairs, d1), ``cols`` (npairs, d2) orbital indices; ``P`` (d1 d2, n_M)."""
    U = np.conj(vecs[:, rows, :])  # (nk, npairs, d1, nb)
    V = vecs[:, cols, :]  # (nk, npairs, d2, nb)
    x = U[:, :, :, None, :] * V[:, :, None, :, :]  # (nk, npairs, d1, d2, nb)
    nk, npairs, d1, d2, nb = x.shape
    return np.einsum("kpqn,qm->knpm", x.reshape(nk, npairs, d1 * d2, nb), P, optimize=True)


def noise_variances(mm, atoms, pat, vecs, kpts, fermi=None) -> tuple:
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

    Returns
    -------
    var_noise, var_shared : ndarray, shape (nk, nb), eV^2
        ``(1/beta) sum_n |T_n^T g_n|^2`` and ``(1/beta) |sum_n kappa_n g_n|^2`` summed over the
        ``(block type, L)`` models, as :func:`~acehamil.models.hamiltonian.linear_response.variances`.
    """
    from .uncertainty import _family_centres, posterior

    vecs = np.asarray(vecs)
    k = np.asarray(kpts, dtype=float).reshape(-1, 3)
    nk, norb, nb = vecs.shape
    if len(k) != nk:
        raise ValueError(f"{nk} eigenvector sets for {len(k)} k-points")
    orb0 = np.concatenate([[0], np.cumsum(pat.norb)]).astype(np.int64)
    if norb != orb0[-1]:
        raise ValueError(f"eigenvectors have {norb} orbitals, the structure {orb0[-1]}")
    if fermi is not None:
        fv, fk, fw = (np.asarray(x) for x in fermi)
        if fv.ndim != 2 or fv.shape[1] != norb or fk.shape != (len(fv), 3) or fw.shape != (len(fv),):
            raise ValueError("fermi must be (vecs (nf, norb), kpts (nf, 3), weights (nf,))")
    so = shell_offsets(mm.orbital_basis)
    var_n, var_s = np.zeros((nk, nb)), np.zeros((nk, nb))
    for fam, sel, _, _, rev in _family_centres(mm, atoms, pat):
        ci, cj, cs = fam.centre_blocks(atoms, pat.pairs, sel)
        n = len(sel)
        own = np.asarray(rev) == np.arange(n)
        pair_key = np.asarray(ci, dtype=np.int64) * len(atoms) + np.asarray(cj, dtype=np.int64)
        uniq, p_of = np.unique(pair_key, return_inverse=True)
        p_of = np.asarray(p_of).reshape(-1)
        pi, pj = uniq // len(atoms), uniq % len(atoms)
        order = np.argsort(p_of, kind="stable")  # the centres sorted by pair: a pair's centres are contiguous
        p_of, own, cs = p_of[order], own[order], np.asarray(cs, dtype=float)[order]
        starts = np.searchsorted(p_of, np.arange(len(uniq)))

        def pair_sum(X):
            """Sum over the centres of each pair along axis 1: (nk, n, ...) -> (nk, npairs, ...)."""
            return np.add.reduceat(X, starts, axis=1)

        theta = 2 * np.pi * (k @ cs.T)  # (nk, n)
        E = np.exp(1j * theta)
        F2 = pair_sum(E * E)  # (nk, npairs): sum over the pair's centres of exp(2 i theta)
        counts = np.bincount(p_of, minlength=len(uniq)).astype(float)  # (npairs,)
        for bt in fam.block_types(mm.orbital_basis):
            Ls = [L for L in bt.L_values() if L in mm.coefficients.get(bt.key, {})
                  and np.size(mm.coefficients[bt.key][L]) and posterior(mm, bt, L) is not None]
            if not Ls:
                continue
            sym = fam.symmetrised(bt)
            rows, cols, P, cuts = block_projections(bt, Ls, so, orb0[pi], orb0[pj])
            kappa = np.where(own, np.sqrt(2.0), 1.0) if sym else np.ones(n)
            Kap = pair_sum(E * kappa)  # (nk, npairs)
            B = np.zeros((nk, len(uniq), P.shape[1]), dtype=complex)
            const = np.zeros(P.shape[1])
            t_ref = np.zeros(P.shape[1])
            if fermi is not None:  # the reference's weights on every centre, g_ref (n, n_M), real
                yf = _pair_weights(fv.T[None], rows, cols, P)[0]  # (nf, npairs, n_M)
                ef = np.exp(2j * np.pi * (fk @ cs.T))  # (nf, n)
                g_ref = np.einsum("f,fnm->nm", fw, (yf[:, p_of, :] * ef[:, :, None]).real)
                B = pair_sum(E[:, :, None] * g_ref[None])  # (nk, npairs, n_M)
                const = np.sum(g_ref**2, axis=0)
                t_ref = kappa @ g_ref
            f_noise = 2.0 if sym else 1.0  # symmetrised: the pair (n, rev n) is one draw of unit variance, seen twice
            step = max(1, _ROW_BLOCK // max(1, nb))
            for k0 in range(0, nk, step):
                k1 = min(nk, k0 + step)
                y = _pair_weights(vecs[k0:k1], rows, cols, P)  # (kc, nb, npairs, n_M)
                yt = np.swapaxes(y, 2, 3)  # (kc, nb, n_M, npairs)
                sq = (0.5 * ((yt.real**2 + yt.imag**2) @ counts)
                      + 0.5 * ((yt * yt) @ F2[k0:k1, None, :, None])[..., 0].real
                      - 2.0 * np.sum((y * B[k0:k1, None]).real, axis=2) + const)
                t = (yt @ Kap[k0:k1, None, :, None])[..., 0].real - t_ref
                for q, L in enumerate(Ls):
                    beta = posterior(mm, bt, L).beta
                    sl = slice(cuts[q], cuts[q + 1])
                    var_n[k0:k1] += f_noise * sq[..., sl].sum(axis=-1) / beta
                    if not (sym and transpose_sign(L) < 0):
                        var_s[k0:k1] += np.sum(t[..., sl] ** 2, axis=-1) / beta
    return var_n, var_s


def epistemic_shifts(H, delta, vecs, kpts) -> np.ndarray:
    """First-order shifts ``Re c^H dH_d(k) c`` of some states under real-space draws, shape (K, nk, nb), eV.

    The Bloch sums of the draws over the cells any draw touches (e.g. inside an epistemic bond cut) as
    two real matrix products per chunk of k-points, then the projections on the given states only
    (the same numbers as :func:`acehamil.tb.draws.first_order_shifts` of
    :func:`acehamil.tb.draws.bloch_perturbations`, tested).

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
    vecs = np.asarray(vecs)
    k = np.asarray(kpts, dtype=float).reshape(-1, 3)
    nk, n, nb = vecs.shape
    if len(k) != nk or n != H.norb:
        raise ValueError(f"vecs {vecs.shape} do not match {len(k)} k-points and {H.norb} orbitals")
    K = len(delta)
    rows, cols, _, bidx = H.coo()
    nz = np.flatnonzero(np.any(delta != 0, axis=0))
    blocks = np.unique(bidx[nz])
    cells, cell_of = np.unique(np.asarray(H.shift)[blocks], axis=0, return_inverse=True)
    cell_b = np.full(len(H.shift), -1, dtype=np.int64)
    cell_b[blocks] = np.asarray(cell_of).reshape(-1)
    D = np.zeros((len(cells), K * n * n))
    D[cell_b[bidx[nz]][None, :], (np.arange(K)[:, None] * (n * n) + (rows[nz] * n + cols[nz])[None, :])] = delta[:, nz]
    out = np.empty((K, nk, nb))
    step = max(1, int(2**22 // max(1, K * n * n)))  # ~64 MB of Bloch matrices per chunk of k
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        ph = np.exp(2j * np.pi * (k[k0:k1] @ cells.T.astype(float)))  # (kc, ncells)
        dHk = ((ph.real @ D) + 1j * (ph.imag @ D)).reshape(k1 - k0, K, n, n)
        Cv = vecs[k0:k1]
        T = dHk @ Cv[:, None]  # (kc, K, n, nb)
        out[:, k0:k1] = np.einsum("kin,kdin->dkn", Cv.conj(), T, optimize=True).real
    return out


def window_bands(eps, fermi_level: float, window_eV: float) -> slice:
    """The bands that come within ``window_eV`` of ``fermi_level`` at some k (a contiguous slice)."""
    inside = np.flatnonzero(np.any(np.abs(np.asarray(eps) - fermi_level) <= window_eV, axis=0))
    if len(inside) == 0:
        return slice(0, 0)
    return slice(int(inside[0]), int(inside[-1]) + 1)


def eigen_sigma(model, atoms, kpts, weights, n_electrons, n_samples: int, rng, kpath=None, pairs=None,
                window_eV: float | None = None) -> dict:
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

    Returns
    -------
    dict
        ``eps (nk, nb)``, ``sigma (nk, nb)`` eV, ``fermi_level`` (eV), ``H``, ``S`` (the prediction),
        ``sigma_extrapolation`` (eV), ``extrapolation_score`` (natoms,); with ``kpath``:
        ``path_eps``, ``path_sigma``.
    """
    from ...tb.eigen import solve
    from ...tb.smearing import fermi_level
    from .calibrate import scales_of
    from .linear_response import fermi_weights

    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 2):
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if window_eV is not None and not (np.isfinite(window_eV) and window_eV > 0):
        raise ValueError(f"window_eV must be a positive number or None, got {window_eV!r}")
    a, b, c = scales_of(model)
    m = model.matrices(atoms, pairs, n_samples=int(n_samples), rng=rng, scales=(1.0, 0.0, 0.0), noise=False)
    H, S, delta = m.H, m.S, m.draws[0]
    kp = np.asarray(kpts, dtype=float).reshape(-1, 3)
    w = np.asarray(weights, dtype=float)
    eps, C = solve(H, S, kp, eigenvectors=True)
    ef = fermi_level(eps[None], w, float(n_electrons), 0.01, "fermi-dirac", 2)
    phi = fermi_weights(eps, w, ef, 0.01)
    nk, nb = eps.shape
    flat = phi.reshape(-1)
    f = np.flatnonzero(flat > 1e-9)  # the states that move E_F (a few, at small smearing)
    fermi = (C[f // nb, :, f % nb], kp[f // nb], flat[f] / flat[f].sum())
    pat = model.H.pattern(atoms, m.pairs)
    sx2 = float(m.sigma_extrapolation) ** 2
    # each draw's Fermi-level shift, from the states that carry it
    # each draw's Fermi-level shift, from the states that carry it (each state as its own k-point)
    shift_ef = epistemic_shifts(H, delta, fermi[0][:, :, None], fermi[1])[:, :, 0] @ fermi[2]  # (K,)

    def spread(kk, ee, CC):
        bands = slice(0, ee.shape[1]) if window_eV is None else window_bands(ee, ef, window_eV)
        sig = np.full(ee.shape, np.nan)
        if bands.stop > bands.start:
            Cw = np.ascontiguousarray(CC[:, :, bands])
            de = epistemic_shifts(H, delta, Cw, kk)  # (K, nk, nbw)
            var_e = np.mean((de - shift_ef[:, None, None]) ** 2, axis=0)
            vn, vs = noise_variances(model.H, atoms, pat, Cw, kk, fermi)
            sig[:, bands] = np.sqrt(a * a * var_e + b * b * vn + c * c * vs + sx2)
        return sig

    out = {"eps": eps, "sigma": spread(kp, eps, C), "fermi_level": ef, "H": H, "S": S,
           "sigma_extrapolation": float(m.sigma_extrapolation), "extrapolation_score": m.extrapolation_score}
    if kpath is not None:
        kk = np.asarray(kpath, dtype=float).reshape(-1, 3)
        pe, pC = solve(H, S, kk, eigenvectors=True)
        out["path_eps"], out["path_sigma"] = pe, spread(kk, pe, pC)
    return out

"""Predictive uncertainty of H: posterior draws of every predicted block, exact block variances.

Every ``(block type, L)`` model is linear, ``x_L = D_L c_L`` (design tensor
``D_L`` of shape ``(n, n_F, 2L+1)``, see :mod:`acehamil.models.blocks`), with a
Gaussian posterior ``c_L ~ N(mean, Sigma_L)`` (Bayesian linear regression, or
the ridge posterior with the noise estimated from the residuals, see
:func:`acehamil.fitting.ridge_posterior`) and a noise precision ``beta_L`` per
component.  The predictive distribution of a block component is therefore
``N(D mean, D Sigma D^T + 1/beta)``.

Draws (:func:`sample_matrix`) push coefficient draws ``c_k - mean`` through the
same linear feature map as the prediction (one extra matrix product per
block type; the features are evaluated once), plus an independent noise draw
per block component that respects the exact symmetries of the model (bond
reversal, on-site transposition).  Block errors across bonds and atoms are
correlated through the shared coefficients, which is what eigenvalues feel.
The spread is multiplied by the model's calibration factor
(``model.report["uncertainty"]["scale"]``, found on a validation split of the
training structures, :mod:`acehamil.models.hamiltonian.calibrate`).

H is fitted modulo one energy zero ``V_s S`` per training structure
(``fit_energy_zero``): the posterior and the draws describe H modulo that
constant, i.e. the error of ``H`` after removing the best ``V S`` (the
``*_aligned`` errors of ``acehamil evaluate``); eigenvalues are compared
relative to their own Fermi level, on which ``V`` has no effect.

The overlap S is taken as exact (its errors, ~1e-6, move eigenvalues by
``eps * dS`` ~ 10 µeV, far below the H contribution).
"""

from __future__ import annotations

import numpy as np

from ...so3 import cg_real
from ...structure.blocks import scatter_blocks
from ...structure.pair_index import reverse_index
from .blocks import assemble, transpose_sign
from .family import symmetrise
from .matrix_model import shell_offsets


class NoPosteriorError(ValueError):
    """The model carries no posterior for a block type it predicts (fitted without one)."""


def posterior(mm, bt, L: int):
    """BLR (or ridge) posterior of one ``(block type, L)``; raises :class:`NoPosteriorError`.

    None for a model that is exactly zero without posterior (targets all zero, e.g. forbidden
    by symmetry in the data): no uncertainty there.
    """
    post = mm.posteriors.get(bt.key, {}).get(L)
    if post is None and not np.any(mm.coefficients.get(bt.key, {}).get(L, 0.0)):
        return None
    if post is None:
        raise NoPosteriorError(
            f"{mm.name} model has no posterior for {bt.key} L={L}: refit with this version of acehamil "
            f"(solver.method = 'blr' or 'ridge' both keep one) to get uncertainties")
    return post


def has_posterior(mm) -> bool:
    """True when every fitted ``(block type, L)`` of ``mm`` has a posterior."""
    for _, bt in mm.block_types():
        for L, c in mm.coefficients.get(bt.key, {}).items():
            if mm.posteriors.get(bt.key, {}).get(L) is None and np.any(c):
                return False
    return bool(mm.coefficients)


def _perturbations(post, n_samples: int, rng) -> np.ndarray:
    """Zero-mean coefficient draws ``c_k - mean``, shape (n_F, K)."""
    return (post.sample(rng, n_samples) - post.mean).T


def coefficient_draw_sets(mm, n_samples: int, rng) -> list:
    """``n_samples`` zero-mean coefficient draws ``c_k - mean`` of every ``(block type, L)`` with a posterior,
    as coefficient sets ``[{bt.key: {L: (n_F,)}}]`` for :meth:`MatrixModel.predict_many` (the same draws,
    in the same order of the generator, as :func:`sample_matrix`'s epistemic part)."""
    K = int(n_samples)
    sets = [{} for _ in range(K)]
    for _, bt in mm.block_types():
        for L in bt.L_values():
            if bt.key in mm.coefficients and L in mm.coefficients[bt.key]:
                post = posterior(mm, bt, L)
                if post is not None:
                    de = _perturbations(post, K, rng)
                    for q in range(K):
                        sets[q].setdefault(bt.key, {})[L] = de[:, q]
    return sets


def _noise(post, shape, rng) -> np.ndarray:
    return rng.standard_normal(shape) / np.sqrt(post.beta)


#: Largest array of draws :func:`sample_matrix` builds (bytes): above it the request is refused with its size.
MAX_DRAW_BYTES = 4 * 2**30


def sample_matrix(mm, atoms, n_samples: int, rng: np.random.Generator, pairs=None, scales=(1.0, 1.0, 0.0),
                  split: bool = False, max_particles: int = 200_000, epistemic_cut: float = 0.0,
                  noise: bool = True) -> tuple:
    """Posterior predictive draws of a matrix model's prediction.

    Three zero-mean parts, each with ``K`` draws:

    * epistemic: coefficient draws ``c_k - mean`` from the posterior, pushed through the features;
    * noise: an independent draw per block component, variance ``1/beta_L``;
    * shared noise: one draw per ``(block type, L, M)``, variance ``1/beta_L``, shared by
      every block of that type in the structure (with the bond-reversal symmetry of the
      type): the correlated part of the model's error, which does not average out over the
      atoms of a large cell as independent noise does.  An isotropic Gaussian, so its
      distribution does not depend on the orientation of the structure.

    Parameters
    ----------
    mm : MatrixModel
        With posteriors (see :func:`has_posterior`).
    atoms : ase.Atoms
    n_samples : int
        Number of draws ``K`` (>= 1).
    rng : numpy.random.Generator
    pairs : NeighbourPairs, optional
        Neighbour list with cutoff ``>= mm.reach``.
    scales : (float, float[, float])
        Factors ``(a, b, c)`` of the epistemic, noise and shared-noise parts (the calibration,
        ``model.report["uncertainty"]``); a missing ``c`` is 0.  Ignored with ``split``.
    split : bool
        Return the three parts separately (unscaled).
    epistemic_cut : float, Å
        > 0: the epistemic part on the on-site blocks and the bonds shorter than this only, as the
        calibration computes it (``[uncertainty] epistemic_bond_cut``), pushed through the mapped feature
        path with the draws as more coefficient sets (:meth:`MatrixModel.predict_many`: no features formed),
        the mean from the fast path :meth:`MatrixModel.predict_data`.  The noise parts need no features and
        cover every block.  0: every block through the features, the mean from the same features (equal to
        ``predict_data`` to rounding).
    noise : bool
        False: no noise draws (the noise and shared parts are zero; what
        :mod:`acehamil.models.hamiltonian.propagation` needs, which has them analytically).

    Returns
    -------
    mean : RealSpaceMatrix
        The prediction (posterior mean), eV for H; equal to ``mm.predict``.
    delta : ndarray, float64, shape (K, mean.data.size)
        ``a epistemic + b noise + c shared`` draws (one draw of each part per row), same
        layout as ``mean.data``.  With ``split``: ``(epistemic, noise, shared)``, each (K, n).
    """
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    sc = tuple(float(x) for x in scales)
    if len(sc) not in (2, 3) or not all(np.isfinite(x) and x >= 0 for x in sc):
        raise ValueError(f"scales must be 2 or 3 finite numbers >= 0, got {scales}")
    a, b, c = (sc + (0.0,))[:3]
    cut = float(epistemic_cut)
    if not (np.isfinite(cut) and cut >= 0):
        raise ValueError(f"epistemic_cut must be a finite number >= 0 (Å), got {epistemic_cut!r}")
    K = int(n_samples)
    pat = mm.pattern(atoms, pairs)
    nd = int(pat.offsets[-1])
    # rows: the mean, then K draws (combined) or 3K (epistemic, noise, shared)
    n_rows = 1 + (3 * K if split else K)
    n_coef = K  # coefficient-draw columns
    if n_rows * nd * 8 > MAX_DRAW_BYTES:  # refused with the size, instead of the process being killed for memory
        raise ValueError(f"{K} posterior draws of this structure's {nd} matrix entries would need "
                         f"~{n_rows * nd * 8 / 2**30:.3g} GiB (limit {MAX_DRAW_BYTES / 2**30:.3g} GiB): ask for fewer "
                         f"draws (--samples), or none")
    out = np.zeros((n_rows, nd))
    so = shell_offsets(mm.orbital_basis)
    dC = {}
    for fam, bt in mm.block_types():
        for L in bt.L_values():
            if bt.key in mm.coefficients and L in mm.coefficients[bt.key]:
                post = posterior(mm, bt, L)
                if post is not None:
                    de = _perturbations(post, K, rng) * (1.0 if split else a)
                    dC[(bt.key, L)] = (np.concatenate([post.mean[:, None], de], axis=1), post)

    def parts_of(f, bt, L, n):
        """(1 + n_coef, n, 2L+1): mean and coefficient-draw parts from features (n, n_F, 2L+1)."""
        if (bt.key, L) not in dC or f.shape[1] == 0:
            return np.zeros((1 + n_coef, n, 2 * L + 1))
        C, _ = dC[(bt.key, L)]
        if C.shape[0] != f.shape[1]:
            raise ValueError(f"{bt.key} L={L}: {C.shape[0]} coefficients, {f.shape[1]} features")
        return np.einsum("nfM,fk->knM", f, C, optimize=True)

    def with_noise(p, bt, L, n, rev=None):
        """Add the noise parts to the (K+1, n, 2L+1) mean/epistemic parts (None: zeros, the parts added
        later); flat (n_rows * n, 2L+1)."""
        shape = (K, n, 2 * L + 1)
        z = zs = np.zeros(shape)
        if (bt.key, L) in dC and noise:
            post = dC[(bt.key, L)][1]
            z = _noise(post, shape, rng)
            zs = np.broadcast_to(_noise(post, (K, 1, 2 * L + 1), rng), shape)
            if rev is not None:  # symmetrised type: keep H_ji(-T) = H_ij(T)^T, same variance as unsymmetrised
                z = (z + transpose_sign(L) * z[:, rev]) / np.sqrt(2.0)
                own = (np.asarray(rev) == np.arange(n))[None, :, None]  # a centre that is its own partner
                zs = (1 + transpose_sign(L)) * zs * np.where(own, 1 / np.sqrt(2.0), 0.5)
        if p is None:
            p0 = np.zeros((1 + n_coef if split else 1, n, 2 * L + 1))
            rows = np.concatenate([p0, z, zs]) if split else np.concatenate([p0, b * z + c * zs])
        else:
            rows = np.concatenate([p, z, zs]) if split else np.concatenate([p[:1], p[1:] + b * z + c * zs])
        return rows.reshape(n_rows * n, 2 * L + 1)

    def blocks(parts, bt, n):
        return assemble(parts, bt.l1, bt.l2, n_rows * n).reshape(n_rows, n, 2 * bt.l1 + 1, 2 * bt.l2 + 1)

    def scatter(offsets, ncols, r0, c0, X):
        """X (rows, n, d1, d2) into ``out`` at the blocks' positions (one index array for all draws)."""
        n, d1, d2 = X.shape[1:]
        if n == 0:
            return
        idx = (np.asarray(offsets)[:, None, None] + (r0 + np.arange(d1))[None, :, None] * np.asarray(ncols)[:, None, None]
               + (c0 + np.arange(d2))[None, None, :])
        out[:, idx] = X

    from ...structure import RealSpaceMatrix

    epi = None
    if cut > 0:
        # the coefficient draws on the blocks inside the cut: one mapped pass for all of them (no features
        # formed; every centre's products once, each draw adds its outputs), the mean by the fast path; the
        # noise draws (no features needed) are then assembled below and the two parts added
        sets = [{key: {} for key, _ in dC} for _ in range(K)]
        for (key, L), (C, _) in dC.items():
            for q in range(K):
                sets[q][key][L] = C[:, 1 + q]
        if not noise:
            mm.predict_many(atoms, pat, sets, bond_cut=cut, out=out[1:K + 1])
            out[0] = mm.predict_data(atoms, pat)
            mean = RealSpaceMatrix(pat.norb, pat.i, pat.j, pat.shift, out[0])
            if split:
                return mean, out[1:K + 1], out[K + 1:2 * K + 1], out[2 * K + 1:]
            return mean, out[1:]
        epi = mm.predict_many(atoms, pat, sets, bond_cut=cut, compact=True)  # only the entries inside the cut
    for fam, sel, blk, rblk, rev in _family_centres(mm, atoms, pat):
        bts = fam.block_types(mm.orbital_basis)
        n = len(sel)
        use = np.arange(n) if epi is None else np.zeros(0, np.int64)  # centres whose features are evaluated
        # the mean and epistemic rows from features (none formed with a cut: the noise rows only here)
        raw = {bt.key: {L: np.zeros((1 + n_coef, n, 2 * L + 1)) for L in bt.L_values()} for bt in bts} if len(use) else None
        env = fam.environments(atoms, pat.pairs, sel[use]) if len(use) else None
        for s0, s1, chunk in (env.chunks(max_particles) if env is not None else ()):
            feats = fam.features(chunk)
            for bt in bts:
                for L, D in fam.design(feats, bt, s1 - s0).items():
                    if D.shape[1]:
                        raw[bt.key][L][:, use[s0:s1]] = parts_of(D, bt, L, s1 - s0)
        keep = np.arange(n)
        off, nc = pat.offsets[blk[keep]], pat.norb[pat.j[blk[keep]]]
        for bt in bts:
            sym = fam.symmetrised(bt)
            parts = {}
            for L in bt.L_values():
                h = None if raw is None else raw[bt.key][L]
                if sym and h is not None:
                    h = 0.5 * (h + transpose_sign(L) * h[:, rev])
                parts[L] = with_noise(None if h is None else h[:, keep], bt, L, len(keep),
                                      rev if (sym and len(keep) == n) else None)
            X = blocks(parts, bt, len(keep))
            ra, cb = so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b]
            scatter(off, nc, ra, cb, X)
            if not bt.symmetric:  # the partner block (j, i, -T) is the transpose
                scatter(pat.offsets[rblk[keep]], pat.norb[pat.j[rblk[keep]]], cb, ra, X.transpose(0, 1, 3, 2))
    if epi is not None:  # the epistemic draws inside the cut; the mean of every block by the fast (mapped) path
        where, values = epi
        out[1:K + 1, where] += values
        del epi, where, values
        out[0] = mm.predict_data(atoms, pat)
    mean = RealSpaceMatrix(pat.norb, pat.i, pat.j, pat.shift, out[0])
    if split:
        return mean, out[1:K + 1], out[K + 1:2 * K + 1], out[2 * K + 1:]
    return mean, out[1:]


def _family_centres(mm, atoms, pat):
    """Per family with centres: ``(family, centres, their blocks, partner blocks, partner positions)``."""
    for fam in mm.families:
        sel = fam.select(atoms, pat.pairs)
        if len(sel) == 0:
            continue
        ci, cj, cs = fam.centre_blocks(atoms, pat.pairs, sel)
        yield fam, sel, pat.find(ci, cj, cs), pat.find(cj, ci, -cs), reverse_index(ci, cj, cs)


def _entry_variance(cov: dict, noise_var: dict, l1: int, l2: int) -> np.ndarray:
    """Variance of block entries from per-L covariances ``cov[L] (n, 2L+1, 2L+1)``.

    Returns
    -------
    ndarray, shape (n, 2l1+1, 2l2+1)
    """
    out = None
    for L, c in cov.items():
        C = cg_real(l1, l2, L)  # (d1, d2, M)
        v = np.einsum("abM,nMN,abN->nab", C, c, C) + noise_var.get(L, 0.0) * np.einsum("abM,abM->ab", C, C)[None]
        out = v if out is None else out + v
    return out


def block_variance(mm, atoms, pairs=None, noise: bool = True, scale: float = 1.0):
    """Exact predictive variance of every predicted matrix entry (small systems, tests).

    ``var X_ab = sum_L sum_{M,N} C^L_abM C^L_abN (D_L Sigma_L D_L^T)_{MN} + sum_L sum_M (C^L_abM)^2 / beta_L``
    times ``scale^2``.  Cost ``O(n_blocks n_F^2)`` per block type; for large
    systems use the draws of :func:`sample_matrix`.

    Returns
    -------
    RealSpaceMatrix
        Entry variances (eV^2 for H), same pattern as ``mm.predict(atoms)``.
    """
    from ...structure import RealSpaceMatrix

    pat = mm.pattern(atoms, pairs)
    var = np.zeros(int(pat.offsets[-1]))
    so = shell_offsets(mm.orbital_basis)

    def cov_parts(design, bt):
        cov, nv = {}, {}
        for L, D in design.items():
            if D.shape[1] == 0 or L not in mm.coefficients.get(bt.key, {}):
                continue
            post = posterior(mm, bt, L)
            if post is None:
                continue
            S = post.covariance()
            cov[L] = np.einsum("nfM,fg,ngN->nMN", D, S, D)
            nv[L] = (1.0 / post.beta) if noise else 0.0
        return cov, nv

    for fam, sel, blk, rblk, rev in _family_centres(mm, atoms, pat):
        feats = fam.features(fam.environments(atoms, pat.pairs, sel))
        off, nc = pat.offsets[blk], pat.norb[pat.j[blk]]
        for bt in fam.block_types(mm.orbital_basis):
            cov, nv = cov_parts(symmetrise(fam, bt, fam.design(feats, bt, len(sel)), rev), bt)
            if not cov:
                continue
            V = scale**2 * _entry_variance(cov, nv, bt.l1, bt.l2)
            ra, cb = so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b]
            scatter_blocks(var, off, nc, ra, cb, V)
            if not bt.symmetric:
                scatter_blocks(var, pat.offsets[rblk], pat.norb[pat.j[rblk]], cb, ra, V.transpose(0, 2, 1))
    return RealSpaceMatrix(pat.norb, pat.i, pat.j, pat.shift, var)


def onsite_designs(mm, atoms, pairs=None) -> dict:
    """On-site design tensors of ``atoms``: ``{(bt.key, L): (atom indices (n,), D (n, n_F, 2L+1))}``.

    What the leverage (:func:`onsite_leverage`) of any posterior of ``mm`` needs; cached by the
    cross-validated calibration so that fold posteriors need no new features.
    """
    out = {}
    for fam in mm.onsite:
        idx = fam.select(atoms, pairs)
        if len(idx) == 0:
            continue
        feats = fam.features(fam.environments(atoms, pairs, idx))
        for bt in fam.block_types(mm.orbital_basis):
            for L, D in fam.design(feats, bt, len(idx)).items():
                out[(bt.key, L)] = (np.asarray(idx), D)
    return out


def onsite_leverage(mm, designs: dict, natoms: int) -> dict:
    """``{(bt.key, L): (natoms,)}`` on-site leverage ``beta * mean_M d_M Sigma d_M^T`` (NaN for other species).

    Parameters
    ----------
    mm : MatrixModel
        Supplies the posteriors.
    designs : dict
        :func:`onsite_designs` of the structure.
    natoms : int
    """
    out = {}
    for (key, L), (idx, D) in designs.items():
        post = mm.posteriors.get(key, {}).get(L)
        if post is None or D.shape[1] != post.mean.size:
            continue
        Q = post.eigvecs / np.sqrt(post.prior_diag)[:, None] / np.sqrt(post.beta * post.eigvals + post.alpha)
        g = np.einsum("nfM,fg->ngM", D, Q, optimize=True)
        h = np.full(natoms, np.nan)
        h[idx] = post.beta * np.einsum("ngM,ngM->n", g, g) / (2 * L + 1)
        out[(key, L)] = h
    return out


def _onsite_leverage(mm, atoms, pairs=None) -> dict:
    return onsite_leverage(mm, onsite_designs(mm, atoms, pairs), len(atoms))


def reference_of(leverages) -> dict:
    """Largest leverage per ``(block type, L)`` over structures, ``{"<key>/L<L>": float}``.

    Parameters
    ----------
    leverages : iterable of dict
        :func:`onsite_leverage` of each training structure.
    """
    ref = {}
    for lev in leverages:
        for (key, L), h in lev.items():
            name = f"{key}/L{L}"
            ref[name] = max(ref.get(name, 0.0), float(np.nanmax(h)))
    return ref


def score_of(leverage: dict, reference: dict, natoms: int) -> np.ndarray:
    """Per-atom extrapolation score from one structure's leverages and a reference (:func:`reference_of`)."""
    score = np.full(natoms, np.nan)
    for (key, L), h in leverage.items():
        r = reference.get(f"{key}/L{L}")
        if not r:
            continue
        score = np.fmax(score, h / r)
    return score


def extrapolation_reference(model, structures, designs=None) -> dict:
    """Largest on-site leverage over the training structures, per ``(block type, L)``.

    Stored in ``model.report["extrapolation_reference"]`` as ``{"<key>/L<L>": float}``.

    Parameters
    ----------
    model : HamiltonianModel
    structures : sequence of StructureData
    designs : sequence of StructureDesigns, optional
        One per structure, from the fit (:class:`acehamil.models.hamiltonian.sums.StructureDesigns`):
        their on-site designs and neighbour lists are used instead of evaluating them again.
    """
    return reference_of(onsite_leverage(model.H, designs_of(model.H, sd.atoms, designs, k), len(sd.atoms))
                        for k, sd in enumerate(structures))


def designs_of(mm, atoms, designs, k: int) -> dict:
    """On-site designs of structure ``k`` (:func:`onsite_designs`): ``designs[k].onsite`` from the fit
    when there, else evaluated (on ``designs[k].pairs`` when given)."""
    if designs is None:
        return onsite_designs(mm, atoms)
    if len(designs) <= k:
        raise ValueError(f"need one StructureDesigns per structure, got {len(designs)} for structure {k}")
    d = designs[k]
    return d.onsite if d.onsite is not None else onsite_designs(mm, atoms, d.pairs)


def extrapolation_score(model, atoms, pairs=None) -> np.ndarray:
    """Per-atom extrapolation score: how far each atom's environment lies outside the training data.

    For every on-site block model ``(block type, L)`` the leverage
    ``h_i = beta * mean_M d_iM Sigma d_iM^T`` (posterior variance of atom ``i``'s on-site
    block in units of the fitted noise variance; ``d`` its design rows) is divided by its
    largest value over the training structures; the score is the largest ratio over the
    block models.  Score <= 1: an environment like (or between) training environments;
    score >> 1: extrapolation (expect errors beyond the calibrated sigma of training-like
    structures).  Cost: on-site features only (cutoff ``h_onsite.r_cut``), cheap enough
    for MD trajectories.

    Returns
    -------
    ndarray, float64, shape (natoms,)
        NaN for a model fitted without posterior or reference (refit with this version).
    """
    ref = model.report.get("extrapolation_reference") or {}
    return score_of(_onsite_leverage(model.H, atoms, pairs), ref, len(atoms))

"""Active selection: which candidate structures would teach a Hamiltonian model the most.

Each candidate gets a score from the model's posterior:

* ``"band"`` (default): the mean *epistemic* spread of its eigenvalues within
  ``E_F +- window`` on a small k-grid (posterior draws of the coefficients only: the noise
  part cannot be reduced by more data, the coefficient part can);
* ``"extrapolation"``: the largest per-atom extrapolation score
  (:func:`~acehamil.models.hamiltonian.uncertainty.extrapolation_score`), much cheaper;
* ``"information"``: the expected information a candidate's DFT blocks would add to the
  posterior of the H coefficients (:func:`information_select`): sequential Bayesian design, a
  batch is chosen greedily with the posterior updated after each pick as if that candidate
  had been computed (a linear model's posterior covariance does not depend on the DFT values),
  so a second copy of a picked environment gains little: diversity without a descriptor.

Picking greedily by score alone tends to take near-duplicates (a trajectory's neighbouring
frames score alike), so the greedy rule weighs each score by the candidate's distance to the
structures already picked, in a descriptor space (the mean on-site invariant features of its
atoms, each feature standardised over the candidates): pick ``argmax score_j * d_j / max d``,
``d_j`` the smallest distance of ``j`` to the picked ones (farthest-point sampling weighted
by uncertainty).
"""

from __future__ import annotations

import numpy as np


def descriptor(model, atoms) -> np.ndarray:
    """Mean invariant on-site features of a structure (per species concatenated), shape (n_desc,)."""
    parts = []
    for fam in model.H.onsite:
        idx = fam.select(atoms, None)
        nf = fam.basis.n_features.get((0, 1), 0) if fam.basis is not None else 0
        if len(idx) == 0 or nf == 0:
            parts.append(np.zeros(nf))
            continue
        f = fam.features(fam.environments(atoms, None, idx))
        parts.append(f[(0, 1)][:, :, 0].mean(axis=0))
    return np.concatenate(parts) if parts else np.zeros(0)


def band_score(model, atoms, n_electrons=None, kmesh=(2, 2, 2), n_samples: int = 12, window_eV: float = 2.0,
               rng=None) -> float:
    """Mean epistemic spread (eV) of the eigenvalues within ``E_F +- window_eV`` (all bands
    without ``n_electrons``), calibrated by the model's epistemic factor."""
    from ...tb.dos import monkhorst_pack
    from ...tb.draws import eigenvalue_draws, fermi_levels, relative_sigma
    from .calibrate import scales_of

    rng = rng if rng is not None else np.random.default_rng(0)
    m = model.matrices(atoms, n_samples=n_samples, rng=rng, split=True)
    H, S, de = m.H, m.S, m.draws[0]
    kp, wk = monkhorst_pack(kmesh, atoms.pbc)
    eps, draws = eigenvalue_draws(H, S, de, kp)
    a = scales_of(model)[0]
    if n_electrons is None:
        return float(a * np.sqrt(np.mean((draws - eps[None]) ** 2, axis=0)).mean())
    ef, efd = fermi_levels(eps, draws, wk, n_electrons)
    sig = relative_sigma(eps, draws, ef, efd)
    inside = np.abs(eps - ef) <= window_eV
    return float(a * (sig[inside].mean() if inside.any() else sig.mean()))


def greedy_diverse(scores, descriptors, k: int) -> list:
    """Greedy uncertainty-weighted farthest-point choice of ``k`` indices.

    Parameters
    ----------
    scores : array, shape (n,), >= 0
    descriptors : array, shape (n, d)
    k : int

    Returns
    -------
    list of int, in the order picked

    Examples
    --------
    >>> greedy_diverse([1.0, 0.99, 0.5], [[0.0], [0.001], [1.0]], 2)
    [0, 2]
    """
    s = np.asarray(scores, dtype=float)
    X = np.asarray(descriptors, dtype=float).reshape(len(s), -1)
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= len(s)):
        raise ValueError(f"k must be between 1 and the number of candidates ({len(s)}), got {k}")
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError("scores must be finite and >= 0")
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    picked = [int(np.argmax(s))]
    d = np.linalg.norm(Z - Z[picked[0]], axis=1)
    while len(picked) < k:
        w = s * (d / d.max() if d.max() > 0 else np.ones_like(d))
        w[picked] = -1.0
        j = int(np.argmax(w))
        picked.append(j)
        d = np.minimum(d, np.linalg.norm(Z - Z[j], axis=1))
    return picked


def gram(model, atoms, pairs=None) -> dict:
    """``{(bt.key, L): A^T A}`` of the H design rows of one structure: what its DFT blocks would add
    to the normal equations (features only; no DFT needed).

    Returns
    -------
    dict of ndarray, shape (n_F, n_F) per fitted ``(block type, L)``
    """
    from ...structure.neighbours import neighbour_pairs
    from ...structure.pair_index import reverse_index
    from .family import symmetrise

    mm = model.H
    nl = pairs if pairs is not None else neighbour_pairs(atoms, mm.reach)
    out = {}
    for fam in mm.families:
        sel = fam.select(atoms, nl)
        if len(sel) == 0:
            continue
        env = fam.environments(atoms, nl, sel)
        rev = reverse_index(*fam.centre_blocks(atoms, nl, sel))
        feats = fam.features(env)
        for bt in fam.block_types(mm.orbital_basis):
            for L, D in symmetrise(fam, bt, fam.design(feats, bt, len(sel)), rev).items():
                if D.shape[1]:
                    A = D.transpose(0, 2, 1).reshape(-1, D.shape[1])
                    out[(bt.key, L)] = A.T @ A
    return out


def information_select(mm, grams, k: int) -> tuple:
    """Greedy batch of ``k`` candidates by expected information gain on the H coefficients.

    For every ``(block type, L)`` with posterior precision ``P`` (noise precision ``beta``) a
    candidate with design Gram matrix ``G`` adds ``beta G``; its gain is
    ``sum_{bt, L} 1/2 log det(1 + beta Sigma G)`` nats (``Sigma = P^-1``), computed from the
    Cholesky factor of ``1 + beta L^-1 G L^-T`` (``P = L L^T``).  After each pick ``P += beta G``: the
    posterior of the data being computed, so near-copies of a picked candidate gain little.

    Parameters
    ----------
    mm : MatrixModel
        With posteriors.
    grams : sequence of dict
        :func:`gram` of each candidate (or the ``AtA`` of its fit sums).
    k : int

    Returns
    -------
    picked : list of int
    gains : ndarray, shape (n,)
        Gain (nats) of each candidate before the first pick.
    """
    import scipy.linalg

    if not (isinstance(k, (int, np.integer)) and 1 <= k <= len(grams)):
        raise ValueError(f"k must be between 1 and the number of candidates ({len(grams)}), got {k}")
    prec = {}
    for key, byL in mm.posteriors.items():
        for L, post in byL.items():
            Q = post.eigvecs * np.sqrt(post.prior_diag)[:, None]  # P^1/2 V
            prec[(key, L)] = ((Q * (post.beta * post.eigvals + post.alpha)) @ Q.T, post.beta)

    def gains_now(cands):
        g = np.zeros(len(grams))
        for key, (P, beta) in prec.items():
            Lc = scipy.linalg.cholesky(P + 1e-12 * np.trace(P) / len(P) * np.eye(len(P)), lower=True)
            for j in cands:
                G = grams[j].get(key)
                if G is None or G.shape != P.shape:
                    continue
                X = scipy.linalg.solve_triangular(Lc, G, lower=True)
                M = scipy.linalg.solve_triangular(Lc, X.T, lower=True)
                C = scipy.linalg.cholesky(np.eye(len(M)) + beta * 0.5 * (M + M.T), lower=True)
                g[j] += float(np.sum(np.log(np.diag(C))))  # 1/2 log det(1 + beta L^-1 G L^-T)
        return g

    first = gains_now(range(len(grams)))
    picked = [int(np.argmax(first))]
    while len(picked) < k:
        j = picked[-1]
        for key, (P, beta) in list(prec.items()):
            G = grams[j].get(key)
            if G is not None and G.shape == P.shape:
                prec[key] = (P + beta * G, beta)
        rest = [i for i in range(len(grams)) if i not in picked]
        g = gains_now(rest)
        g[picked] = -np.inf
        picked.append(int(np.argmax(g)))
    return picked, first


def select(model, candidates, k: int, criterion: str = "band", kmesh=(2, 2, 2), n_samples: int = 12,
           seed: int = 0, progress=None) -> tuple:
    """Pick ``k`` diverse, uncertain candidates.

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    candidates : sequence of (ase.Atoms, n_electrons or None)
    k : int
    criterion : {"band", "extrapolation", "information"}

    Returns
    -------
    picked : list of int
        Candidate indices, in the order picked.
    scores : ndarray, shape (n,)
        eV (``band``), dimensionless (``extrapolation``) or nats (``information``, the gain
        before any pick).
    """
    from .uncertainty import extrapolation_score, has_posterior

    if criterion not in ("band", "extrapolation", "information"):
        raise ValueError(f"criterion must be 'band', 'extrapolation' or 'information', got {criterion!r}")
    if not has_posterior(model.H):
        raise ValueError("the model has no posterior: refit it (solver.method = 'blr' or 'ridge') to select with it")
    if criterion == "information":
        grams = []
        for atoms, _ in candidates:
            grams.append(gram(model, atoms))
            if progress is not None:
                progress.step()
        return information_select(model.H, grams, k)
    rng = np.random.default_rng(seed)
    scores, desc = [], []
    for n, (atoms, n_el) in enumerate(candidates):
        if criterion == "band":
            scores.append(band_score(model, atoms, n_el, kmesh=kmesh, n_samples=n_samples, rng=rng))
        else:
            ex = extrapolation_score(model, atoms)
            scores.append(float(np.nanmax(ex)) if np.any(np.isfinite(ex)) else 0.0)
        desc.append(descriptor(model, atoms))
        if progress is not None:
            progress.step()
    scores = np.asarray(scores)
    return greedy_diverse(scores, np.array(desc), k), scores

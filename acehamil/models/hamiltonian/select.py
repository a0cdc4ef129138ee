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
    from .spread import scales_of

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


def information_select(mm, grams, k: int, costs=None) -> tuple:
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
    costs : array, shape (n,), optional
        Cost of each candidate's calculation (> 0, e.g. its atoms): the greedy rule then takes the largest
        gain per cost (cost-aware design); default 1 each.

    Returns
    -------
    picked : list of int
    gains : ndarray, shape (n,)
        Gain (nats; nats per unit cost with ``costs``) of each candidate before the first pick.
    """
    import scipy.linalg

    if not (isinstance(k, (int, np.integer)) and 1 <= k <= len(grams)):
        raise ValueError(f"k must be between 1 and the number of candidates ({len(grams)}), got {k}")
    cost = np.ones(len(grams)) if costs is None else np.asarray(costs, dtype=float)
    if cost.shape != (len(grams),) or not np.all(np.isfinite(cost) & (cost > 0)):
        raise ValueError(f"costs must be {len(grams)} finite numbers > 0")
    prec = _precisions(mm)

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
        return g / cost

    return _greedy_batch(prec, grams, np.ones(len(grams)), k, gains_now)


def _greedy_batch(prec: dict, grams, weights, k: int, gains_now) -> tuple:
    """The greedy batch shared by :func:`information_select` and :func:`variance_select`.

    Picks the best candidate by ``gains_now(candidates)`` (an ``(n,)`` array, read from ``prec``),
    then adds its weighted design Gram to every posterior precision, ``P += beta w_j G_j`` (updated
    in place in ``prec``, the caller's own dict), and scores the rest again, ``k`` times.

    Returns
    -------
    picked : list of int
    first : ndarray, shape (n,)
        The gains before the first pick.
    """
    n = len(grams)
    first = gains_now(range(n))
    picked = [int(np.argmax(first))]
    while len(picked) < k:
        j = picked[-1]
        for key, (P, beta) in list(prec.items()):
            G = grams[j].get(key)
            if G is not None and G.shape == P.shape:
                prec[key] = (P + beta * weights[j] * G, beta)
        rest = [i for i in range(n) if i not in picked]
        g = gains_now(rest)
        g[picked] = -np.inf
        picked.append(int(np.argmax(g)))
    return picked, first


def _precisions(mm) -> dict:
    """``{(bt.key, L): (P, beta)}``: posterior precision of the coefficients and noise precision."""
    prec = {}
    for key, byL in mm.posteriors.items():
        for L, post in byL.items():
            Q = post.eigvecs * np.sqrt(post.prior_diag)[:, None]  # P^1/2 V
            prec[(key, L)] = ((Q * (post.beta * post.eigvals + post.alpha)) @ Q.T, post.beta)
    return prec


def pool_target(grams, sizes) -> dict:
    """Target of :func:`variance_select`: ``{(bt.key, L): mean_c G_c / n_c}``, the per-atom design Gram
    matrix of the structures one will predict (each structure weighs the same).

    Parameters
    ----------
    grams : sequence of dict
        :func:`gram` of each structure.
    sizes : sequence of int
        Atoms of each structure (> 0).
    """
    if len(grams) != len(sizes) or len(grams) == 0:
        raise ValueError(f"need one size per Gram matrix and at least one, got {len(grams)} and {len(sizes)}")
    out = {}
    for G, n in zip(grams, sizes):
        if not n > 0:
            raise ValueError(f"sizes must be > 0, got {n}")
        for key, g in G.items():
            out[key] = out.get(key, 0.0) + np.asarray(g, dtype=float) / (float(n) * len(grams))
    return out


def variance_select(mm, grams, k: int, target: dict, weights=None) -> tuple:
    """Greedy batch of ``k`` candidates by expected reduction of the predictive variance over a target.

    V-optimal ("integrated") design: the target Gram matrix ``T`` (:func:`pool_target`: the
    structures one will predict, e.g. the candidate pool itself) gives the summed epistemic variance
    of its predicted blocks, ``sum_{bt, L} tr(T Sigma)`` (eV^2 for H), and a candidate with design
    Gram ``G`` fitted at weight ``w`` would lower it to ``sum tr(T (P + beta w G)^-1)``.  The batch is
    picked greedily, with ``P += beta w G`` after each pick (the posterior covariance of a linear model
    does not depend on the DFT values): a near-copy of a picked candidate then gains little, and a
    candidate unlike anything one will predict (a surface slab among bulk cells) gains little too,
    unlike the information gain on the coefficients, which rewards any new direction.

    Parameters
    ----------
    mm : MatrixModel
        With posteriors.
    grams : sequence of dict
        :func:`gram` of each candidate (or the unweighted ``AtA`` of its fit sums).
    k : int
    target : dict
        ``{(bt.key, L): (n_F, n_F)}``, symmetric positive semi-definite (:func:`pool_target`).
    weights : array, shape (n,), optional
        Fit weight of each candidate (e.g. its kind weight); 0 = would not be fitted (gains nothing).

    Returns
    -------
    picked : list of int
    gains : ndarray, shape (n,)
        Variance reduction (eV^2 per atom of the target) of each candidate before the first pick.
    """
    import scipy.linalg

    n = len(grams)
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= n):
        raise ValueError(f"k must be between 1 and the number of candidates ({n}), got {k}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError(f"weights must be {n} finite numbers >= 0")
    prec = _precisions(mm)
    roots = {}
    for key, T in target.items():
        if key not in prec:
            continue
        if T.shape != prec[key][0].shape:
            raise ValueError(f"target {key}: shape {T.shape}, posterior {prec[key][0].shape}")
        lam, U = np.linalg.eigh(0.5 * (T + T.T))
        if lam.min(initial=0.0) < -1e-8 * max(lam.max(initial=0.0), 1e-300):
            raise ValueError(f"target {key} is not positive semi-definite")
        keep = lam > 1e-12 * lam.max(initial=0.0)  # T = R R^T on its range
        roots[key] = U[:, keep] * np.sqrt(lam[keep])

    def trace_inv(P, R):
        """tr(R^T P^-1 R) with P symmetric positive definite (the jitter of :func:`information_select`)."""
        c = scipy.linalg.cho_factor(P + 1e-12 * np.trace(P) / len(P) * np.eye(len(P)), lower=True, check_finite=False)
        X = scipy.linalg.solve_triangular(c[0], R, lower=True, check_finite=False)
        return float(np.sum(X * X))

    def gains_now(cands):
        g = np.zeros(n)
        for key, R in roots.items():
            P, beta = prec[key]
            base = trace_inv(P, R)
            for j in cands:
                G = grams[j].get(key)
                if G is None or w[j] == 0 or G.shape != P.shape:
                    continue
                g[j] += base - trace_inv(P + beta * w[j] * G, R)
        return g

    return _greedy_batch(prec, grams, w, k, gains_now)


#: The criteria of :func:`select`.
CRITERIA = ("band", "eigen", "extrapolation", "information", "leverage", "variance")


def select(model, candidates, k: int, criterion: str = "information", kmesh=(2, 2, 2), n_samples: int = 12,
           seed: int = 0, progress=None) -> tuple:
    """Pick ``k`` diverse, uncertain candidates.

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    candidates : sequence of (ase.Atoms, n_electrons or None)
    k : int
    criterion : {"band", "eigen", "extrapolation", "information", "leverage", "variance"}
        ``information``: :func:`information_select`; ``variance``, ``leverage``, ``eigen``:
        :func:`variance_select` with the candidates themselves as the target (the structures one
        will predict): their per-atom block variance in eV^2 (``variance``, :func:`pool_target`), the
        same in units of each block type's noise variance (``leverage``,
        :func:`.select_targets.whitened`), or the mean epistemic variance of their predicted window
        eigenvalues (``eigen``, :func:`.select_targets.eigen_gram` on ``kmesh``, ``E_F +- 2 eV``).
        All four take each candidate at the weight the model's ``kind_weights`` give its
        ``atoms.info["kind"]`` (1 without; weight 0: it would not be fitted and gains nothing).

    Returns
    -------
    picked : list of int
        Candidate indices, in the order picked.
    scores : ndarray, shape (n,)
        eV (``band``), dimensionless (``extrapolation``), nats (``information``, the gain
        before any pick), eV^2 per atom (``variance``), noise variances per atom (``leverage``) or
        eV^2 per eigenvalue (``eigen``), the reduction before any pick.
    """
    from .uncertainty import extrapolation_score, has_posterior

    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(map(repr, CRITERIA))}, got {criterion!r}")
    if not has_posterior(model.H):
        raise ValueError("the model has no posterior: refit it (solver.method = 'blr' or 'ridge') to select with it")
    if criterion in ("information", "variance", "leverage", "eigen"):
        from .select_targets import eigen_gram, mean_target, whitened

        grams, eig = [], []
        rng = np.random.default_rng(seed)
        for atoms, n_el in candidates:
            grams.append(gram(model, atoms))
            if criterion == "eigen":
                eig.append(eigen_gram(model, atoms, n_el, kmesh=kmesh, rng=rng))
            if progress is not None:
                progress.step()
        kinds = dict(model.config.fit.kind_weights)  # a candidate is fitted at its kind's weight (as the benchmark)
        weights = [float(kinds.get(atoms.info.get("kind"), 1.0)) for atoms, _ in candidates]
        if criterion == "information":
            return information_select(model.H, [{key: w * G for key, G in g.items()} for g, w in zip(grams, weights)], k)
        if criterion == "eigen":
            return variance_select(model.H, grams, k, mean_target(eig), weights)
        target = pool_target(grams, [len(a) for a, _ in candidates])
        return variance_select(model.H, grams, k, whitened(model.H, target) if criterion == "leverage" else target,
                               weights)
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

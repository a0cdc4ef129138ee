"""Active selection: which candidate structures would teach a Hamiltonian model the most.

Each candidate gets a score from the model's posterior:

* ``"band"`` (default): the mean *epistemic* spread of its eigenvalues within
  ``E_F +- window`` on a small k-grid (posterior draws of the coefficients only: the noise
  part cannot be reduced by more data, the coefficient part can);
* ``"extrapolation"``: the largest per-atom extrapolation score
  (:func:`~acehamil.models.hamiltonian.uncertainty.extrapolation_score`), much cheaper.

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


def select(model, candidates, k: int, criterion: str = "band", kmesh=(2, 2, 2), n_samples: int = 12,
           seed: int = 0, progress=None) -> tuple:
    """Pick ``k`` diverse, uncertain candidates.

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    candidates : sequence of (ase.Atoms, n_electrons or None)
    k : int
    criterion : {"band", "extrapolation"}

    Returns
    -------
    picked : list of int
        Candidate indices, in the order picked.
    scores : ndarray, shape (n,)
        eV (``band``) or dimensionless (``extrapolation``).
    """
    from .uncertainty import extrapolation_score, has_posterior

    if criterion not in ("band", "extrapolation"):
        raise ValueError(f"criterion must be 'band' or 'extrapolation', got {criterion!r}")
    if not has_posterior(model.H):
        raise ValueError("the model has no posterior: refit it (solver.method = 'blr' or 'ridge') to select with it")
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

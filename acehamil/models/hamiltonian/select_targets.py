"""Targets of the V-optimal selection (:func:`.select.variance_select`): what "the variance one will
predict" means.

:func:`.select.variance_select` lowers ``sum_{bt, L} tr(T Sigma)``, the summed epistemic variance of
some linear functions ``R^T c`` of the H coefficients (``T = R R^T`` per ``(block type, L)``: the
posteriors of the block types are independent, so the variance of any linear function of all the
coefficients is such a sum).  Three choices of ``T``:

* :func:`.select.pool_target`, the pool's per-atom design Gram: the variance of the predicted blocks
  in eV^2, summed over block types (the block types with the largest posterior variances dominate,
  whether or not they move the bands);
* :func:`whitened`: the same in units of each block type's noise variance (``beta T``): the pool's
  mean *leverage*, scale-free per block type, as the information gain is;
* :func:`eigen_gram` averaged by :func:`mean_target`: the sensitivities ``J`` of the pool's own
  window eigenvalues (``E_F +- window``, relative to ``E_F``, first order,
  :func:`.linear_response.sensitivities`), ``T = mean_states J^T J``: then ``tr(T Sigma)`` is the
  mean epistemic variance (eV^2) of exactly the eigenvalues ``acehamil evaluate`` scores.  The
  eigenvectors are the model's own prediction (no DFT needed), so the target is linearised at the
  current model.
"""

from __future__ import annotations

import numpy as np


def whitened(mm, target: dict) -> dict:
    """``{(bt.key, L): beta T}``: a :func:`.select.pool_target` in units of each block type's noise
    variance ``1/beta`` (the posterior's noise precision); keys without a posterior are left out.

    Parameters
    ----------
    mm : MatrixModel
        With posteriors.
    target : dict
        ``{(bt.key, L): ndarray (n_F, n_F)}``, eV^2-free Gram matrices.

    Returns
    -------
    dict, same keys (those with a posterior), dimensionless per unit coefficient variance / noise variance
    """
    out = {}
    for (key, L), T in target.items():
        post = mm.posteriors.get(key, {}).get(L)
        if post is not None:
            out[(key, L)] = float(post.beta) * np.asarray(T, dtype=float)
    return out


def eigen_gram(model, atoms, n_electrons=None, kmesh=(2, 2, 2), window_eV: float = 2.0, max_states: int = 64,
               rng=None) -> dict:
    """Mean Gram matrix of the sensitivities of a structure's predicted window eigenvalues.

    The model predicts ``H, S`` of ``atoms``; their eigenvalues on a Monkhorst-Pack grid within
    ``E_F +- window_eV`` of the predicted Fermi level (``n_electrons``; without it, the model's
    valence count; without that, every state) are the rows, each relative to ``E_F`` (its linear
    response at a fixed electron count, as the calibration takes it), at most ``max_states`` of
    them (a random choice with ``rng``).

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    atoms : ase.Atoms
    n_electrons : float, optional
    kmesh : 3 ints
    window_eV : float
    max_states : int
        0 = all.
    rng : numpy.random.Generator, optional

    Returns
    -------
    dict
        ``{(bt.key, L): J^T J / m}``, ``(n_F, n_F)``, eV^2 per unit coefficient^2: ``tr(T Sigma)`` is
        the mean first-order epistemic variance (eV^2) of the ``m`` rows.
    """
    from ...tb.dos import monkhorst_pack
    from ...tb.smearing import fermi_level
    from .window import _reference_solve
    from .linear_response import fermi_weights, sensitivities

    if not window_eV > 0:
        raise ValueError(f"window_eV must be > 0, got {window_eV}")
    m = model.matrices(atoms)
    kp, wk = monkhorst_pack(tuple(int(x) for x in kmesh), atoms.pbc)
    eps, C, _ = _reference_solve(m.H, m.S, kp)
    nb = eps.shape[1]
    if n_electrons is None:
        n_electrons = model.n_electrons(atoms)
    reference = None
    if n_electrons is None:
        win = np.arange(eps.size)
    else:
        ef = fermi_level(eps[None], wk, float(n_electrons), 0.01, "fermi-dirac", 2)
        win = np.flatnonzero((np.abs(eps - ef) <= window_eV).reshape(-1))
        phi = fermi_weights(eps, wk, ef, 0.01).reshape(-1)
        fermi = np.flatnonzero(phi > 1e-9)
        if len(fermi):
            reference = (C[fermi // nb, :, fermi % nb], kp[fermi // nb], phi[fermi] / phi[fermi].sum())
        if len(win) == 0:
            win = np.arange(eps.size)
    if max_states and len(win) > max_states:
        win = np.sort((rng if rng is not None else np.random.default_rng(0)).choice(win, int(max_states), replace=False))
    sens = sensitivities(model.H, atoms, C[win // nb, :, win % nb], kp[win // nb], reference)
    return {key: J.T @ J / len(win) for key, J in sens["J"].items()}


def mean_target(grams) -> dict:
    """``{(bt.key, L): mean_c T_c}`` over structures (a key missing in one structure counts as 0 there).

    Parameters
    ----------
    grams : sequence of dict
        E.g. :func:`eigen_gram` of each structure one will predict.
    """
    if len(grams) == 0:
        raise ValueError("need at least one structure")
    out = {}
    for G in grams:
        for key, g in G.items():
            out[key] = out.get(key, 0.0) + np.asarray(g, dtype=float) / len(grams)
    return out

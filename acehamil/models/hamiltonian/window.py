"""The eigenvalues of one reference structure within a window about its Fermi level: the model's
errors on them and their first-order sensitivities (:func:`window_sensitivities`, in the reference's
eigenbasis; what the eigenvalue update fits, :mod:`.eigen_update`), and the first-order parts of their
spread (:func:`held_out_parts`, :mod:`.linear_response`: no draws; what the calibration fits,
:mod:`.calibrate`).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def reference_errors(sd, eps, ef, kpts, weights, window_eV) -> tuple:
    """Errors of ``eps - ef`` against the reference (own Fermi level) within the window.

    Returns
    -------
    err : ndarray, shape (nk, nb), eV
    mask : ndarray of bool, shape (nk, nb)
        Reference eigenvalues within ``E_F +- window_eV``.
    """
    from ...tb.eigen import solve
    from ...tb.smearing import fermi_level

    e_ref = solve(sd.H[0], sd.S, kpts)
    nb = min(e_ref.shape[1], eps.shape[1])
    if sd.n_electrons is not None:
        ef_ref = fermi_level(e_ref[None], weights, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    elif sd.fermi_level is not None:
        ef_ref = float(sd.fermi_level)
    else:
        raise ValueError("reference structure has neither fermi_level nor n_electrons: no eigenvalue window")
    err = (eps[:, :nb] - ef) - (e_ref[:, :nb] - ef_ref)
    return err, np.abs(e_ref[:, :nb] - ef_ref) <= window_eV


def held_out_parts(model, sd, kmesh, window_eV: float, pairs=None, max_states: int = 0, rng=None,
                   epistemic_cut: float = 0.0, extra_coefficients=None) -> dict | None:
    """Eigenvalue errors of ``model`` on one reference structure and the first-order parts of their
    spread (:mod:`.linear_response`: no draws, no Monte-Carlo noise).

    The sensitivities are taken in the eigenbasis of the reference (its eigenvectors, Fermi
    level and window), the error is exact: the model's prediction (from the same features) is
    solved with the reference overlap on the same k-points (S errors, ~1e-6, do not matter here).
    Each eigenvalue is relative to its own Fermi level; the spread includes the linear response
    of the Fermi level (:func:`.linear_response.fermi_weights`).

    Parameters
    ----------
    model : HamiltonianModel
        With posteriors.
    sd : StructureData
        With H, S and ``n_electrons``.
    kmesh : 3 ints
        Monkhorst-Pack grid (time-reversal reduced).
    window_eV : float
        Eigenvalues within ``E_F +- window_eV`` of the reference.
    max_states : int
        At most this many of them (a random choice with ``rng``; 0 = all).
    rng : numpy.random.Generator, optional
    epistemic_cut : float, Å
        > 0: ``sigma_epi`` from the on-site blocks and the bonds shorter than this
        (:func:`.linear_response.sensitivities`); 0: all blocks.
    extra_coefficients : dict {key: {L: ndarray}} or list of them, optional
        Also the errors of these H coefficients on the same states (``err_extra``, :func:`window_sensitivities`).

    Returns
    -------
    dict or None
        ``err``, ``sigma_epi``, ``sigma_noise``, ``sigma_shared`` (m,), eV, over the ``m`` chosen
        reference eigenvalues within the window (k-major order), and ``J`` ({(key, L): (m, n)}, eV per unit
        coefficient: the sensitivities ``sigma_epi`` was taken from, ``sigma_epi^2 = |J F|^2`` with
        ``Sigma = F F^T``); None without ``n_electrons``.
    """
    from .linear_response import variances

    w = window_sensitivities(model, sd, kmesh, window_eV, pairs=pairs, max_states=max_states, rng=rng,
                             epistemic_cut=epistemic_cut, extra_coefficients=extra_coefficients)
    if w is None:
        return None
    ve, vn, vs = variances(model.H, w["sens"])
    out = {"err": w["err"], "sigma_epi": np.sqrt(ve), "sigma_noise": np.sqrt(vn), "sigma_shared": np.sqrt(vs),
           "J": w["sens"]["J"]}
    if extra_coefficients is not None:
        out["err_extra"] = w["err_extra"]
    return out


def window_sensitivities(model, sd, kmesh, window_eV: float, pairs=None, max_states: int = 0, rng=None,
                         epistemic_cut: float = 0.0, extra_coefficients=None) -> dict | None:
    """Errors of ``model``'s window eigenvalues on one reference structure (each relative to its own
    Fermi level) and their first-order sensitivities, in the reference's eigenbasis
    (:func:`held_out_parts`, which takes the variances from them; :mod:`.eigen_update`, which fits them).

    Returns
    -------
    dict or None
        ``err`` (m,), eV (model - reference, the ``m`` chosen window states, k-major order), ``sens``
        (:func:`.linear_response.sensitivities` of those rows, relative to the Fermi level), ``states``
        (m,) flat indices ``k * nbands + n`` of the chosen states; with ``extra_coefficients`` (H coefficients
        of the same model, or a list of them) also ``err_extra`` ((m,), or (n_sets, m) for a list), eV: their
        errors on the same states, exact (with ``epistemic_cut`` > 0 every prediction comes from one mapped
        pass, :meth:`MatrixModel.predict_many`; one more eigenvalue solve each, no features); None without
        ``n_electrons`` or without a window state.
    """
    from ...structure import RealSpaceMatrix
    from ...tb.bloch import BlochAssembler
    from ...tb.dos import monkhorst_pack
    from ...tb.smearing import fermi_level
    from .linear_response import fermi_weights, sensitivities

    if sd.n_electrons is None:
        return None
    kp, wk = monkhorst_pack(kmesh, sd.atoms.pbc)
    e_ref, C, reduce_ = _reference_solve(sd.H[0], sd.S, kp)
    ef_ref = fermi_level(e_ref[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    mask = np.abs(e_ref - ef_ref) <= window_eV
    phi = fermi_weights(e_ref, wk, ef_ref, 0.01).reshape(-1)
    win = np.flatnonzero(mask.reshape(-1))
    if len(win) == 0:
        return None
    if max_states and len(win) > max_states:
        win = np.sort((rng if rng is not None else np.random.default_rng(0)).choice(win, int(max_states), replace=False))
    fermi = np.flatnonzero(phi > 1e-9)  # the states that move E_F (a few, at small smearing)
    nb = e_ref.shape[1]
    reference = (C[fermi // nb, :, fermi % nb], kp[fermi // nb], phi[fermi] / phi[fermi].sum())
    both = None
    single = isinstance(extra_coefficients, dict)
    extras = None if extra_coefficients is None else ([extra_coefficients] if single else list(extra_coefficients))
    if extras is not None and epistemic_cut > 0:  # every prediction in one mapped pass
        both = model.H.predict_many(sd.atoms, model.H.pattern(sd.atoms, pairs), [model.H.coefficients, *extras])
    sens = sensitivities(model.H, sd.atoms, C[win // nb, :, win % nb], kp[win // nb], reference, pairs=pairs,
                         epistemic_cut=epistemic_cut, data=None if both is None else both[0])
    pat = sens["pattern"]
    # one sparsity analysis for every prediction of the structure (same pattern): BlochAssembler.dense_of
    asm = BlochAssembler(RealSpaceMatrix(pat.norb, pat.i, pat.j, pat.shift, sens["data"]))
    eps = reduce_(asm.dense(kp))
    ef = fermi_level(eps[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
    err = ((eps - ef) - (e_ref - ef_ref)).reshape(-1)[win]
    out = {"err": err, "sens": sens, "states": win}
    if extras is not None:
        errs = []
        for q, c in enumerate(extras):
            data = (both[1 + q] if both is not None else
                    dataclasses.replace(model.H, coefficients=c).predict_data(sd.atoms, pat))
            eps = reduce_(asm.dense_of(data, kp))
            ef = fermi_level(eps[None], wk, float(sd.n_electrons), 0.01, "fermi-dirac", 2)
            errs.append(((eps - ef) - (e_ref - ef_ref)).reshape(-1)[win])
        out["err_extra"] = errs[0] if single else np.array(errs)
    return out


def _reference_solve(H, S, kpts) -> tuple:
    """Eigenvalues and S-orthonormal eigenvectors of the reference ``H, S`` on ``kpts``, and a
    function giving the eigenvalues of another ``H`` (same orbitals) with the same overlap: S(k)
    is assembled and factorised once per k (the reference's S is a validated training overlap;
    a Cholesky failure raises ``numpy.linalg.LinAlgError``).

    Returns
    -------
    eps : ndarray, shape (nk, norb), eV
    vecs : ndarray, shape (nk, norb, norb), complex (``vecs[k][:, n]``, ``C^H S C = 1``)
    eigenvalues : callable ``ndarray (nk, norb, norb) -> ndarray (nk, norb)``
        Of another ``H``'s Bloch sums on ``kpts`` (:meth:`BlochAssembler.dense`).
    """
    from ...tb.bloch import BlochAssembler

    Sk = BlochAssembler(S).dense(kpts)
    X = np.linalg.inv(np.linalg.cholesky(Sk))  # L^-1 per k
    Xh = np.conj(np.swapaxes(X, 1, 2))

    def reduced(hk):
        a = X @ hk @ Xh
        return 0.5 * (a + np.conj(np.swapaxes(a, 1, 2)))

    eps, Y = np.linalg.eigh(reduced(BlochAssembler(H).dense(kpts)))
    return eps, Xh @ Y, lambda hk: np.linalg.eigvalsh(reduced(hk))

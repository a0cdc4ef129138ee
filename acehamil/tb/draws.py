"""Propagation of H draws to eigenvalues, Fermi levels, bands and DOS.

Given the prediction ``H, S`` and draws ``H + dH_k`` (:func:`acehamil.models.hamiltonian.uncertainty.sample_matrix`;
S is taken as exact), the eigenvalues of every draw at every k-point are those of the
small Hermitian matrix ``diag(eps) + C^H dH_k(k) C`` with ``C`` the S-orthonormal eigenvectors
of the prediction (Rayleigh-Ritz in the eigenbasis of the mean: exact when all bands are kept,
degenerate levels mix correctly).  One generalized eigensolve with eigenvectors plus, per draw,
a Bloch sum done for all draws in one matrix product and a small ``eigvalsh``.

The first-order (linear) limit ``d eps_n = c_n^H dH c_n`` is :func:`first_order_shifts`; its
variance is what :func:`acehamil.models.hamiltonian.uncertainty` covariances give analytically, and it
agrees with the draws when the spread is small compared with level spacings (tested).

Energies of a draw are taken relative to that draw's own Fermi level (same electron count,
same k-grid), as ``acehamil evaluate`` compares eigenvalues: the spread of ``eps - E_F``
is the uncertainty of the quantity whose error is reported.
"""

from __future__ import annotations

import numpy as np

from .bloch import as_kpts, phase_factors

_CHUNK_BYTES = 64 * 2**20


#: Largest estimated work of the draws' eigenvalues that ``bands``/``dos --uncertainty`` start (floating-point
#: operations; at the ~2-5 Gflop/s of one core on these small dense problems, about 10-15 minutes).
MAX_DRAWS_FLOP = 2e12


def draws_flop(norb: int, nk: int, n_draws: int) -> float:
    """Estimated floating-point operations of :func:`eigenvalue_draws`: per k-point the solve with
    eigenvectors (~30 n^3) and, per draw, ``C^H dH C`` (two complex products, ~16 n^3) and its
    eigenvalues (~10 n^3): ``nk (26 K + 30) n^3``.

    Examples
    --------
    >>> f"{draws_flop(864, 71, 24):.2g}"
    '3e+13'
    """
    return float(nk) * (26.0 * n_draws + 30.0) * float(norb) ** 3


def check_draws_work(data, nk: int, fewer: str) -> None:
    """ValueError, before any work, when the eigenvalues of ``data``'s stored draws at ``nk`` k-points would
    exceed :data:`MAX_DRAWS_FLOP`; the message says what to pass instead (``fewer``: the option that
    lowers the k-points)."""
    K = 0 if getattr(data, "H_draws", None) is None else int(np.shape(data.H_draws)[0])
    norb = data.H[0].norb
    flop = draws_flop(norb, nk, K)
    if K and flop > MAX_DRAWS_FLOP:
        raise ValueError(
            f"--uncertainty: the spreads from the {K} stored draws need ~{flop / 1e12:.2g} Tflop ({nk} k-points x {K} "
            f"draws, each an eigen-problem of {norb} orbitals), about {flop / 3e9 / 60:.0f} min of one core (limit "
            f"{MAX_DRAWS_FLOP / 1e12:.2g} Tflop); pass fewer k-points ({fewer}), or predict with fewer draws "
            f"(acehamil predict --samples 4), or use acehamil evaluate MODEL on a dataset of this structure for "
            f"first-order spreads (cost ~2x a plain solve)")


def bloch_perturbations(H, delta: np.ndarray, kpts) -> np.ndarray:
    """Bloch sums of many real-space perturbations with ``H``'s block pattern.

    Parameters
    ----------
    H : RealSpaceMatrix
        Supplies the pattern (``delta[d]`` replaces ``H.data``).
    delta : ndarray, shape (K, H.data.size), eV
    kpts : array, shape (nk, 3), fractional

    Returns
    -------
    ndarray, complex128, shape (K, nk, norb, norb)
    """
    delta = np.asarray(delta, dtype=float)
    if delta.ndim != 2 or delta.shape[1] != H.data.size:
        raise ValueError(f"delta must have shape (K, {H.data.size}), got {delta.shape}")
    k = as_kpts(kpts)
    rows, cols, _, bidx = H.coo()
    nz = np.any(delta != 0, axis=0)  # entries no draw touches (e.g. outside an epistemic bond cut) are skipped
    if not nz.all():
        delta, rows, cols, bidx = delta[:, nz], rows[nz], cols[nz], bidx[nz]
    cells, block_cell = np.unique(H.shift[np.unique(bidx)], axis=0, return_inverse=True)
    cell_of_block = np.full(len(H.shift), -1, dtype=np.int64)
    cell_of_block[np.unique(bidx)] = np.asarray(block_cell).reshape(-1)
    cell_e = cell_of_block[bidx]
    n = H.norb
    pos, pos_e = np.unique(rows * n + cols, return_inverse=True)
    ph = phase_factors(k, cells)  # (nk, ncells)
    K = delta.shape[0]
    out = np.zeros((K, len(k), n * n), dtype=np.complex128)
    per_draw = max(1, len(pos) * len(cells) * 8)
    step = max(1, min(K, _CHUNK_BYTES // per_draw))
    for d0 in range(0, K, step):
        d1 = min(K, d0 + step)
        V = np.zeros((d1 - d0, len(pos), len(cells)))
        V[:, pos_e, cell_e] = delta[d0:d1]
        Vr = V.reshape(-1, len(cells))
        # two real products instead of one real-by-complex (which numpy would do in complex)
        vals = (Vr @ np.ascontiguousarray(ph.real.T)) + 1j * (Vr @ np.ascontiguousarray(ph.imag.T))  # (Kc*npos, nk)
        out[d0:d1, :, pos] = vals.reshape(d1 - d0, len(pos), len(k)).transpose(0, 2, 1)
    return out.reshape(K, len(k), n, n)


def perturbed_eigenvalues(eps: np.ndarray, vecs: np.ndarray, dHk: np.ndarray, first_order: bool = False) -> np.ndarray:
    """Eigenvalues of ``H + dH`` from the eigenpairs of ``H`` (fixed S).

    Parameters
    ----------
    eps : ndarray, shape (nk, nb), eV
    vecs : ndarray, complex, shape (nk, norb, nb)
        S-orthonormal eigenvectors (``C^H S C = 1``).
    dHk : ndarray, complex, shape (K, nk, norb, norb)
    first_order : bool
        Return ``eps + Re diag(C^H dH C)`` instead of the Rayleigh-Ritz eigenvalues.

    Returns
    -------
    ndarray, shape (K, nk, nb), eV
    """
    M = np.einsum("kin,dkij,kjm->dknm", vecs.conj(), dHk, vecs, optimize=True)
    if first_order:
        return eps[None] + np.einsum("dknn->dkn", M).real
    M = 0.5 * (M + np.conj(np.swapaxes(M, -1, -2)))
    idx = np.arange(eps.shape[1])
    M[..., idx, idx] += eps[None]
    return np.linalg.eigvalsh(M)


def first_order_shifts(vecs: np.ndarray, dHk: np.ndarray) -> np.ndarray:
    """``d eps_n = Re c_n^H dH c_n``, shape (K, nk, nb), eV."""
    return np.einsum("kin,dkij,kjn->dkn", vecs.conj(), dHk, vecs, optimize=True).real


def eigenvalue_draws(H, S, delta, kpts, first_order: bool = False, solver_kw=None) -> tuple:
    """Eigenvalues of the prediction and of every draw at ``kpts``.

    Returns
    -------
    eps : ndarray, shape (nk, nb), eV
        Of the prediction.
    draws : ndarray, shape (K, nk, nb), eV
    """
    from .eigen import solve

    k = as_kpts(kpts)
    eps, vecs = solve(H, S, k, eigenvectors=True, **dict(solver_kw or {}))
    n = H.norb
    K = delta.shape[0]
    chunk = max(1, _CHUNK_BYTES // max(1, 16 * n * n * max(K, 1)))
    draws = np.empty((K,) + eps.shape)
    for k0 in range(0, len(k), chunk):
        k1 = min(len(k), k0 + chunk)
        dHk = bloch_perturbations(H, delta, k[k0:k1])
        draws[:, k0:k1] = perturbed_eigenvalues(eps[k0:k1], vecs[k0:k1], dHk, first_order=first_order)
    return eps, draws


def fermi_levels(eps, draws, weights, n_electrons) -> tuple:
    """Fermi level of the prediction and of every draw (same rule as ``acehamil evaluate``).

    Returns
    -------
    ef : float, eV
    ef_draws : ndarray, shape (K,), eV
    """
    from .smearing import fermi_level

    ef = fermi_level(eps[None], weights, float(n_electrons), 0.01, "fermi-dirac", 2)
    efd = np.array([fermi_level(d[None], weights, float(n_electrons), 0.01, "fermi-dirac", 2) for d in draws])
    return ef, efd


def relative_sigma(eps, draws, ef, ef_draws) -> np.ndarray:
    """Standard deviation over draws of ``eps - E_F`` (each draw with its own Fermi level), eV.

    Parameters
    ----------
    eps : ndarray, shape (nk, nb)
    draws : ndarray, shape (K, nk, nb)
    ef : float
    ef_draws : ndarray, shape (K,)

    Returns
    -------
    ndarray, shape (nk, nb)
    """
    rel = draws - np.asarray(ef_draws)[:, None, None]
    return np.sqrt(np.mean((rel - (eps - ef)[None]) ** 2, axis=0))


def extrapolation_sigma_of(data) -> float:
    """The extrapolation part of the eigenvalue spread stored with a prediction (eV;
    ``info["uncertainty"]["sigma_extrapolation_eV"]``, 0 when absent): added in quadrature to the
    draws' spread of every eigenvalue (:func:`acehamil.models.hamiltonian.spread.extrapolation_sigma`)."""
    u = (getattr(data, "info", None) or {}).get("uncertainty") or {}
    x = u.get("sigma_extrapolation_eV", 0.0) if isinstance(u, dict) else 0.0
    try:
        x = float(x if x is not None else 0.0)
    except (TypeError, ValueError):
        raise ValueError(f"info['uncertainty']['sigma_extrapolation_eV'] must be a number, got {x!r}") from None
    if not (np.isfinite(x) and x >= 0):
        raise ValueError(f"info['uncertainty']['sigma_extrapolation_eV'] must be finite and >= 0, got {x}")
    return x


def _draws_of(data) -> np.ndarray:
    if getattr(data, "H_draws", None) is None:
        raise ValueError("the structure carries no H draws: predict it with a model that has a posterior "
                         "(acehamil predict stores them unless --samples 0)")
    return np.asarray(data.H_draws, dtype=float)


def band_uncertainty(data, kpts, kmesh=None, solver_kw=None) -> tuple:
    """Spread of the bands of a predicted structure (from its ``H_draws``) at ``kpts``.

    Each draw's energies are taken relative to its own Fermi level (found on ``kmesh``,
    default :func:`acehamil.tb.bands.kmesh_for`, from ``n_electrons``); without
    ``n_electrons`` the absolute energies are used.

    Parameters
    ----------
    data : StructureData
        With ``H_draws``.
    kpts : array, shape (nk, 3), fractional

    Returns
    -------
    eps : ndarray, shape (nk, nb), eV
        Bands of the prediction.
    sigma : ndarray, shape (nk, nb), eV
        Including the extrapolation part stored with the prediction (:func:`extrapolation_sigma_of`).
    """
    from .bands import kmesh_for
    from .dos import monkhorst_pack

    delta = _draws_of(data)
    x2 = extrapolation_sigma_of(data) ** 2
    H = data.H[0]
    eps, draws = eigenvalue_draws(H, data.S, delta, kpts, solver_kw=solver_kw)
    if data.n_electrons is None:
        return eps, np.sqrt(np.mean((draws - eps[None]) ** 2, axis=0) + x2)
    kg, wg = monkhorst_pack(kmesh or kmesh_for(data.atoms), data.atoms.pbc)
    eg, dg = eigenvalue_draws(H, data.S, delta, kg, solver_kw=solver_kw)
    ef, efd = fermi_levels(eg, dg, wg, data.n_electrons)
    return eps, np.sqrt(relative_sigma(eps, draws, ef, efd) ** 2 + x2)


def dos_spread(data, result, solver_kw=None) -> np.ndarray:
    """Standard deviation of the DOS over the draws of a predicted structure.

    Every draw's DOS is computed on ``result``'s k-grid, smearing and energies, shifted so
    that its Fermi level sits at ``result.fermi_level`` (when known): the spread of the
    DOS relative to E_F.  The extrapolation part (:func:`extrapolation_sigma_of`) enters as an
    independent shift of every level of every draw.

    Parameters
    ----------
    data : StructureData
        With ``H_draws`` (one spin channel).
    result : DOSResult
        The DOS of the prediction (:func:`acehamil.tb.dos.density_of_states`).

    Returns
    -------
    ndarray, shape (ne,), states/eV per cell
    """
    from .dos import dos_from_levels

    delta = _draws_of(data)
    eps, draws = eigenvalue_draws(data.H[0], data.S, delta, result.kpts, solver_kw=solver_kw)
    shifts = np.zeros(len(draws))
    if data.n_electrons is not None and result.fermi_level is not None:
        ef, efd = fermi_levels(eps, draws, result.weights, data.n_electrons)
        shifts = efd - ef
    x = extrapolation_sigma_of(data)
    if x > 0:  # the extrapolation part: an independent shift of every level of every draw (seeded: reproducible)
        draws = draws + x * np.random.default_rng(0).standard_normal(draws.shape)
    curves = np.array([dos_from_levels(d[None] - s, result.weights, result.energies, result.width, result.smearing,
                                       result.spin_degeneracy)[0] for d, s in zip(draws, shifts)])
    return np.sqrt(np.mean((curves - result.dos[None]) ** 2, axis=0))

"""Kernel polynomial method (KPM): DOS, Mulliken PDOS, integrated DOS and the Fermi level of
large sparse systems with a non-orthogonal basis, without diagonalisation.

The generalized problem ``H c = eps S c`` has the eigenvalues of ``A = S^-1 H``.  With
``C^T S C = 1``, ``f(A) = C f(eps) C^T S`` and

* ``Tr f(A) = sum_n f(eps_n)`` (the DOS for ``f = delta(E - .)``), and
* ``f(A)_{mu mu} = sum_n f(eps_n) c_{mu n} (S c_n)_mu``: the Mulliken weight of orbital ``mu``,

so one Chebyshev recursion ``t_{n+1} = 2 A~ t_n - t_{n-1}`` on ``A~ = (A - b) / a``
(spectrum mapped into ``(-1, 1)``) gives both, traced stochastically: for ``R`` random vectors
``r`` with ``E[r r^H] = 1`` (Rademacher at real k, random phases at complex k)
``mu_n = mean_r sum_mu conj(r_mu) (T_n(A~) r)_mu``.  Each step costs one product with ``H`` and
one solve with ``S`` (:mod:`.kpm_operator`: sparse LU of ``S``, or block-Jacobi preconditioned conjugate gradients for
systems whose LU fills in too much).  A Hermitian operator (no ``S``: an orthonormal basis, or
:class:`acehamil.tb.tiled.TiledOperator`) gets two moments per product from
``T_{2n} = 2 T_n^2 - 1``, ``T_{2n+1} = 2 T_{n+1} T_n - T_1`` (total DOS only).  The truncated series is damped by the Jackson kernel
(resolution ``~ pi a / M`` near the band centre, no negative DOS) or the Lorentz kernel.

Outputs come with an error bar: the standard error of the mean over the ``R`` vectors (the
stochastic trace error; the kernel broadening is not an error but the definition of the
result: compare with :func:`kpm_dos_from_levels`, the same kernel applied to exact levels).

Examples
--------
>>> import numpy as np, scipy.sparse as sp
>>> H = sp.diags([np.linspace(-1.0, 1.0, 200)], [0], format="csr")
>>> res = kpm_dos_sparse(H, None, np.linspace(-1.5, 1.5, 7), n_moments=64, n_vectors=4, seed=0)
>>> round(float(res.idos[-1]), 6)       # 2 states per orbital (spin degenerate)
400.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .kpm_operator import SInverse, spectral_bounds

__all__ = ["KERNELS", "kernel_coefficients", "spectral_bounds", "SInverse", "kpm_moments", "KPMMoments",
           "kpm_dos_sparse", "kpm_dos_from_levels", "KPMResult", "reconstruct", "fermi_from_idos"]

KERNELS = ("jackson", "lorentz")
#: Relative margin added on each side of the estimated spectral bounds.
BOUNDS_MARGIN = 0.01


def kernel_coefficients(n_moments: int, kernel: str = "jackson", lorentz_lambda: float = 4.0) -> np.ndarray:
    """Damping factors ``g_n`` of the truncated Chebyshev series, shape (n_moments,).

    >>> g = kernel_coefficients(8)
    >>> float(g[0]), bool(np.all(np.diff(g) < 0))
    (1.0, True)
    """
    M = int(n_moments)
    if M < 2:
        raise ValueError(f"n_moments must be >= 2, got {n_moments}")
    n = np.arange(M)
    if kernel == "jackson":
        q = np.pi / (M + 1)
        return ((M - n + 1) * np.cos(q * n) + np.sin(q * n) / np.tan(q)) / (M + 1)
    if kernel == "lorentz":
        return np.sinh(lorentz_lambda * (1.0 - n / M)) / np.sinh(lorentz_lambda)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


@dataclass(frozen=True)
class KPMMoments:
    """Stochastic Chebyshev moments of one k-point.

    Attributes
    ----------
    mu : ndarray, shape (n_moments, n_vectors)
        ``conj(r) . T_n(A~) r`` per random vector (total, all orbitals).
    mu_groups : ndarray, shape (ngroups, n_moments, n_vectors) or None
        The same restricted to each orbital group (Mulliken PDOS).
    a, b : float, eV
        ``A~ = (A - b) / a``.
    seconds : float
    s_solves : int
        CG iterations spent on ``S^-1`` (0 for LU).
    """

    mu: np.ndarray
    mu_groups: np.ndarray | None
    a: float
    b: float
    seconds: float
    s_solves: int


def _random_vectors(n, R, complex_, rng):
    if complex_:
        return np.exp(2j * np.pi * rng.random((n, R)))
    return rng.choice(np.array([-1.0, 1.0]), size=(n, R))


def kpm_moments(Hk, Sk, n_moments: int, n_vectors: int, bounds: tuple, rng, groups=None, s_inverse=None,
                progress=None) -> KPMMoments:
    """Chebyshev moments of ``S^-1 H`` by stochastic trace (see the module docstring).

    Parameters
    ----------
    Hk, Sk : sparse (norb, norb), Hermitian; ``Sk`` positive definite or None
    n_moments, n_vectors : int
    bounds : (emin, emax), eV
        Must enclose the spectrum (use :func:`spectral_bounds` plus a margin).
    rng : numpy Generator
    groups : list of int arrays, optional
        Orbital groups for the PDOS.
    s_inverse : SInverse, optional
        Default: LU of ``Sk``.
    progress : callable(done, total), optional
    """
    import time

    t0 = time.perf_counter()
    n = Hk.shape[0]
    lo, hi = bounds
    if not hi > lo:
        raise ValueError(f"spectral bounds must satisfy emin < emax, got {bounds}")
    a, b = (hi - lo) / 2.0, (hi + lo) / 2.0
    inv = s_inverse if s_inverse is not None else SInverse(Sk, "lu")
    complex_ = np.dtype(Hk.dtype).kind == "c" or (Sk is not None and np.dtype(Sk.dtype).kind == "c")
    r = _random_vectors(n, int(n_vectors), complex_, rng)
    rc = np.conj(r)
    P = None
    if groups is not None:
        gi = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
        P = sp.csr_matrix((np.ones(len(gi)), (gi, np.concatenate(groups))), shape=(len(groups), n))
    M = int(n_moments)
    mu = np.zeros((M, r.shape[1]))
    mug = None if P is None else np.zeros((len(groups), M, r.shape[1]))

    def record(k, t):
        prod = np.real(rc * t)
        mu[k] = prod.sum(axis=0)
        if P is not None:
            mug[:, k] = P @ prod

    def apply(t):
        return (inv(Hk @ t) - b * t) / a

    t_prev = r
    record(0, t_prev)
    t_cur = apply(r)
    record(1, t_cur)
    if inv.S is None and P is None and M > 2:
        # Hermitian operator (orthonormal basis, or the tiled L^-1 H L^-H): T_{2n} = 2 T_n^2 - 1 and
        # T_{2n+1} = 2 T_{n+1} T_n - T_1 give two moments per product (Weisse et al., RMP 78, 275)
        def dot(u, v):
            return np.real(np.sum(np.conj(u) * v, axis=0))

        mu0, mu1 = mu[0].copy(), mu[1].copy()
        j = 1
        while 2 * j < M:
            mu[2 * j] = 2.0 * dot(t_cur, t_cur) - mu0
            if 2 * j + 1 >= M:
                break
            t_next = 2.0 * apply(t_cur) - t_prev
            mu[2 * j + 1] = 2.0 * dot(t_next, t_cur) - mu1
            t_prev, t_cur = t_cur, t_next
            j += 1
            if progress is not None and (j % 16 == 0 or 2 * j >= M):
                progress(min(2 * j + 1, M), M)
    else:
        for k in range(2, M):
            t_next = 2.0 * apply(t_cur) - t_prev
            t_prev, t_cur = t_cur, t_next
            record(k, t_cur)
            if progress is not None and (k % 32 == 0 or k == M - 1):
                progress(k + 1, M)
    # |T_n(x)| <= 1 on [-1, 1]: moments growing beyond the norm of the vectors mean the spectrum
    # leaks out of the bounds (T_n grows exponentially there) - never return such a DOS silently
    if not np.all(np.isfinite(mu)) or np.abs(mu).max() > 10.0 * n:
        raise ValueError(f"KPM moments diverge: the spectrum of S^-1 H is not inside the bounds {tuple(bounds)} eV "
                         f"(pass wider bounds)")
    return KPMMoments(mu, mug, float(a), float(b), time.perf_counter() - t0, int(inv.iterations))


def _chebyshev_table(x: np.ndarray, M: int) -> np.ndarray:
    """``T_n(x)`` for n < M, shape (M, len(x))."""
    T = np.empty((M, len(x)))
    T[0] = 1.0
    if M > 1:
        T[1] = x
    for k in range(2, M):
        T[k] = 2.0 * x * T[k - 1] - T[k - 2]
    return T


def reconstruct(mu: np.ndarray, a: float, b: float, energies: np.ndarray, kernel: str = "jackson",
                lorentz_lambda: float = 4.0) -> tuple:
    """DOS and integrated DOS from moments (any trailing shape).

    Parameters
    ----------
    mu : ndarray, shape (n_moments, ...)
    a, b : float, eV
    energies : ndarray, shape (ne,), eV

    Returns
    -------
    dos : ndarray, shape (ne, ...), per eV (per unit of ``mu_0``)
    idos : ndarray, shape (ne, ...), number below each energy
        (0 below the lower bound, ``mu_0`` above the upper one).
    """
    M = mu.shape[0]
    g = kernel_coefficients(M, kernel, lorentz_lambda)
    c = mu * g.reshape((M,) + (1,) * (mu.ndim - 1))
    c = c.copy()
    c[1:] *= 2.0
    E = np.asarray(energies, dtype=np.float64).reshape(-1)
    x = (E - b) / a
    inside = np.abs(x) < 1.0
    xi = np.clip(x, -1.0, 1.0)
    theta = np.arccos(xi)
    flat = c.reshape(M, -1)
    T = _chebyshev_table(np.where(inside, xi, 0.0), M)
    dos = (T.T @ flat) / (np.pi * a * np.sqrt(np.where(inside, 1.0 - xi**2, 1.0)))[:, None]
    dos[~inside] = 0.0
    nn = np.arange(1, M)
    S = np.sin(np.outer(theta, nn)) / nn  # (ne, M-1)
    idos = flat[0][None, :] * (1.0 - theta / np.pi)[:, None] - (S @ flat[1:]) / np.pi
    idos[x <= -1.0] = 0.0
    idos[x >= 1.0] = flat[0][None, :].repeat(int((x >= 1.0).sum()), axis=0)
    shape = (len(E),) + mu.shape[1:]
    return dos.reshape(shape), idos.reshape(shape)


def _edge(E, D, start, step, resolution, floor):
    """Band edge next to a gap: where the DOS reaches half of its first maximum beyond ``start``.

    The first maximum is the first local maximum after the DOS exceeds ``20 floor`` (kernel
    ripples in the gap stay below), searched up to 4 kernel widths further.  A kernel-broadened
    level is a symmetric bump, so the half-maximum points of the two edges sit equally far inside
    the gap from the edge levels.
    """
    n = len(E)
    i = start
    while 0 < i < n - 1 and D[i] <= 20.0 * floor:
        i += step
    reach = max(2, int(np.ceil(4.0 * resolution / abs(E[1] - E[0]))))
    stop = min(n - 1, max(0, i + step * reach))
    while i != stop and D[i + step] >= D[i]:
        i += step
    half = 0.5 * D[i]
    j = i
    while j != start and D[j - step] >= half:
        j -= step
    if j == start:
        return float(E[start])
    e0, e1, d0, d1 = E[j - step], E[j], D[j - step], D[j]
    return float(e0 + (half - d0) * (e1 - e0) / (d1 - d0)) if d1 != d0 else float(e1)


def fermi_from_idos(energies, dos, dos_err, idos, idos_err, n_electrons: float, z: float = 3.0,
                    gap_floor: float = 1e-3, resolution: float | None = None) -> tuple:
    """Fermi level from a KPM DOS and integrated DOS with error bars, without diagonalisation.

    1. ``E*``: the crossing ``N(E*) = n_electrons`` of the mean integrated DOS.
    2. The count is uncertain by ``z err_N``: the search window is the connected set around
       ``E*`` where ``|N(E) - n_electrons| <= z err_N(E)``.
    3. Gap: if the DOS is below ``gap_floor * mean DOS`` (the kernel tails of the band edges;
       the stochastic error in a gap is zero too, every vector's DOS vanishes there) on an interval inside that window, ``E_F`` is the middle of the widest such interval
       (the dense solver's mid-gap convention; the kernel broadens both band edges alike) and the
       returned window is that interval.  Stochastic count errors do not move it: the DOS in a
       gap is zero for every random vector.
    4. Otherwise (metal) ``E_F = E*`` and the window is ``E* +- z err_N / DOS``.

    Returns
    -------
    fermi_level : float, eV
    window : (lo, hi), eV
    """
    E = np.asarray(energies, float)
    if resolution is None:
        resolution = 4.0 * abs(E[1] - E[0])
    D = np.asarray(dos, float)
    N = np.asarray(idos, float)
    Ne = np.asarray(idos_err, float)
    d = N - float(n_electrons)
    if not (d[0] < 0 < d[-1]):
        raise ValueError(f"the electron count {n_electrons} is outside the integrated DOS range "
                         f"[{N[0]:.3f}, {N[-1]:.3f}] of the energy grid")
    c = int(np.nonzero(d >= 0)[0][0]) - 1  # d[c] < 0 <= d[c + 1]
    e_star = float(E[c] - d[c] * (E[c + 1] - E[c]) / (d[c + 1] - d[c]))
    ok = np.abs(d) <= z * Ne
    ok[c] = ok[c + 1] = True
    lo, hi = c, c + 1
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(E) - 1 and ok[hi + 1]:
        hi += 1
    floor = gap_floor * float(N[-1] - N[0]) / float(E[-1] - E[0])
    empty = D[lo:hi + 1] <= floor
    if empty.any():
        # widest run of empty points in the window
        x = np.concatenate([[0], empty.astype(np.int8), [0]])
        starts, stops = np.nonzero(np.diff(x) == 1)[0], np.nonzero(np.diff(x) == -1)[0]
        k = int(np.argmax(stops - starts))
        g0, g1 = lo + starts[k], lo + stops[k] - 1
        if g1 > g0:
            e_lo = _edge(E, D, g0, -1, resolution, floor)
            e_hi = _edge(E, D, g1, +1, resolution, floor)
            return float(0.5 * (e_lo + e_hi)), (float(E[g0]), float(E[g1]))
    dd = float(np.interp(e_star, E, D))
    half = z * float(np.interp(e_star, E, Ne)) / dd if dd > 0 else float(E[hi] - E[lo]) / 2
    return e_star, (e_star - half, e_star + half)


@dataclass(frozen=True)
class KPMResult:
    """KPM density of states (states/eV per cell, spin channels summed).

    Attributes
    ----------
    energies : ndarray, shape (ne,), eV
    dos, dos_error : ndarray, shape (ne,)
        DOS and its standard error from the spread over the random vectors.
    idos, idos_error : ndarray, shape (ne,)
        Integrated DOS (states below E per cell) and its standard error.
    fermi_level : float or None, eV
    fermi_window : (lo, hi) or None, eV
    pdos, pdos_error : dict label -> ndarray (ne,), or None
    n_moments, n_vectors : int
    kernel : str
    bounds : (emin, emax), eV, the Chebyshev interval
    kpts : ndarray, shape (nk, 3); weights : ndarray, shape (nk,)
    spin_degeneracy : int
    resolution : float, eV
        Jackson kernel width at the band centre, ``pi a / n_moments``.
    seconds : float
    """

    energies: np.ndarray
    dos: np.ndarray
    dos_error: np.ndarray
    idos: np.ndarray
    idos_error: np.ndarray
    fermi_level: float | None
    fermi_window: tuple | None
    pdos: dict | None
    pdos_error: dict | None
    n_moments: int
    n_vectors: int
    kernel: str
    bounds: tuple
    kpts: np.ndarray
    weights: np.ndarray
    spin_degeneracy: int
    resolution: float
    seconds: float

    def to_json(self) -> dict:
        """The ``acehamil dos --method kpm --json`` contract: the dense keys plus errors and settings."""
        out = {
            "energies": self.energies.tolist(), "dos": self.dos.tolist(), "dos_error": self.dos_error.tolist(),
            "idos": self.idos.tolist(), "idos_error": self.idos_error.tolist(),
            "fermi_level": self.fermi_level, "fermi_window": None if self.fermi_window is None else list(self.fermi_window),
            "units": {"energies": "eV", "dos": "states/eV per cell", "idos": "states per cell"},
            "spin_degeneracy": self.spin_degeneracy, "method": "kpm", "kernel": self.kernel,
            "n_moments": self.n_moments, "n_vectors": self.n_vectors, "bounds": list(self.bounds),
            "resolution_eV": self.resolution, "nkpts": int(len(self.kpts)), "seconds": self.seconds,
        }
        if self.pdos is not None:
            out["pdos"] = {k: v.tolist() for k, v in self.pdos.items()}
            out["pdos_error"] = {k: v.tolist() for k, v in self.pdos_error.items()}
        return out


def _mean_err(x):
    """Mean and standard error over the last axis."""
    R = x.shape[-1]
    m = x.mean(axis=-1)
    e = x.std(axis=-1, ddof=1) / np.sqrt(R) if R > 1 else np.full_like(m, np.inf)
    return m, e


def kpm_dos_sparse(Hk, Sk, energies, n_moments: int = 512, n_vectors: int = 16, kernel: str = "jackson", seed: int = 0,
                   bounds=None, spin_degeneracy: int = 2, s_method: str = "lu", groups=None) -> KPMResult:
    """KPM DOS of one pair of sparse matrices (one k-point, weight 1); see :func:`acehamil.tb.solvers.dos`.

    ``groups``: dict label -> orbital indices for a Mulliken PDOS.
    """
    rng = np.random.default_rng(seed)
    inv = SInverse(Sk, s_method)
    if bounds is None:
        lo, hi = spectral_bounds(Hk, Sk, inv)
        pad = BOUNDS_MARGIN * (hi - lo) + 1e-3
        bounds = (lo - pad, hi + pad)
    gl = None if groups is None else list(groups.values())
    mom = kpm_moments(Hk, Sk, n_moments, n_vectors, bounds, rng, gl, inv)
    return assemble_result([mom], np.ones(1), np.zeros((1, 3)), energies, kernel, spin_degeneracy, None,
                           None if groups is None else list(groups), bounds, mom.seconds)


def assemble_result(moments: list, weights, kpts, energies, kernel, spin_degeneracy, n_electrons, labels, bounds,
                    seconds) -> KPMResult:
    """Combine per-k (and per spin channel: pass them as more entries with their weights) moments."""
    E = np.asarray(energies, float).reshape(-1)
    dos = idos = None
    pd = None
    for mom, w in zip(moments, weights):
        d, i = reconstruct(mom.mu, mom.a, mom.b, E, kernel)
        d, i = spin_degeneracy * w * d, spin_degeneracy * w * i
        dos = d if dos is None else dos + d
        idos = i if idos is None else idos + i
        if mom.mu_groups is not None:
            p, _ = reconstruct(np.moveaxis(mom.mu_groups, 1, 0), mom.a, mom.b, E, kernel)
            p = spin_degeneracy * w * p  # (ne, ngroups, R)
            pd = p if pd is None else pd + p
    d_m, d_e = _mean_err(dos)
    i_m, i_e = _mean_err(idos)
    ef = win = None
    if n_electrons is not None:
        ef, win = fermi_from_idos(E, d_m, d_e, i_m, i_e, n_electrons,
                                  resolution=float(np.pi * moments[0].a / moments[0].mu.shape[0]))
    pdos = pdos_err = None
    if pd is not None:
        pm, pe = _mean_err(pd)
        pdos = {lab: pm[:, g] for g, lab in enumerate(labels)}
        pdos_err = {lab: pe[:, g] for g, lab in enumerate(labels)}
    M = moments[0].mu.shape[0]
    a = moments[0].a
    return KPMResult(E, d_m, d_e, i_m, i_e, ef, win, pdos, pdos_err, int(M), int(moments[0].mu.shape[1]), kernel,
                     tuple(float(x) for x in bounds), np.asarray(kpts, float).reshape(-1, 3),
                     np.asarray(weights, float), int(spin_degeneracy), float(np.pi * a / M), float(seconds))


def kpm_dos_from_levels(eps, weights, energies, bounds: tuple, n_moments: int, kernel: str = "jackson",
                        spin_degeneracy: int = 2) -> tuple:
    """The KPM DOS with *exact* moments from eigenvalues: the dense reference for the same kernel.

    Parameters
    ----------
    eps : array, shape (nk, nbands) or (nspin, nk, nbands), eV
    weights : array, shape (nk,), sum 1
    energies : array, shape (ne,), eV
    bounds : (emin, emax) enclosing all levels

    Returns
    -------
    dos, idos : ndarray, shape (ne,), states/eV per cell and states per cell
    """
    e = np.asarray(eps, float)
    e = e[None] if e.ndim == 2 else e
    w = np.asarray(weights, float)
    lo, hi = bounds
    a, b = (hi - lo) / 2.0, (hi + lo) / 2.0
    x = ((e - b) / a)  # (ns, nk, nb)
    if np.abs(x).max() >= 1.0:
        raise ValueError("levels outside the Chebyshev bounds")
    M = int(n_moments)
    theta = np.arccos(x)
    mu = np.zeros(M)
    for q in range(M):
        mu[q] = float((np.cos(q * theta).sum(axis=(0, 2)) * w).sum())
    d, i = reconstruct(mu, a, b, energies, kernel)
    return spin_degeneracy * d, spin_degeneracy * i

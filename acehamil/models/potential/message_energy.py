"""Prediction path of the multilayer model's second layer: ``sum_i w_{Z_i} . Phi_i`` and its gradients.

:meth:`MessageLayer.forward` / :meth:`~MessageLayer.backward` form ``Phi`` and its general
adjoint (the fit's design rows need them); prediction needs only one contraction with
fixed weights, which this module computes without forming ``Phi``:

* pair quantities are kept pair-minor, shape ``(channels, n_pairs)``, so every
  elementwise product runs over contiguous pairs (numpy's inner loop is the long
  axis, not a 3- or 6-long one);
* sums over each atom's own pairs are segment sums over the neighbour list, sorted
  by ``(i, species of j)`` (``np.add.reduceat``), not sparse products of
  pair-major copies;
* the pair work runs over blocks of consecutive centres (about ``chunk_pairs`` pairs
  each), so the per-pair temporaries stay small (cache-sized) instead of a few
  MB each per call.

The arithmetic is that of the pair-major version it replaces (the tests compare it
with :meth:`~MessageLayer.forward` and :meth:`~MessageLayer.backward`).
"""

from __future__ import annotations

import numpy as np

from .embedded import EMBEDDINGS
from .model import _species_index


def _identity(x):
    return x, np.ones_like(x), np.zeros_like(x)


#: Embeddings of the invariant messages: name -> ``x -> (F, F', F'')``.
MESSAGE_EMBEDDINGS = {"identity": _identity, **EMBEDDINGS}
#: Pairs per block of the pair loops (temporaries ~ 30 rows x this many doubles).
CHUNK_PAIRS = 4096


def radial_t(rb, r: np.ndarray, r_cut: float) -> tuple[np.ndarray, np.ndarray]:
    """``R_n(r)`` and ``dR_n/dr`` for distances all below ``r_cut``, pair-minor, shapes (n_max, P).

    The orthonormal polynomials times envelope of :class:`~acehamil.basis.radial.RadialBasis`
    (``rb``), Legendre recursion over rows of contiguous pairs.
    """
    n, pw = rb.n_max, rb.spec.envelope_power
    u = r * (1.0 / r_cut)
    x = 2.0 * u - 1.0
    L = np.empty((n, len(r)))
    dL = np.empty((n, len(r)))
    L[0], dL[0] = 1.0, 0.0
    if n > 1:
        L[1], dL[1] = x, 1.0
    for k in range(1, n - 1):
        L[k + 1] = ((2 * k + 1) / (k + 1)) * x * L[k] - (k / (k + 1)) * L[k - 1]
        dL[k + 1] = dL[k - 1] + (2 * k + 1) * L[k]
    om = 1.0 - u
    env = om**pw
    denv = (-pw / r_cut) * om ** (pw - 1)
    dL *= (2.0 / r_cut) * env
    dL += L * denv
    L *= env
    T = rb._T.T
    return T @ L, T @ dL


def _segment_sum(Y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive column runs of ``Y`` (m, P): run ``k`` has ``counts[k]`` columns; shape (m, len(counts))."""
    out = np.zeros((Y.shape[0], len(counts)))
    nz = counts > 0
    if Y.shape[1]:
        starts = np.cumsum(counts) - counts
        out[:, nz] = np.add.reduceat(Y, starts[nz], axis=1)
    return out


def _radial_moments(R: np.ndarray, rhat: np.ndarray, key: np.ndarray, n_segments: int) -> np.ndarray:
    """Per segment, the sums over its pairs of ``R`` and of ``R * rhat_x``.

    Parameters
    ----------
    R : ndarray, shape (n, P)
        Radial functions of the P pairs.
    rhat : ndarray, shape (3, P)
        Unit bond vectors.
    key : ndarray of int, shape (P,)
        Segment of each pair, non-decreasing (pairs sorted by segment).
    n_segments : int

    Returns
    -------
    ndarray, shape (4, n, n_segments)
        ``[sum R, sum R rhat_x, sum R rhat_y, sum R rhat_z]``.
    """
    n, P = R.shape
    Y = np.empty((4, n, P))
    Y[0] = R
    for x in range(3):
        np.multiply(R, rhat[x], out=Y[1 + x])
    return _segment_sum(Y.reshape(4 * n, P), np.bincount(key, minlength=n_segments)).reshape(4, n, n_segments)


def _blocks(i: np.ndarray, natoms: int, chunk_pairs: int) -> list:
    """Pair slices ``[p0, p1)`` covering consecutive centres, about ``chunk_pairs`` pairs each, with their atoms ``(a, b)``."""
    P = len(i)
    per_atom = max(P / max(natoms, 1), 1.0)
    step = max(int(chunk_pairs / per_atom), 1)
    bounds = np.arange(0, natoms + step, step)
    bounds[-1] = natoms
    bounds = np.unique(np.minimum(bounds, natoms))
    starts = np.searchsorted(i, bounds)
    return [(int(bounds[k]), int(bounds[k + 1]), int(starts[k]), int(starts[k + 1])) for k in range(len(bounds) - 1)]


def message_energy(layer, numbers, pairs, weights: np.ndarray, gradients: bool = True, chunk_pairs: int = CHUNK_PAIRS):
    """Second-layer site energies ``w_{Z_i} . Phi_i`` and their gradients (see :meth:`MessageLayer.energy`).

    Parameters
    ----------
    layer : MessageLayer
    numbers : ndarray of int, shape (natoms,)
    pairs : NeighbourPairs
        All pairs within at least ``layer.cutoff``, both directions, sorted by ``i``.
    weights : ndarray, shape (n_species, layer.n_features)
    gradients : bool
    chunk_pairs : int
        Pairs per block of the pair loops (memory/speed only; results do not depend on it).

    Returns
    -------
    e : ndarray, shape (natoms,), eV
    dEdr : ndarray, shape (natoms, 3) or None
    dEde : ndarray, shape (3, 3) or None
        ``dE/d strain``.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    natoms = len(numbers)
    spec, ns, ks, nm = layer.spec, len(layer.species), layer.n_channels, layer.n_messages
    n1, n2 = spec.n_message, spec.n_pass
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (ns, layer.n_features):
        raise ValueError(f"weights must have shape ({ns}, {layer.n_features}), got {weights.shape}")
    if int(chunk_pairs) < 1:
        raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
    sidx = _species_index(layer.species, numbers)
    if ns > 1 and len(pairs.i):  # sorted by (i, species of j): the segments of each atom's channels are runs
        pairs = pairs.select(np.argsort(pairs.i * ns + sidx[pairs.j], kind="stable"))
    elif len(pairs.i) > 1 and np.any(np.diff(pairs.i) < 0):
        raise ValueError("pairs must be sorted by i")
    dmax = float(pairs.dist.max()) if len(pairs.dist) else 0.0
    p1 = pairs if dmax < spec.r_message else pairs.select(pairs.dist < spec.r_message)
    if np.any(p1.dist <= 0):
        raise ValueError("two atoms sit at the same position")
    same = (spec.r_pass, spec.n_pass) == (spec.r_message, spec.n_message)  # both layers on the same pairs and radials
    p2 = p1 if same else (pairs if dmax < spec.r_pass else pairs.select(pairs.dist < spec.r_pass))
    P1, P2 = len(p1.dist), len(p2.dist)

    # ---- first layer: rho[i, (t, a)] = sum R_a, V[i, (t, a), x] = sum R_a rhat_x over neighbours of species t
    R1, dR1 = radial_t(layer._r1, p1.dist, spec.r_message)
    rhat1 = p1.vec.T / p1.dist  # (3, P1)
    key1 = p1.i * ns + sidx[p1.j] if ns > 1 else p1.i
    S1 = _radial_moments(R1, rhat1, key1, natoms * ns).reshape(4, n1, natoms, ns)
    # per atom, channel-major k = t * n1 + a
    rho = S1[0].transpose(1, 2, 0).reshape(natoms, ks)
    V = S1[1:].transpose(2, 3, 1, 0).reshape(natoms, ks, 3)
    x_ = (rho - layer.shift) / layer.scale
    M = np.empty((natoms, len(spec.embeddings), ks))
    dsd = np.empty_like(M)
    for e, name in enumerate(spec.embeddings):
        F, dF, _ = MESSAGE_EMBEDDINGS[name](x_)
        M[:, e], dsd[:, e] = F, dF / layer.scale
    M = M.reshape(natoms, nm)

    if same:
        R2, dR2, rhat2 = R1, dR1, rhat1
    else:
        R2, dR2 = radial_t(layer._r2, p2.dist, spec.r_pass)
        rhat2 = p2.vec.T / p2.dist
    W = weights.reshape(ns, ns, n2, layer.block)
    wS, wP, wQ = W[..., :nm], W[..., nm : nm + ks], W[..., nm + ks :]
    # weights contracted with each atom's own messages, column j * ns + s (s: species of the centre i):
    # mS[:, j, s] = wS[s, t_j] M_j  (n2,), U[x, :, j, s] = wP[s, t_j] V_j[:, x]  (n2,)
    mS = np.empty((n2, natoms, ns))
    U = np.empty((3, n2, natoms, ns))
    by_species = [np.flatnonzero(sidx == t) for t in range(ns)] if ns > 1 else [slice(None)]
    for t, at in enumerate(by_species):
        for s in range(ns):
            mS[:, at, s] = wS[s, t] @ M[at].T
            U[:, :, at, s] = np.einsum("nb,jbx->xnj", wP[s, t], V[at])
    mS = mS.reshape(n2, natoms * ns)
    U = U.reshape(3 * n2, natoms * ns)
    VT = np.ascontiguousarray(V.transpose(2, 1, 0)).reshape(3 * ks, natoms)  # (x, k) rows, atoms columns
    wQs = [[wQ[s, t] for t in range(ns)] for s in range(ns)]
    wQa = [[(wQ[s, t] + wQ[t, s]).T for t in range(ns)] for s in range(ns)]  # Q adjoint: both ends of each pair

    e = np.zeros(natoms)
    g2 = np.empty((3, P2)) if gradients else None
    dVq = np.zeros((3 * ks, natoms)) if gradients else None
    for a, b, q0, q1 in _blocks(p2.i, natoms, chunk_pairs):
        if q0 == q1:
            continue
        i, j = p2.i[q0:q1], p2.j[q0:q1]
        R, rh = R2[:, q0:q1], rhat2[:, q0:q1]
        si = sidx[i]
        js = j * ns + si if ns > 1 else j
        Uq = np.take(U, js, axis=1).reshape(3, n2, -1)
        X = np.take(mS, js, axis=1)
        for x in range(3):
            X += Uq[x] * rh[x]
        Vj = np.take(VT, j, axis=1)
        Vi = np.take(VT, i, axis=1)
        VV = (Vi * Vj).reshape(3, ks, -1).sum(axis=0)
        if ns > 1:
            tj = sidx[j]
            for s in range(ns):
                for t in range(ns):
                    m = np.flatnonzero((si == s) & (tj == t))
                    if len(m):
                        X[:, m] += wQs[s][t] @ VV[:, m]
        else:
            X += wQs[0][0] @ VV
        counts = np.bincount(i - a, minlength=b - a)
        e[a:b] = _segment_sum((R * X).sum(axis=0)[None], counts)[0]
        if not gradients:
            continue
        uP = (R[None] * Uq).sum(axis=1)  # (3, p)
        d = p2.dist[q0:q1]
        along = (dR2[:, q0:q1] * X).sum(axis=0) - (uP * rh).sum(axis=0) / d
        g2[:, q0:q1] = along * rh + uP / d
        # Q adjoint to V_i: sum over i's pairs of (R wQ[s, t] + R wQ[t, s]^T...) V_j
        if ns > 1:
            aQ = np.empty((ks, q1 - q0))
            for s in range(ns):
                for t in range(ns):
                    m = np.flatnonzero((si == s) & (tj == t))
                    if len(m):
                        aQ[:, m] = wQa[s][t] @ R[:, m]
        else:
            aQ = wQa[0][0] @ R
        Z = Vj.reshape(3, ks, -1) * aQ
        dVq[:, a:b] = _segment_sum(Z.reshape(3 * ks, -1), counts)
    if not gradients:
        return e, None, None

    # ---- message adjoints per atom; rhoP / VP: the pass radials summed over each atom's own pairs
    if same:
        rhoP, VP = rho.reshape(natoms, ns, n1), V.reshape(natoms, ns, n1, 3)
    else:
        key2 = p2.i * ns + sidx[p2.j] if ns > 1 else p2.i
        S2 = _radial_moments(R2, rhat2, key2, natoms * ns).reshape(4, n2, natoms, ns)
        rhoP, VP = S2[0].transpose(1, 2, 0), S2[1:].transpose(2, 3, 1, 0)
    dM = np.zeros((natoms, nm))
    dV = dVq.reshape(3, ks, natoms).transpose(2, 1, 0).copy()  # (natoms, ks, 3)
    for t, at in enumerate(by_species):
        for s in range(ns):
            dM[at] += rhoP[at, s] @ wS[s, t]
            dV[at] -= np.einsum("nb,jnx->jbx", wP[s, t], VP[at, s])
    # first layer pull-back: rho_i[t, a] += R_a(r), V_i[t, a] += R_a(r) rhat; adjoints [drho, dV] per channel
    dX = np.empty((4, n1, natoms, ns))
    dX[0] = np.einsum("nek,nek->nk", dM.reshape(natoms, -1, ks), dsd).reshape(natoms, ns, n1).transpose(2, 0, 1)
    dX[1:] = dV.reshape(natoms, ns, n1, 3).transpose(3, 2, 0, 1)
    dX = dX.reshape(4 * n1, natoms * ns)
    g1 = g2 if same else np.zeros((3, P1))
    for a, b, q0, q1 in _blocks(p1.i, natoms, chunk_pairs):
        if q0 == q1:
            continue
        lX = np.take(dX, key1[q0:q1], axis=1).reshape(4, n1, -1)
        R, dR, rh, d = R1[:, q0:q1], dR1[:, q0:q1], rhat1[:, q0:q1], p1.dist[q0:q1]
        u = (R[None] * lX[1:]).sum(axis=1)  # (3, p): sum_a R_a dV_a
        du = (dR[None] * lX).sum(axis=1)  # (4, p): [sum_a R_a' drho_a, sum_a R_a' dV_a]
        u /= d
        radial = du[0] + ((du[1:] - u) * rh).sum(axis=0)
        g1[:, q0:q1] += radial * rh + u
    dEdr = np.empty((natoms, 3))
    for x in range(3):
        dEdr[:, x] = np.bincount(p1.j, g1[x], natoms) - np.bincount(p1.i, g1[x], natoms)
        if not same:
            dEdr[:, x] += np.bincount(p2.j, g2[x], natoms) - np.bincount(p2.i, g2[x], natoms)
    dEde = g1 @ p1.vec
    if not same:
        dEde += g2 @ p2.vec
    return e, dEdr, dEde

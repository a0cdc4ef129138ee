"""Multilayer (semi-local, message-passing) ACE potential: a second layer on top of the linear one.

The model::

    E = sum_i [ E0(Z_i) + c_{Z_i} . B(R_i) + w_{Z_i} . Phi_i ] + E_rep

``c . B`` is the linear ACE site energy (:mod:`.model`); optionally the first layer
also carries embedded densities, ``+ sum_k F_k(d_k . B)`` (:mod:`.embedded`; the
"embedded multilayer" model, fitted by :func:`~.embedded_fit.fit_embedded_multilayer`).  ``Phi_i`` are the
invariant features of a second layer (as in multilayer / graph ACE, Bochkarev et
al.): its particles are the neighbours ``j`` of ``i`` within ``r_pass``, and each
carries the per-atom outputs of the first layer (messages) as features:

* first layer, per atom ``j``: the correlation-order-1 ACE features of ``j``'s own
  environment, one per (neighbour species ``u``, radial function ``a``), invariant
  ``rho_j[u, a] = sum_k g_a(r_jk)`` and ``L = 1`` (polar vector)
  ``V_j[u, a] = sum_k g_a(r_jk) rhat_jk``; the invariant messages are
  ``s_j[e, u, a] = F_e((rho_j[u, a] - shift) / scale)`` for each embedding
  ``F_e`` (:data:`MESSAGE_EMBEDDINGS`; ``shift``/``scale`` fixed from the training
  set), the vector messages are ``V_j`` itself;
* second layer, per atom ``i``, per neighbour species ``t`` and radial function
  ``n`` (``R_n``, cutoff ``r_pass``), summing over neighbours ``j`` of species ``t``:

  - ``S[t, n, m] = sum_j R_n(r_ij) s_j[m]``                (invariant messages)
  - ``P[t, n, b] = sum_j R_n(r_ij) rhat_ij . V_j[b]``      (L = 1 messages coupled to the bond)
  - ``Q[t, n, b] = V_i[b] . sum_j R_n(r_ij) V_j[b]``       (L = 1 messages coupled to the centre's own)

``Phi`` is semi-local: ``E`` depends on atoms up to ``r_message + r_pass`` away.
Every term is a scalar product of O(3)-equivariant quantities (``V`` and ``rhat``
are polar vectors), so ``E`` is invariant under proper and improper rotations,
permutations and translations; forces and stress are exact gradients (one forward
pass, one reverse pass: :meth:`MessageLayer.backward`).  The model is linear in
``(E0, c, w)``, so it is fitted by the linear fit's ridge and CV machinery with
the ``Phi`` columns appended (:func:`~acehamil.models.potential.multilayer_fit.fit_multilayer`).

Examples
--------
>>> from ase.build import bulk
>>> layer = MessageLayer(MessageSpec(n_message=3, r_message=4.0, n_pass=2, r_pass=4.0), (14,))
>>> atoms = bulk("Si", "diamond", a=5.43)
>>> from ...structure.neighbours import neighbour_pairs
>>> phi, state = layer.forward(atoms.numbers, neighbour_pairs(atoms, layer.cutoff))
>>> phi.shape == (2, layer.n_features)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from ...basis.radial import RadialBasis
from ...basis.spec import RadialSpec
from ...structure.neighbours import neighbour_pairs
from .message_energy import CHUNK_PAIRS, MESSAGE_EMBEDDINGS, message_energy
from .model import VOIGT, ACEPotential, _species_index, cell_volume, evaluate_sites, scatter_pair_gradients
from .repulsion import RepulsionSpec


@dataclass(frozen=True)
class MessageSpec:
    """Settings of the second (message) layer.

    Attributes
    ----------
    n_message : int
        Radial functions of the first-layer messages (per neighbour species). [6]
    r_message : float
        Cutoff of the first-layer messages, Å. [5.0]
    n_pass : int
        Radial functions of the second layer. [6]
    r_pass : float
        Cutoff of the second layer (message passing), Å. [5.0]
    embeddings : tuple of str
        Embeddings applied to each scaled invariant message (:data:`MESSAGE_EMBEDDINGS`). [("identity", "fs")]
    envelope_power : int
        Envelope exponent of both radial bases (>= 2). [2]
    """

    n_message: int = 6
    r_message: float = 5.0
    n_pass: int = 6
    r_pass: float = 5.0
    embeddings: tuple = ("identity", "fs")
    envelope_power: int = 2

    def __post_init__(self):
        for name in ("n_message", "n_pass", "envelope_power"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.envelope_power < 2:
            raise ValueError(f"envelope_power must be >= 2, got {self.envelope_power}")
        for name in ("r_message", "r_pass"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0 Å, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if isinstance(self.embeddings, str):
            raise TypeError("embeddings must be a sequence of names, not one string")
        emb = tuple(str(e) for e in self.embeddings)
        if not emb:
            raise ValueError("embeddings needs at least one name")
        for e in emb:
            if e not in MESSAGE_EMBEDDINGS:
                raise ValueError(f"unknown message embedding {e!r}; known: {sorted(MESSAGE_EMBEDDINGS)}")
        if len(set(emb)) != len(emb):
            raise ValueError(f"embeddings must be distinct, got {emb}")
        object.__setattr__(self, "embeddings", emb)

    def to_dict(self) -> dict:
        return {"n_message": self.n_message, "r_message": self.r_message, "n_pass": self.n_pass, "r_pass": self.r_pass,
                "embeddings": list(self.embeddings), "envelope_power": self.envelope_power}

    @classmethod
    def from_dict(cls, d: dict) -> "MessageSpec":
        return cls(**{**d, "embeddings": tuple(d["embeddings"])})


@dataclass(frozen=True, eq=False)
class LayerState:
    """Intermediate arrays of :meth:`MessageLayer.forward`, reused by :meth:`MessageLayer.backward`."""

    natoms: int
    sidx: np.ndarray
    p1: object
    R1: np.ndarray
    dR1: np.ndarray
    rhat1: np.ndarray
    chan1: np.ndarray
    p2: object
    R2: np.ndarray
    dR2: np.ndarray
    rhat2: np.ndarray
    t2: np.ndarray
    s: np.ndarray
    ds: np.ndarray
    V: np.ndarray


class MessageLayer:
    """The second layer's features ``Phi`` and their reverse-mode gradients.

    Parameters
    ----------
    spec : MessageSpec
    species : sequence of int
        Model species (neighbour-species order of the message channels).
    shift, scale : array_like, shape (n_species * n_message,), optional
        Affine normalisation of the invariant messages before the embeddings
        (default 0 and 1); fixed from the training set by the fit.
    """

    def __init__(self, spec: MessageSpec, species, shift=None, scale=None):
        if not isinstance(spec, MessageSpec):
            raise TypeError(f"spec must be a MessageSpec, got {type(spec).__name__}")
        self.spec = spec
        self.species = tuple(int(z) for z in species)
        if not self.species or len(set(self.species)) != len(self.species):
            raise ValueError(f"species must be distinct and non-empty, got {species}")
        ks = self.n_channels
        shift = np.zeros(ks) if shift is None else np.array(shift, dtype=float)
        scale = np.ones(ks) if scale is None else np.array(scale, dtype=float)
        if shift.shape != (ks,) or scale.shape != (ks,):
            raise ValueError(f"shift and scale must have shape ({ks},), got {shift.shape} and {scale.shape}")
        if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("shift must be finite and scale finite and > 0")
        shift.flags.writeable = False
        scale.flags.writeable = False
        self.shift, self.scale = shift, scale
        self._r1 = RadialBasis(RadialSpec(spec.n_message, spec.r_message, envelope_power=spec.envelope_power))
        self._r2 = RadialBasis(RadialSpec(spec.n_pass, spec.r_pass, envelope_power=spec.envelope_power))

    # -- sizes ----------------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        """Message channels per atom (neighbour species x radial functions), ``Ks``."""
        return len(self.species) * self.spec.n_message

    @property
    def n_messages(self) -> int:
        """Invariant messages per atom (embeddings x channels)."""
        return len(self.spec.embeddings) * self.n_channels

    @property
    def block(self) -> int:
        """Features per (neighbour species, radial function) of the second layer."""
        return self.n_messages + 2 * self.n_channels

    @property
    def n_features(self) -> int:
        """Second-layer invariants per atom, ``n_species * n_pass * block``."""
        return len(self.species) * self.spec.n_pass * self.block

    @property
    def cutoff(self) -> float:
        """Neighbour-list cutoff the layer needs, Å (the reach of E is ``r_message + r_pass``)."""
        return max(self.spec.r_message, self.spec.r_pass)

    def feature_degrees(self) -> np.ndarray:
        """Per feature, ``n + a`` (+1 for the L = 1 blocks): a smoothness-prior degree, shape (n_features,)."""
        a = np.tile(np.arange(self.spec.n_message), len(self.species)).astype(float)
        per_n = np.concatenate([np.tile(a, len(self.spec.embeddings)), a + 1.0, a + 1.0])
        n = np.arange(self.spec.n_pass, dtype=float)
        blk = n[:, None] + per_n[None, :]
        return np.tile(blk.ravel(), len(self.species))

    # -- forward --------------------------------------------------------------------------
    def _first_layer(self, numbers, pairs):
        """Message channels ``rho`` (natoms, Ks) and ``V`` (natoms, Ks, 3), with the pair data behind them."""
        natoms = len(numbers)
        sidx = _species_index(self.species, numbers)
        n1, ks = self.spec.n_message, self.n_channels
        p1 = pairs.select(pairs.dist < self.spec.r_message)
        if np.any(p1.dist <= 0):
            raise ValueError("two atoms sit at the same position")
        R1, dR1 = self._r1.evaluate(p1.dist, np.full(len(p1.dist), self.spec.r_message), gradients=True)
        rhat1 = p1.vec / p1.dist[:, None]
        chan1 = sidx[p1.j][:, None] * n1 + np.arange(n1)[None, :]  # (P1, n1)
        # one sparse scatter of [R, R rhat] per pair to (centre, neighbour species)
        ns, P1 = len(self.species), len(p1.dist)
        G = scipy.sparse.csr_matrix((np.ones(P1), (p1.i * ns + sidx[p1.j], np.arange(P1))), shape=(natoms * ns, P1))
        RX = np.empty((P1, n1, 4))
        RX[:, :, 0] = R1
        RX[:, :, 1:] = R1[:, :, None] * rhat1[:, None, :]
        out = np.asarray(G @ RX.reshape(P1, -1)).reshape(natoms, ks, 4)
        rho, V = np.ascontiguousarray(out[:, :, 0]), np.ascontiguousarray(out[:, :, 1:])
        return sidx, p1, R1, dR1, rhat1, chan1, rho, V

    def densities(self, numbers, pairs) -> np.ndarray:
        """Unscaled invariant message channels ``rho`` of every atom, shape (natoms, Ks)."""
        return self._first_layer(np.asarray(numbers, dtype=np.int64), pairs)[6]

    def forward(self, numbers, pairs):
        """Features ``Phi`` of every atom.

        Parameters
        ----------
        numbers : ndarray of int, shape (natoms,)
        pairs : NeighbourPairs
            All pairs within at least :attr:`cutoff`, sorted by ``i``.

        Returns
        -------
        phi : ndarray, float64, shape (natoms, n_features)
        state : LayerState
        """
        numbers = np.asarray(numbers, dtype=np.int64)
        natoms = len(numbers)
        spec, ns, ks = self.spec, len(self.species), self.n_channels
        n2 = spec.n_pass
        sidx, p1, R1, dR1, rhat1, chan1, rho, V = self._first_layer(numbers, pairs)
        p2 = pairs.select(pairs.dist < spec.r_pass)
        if np.any(p2.dist <= 0):
            raise ValueError("two atoms sit at the same position")
        x = (rho - self.shift) / self.scale
        s = np.empty((natoms, len(spec.embeddings), ks))
        ds = np.empty_like(s)
        for e, name in enumerate(spec.embeddings):
            F, dF, _ = MESSAGE_EMBEDDINGS[name](x)
            s[:, e], ds[:, e] = F, dF / self.scale
        M = s.reshape(natoms, -1)
        R2, dR2 = self._r2.evaluate(p2.dist, np.full(len(p2.dist), spec.r_pass), gradients=True)
        rhat2 = p2.vec / p2.dist[:, None]
        t2 = sidx[p2.j]
        P2 = len(p2.dist)
        # pair -> (centre, neighbour species) scatter
        G = scipy.sparse.csr_matrix((np.ones(P2), (p2.i * ns + t2, np.arange(P2))), shape=(natoms * ns, P2))
        Vj = V[p2.j]  # (P2, ks, 3)
        proj = np.einsum("qbx,qx->qb", Vj, rhat2)
        Sq = (R2[:, :, None] * M[p2.j][:, None, :]).reshape(P2, -1)
        Pq = (R2[:, :, None] * proj[:, None, :]).reshape(P2, -1)
        Wq = (R2[:, :, None, None] * Vj[:, None, :, :]).reshape(P2, -1)
        S = np.asarray(G @ Sq).reshape(natoms, ns, n2, -1)
        Pf = np.asarray(G @ Pq).reshape(natoms, ns, n2, ks)
        W = np.asarray(G @ Wq).reshape(natoms, ns, n2, ks, 3)
        Q = np.einsum("itnbx,ibx->itnb", W, V)
        phi = np.concatenate([S, Pf, Q], axis=-1).reshape(natoms, -1)
        state = LayerState(natoms, sidx, p1, R1, dR1, rhat1, chan1, p2, R2, dR2, rhat2, t2, s, ds, V)
        return phi, state

    # -- reverse --------------------------------------------------------------------------
    def backward(self, state: LayerState, lam: np.ndarray):
        """Gradients of ``sum_i lam[c, i] . Phi_i`` with respect to the pair vectors.

        Parameters
        ----------
        state : LayerState
            From :meth:`forward`.
        lam : ndarray, shape (C, natoms, n_features)
            Weights (adjoints) of the features; ``C`` independent right-hand sides
            (prediction: 1, the fit's design rows: one per column).

        Returns
        -------
        g1 : ndarray, shape (C, P1, 3)
            ``d/d vec_p`` for the message pairs ``state.p1``, eV/Å per unit weight.
        g2 : ndarray, shape (C, P2, 3)
            ``d/d vec_q`` for the second-layer pairs ``state.p2``.
        """
        spec, ns, ks, nm = self.spec, len(self.species), self.n_channels, self.n_messages
        n2 = spec.n_pass
        natoms = state.natoms
        lam = np.asarray(lam, dtype=float)
        if lam.ndim != 3 or lam.shape[1:] != (natoms, self.n_features):
            raise ValueError(f"lam must have shape (C, {natoms}, {self.n_features}), got {lam.shape}")
        C = lam.shape[0]
        p2, R2, dR2, rhat2 = state.p2, state.R2, state.dR2, state.rhat2
        P2 = len(p2.dist)
        L = lam.reshape(C, natoms, ns, n2, self.block)[:, p2.i, state.t2]  # (C, P2, n2, block)
        RR = np.stack([R2, dR2], axis=1)  # (P2, 2, n2)
        AB = np.matmul(RR[None], L)  # (C, P2, 2, block): sum_n R_n lam, sum_n R_n' lam
        M = state.s.reshape(natoms, -1)
        V = state.V
        Vj, Vi = V[p2.j], V[p2.i]
        # invariant messages
        a = AB[:, :, 0, :nm]
        g2 = np.einsum("cqm,qm->cq", AB[:, :, 1, :nm], M[p2.j])[:, :, None] * rhat2[None]
        # L = 1 messages along the bond
        aP, bP = AB[:, :, 0, nm : nm + ks], AB[:, :, 1, nm : nm + ks]
        proj = np.einsum("qbx,qx->qb", Vj, rhat2)
        perp = (Vj - proj[:, :, None] * rhat2[:, None, :]) / p2.dist[:, None, None]
        g2 += np.einsum("cqb,qb->cq", bP, proj)[:, :, None] * rhat2[None] + np.matmul(aP[:, :, None, :], perp[None])[:, :, 0]
        # L = 1 messages against the centre's own
        aQ, bQ = AB[:, :, 0, nm + ks :], AB[:, :, 1, nm + ks :]
        g2 += np.einsum("cqb,qb->cq", bQ, np.einsum("qbx,qbx->qb", Vi, Vj))[:, :, None] * rhat2[None]
        # adjoints of the messages, scattered to atoms (as neighbour j, and as centre i for Q)
        to_j = scipy.sparse.csr_matrix((np.ones(P2), (p2.j, np.arange(P2))), shape=(natoms, P2))
        to_i = scipy.sparse.csr_matrix((np.ones(P2), (p2.i, np.arange(P2))), shape=(natoms, P2))
        dM = np.stack([np.asarray(to_j @ a[c]) for c in range(C)])  # (C, natoms, nm)
        dVq_j = aP[..., None] * rhat2[None, :, None, :] + aQ[..., None] * Vi[None]
        dVq_i = aQ[..., None] * Vj[None]
        dV = np.stack([np.asarray(to_j @ dVq_j[c].reshape(P2, -1) + to_i @ dVq_i[c].reshape(P2, -1)) for c in range(C)])
        dV = dV.reshape(C, natoms, ks, 3)
        drho = np.einsum("cnek,nek->cnk", dM.reshape(C, natoms, -1, ks), state.ds)
        # first layer: rho_j[u, a] += g_a(r), V_j[u, a] += g_a(r) rhat
        p1, R1, dR1, rhat1 = state.p1, state.R1, state.dR1, state.rhat1
        lr = drho[:, p1.i[:, None], state.chan1]  # (C, P1, n1)
        lV = dV[:, p1.i[:, None], state.chan1]  # (C, P1, n1, 3)
        g1 = np.einsum("cpa,pa->cp", lr, dR1)[:, :, None] * rhat1[None]
        pr = np.einsum("cpax,px->cpa", lV, rhat1)
        g1 += np.einsum("cpa,pa->cp", pr, dR1)[:, :, None] * rhat1[None]
        g1 += (np.einsum("cpax,pa->cpx", lV, R1) - np.einsum("cpa,pa->cp", pr, R1)[:, :, None] * rhat1[None]) / p1.dist[None, :, None]
        return g1, g2

    def energy(self, numbers, pairs, weights: np.ndarray, gradients: bool = True, chunk_pairs: int = CHUNK_PAIRS):
        """Second-layer site energies ``w_{Z_i} . Phi_i`` and their gradients, without forming ``Phi``.

        Equal to ``einsum("if,if->i", phi, weights[sidx])`` of :meth:`forward` and to
        :meth:`backward` with ``lam = weights[sidx][None]`` (tests), but computed pair by
        pair as ``sum_n R_n(r_ij) X_ij[n]`` with ``X = wS M_j + wP (rhat . V_j) + wQ (V_i . V_j)``,
        the weights contracted with the per-atom messages before they are gathered to the
        pairs, which is what prediction needs (:func:`.message_energy.message_energy`:
        pair-minor arrays, segment sums, blocks of ``chunk_pairs`` pairs).  The message
        adjoints of the neighbours (``sum_{q: j_q = j}``) are taken over the reversed pairs
        (``sum_{q: i_q = j}``, ``rhat -> -rhat``), so ``pairs`` must be a full list (both
        directions of every pair), as :func:`~acehamil.structure.neighbours.neighbour_pairs` gives.

        Parameters
        ----------
        numbers : ndarray of int, shape (natoms,)
        pairs : NeighbourPairs
            All pairs within at least :attr:`cutoff`, both directions, sorted by ``i``.
        weights : ndarray, shape (n_species, n_features)
        gradients : bool
        chunk_pairs : int
            Pairs per block of the pair loops (memory and speed only).

        Returns
        -------
        e : ndarray, shape (natoms,), eV
        dEdr : ndarray, shape (natoms, 3) or None
        dEde : ndarray, shape (3, 3) or None
            ``dE/d strain``.
        """
        return message_energy(self, numbers, pairs, weights, gradients, chunk_pairs)

    def gradients(self, state: LayerState, lam: np.ndarray):
        """``d/dr`` (C, natoms, 3) and ``d/d strain`` (C, 3, 3) of ``sum_i lam[c, i] . Phi_i``."""
        g1, g2 = self.backward(state, lam)
        n = state.natoms
        dEdr = np.stack([scatter_pair_gradients(n, state.p1.i, state.p1.j, g1[c]) + scatter_pair_gradients(n, state.p2.i, state.p2.j, g2[c])
                         for c in range(len(g1))])
        dEde = np.einsum("cpa,pb->cab", g1, state.p1.vec) + np.einsum("cqa,qb->cab", g2, state.p2.vec)
        return dEdr, dEde

    def design(self, numbers, pairs, gradients: bool = True, chunk: int = 16):
        """Linear design rows of ``sum_i w_{Z_i} . Phi_i`` in the coefficients ``w`` (species-major).

        Returns
        -------
        energy : ndarray, shape (n_species * n_features,)
        dEdr : ndarray, shape (natoms, 3, n_species * n_features) or None
        dEde : ndarray, shape (3, 3, n_species * n_features) or None
        """
        phi, state = self.forward(numbers, pairs)
        ns, nf, natoms = len(self.species), self.n_features, state.natoms
        energy = np.concatenate([phi[state.sidx == s].sum(axis=0) for s in range(ns)])
        if not gradients:
            return energy, None, None
        ncol = ns * nf
        dEdr = np.zeros((natoms, 3, ncol))
        dEde = np.zeros((3, 3, ncol))
        for c0 in range(0, ncol, chunk):
            c1 = min(ncol, c0 + chunk)
            lam = np.zeros((c1 - c0, natoms, nf))
            for c in range(c0, c1):
                s, f = divmod(c, nf)
                lam[c - c0, state.sidx == s, f] = 1.0
            r, e = self.gradients(state, lam)
            dEdr[:, :, c0:c1] = r.transpose(1, 2, 0)
            dEde[:, :, c0:c1] = e.transpose(1, 2, 0)
        return energy, dEdr, dEde


@dataclass(frozen=True, eq=False)
class MultilayerACEPotential:
    """A fitted two-layer ACE potential (module docstring).

    Attributes
    ----------
    basis : acehamil.basis.ACEBasis
        First-layer basis (linear site energy).
    species : tuple of int
    e0 : ndarray, float64, shape (n_species,)
        eV.
    coef : ndarray, float64, shape (n_species, n_B)
        Linear first-layer coefficients.
    layer : MessageLayer
    weights : ndarray, float64, shape (n_species, layer.n_features)
        Second-layer coefficients, eV per feature unit.
    repulsion : RepulsionSpec or None
    metadata : dict
    densities : ndarray, float64, shape (n_species, n_densities, n_B), optional
        Embedded densities of the first layer (then its site energy is
        ``c . B + sum_k F_k(d_k . B)``, :class:`~.embedded.EmbeddedACEPotential`);
        None: the linear first layer.
    embeddings : tuple of str
        One embedding (:data:`~.embedded.EMBEDDINGS`) per density; empty without densities.
    """

    basis: object
    species: tuple
    e0: np.ndarray
    coef: np.ndarray
    layer: MessageLayer
    weights: np.ndarray
    repulsion: RepulsionSpec | None = None
    metadata: dict = field(default_factory=dict)
    densities: np.ndarray | None = None
    embeddings: tuple = ()

    def __post_init__(self):
        species = tuple(int(z) for z in self.species)
        if not isinstance(self.layer, MessageLayer):
            raise TypeError(f"layer must be a MessageLayer, got {type(self.layer).__name__}")
        if self.layer.species != species:
            raise ValueError(f"the layer's species {self.layer.species} differ from the model's {species}")
        w = np.array(self.weights, dtype=float)
        if w.shape != (len(species), self.layer.n_features):
            raise ValueError(f"weights must have shape ({len(species)}, {self.layer.n_features}), got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError("weights must be finite")
        w.flags.writeable = False
        if isinstance(self.embeddings, str):
            raise TypeError("embeddings must be a sequence of names, not one string")
        if self.densities is None:
            if len(self.embeddings):
                raise ValueError("embeddings given without densities")
            linear = ACEPotential(self.basis, species, self.e0, self.coef, self.repulsion, {})
        else:
            from .embedded import EmbeddedACEPotential

            linear = EmbeddedACEPotential(self.basis, species, self.e0, self.coef, self.densities, tuple(self.embeddings),
                                          self.repulsion, {})
            object.__setattr__(self, "densities", linear.densities)
        object.__setattr__(self, "embeddings", tuple(getattr(linear, "embeddings", ())))
        object.__setattr__(self, "species", species)
        object.__setattr__(self, "e0", linear.e0)
        object.__setattr__(self, "coef", linear.coef)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "_linear", linear)

    @property
    def linear(self):
        """The first layer alone (same basis, E0, coefficients, repulsion; with its densities, if any)."""
        return self._linear

    @property
    def n_densities(self) -> int:
        """Embedded densities of the first layer (0: linear first layer)."""
        return len(self.embeddings)

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    @property
    def cutoff(self) -> float:
        """Neighbour-list cutoff, Å (energies reach ``r_message + r_pass``)."""
        return max(self._linear.cutoff, self.layer.cutoff)

    def parameter_vector(self) -> np.ndarray:
        """``[E0, coef (species-major), weights (species-major)]``: the fit's column layout (the
        densities, if any, are not part of it: the model is then nonlinear in them)."""
        return np.concatenate([self.e0, self.coef.ravel(), self.weights.ravel()])

    def compute(self, atoms, forces: bool = True, stress: bool = True, chunk_atoms: int = 256) -> dict:
        """Energy, per-atom energies, forces and stress; as :meth:`ACEPotential.compute`."""
        pairs = neighbour_pairs(atoms, self.cutoff)  # one neighbour list for both layers
        out = evaluate_sites(self._linear, atoms, forces, stress, chunk_atoms, pairs=pairs)
        e2, dEdr, dEde = self.layer.energy(atoms.numbers, pairs, self.weights, gradients=forces or stress)
        energies = out["energies"] + e2
        out["energies"] = energies
        out["energy"] = out["free_energy"] = float(energies.sum())
        if forces or stress:
            if forces:
                out["forces"] = out["forces"] - dEdr
            out["virial_strain"] = out["virial_strain"] + dEde
            vol = cell_volume(atoms)
            if stress and vol is not None:
                sig = out["virial_strain"] / vol
                sig = 0.5 * (sig + sig.T)
                out["stress"] = np.array([sig[a, b] for a, b in VOIGT])
        return out


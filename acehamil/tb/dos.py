"""Densities of states on Monkhorst-Pack grids, Mulliken PDOS, Fermi level.

``DOS(E) = g_s sum_k w_k sum_n delta(E - eps_nk)`` in states/eV per cell, with
k-point weights ``w_k`` (sum 1) and spin degeneracy ``g_s`` = 2 for a
spin-unpolarised Hamiltonian (one H) and 1 per channel for a spin-polarised
one (two H, channels summed).  Integrated over all energies it gives the
number of states per cell, ``2 * norb``.

Mulliken PDOS: band ``n`` at ``k`` gives orbital ``mu`` the weight
``q_mu = Re[conj(c_mu) (S(k) c)_mu]`` with ``sum_mu q_mu = 1`` (``C^H S C = 1``),
so the PDOS over any partition of the orbitals sums to the DOS.  Partitions:
per species (``"Si"``), per shell (``"Si:3p"``), per angular momentum
(``"Si:p"``).

Examples
--------
>>> k, w = monkhorst_pack((2, 2, 1))               # k and -k merged: half the points
>>> k.shape, w.tolist()
((2, 3), [0.5, 0.5])
>>> monkhorst_pack((2, 2, 1), time_reversal=False)[0].shape
(4, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from ..conventions import ANGULAR_LETTERS
from ..structure import OrbitalLayout, RealSpaceMatrix, StructureData
from .bloch import BlochAssembler
from .eigen import MAX_CONDITION, S_THRESHOLD, solve_k
from .kpath import dos_kmesh, effective_pbc
from .smearing import SMEARINGS, delta
from .smearing import fermi_level as _fermi_level

__all__ = ["DOSResult", "monkhorst_pack", "dos_from_levels", "orbital_groups", "density_of_states", "valence_window"]

PARTITIONS = ("species", "shell", "l")


def monkhorst_pack(size, pbc=(True, True, True), time_reversal: bool = True, gamma_centred: bool = False) -> tuple:
    """Monkhorst-Pack k-points and weights.

    Parameters
    ----------
    size : 3 ints
        Grid size per reciprocal axis; non-periodic axes are forced to 1.
    pbc : 3 bools
    time_reversal : bool
        Merge ``k`` and ``-k`` (valid for real ``H(T)``, ``S(T)``); weights add up.
    gamma_centred : bool
        Shift even grids to contain Gamma.

    Returns
    -------
    kpts : ndarray, shape (nk, 3), fractional
    weights : ndarray, shape (nk,), sum 1
    """
    raw = np.asarray(size, dtype=np.float64).reshape(-1)  # (1.5, 2, 2) was truncated to (1, 2, 2) without a word
    n = raw.astype(np.int64) if np.isfinite(raw).all() else np.zeros(raw.shape, np.int64)
    if n.shape != (3,) or np.any(n < 1) or np.any(n != raw):
        raise ValueError(f"k-mesh must be 3 positive integers, got {size}")
    n = np.where(np.asarray(pbc, dtype=bool), n, 1)
    axes = [(np.arange(m) + 0.5) / m - 0.5 for m in n]
    if gamma_centred:
        axes = [a - a[np.argmin(np.abs(a))] for a in axes]
    k = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    w = np.full(len(k), 1.0 / len(k))
    if not time_reversal:
        return k, w
    # canonical representative of {k, -k} modulo reciprocal lattice vectors
    key = np.round(np.mod(k, 1.0) * 2 * n).astype(np.int64) % (2 * n)
    mkey = np.round(np.mod(-k, 1.0) * 2 * n).astype(np.int64) % (2 * n)
    use_neg = [tuple(b) < tuple(a) for a, b in zip(key.tolist(), mkey.tolist())]
    canon = np.where(np.array(use_neg)[:, None], mkey, key)
    _, first, inverse = np.unique(canon, axis=0, return_index=True, return_inverse=True)
    weights = np.bincount(np.asarray(inverse).reshape(-1), minlength=len(first)) / len(k)
    return k[first], weights


def orbital_groups(layout: OrbitalLayout, by: str = "species") -> dict:
    """Partition of the orbitals for a PDOS.

    Parameters
    ----------
    layout : OrbitalLayout
    by : {"species", "shell", "l"}

    Returns
    -------
    dict label -> ndarray of int (orbital indices); the index sets partition ``range(norb)``.

    Examples
    --------
    >>> from acehamil.structure import OrbitalBasis
    >>> lay = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)], 1: [(1, 0)]}).layout([14, 1])
    >>> {k: v.tolist() for k, v in orbital_groups(lay, "l").items()}
    {'Si:s': [0], 'Si:p': [1, 2, 3], 'H:s': [4]}
    """
    if by not in PARTITIONS:
        raise ValueError(f"PDOS partition must be one of {PARTITIONS}, got {by!r}")
    labels = []
    for a, z in enumerate(layout.numbers):
        sym = chemical_symbols[z]
        shells = layout.basis.shells_of(z)
        names = [s.name for s in shells]
        for si, s in enumerate(shells):
            if by == "species":
                lab = sym
            elif by == "l":
                lab = f"{sym}:{ANGULAR_LETTERS[s.l]}"
            else:
                name = names[si] if names.count(names[si]) == 1 else f"{names[si]}#{names[:si + 1].count(names[si])}"
                lab = f"{sym}:{name}"
            labels.extend([lab] * s.size)
    labels = np.array(labels, dtype=object)
    return {lab: np.nonzero(labels == lab)[0] for lab in dict.fromkeys(labels.tolist())}  # first-appearance order


def dos_from_levels(eps, weights, energies, width: float, smearing: str = "gaussian", spin_degeneracy: int = 2,
                    projections=None, order: int = 1) -> tuple:
    """Smeared DOS (and optional projected DOS) from eigenvalues.

    Parameters
    ----------
    eps : array, shape (nk, nbands) or (nspin, nk, nbands), eV
    weights : array, shape (nk,), sum 1
    energies : array, shape (ne,), eV
    width : float, eV
    smearing : one of ``SMEARINGS``
    spin_degeneracy : {1, 2}
    projections : array, shape (nspin, nk, nlabels, nbands) or (nk, nlabels, nbands), optional
        Weight of each band on each label (sums to 1 over labels for Mulliken).

    Returns
    -------
    dos : ndarray, shape (ne,), states/eV per cell (spin channels summed)
    pdos : ndarray, shape (nlabels, ne), or None
    """
    e = np.asarray(eps, dtype=np.float64)
    e = e[None] if e.ndim == 2 else e
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    E = np.asarray(energies, dtype=np.float64).reshape(-1)
    if e.ndim != 3 or e.shape[1] != len(w):
        raise ValueError(f"eigenvalues {np.shape(eps)} do not match {len(w)} k-point weights")
    if spin_degeneracy not in (1, 2):
        raise ValueError(f"spin_degeneracy must be 1 or 2, got {spin_degeneracy}")
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"smearing width must be a positive number of eV, got {width}")
    proj = None
    if projections is not None:
        proj = np.asarray(projections, dtype=np.float64)
        proj = proj[None] if proj.ndim == 3 else proj
        if proj.shape[:2] != e.shape[:2] or proj.shape[3] != e.shape[2]:
            raise ValueError(f"projections shape {proj.shape} does not match eigenvalues {e.shape}")
    g_w = spin_degeneracy * w
    if len(E) > 2 and np.allclose(np.diff(E), E[1] - E[0], rtol=1e-9, atol=0.0) and E[1] > E[0]:
        # uniform grid: each level only touches the points within the smearing's reach
        de = E[1] - E[0]
        reach = (40.0 if smearing == "fermi-dirac" else 7.0) * width  # tails < 1e-17 of a state beyond
        m = int(np.ceil(reach / de))
        if 2 * m + 1 < len(E):
            return _dos_windowed(e, g_w, E, width, smearing, order, proj, m)
    dos = np.zeros(len(E))
    pdos = None if proj is None else np.zeros((proj.shape[2], len(E)))
    chunk = max(1, 2**22 // max(1, len(E) * e.shape[2]))
    for s in range(e.shape[0]):
        for k0 in range(0, e.shape[1], chunk):
            sl = slice(k0, k0 + chunk)
            d = delta(E[None, None, :] - e[s, sl, :, None], width, smearing, order)  # (kc, nb, ne)
            d *= g_w[sl][:, None, None]
            dos += d.sum(axis=(0, 1))
            if proj is not None:
                pdos += np.einsum("klb,kbe->le", proj[s, sl], d)
    return dos, pdos


def _dos_windowed(e, g_w, E, width, smearing, order, proj, m):
    """DOS on a uniform energy grid, each level spread over its 2m+1 nearest grid points."""
    ne = len(E)
    lev = e.reshape(-1)  # (spin, k, band)
    wl = np.broadcast_to(g_w[None, :, None], e.shape).reshape(-1)
    pl = None if proj is None else np.moveaxis(proj, 2, -1).reshape(-1, proj.shape[2])  # (levels, nlabels)
    offsets = np.arange(-m, m + 1)
    dos = np.zeros(ne)
    pdos = None if proj is None else np.zeros((proj.shape[2], ne))
    chunk = max(1, 2**22 // len(offsets))
    for c0 in range(0, len(lev), chunk):
        lv, ww = lev[c0:c0 + chunk], wl[c0:c0 + chunk]
        idx = np.rint((lv - E[0]) / (E[1] - E[0])).astype(np.int64)[:, None] + offsets
        ok = (idx >= 0) & (idx < ne)
        idx_c = np.clip(idx, 0, ne - 1)
        vals = delta(E[idx_c] - lv[:, None], width, smearing, order) * ww[:, None] * ok
        dos += np.bincount(idx_c.ravel(), vals.ravel(), minlength=ne)
        if pl is not None:
            for lab in range(pl.shape[1]):
                pdos[lab] += np.bincount(idx_c.ravel(), (vals * pl[c0:c0 + chunk, lab, None]).ravel(), minlength=ne)
    return dos, pdos


@dataclass(frozen=True)
class DOSResult:
    """A density of states.

    Attributes
    ----------
    energies : ndarray, shape (ne,), eV (absolute)
    dos : ndarray, shape (ne,), states/eV per cell (spin channels summed)
    fermi_level : float or None, eV
    pdos : dict label -> ndarray (ne,), or None
        Mulliken PDOS, states/eV per cell; sums to ``dos``.
    eigenvalues : ndarray, shape (nspin, nk, nbands), eV
    kpts : ndarray, shape (nk, 3); weights : ndarray, shape (nk,)
    spin_degeneracy : int
        2 (unpolarised) or 1 (spin-polarised, channels summed).
    width : float, eV; smearing : str
    """

    energies: np.ndarray
    dos: np.ndarray
    fermi_level: float | None
    pdos: dict | None
    eigenvalues: np.ndarray
    kpts: np.ndarray
    weights: np.ndarray
    spin_degeneracy: int
    width: float
    smearing: str

    def to_ase(self):
        """The DOS as an ASE ``GridDOSCollection``: the total DOS (``info["label"] = "total"``)
        followed by each PDOS (``info["label"]`` = its label), energies in eV (absolute),
        weights in states/eV per cell; ``info["fermi_level"]`` as a string (ASE's info is str).

        >>> import numpy as np
        >>> r = DOSResult(np.linspace(-1, 1, 5), np.ones(5), 0.0, {"Si": np.ones(5)}, np.zeros((1, 1, 1)),
        ...               np.zeros((1, 3)), np.ones(1), 2, 0.1, "gaussian")
        >>> [d.info["label"] for d in r.to_ase()]
        ['total', 'Si']
        """
        from ase.spectrum.dosdata import GridDOSData
        from ase.spectrum.doscollection import GridDOSCollection

        ef = "" if self.fermi_level is None else repr(float(self.fermi_level))
        series = [GridDOSData(self.energies, self.dos, {"label": "total", "fermi_level": ef})]
        for lab, v in (self.pdos or {}).items():
            series.append(GridDOSData(self.energies, v, {"label": str(lab), "fermi_level": ef}))
        return GridDOSCollection(series)

    def to_json(self) -> dict:
        """The ``acehamil dos --json`` contract (see docs/tb.md)."""
        out = {
            "energies": self.energies.tolist(),
            "dos": self.dos.tolist(),
            "fermi_level": self.fermi_level,
            "units": {"energies": "eV", "dos": "states/eV per cell"},
            "spin_degeneracy": self.spin_degeneracy,
            "smearing": self.smearing,
            "width": self.width,
            "nkpts": int(len(self.kpts)),
        }
        if self.pdos is not None:
            out["pdos"] = {k: v.tolist() for k, v in self.pdos.items()}
        return out


#: An empty gap of at least this many eV below the Fermi level separates core from valence levels
#: (C 1s lies ~250 eV, Si 2p ~85 eV below the valence band; valence levels of molecules are up to ~12 eV apart).
CORE_GAP = 20.0


def valence_window(eps, fermi_level=None, core_gap: float = CORE_GAP) -> tuple:
    """Energy range (eV) of the valence levels and the empty levels near them.

    Levels below an empty gap of at least ``core_gap`` eV under the Fermi level are core levels
    (C 1s at -270 eV, O 1s at -505 eV in an all-electron code) and are left out; above E_F the
    window extends as far as the valence band reaches below it (at least 10 eV), never past the
    highest level.  Without core levels and high empty levels (a valence-only basis) this is
    ``(min(eps), max(eps))``.  Without a Fermi level the full range is returned.

    Parameters
    ----------
    eps : array, eV (any shape)
    fermi_level : float or None, eV

    Returns
    -------
    (lo, hi) : floats, eV

    Examples
    --------
    >>> valence_window([-270.0, -270.0, -20.0, -12.0, -5.0, 3.0, 300.0], fermi_level=0.0)
    (-20.0, 20.0)
    >>> valence_window([-12.0, -1.0, 2.0, 9.0], fermi_level=0.0)
    (-12.0, 9.0)
    """
    e = np.sort(np.asarray(eps, dtype=np.float64).ravel())
    if e.size == 0:
        raise ValueError("no levels")
    if fermi_level is None:
        return float(e[0]), float(e[-1])
    below = e[e <= fermi_level]
    lo = float(e[0])
    if below.size > 1:
        gaps = np.diff(below)
        big = np.nonzero(gaps >= core_gap)[0]
        if big.size:
            lo = float(below[big[-1] + 1])
    reach = max(10.0, fermi_level - lo)
    return lo, float(min(e[-1], fermi_level + reach))


def _levels_and_projections(H: RealSpaceMatrix, S, kpts, groups, solver_kw):
    """eps (nk, nb) and, if groups, Mulliken weights per label (nk, nlabels, nb)."""
    ah = BlochAssembler(H)
    as_ = None if S is None else BlochAssembler(S)
    n = H.norb
    chunk = max(1, 2**27 // max(1, 16 * n * n))
    eps, proj = [], []
    for k0 in range(0, len(kpts), chunk):
        kc = kpts[k0:k0 + chunk]
        hk = ah.dense(kc)
        sk = None if as_ is None else as_.dense(kc)
        if groups is None:
            eps.append(solve_k(hk, sk, kc, _offset=k0, **solver_kw))
            continue
        e, c = solve_k(hk, sk, kc, eigenvectors=True, _offset=k0, **solver_kw)
        sc = c if sk is None else np.einsum("kij,kjb->kib", sk, c)
        q = np.real(np.conj(c) * sc)  # (kc, norb, nb)
        eps.append(e)
        proj.append(np.stack([q[:, idx, :].sum(axis=1) for idx in groups.values()], axis=1))
    nb = min(x.shape[1] for x in eps)
    e = np.concatenate([x[:, :nb] for x in eps])
    return e, (None if groups is None else np.concatenate([p[:, :, :nb] for p in proj]))


def check_grid_resolves(span: float, npoints: int, width: float) -> None:
    """Raise ValueError when ``npoints`` energies over ``span`` eV are spaced more than twice the smearing ``width``.

    Between points farther apart than that, a smeared level falls through the grid: ``dos --width 1e-30``
    printed 2.6e22 states per cell, ``--npoints 2`` 10.6 of 32.  A Gaussian ``exp(-(x/w)^2)`` sampled every
    ``h`` sums to its integral within ~``2 exp(-(pi w / h)^2)``: 0.5 % at ``h = 1.36 w`` (the stored
    ACEhamiltonians Si DOS, matched to 1 %), 17 % at ``2 w``, where this refuses.
    """
    spacing = span / max(int(npoints) - 1, 1)
    if spacing > 2 * width:
        need = span / (2 * width) + 1
        need = f"{int(np.ceil(need))}" if need < 1e7 else f"{need:.2g}"
        raise ValueError(f"the energy grid's spacing {spacing:.3g} eV ({npoints} points over {span:.4g} eV) is more than "
                         f"twice the smearing width {width:g} eV: levels between the points would be lost and the DOS "
                         f"and its integral wrong; use npoints >= {need} or a wider width")


def density_of_states(data: StructureData, kmesh=None, width: float = 0.05, smearing: str = "gaussian",
                      energies=None, npoints: int | None = None, pdos: str | None = None, fermi_level: float | None = None,
                      order: int = 1, max_condition: float = MAX_CONDITION, remedy=None,
                      s_threshold: float = S_THRESHOLD, gamma_centred: bool = False, window: str = "valence") -> DOSResult:
    """DOS (and Mulliken PDOS) of a structure's ``H``/``S`` on a Monkhorst-Pack grid.

    Parameters
    ----------
    data : StructureData
        Needs ``H`` (1 or 2 spin channels); ``S`` optional (orthonormal basis if None).
    kmesh : 3 ints, optional
        Grid; non-periodic axes use 1 (a cluster is Gamma only).  Default: scaled with the cell,
        :func:`acehamil.tb.kpath.dos_kmesh` (8x8x8 for the 8-atom Si cell, Gamma only beyond 40 Å).
    gamma_centred : bool
        Shift even grid axes to contain Gamma (odd axes always do), as FHI-aims' ``k_grid``.
    width : float, eV
    smearing : {"gaussian", "fermi-dirac", "methfessel-paxton"}
    energies : array (ne,), eV, optional
        Default: ``npoints`` points over the levels of ``window``, padded by 7 widths (25 for
        Fermi-Dirac's long tails).
    window : {"valence", "all"}
        Energy range of the default ``energies``: every level ("all"), or (default) without core
        levels and the high empty levels of an all-electron basis (:func:`valence_window`; the
        same as "all" for valence-only data).
    npoints : int, optional
        Default: spacing ``width / 5`` (at least 2001, at most 400001 points).
    pdos : None or {"species", "shell", "l"}
    fermi_level : float, optional
        Use this Fermi level (eV).  Default: from ``data.n_electrons`` (the
        smearing of the DOS is used for metals), else ``data.fermi_level``.
    max_condition, remedy, s_threshold
        S(k) checks, see :func:`acehamil.tb.eigen.solve_k`.

    Returns
    -------
    DOSResult
    """
    if not isinstance(data, StructureData):
        raise TypeError(f"data must be a StructureData, got {type(data).__name__}")
    if not data.H:
        raise ValueError("structure has no Hamiltonian (H is empty): nothing to compute a DOS of")
    if smearing not in SMEARINGS:
        raise ValueError(f"smearing must be one of {SMEARINGS}, got {smearing!r}")
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"smearing width must be a positive number of eV, got {width}")
    if window not in ("valence", "all"):
        raise ValueError(f"window must be 'valence' or 'all', got {window!r}")
    kmesh = dos_kmesh(data.atoms) if kmesh is None else kmesh
    kpts, weights = monkhorst_pack(kmesh, effective_pbc(data.atoms), gamma_centred=gamma_centred)
    groups = None if pdos is None else orbital_groups(data.layout, pdos)
    kw = dict(max_condition=max_condition, remedy=remedy, s_threshold=s_threshold)
    res = [_levels_and_projections(h, data.S, kpts, groups, kw) for h in data.H]
    nb = min(r[0].shape[1] for r in res)
    eps = np.stack([r[0][:, :nb] for r in res])
    proj = None if groups is None else np.stack([r[1][:, :, :nb] for r in res])
    g = 2 if len(data.H) == 1 else 1
    if fermi_level is not None:
        ef = float(fermi_level)
        if not np.isfinite(ef):
            raise ValueError(f"fermi_level must be a finite energy in eV, got {fermi_level}")
    elif data.n_electrons is not None:
        ef = _fermi_level(eps, weights, data.n_electrons, width, smearing, g, order)
    else:
        ef = data.fermi_level
    if energies is None:
        pad = (25.0 if smearing == "fermi-dirac" else 7.0) * width  # tails below ~1e-10 of a state
        lo, hi = (eps.min(), eps.max()) if window == "all" else valence_window(eps, ef)
        lo, hi = lo - pad, hi + pad
        n = int(npoints) if npoints is not None else int(min(400_001, max(2001, np.ceil((hi - lo) / (width / 5)) + 1)))
        if n < 2:
            raise ValueError(f"npoints must be >= 2, got {npoints}")
        check_grid_resolves(hi - lo, n, width)
        energies = np.linspace(lo, hi, n)
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if not (energies.size and np.isfinite(energies).all()):  # a NaN energy gave a NaN in the DOS without a word
        raise ValueError(f"energies must be finite numbers in eV (at least one), got {energies.size} with "
                         f"{int(np.sum(~np.isfinite(energies)))} not finite")
    d, p = dos_from_levels(eps, weights, energies, width, smearing, g, proj, order)
    pd = None if p is None else {lab: p[i] for i, lab in enumerate(groups)}
    return DOSResult(energies, d, ef, pd, eps, kpts, weights, g, float(width), smearing)

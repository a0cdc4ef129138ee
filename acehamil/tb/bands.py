"""Band structures along k-paths, band gaps (VBM/CBM) and Fermi levels.

Results are absolute energies in eV.  A band structure is returned both as
arrays and as an ``ase.spectrum.band_structure.BandStructure`` (energies
``(nspin, nk, nbands)``, ``reference`` = Fermi level) on an
``ase.dft.kpoints.BandPath``.

Fermi level: given explicitly, else from ``StructureData.n_electrons`` on a
Monkhorst-Pack grid (mid-gap for insulators and molecules, see
:func:`acehamil.tb.smearing.fermi_level`), else ``StructureData.fermi_level``.

Examples
--------
>>> from ase.build import bulk
>>> from acehamil.structure import OrbitalBasis, StructureData
>>> from acehamil.tb.toy import slater_koster
>>> atoms = bulk("Si", "diamond", a=5.43)
>>> basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
>>> H, S = slater_koster(atoms, basis)
>>> res = band_structure(StructureData(atoms, basis, H=(H,), S=S, n_electrons=8), path="GXWKGL", npoints=40)
>>> res.energies.shape, res.gap.gap > 0
((1, 40, 8), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.dft.kpoints import BandPath
from ase.spectrum.band_structure import BandStructure

from ..structure import StructureData
from .dos import monkhorst_pack
from .kpath import LATTICE_TOLERANCE, KAxis, band_path, effective_pbc, kmesh_for, linear_axis, path_from_kpts
from .eigen import MAX_CONDITION, S_THRESHOLD, solve
from .smearing import fermi_level as _fermi_level

__all__ = ["BandGap", "BandsResult", "band_path", "path_from_kpts", "kmesh_for", "eigenvalues", "band_gap",
           "band_structure", "structure_fermi_level", "linear_axis", "KAxis"]


def eigenvalues(data: StructureData, kpts, *, max_condition=MAX_CONDITION, remedy=None,
                s_threshold=S_THRESHOLD) -> np.ndarray:
    """Eigenvalues of every spin channel, shape (nspin, nk, nbands), eV, absolute."""
    if not isinstance(data, StructureData):
        raise TypeError(f"data must be a StructureData, got {type(data).__name__}")
    if not data.H:
        raise ValueError("structure has no Hamiltonian (H is empty): nothing to diagonalise")
    from ..structure.validate import check_hermitian

    where = f"structure {data.info.get('name', '')!r}".replace(" ''", "")
    for s, h in enumerate(data.H):
        check_hermitian(h, f"H (spin {s})", where)
    if data.S is not None:
        check_hermitian(data.S, "S", where)
    kw = dict(max_condition=max_condition, remedy=remedy, s_threshold=s_threshold)
    out = [solve(h, data.S, kpts, **kw) for h in data.H]
    nb = min(e.shape[1] for e in out)
    return np.stack([e[:, :nb] for e in out])


def structure_fermi_level(data: StructureData, kmesh=None, width: float = 0.01, smearing: str = "fermi-dirac",
                          **solver_kw) -> float | None:
    """Fermi level (eV) from ``data.n_electrons`` on a Monkhorst-Pack grid (``kmesh_for`` by default);
    ``data.fermi_level`` when the electron count is unknown; ``None`` when neither is known."""
    if data.n_electrons is None:
        return None if data.fermi_level is None else float(data.fermi_level)
    mesh = kmesh_for(data.atoms) if kmesh is None else kmesh
    k, w = monkhorst_pack(mesh, effective_pbc(data.atoms))
    eps = eigenvalues(data, k, **solver_kw)
    g = 2 if eps.shape[0] == 1 else 1
    return _fermi_level(eps, w, float(data.n_electrons), width, smearing, g)


@dataclass(frozen=True)
class BandGap:
    """Band gap (eV); ``gap = 0`` for a metal (then VBM/CBM are the band edges around E_F).

    Attributes
    ----------
    gap, vbm, cbm : float, eV
    k_vbm, k_cbm : int
        k-point indices of the VBM and CBM.
    direct : bool
    """

    gap: float
    vbm: float
    cbm: float
    k_vbm: int
    k_cbm: int
    direct: bool


#: Levels closer than this (eV, relative above 1 eV) are one degenerate level for :func:`band_gap`.
DEGENERATE_EV = 1e-8


def band_gap(energies, fermi_level: float | None = None, n_electrons: float | None = None) -> BandGap | None:
    """Gap from eigenvalues ``(nspin, nk, nbands)`` or ``(nk, nbands)`` (eV).

    With an integer number of filled bands per spin (``n_electrons`` for one
    spin-degenerate channel) the gap is between band ``N-1`` and ``N``;
    otherwise the Fermi level separates occupied from empty levels and a band
    crossing it gives ``gap = 0``.  ``None`` if neither is given.

    Examples
    --------
    >>> band_gap([[-1.0, 2.0], [-0.5, 1.0]], n_electrons=2).gap
    1.5
    >>> band_gap([[-1.0, 0.5, 0.5 + 1e-15, 0.5]], n_electrons=4).gap   # a p level half filled
    0.0
    """
    e = np.asarray(energies, dtype=np.float64)
    e = e[None] if e.ndim == 2 else e
    nk = e.shape[1]
    if n_electrons is not None and e.shape[0] == 1 and abs(n_electrons / 2 - round(n_electrons / 2)) < 1e-8:
        nocc = int(round(n_electrons / 2))
        if 0 < nocc < e.shape[2]:
            occ = e[0, :, :nocc].max(axis=1)
            emp = e[0, :, nocc:].min(axis=1)
            kv, kc = int(np.argmax(occ)), int(np.argmin(emp))
            vbm, cbm = float(occ[kv]), float(emp[kc])
            # a degenerate level the electron count fills in part: no gap (round-off split it by ~1e-15 eV,
            # which was reported as "gap 0.0000 eV" beside "metallic" for the same atom without a cell)
            gap = cbm - vbm if cbm - vbm > DEGENERATE_EV * max(1.0, abs(vbm)) else 0.0
            return BandGap(gap, vbm, cbm, kv, kc, kv == kc)
    if fermi_level is None:
        return None
    flat = e.transpose(1, 0, 2).reshape(nk, -1)
    below = np.where(flat <= fermi_level, flat, -np.inf)
    above = np.where(flat > fermi_level, flat, np.inf)
    kv, kc = int(np.argmax(below.max(axis=1))), int(np.argmin(above.min(axis=1)))
    vbm, cbm = float(below[kv].max()), float(above[kc].min())
    crosses = bool(np.any((e.min(axis=1) <= fermi_level) & (e.max(axis=1) > fermi_level)))
    if not (np.isfinite(vbm) and np.isfinite(cbm)):
        return None  # every level on one side of the Fermi level
    return BandGap(0.0 if crosses else max(0.0, cbm - vbm), vbm, cbm, kv, kc, kv == kc)


@dataclass(frozen=True)
class BandsResult:
    """A band structure.

    Attributes
    ----------
    path : ase.dft.kpoints.BandPath
    energies : ndarray, shape (nspin, nk, nbands), eV, absolute
    fermi_level : float or None, eV
    gap : BandGap or None
    reference : ndarray (nspin, nk, nbands_ref) or None
        Reference energies at the same k-points (e.g. the DFT code's own bands), eV.
    n_electrons : float or None
        Electrons per cell used for the Fermi level and gap (None: unknown).
    weights : dict label -> ndarray (nspin, nk, nbands), or None
        Mulliken weight of each band on each orbital group ("fat bands"; the same partition
        as the PDOS, :func:`acehamil.tb.dos.orbital_groups`); sums to 1 over labels.
    """

    path: BandPath
    energies: np.ndarray
    fermi_level: float | None
    gap: BandGap | None
    reference: np.ndarray | None = None
    n_electrons: float | None = None
    weights: dict | None = None

    @property
    def kpts(self) -> np.ndarray:
        return self.path.kpts

    @property
    def axis(self) -> KAxis:
        """Plot axis: path length, labels, breaks (:func:`acehamil.tb.kpath.linear_axis`)."""
        return linear_axis(self.path)

    @property
    def periodic(self) -> bool:
        """False for a molecule's levels (one k-point, Γ)."""
        return len(self.kpts) > 1

    @property
    def band_structure(self) -> BandStructure:
        """ASE BandStructure (``reference`` = Fermi level, 0 if unknown)."""
        return BandStructure(self.path, self.energies, reference=self.fermi_level or 0.0)

    def reference_error(self) -> float | None:
        """Largest |model - reference| over the common lowest bands (eV), or None."""
        if self.reference is None:
            return None
        nb = min(self.energies.shape[-1], self.reference.shape[-1])
        ns = min(self.energies.shape[0], self.reference.shape[0])
        return float(np.abs(self.energies[:ns, :, :nb] - self.reference[:ns, :, :nb]).max())

    def to_json(self) -> dict:
        """The ``acehamil bands --json`` contract (see docs/tb.md)."""
        out = {
            "kpts": self.kpts.tolist(),
            "energies": self.energies[0].tolist(),
            "fermi_level": self.fermi_level,
            "band_gap": None if self.gap is None else self.gap.gap,
            "vbm": None if self.gap is None else self.gap.vbm,
            "cbm": None if self.gap is None else self.gap.cbm,
            "units": {"energies": "eV", "kpts": "fractional (reciprocal lattice)"},
            "path": self.path.path,
        }
        if self.energies.shape[0] == 2:
            out["energies_spin1"] = self.energies[1].tolist()
        if self.weights is not None:
            out["weights"] = {lab: w[0].tolist() for lab, w in self.weights.items()}
        if self.reference is not None:
            out["reference_energies"] = self.reference[0].tolist()
            out["reference_max_error"] = self.reference_error()
        return out


def band_structure(data: StructureData, path: str | None = None, npoints: int = 200, kpts=None,
                   fermi_level: float | None = None, kmesh=None, reference=None, labels=None, breaks=None,
                   lattice_tolerance: float = LATTICE_TOLERANCE, projections: str | None = None,
                   **solver_kw) -> BandsResult:
    """Bands of a structure along a path or at given k-points.

    Parameters
    ----------
    data : StructureData
    path : str, optional
        Path string (ASE special-point letters, "," for breaks); default the
        lattice's standard path.  Ignored when ``kpts`` is given.
    npoints : int
        Points along the path.
    kpts : array (nk, 3), fractional, optional
        Explicit k-points (e.g. a DFT code's band k-points).
    fermi_level : float, optional, eV
        Default :func:`structure_fermi_level` (with ``kmesh``).
    reference : array (nk, nb) or (nspin, nk, nb), eV, optional
        Reference energies at the same k-points, stored for plots and errors.
    labels, breaks : optional
        With ``kpts``: ``[[index, name], ...]`` special-point labels and path breaks
        (:func:`acehamil.tb.kpath.path_from_kpts`; default found from the lattice).
    lattice_tolerance : float, Å
        Tolerance for identifying the Bravais lattice (standard path and labels).
    projections : None or {"species", "shell", "l"}
        Also compute the Mulliken weights of every band on these orbital groups (fat bands).
    **solver_kw
        ``max_condition``, ``remedy``, ``s_threshold`` (see :func:`acehamil.tb.eigen.solve_k`).

    Returns
    -------
    BandsResult
    """
    if kpts is None:
        bp = band_path(data.atoms, path, npoints, eps=lattice_tolerance)
    else:
        bp = path_from_kpts(data.atoms, kpts, labels=labels, breaks=breaks, tolerance=lattice_tolerance)
    weights = None
    if projections is None:
        eps = eigenvalues(data, bp.kpts, **solver_kw)
    else:
        from .dos import _levels_and_projections, orbital_groups

        if not data.H:
            raise ValueError("structure has no Hamiltonian (H is empty): nothing to diagonalise")
        groups = orbital_groups(data.layout, projections)
        res = [_levels_and_projections(h, data.S, bp.kpts, groups, solver_kw) for h in data.H]
        nb = min(r[0].shape[1] for r in res)
        eps = np.stack([r[0][:, :nb] for r in res])
        proj = np.stack([r[1][:, :, :nb] for r in res])  # (nspin, nk, nlabels, nb)
        weights = {lab: proj[:, :, q, :] for q, lab in enumerate(groups)}
    ef = float(fermi_level) if fermi_level is not None else structure_fermi_level(data, kmesh, **solver_kw)
    if fermi_level is not None and not np.isfinite(ef):
        raise ValueError(f"fermi_level must be a finite energy in eV, got {fermi_level}")
    n_el = data.n_electrons if data.n_electrons is not None else None
    gap = band_gap(eps, ef, n_el)
    ref = None
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        ref = ref[None] if ref.ndim == 2 else ref
        if ref.ndim != 3 or ref.shape[1] != len(bp.kpts):
            raise ValueError(f"reference energies {np.shape(reference)} do not match {len(bp.kpts)} k-points")
    return BandsResult(bp, eps, ef, gap, ref, None if n_el is None else float(n_el), weights)

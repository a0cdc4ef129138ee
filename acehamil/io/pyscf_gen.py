"""Make training data with PySCF (optional extra ``acehamil[pyscf]``): molecules and periodic crystals.

Molecules (``pyscf.gto`` / ``pyscf.dft``): the converged Fock and overlap matrices are one cell
(``T = 0``) of real-space blocks.

Crystals (``pyscf.pbc``, GTH pseudopotentials, FFT density fitting):

1. check the FFT grid (:func:`choose_ke_cutoff`: ``Im H(k)`` at half-integer k must vanish; "auto" picks
   the lowest adequate cutoff for the elements), then converge the SCF on a Monkhorst-Pack mesh
   (``scf_kmesh``; "auto": the same k-density for every cell, :func:`acehamil.io.kmesh.scf_kmesh_for`);
2. build the non-self-consistent Fock ``H(k) = hcore(k) + v_eff[rho](k)`` from the converged density
   on a Gamma-centred *Fourier* mesh ``n1 x n2 x n3`` (time reversal halves the work,
   ``H(-k) = conj(H(k))``), chosen from the cell so that every bond ``<= r_cut`` is the unique shortest
   image on the Fourier supercell (:func:`acehamil.io.kmesh.fourier_kmesh_for`; a coarser mesh is refused);
3. ``H(T) = 1/N sum_k H(k) exp(-2 pi i k.T)`` gives ``H`` on the periodic supercell; each atom pair
   ``(i, j)`` and residue ``T mod n`` is assigned to its shortest image and kept when that bond is ``<= r_cut``;
4. ``S(T)`` for the same blocks is computed *exactly* as a two-centre integral between the home cell
   and the shifted image (no Fourier aliasing);
5. PySCF's own band energies at a few off-mesh k-points are stored as ``reference_bands`` and the stored
   blocks' band error against them is measured (:func:`acehamil.io.band_check.band_errors`) and stored in
   ``info["band_error"]`` (meV) with every structure.

PySCF's Bloch convention ``O(k) = sum_L exp(+i k.L) <phi(0)|O|phi(L)>`` is our lattice gauge
(verified in ``tests/test_io_pyscf.py`` by comparing exact ``S(T)`` with the Fourier transform of
``pbc_intor('int1e_ovlp', kpts)``).  Orbitals: PySCF orders p as (px, py, pz); the table in
:func:`acehamil.conventions.orbital_table` maps them to ours.  Units: Hartree -> eV with
PySCF's own factor, Bohr -> Å.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
from ase import Atoms

from ..conventions import BOHR_TO_ANGSTROM, CODE_CONVENTIONS, orbital_permutation, to_our_orbitals
from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData

PYSCF = CODE_CONVENTIONS["pyscf"]
HA = PYSCF.hartree_to_ev
BOHR = BOHR_TO_ANGSTROM  # Å, = pyscf.lib.param.BOHR (CODATA 2018)

#: Off-mesh k-points (fractional) at which PySCF's own bands are stored (none lies on an n <= 12 mesh).
REFERENCE_KPTS = np.array([[0.13, 0.27, 0.41], [0.37, 0.05, 0.21], [0.45, 0.43, 0.11], [0.0, 0.0, 0.17]])


def _import_pyscf():
    try:
        import pyscf  # noqa: F401
    except ImportError:
        raise ImportError(
            "the PySCF generator needs the optional dependency pyscf: pip install 'acehamil[pyscf]' (or pip install pyscf)"
        ) from None
    import pyscf.dft  # noqa: F401
    import pyscf.scf  # noqa: F401
    import pyscf.pbc.dft  # noqa: F401
    import pyscf.pbc.gto  # noqa: F401
    import pyscf.pbc.scf.addons  # noqa: F401

    return pyscf


# ----------------------------------------------------------------------------- orbital map
def basis_map(mol) -> tuple:
    """Shells per species and the PySCF -> acehamil orbital map of a built ``Mole`` or ``Cell``.

    Returns
    -------
    basis : OrbitalBasis
    perm : ndarray of int, shape (nao,)
        PySCF AO index of each of our orbitals.
    sign : ndarray of float, shape (nao,)
    norb_per_atom : ndarray of int, shape (natm,)
    """
    from ase.data import atomic_numbers

    numbers = [atomic_numbers[mol.atom_pure_symbol(a)] for a in range(mol.natm)]
    labels = mol.ao_labels(fmt=False)
    species_shells = {}
    ao = 0
    per_atom = np.zeros(mol.natm, np.int64)
    shells_of_atom = [[] for _ in range(mol.natm)]
    for b in range(mol.nbas):
        at, l, nctr = mol.bas_atom(b), mol.bas_angular(b), mol.bas_nctr(b)
        for _ in range(nctr):
            name = labels[ao][2]
            digits = "".join(ch for ch in name if ch.isdigit())
            shells_of_atom[at].append((Shell(l=int(l), n=int(digits or 0), label=name), ao))
            ao += 2 * l + 1
    for at in range(mol.natm):
        sh = tuple(s for s, _ in shells_of_atom[at])
        if species_shells.setdefault(numbers[at], sh) != sh:
            raise ValueError(f"atoms of species Z={numbers[at]} carry different basis sets (basis mismatch)")
        per_atom[at] = sum(s.size for s, _ in shells_of_atom[at])
    perm, sign = orbital_permutation(PYSCF.orbital_table, [(s.l, start + np.arange(2 * s.l + 1))
                                                            for shells in shells_of_atom for s, start in shells])
    return OrbitalBasis.from_dict(species_shells), perm, sign, per_atom


def _midgap(eps: np.ndarray, nocc: int) -> float:
    eps = np.sort(np.asarray(eps).reshape(-1))
    return float(0.5 * (eps[nocc - 1] + eps[nocc])) if nocc < len(eps) else float(eps[-1])


# ----------------------------------------------------------------------------- molecules
def run_molecule(atoms: Atoms, basis: str = "def2-svp", xc: str = "pbe", conv_tol: float = 1e-10, forces: bool = False) -> StructureData:
    """Converge a molecular DFT calculation and return its Fock and overlap matrices.

    Parameters
    ----------
    atoms : ase.Atoms
        Positions in Å (no periodicity).
    basis, xc : str
        PySCF basis set and functional (``"hf"``: restricted Hartree-Fock).
    conv_tol : float
        SCF energy tolerance, Hartree.
    forces : bool
        Also compute analytic forces (eV/Å).

    Returns
    -------
    StructureData
        ``H[0]`` (eV) and ``S`` as one cell ``T = 0``; energy (eV), midgap ``fermi_level`` (eV),
        ``n_electrons``, ``reference_bands`` = ((0,0,0), MO energies eV).
    """
    pyscf = _import_pyscf()
    mol = pyscf.gto.M(
        atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)], unit="Angstrom", basis=basis, verbose=0
    )
    if xc.lower() == "hf":
        mf = pyscf.scf.RHF(mol)  # exact integrals: rotation-invariant to the SCF tolerance
    else:
        mf = pyscf.dft.RKS(mol)
        mf.xc = xc
    mf.conv_tol = conv_tol
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("PySCF SCF did not converge")
    b, perm, sign, npa = basis_map(mol)
    H = to_our_orbitals(mf.get_fock(), perm, sign) * HA
    S = to_our_orbitals(mf.get_ovlp(), perm, sign)
    f = None
    if forces:
        f = -np.asarray(mf.nuc_grad_method().kernel()) * HA / BOHR
    nocc = mol.nelectron // 2
    at = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    return StructureData(
        atoms=at,
        basis=b,
        H=(RealSpaceMatrix.from_dense(npa, [[0, 0, 0]], [H]),),
        S=RealSpaceMatrix.from_dense(npa, [[0, 0, 0]], [S]),
        fermi_level=_midgap(mf.mo_energy * HA, nocc),
        energy=float(mf.e_tot * HA),
        forces=f,
        reference_bands=(np.zeros((1, 3)), np.asarray(mf.mo_energy)[None] * HA),
        n_electrons=float(mol.nelectron),
        info={"source": "pyscf", "method": "RHF" if xc.lower() == "hf" else f"RKS/{xc}", "basis": basis, "conv_tol": conv_tol},
    )


# ----------------------------------------------------------------------------- crystals
#: FFT-grid noise accepted in H(k), Hartree: the largest |Im H(k)| at the half-integer k-points (where
#: H(k) must be real) — 1e-5 Ha = 0.27 meV.  Measured with gth-szv/gth-pade: Si reaches 3e-8 at 20 Ha;
#: C needs 60 Ha (1.2e-3 at 20, 1.6e-5 at 40, 4e-8 at 60), 3C-SiC 40 Ha (8e-4 at 20, 4e-6 at 40).
FFT_TOL = 1e-5
#: Cutoffs tried by ``ke_cutoff="auto"`` (Hartree), lowest first.
KE_LADDER = (20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0)
#: Half-integer k-points (fractional) where the FFT residual is measured.
_HALF_KPTS = np.array([[a, b, c] for a in (0, 0.5) for b in (0, 0.5) for c in (0, 0.5)][1:])


@dataclass(frozen=True)
class CrystalSettings:
    """How a periodic PySCF calculation is run (stored with every structure it makes).

    Attributes
    ----------
    basis, pseudo, xc : str
        PySCF basis (GTH family), pseudopotential, functional.
    scf_kmesh : tuple of int or "auto"
        Monkhorst-Pack mesh of the SCF (Gamma included); "auto": the same k-density for every cell
        (:func:`acehamil.io.kmesh.scf_kmesh_for`: 2x2x2 for the 8-atom Si cell, 1x1x1 for its 2x2x2
        supercell).
    fourier_kmesh : tuple of int or "auto"
        Gamma-centred mesh on which H(k) is built and Fourier-transformed to H(T); "auto": the smallest
        on which every bond ``<= r_cut`` is the unique shortest image
        (:func:`acehamil.io.kmesh.fourier_kmesh_for`).  A given mesh that is coarser is refused.
    ke_cutoff : float, "auto" or None
        Plane-wave cutoff of the FFT grid, Hartree.  "auto": the lowest of :data:`KE_LADDER` whose
        FFT residual is below :data:`FFT_TOL` for this structure's elements; a given value whose residual
        is above is refused with the cutoff that is needed.  None: PySCF's default (very high).
    conv_tol : float
        SCF energy tolerance, Hartree.
    r_cut : float
        Blocks with bond length > r_cut (Å) are left out.
    smearing : float or "auto"
        Fermi-Dirac smearing width of the SCF occupations, Hartree (0: none, integer occupations).  Metals
        and unreconstructed surfaces need it to converge; H(k) is then the Fock matrix of the smeared
        density and the stored ``fermi_level`` is the chemical potential.  "auto": integer occupations,
        unless the structure turns out to need smearing (:func:`run_crystal`: the aufbau filling stays
        uneven over k-points, or the SCF does not converge), then :data:`AUTO_SMEARING`; each structure
        records what it got in ``info["resolved"]["smearing"]``.
    """

    basis: str = "gth-szv"
    pseudo: str = "gth-pade"
    xc: str = "lda,vwn"
    scf_kmesh: tuple | str = "auto"
    fourier_kmesh: tuple | str = "auto"
    ke_cutoff: float | str | None = "auto"
    conv_tol: float = 1e-8
    r_cut: float = 12.0
    smearing: float | str = 0.0

    def __post_init__(self):
        for name in ("scf_kmesh", "fourier_kmesh"):
            v = getattr(self, name)
            if isinstance(v, str):
                if v != "auto":
                    raise ValueError(f"{name} must be three positive integers or 'auto', got {v!r}")
            else:
                t = tuple(int(x) for x in v)
                if len(t) != 3 or min(t) < 1 or any(x != y for x, y in zip(t, v)):
                    raise ValueError(f"{name} must be three positive integers or 'auto', got {v!r}")
                object.__setattr__(self, name, t)
        ke = self.ke_cutoff
        if isinstance(ke, str) and ke != "auto" or (ke is not None and not isinstance(ke, str) and not ke > 0):
            raise ValueError(f"ke_cutoff must be a positive number (Hartree), 'auto' or None, got {ke!r}")
        if not self.r_cut > 0:
            raise ValueError(f"r_cut must be positive (Å), got {self.r_cut}")
        sm = self.smearing
        if isinstance(sm, str) and sm != "auto" or not isinstance(sm, str) and not (sm >= 0 and np.isfinite(sm)):
            raise ValueError(f"smearing must be a finite width >= 0 (Hartree) or 'auto', got {sm!r}")

    def to_dict(self) -> dict:
        """JSON-able; ``smearing`` only when set, so the settings of data made without it read back equal."""
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        if not self.smearing:
            d.pop("smearing")
        return d


def make_cell(atoms: Atoms, settings: CrystalSettings, ke_cutoff: float | None = None):
    """A built ``pyscf.pbc.gto.Cell`` for ``atoms`` (Å); ``ke_cutoff`` (Ha) overrides the settings' value."""
    pyscf = _import_pyscf()
    cell = pyscf.pbc.gto.Cell()
    cell.atom = [(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    cell.a = np.asarray(atoms.cell.array)
    cell.unit = "Angstrom"
    cell.basis, cell.pseudo, cell.verbose = settings.basis, settings.pseudo, 0
    ke = settings.ke_cutoff if ke_cutoff is None else ke_cutoff
    if ke is not None and ke != "auto":
        cell.ke_cutoff = float(ke)
    elif ke == "auto":
        cell.ke_cutoff = KE_LADDER[0]
    return cell.build()


def fft_residual(cell) -> float:
    """FFT-grid noise of ``H(k)``: max ``|Im hcore(k)|`` at half-integer k-points, Hartree.

    At ``k = G/2`` the lattice-gauge ``H(k) = sum_T H(T) exp(i pi n.T)`` is real; PySCF's local
    pseudopotential on a too coarse FFT grid gives it an imaginary part (and the same error in the
    real part), which a Fourier transform turns into a complex, wrong ``H(T)``.  Cheap: one-electron
    integrals only, no SCF.
    """
    pyscf = _import_pyscf()
    kabs = cell.get_abs_kpts(_HALF_KPTS)
    hc = np.asarray(pyscf.pbc.dft.KRKS(cell, kabs).get_hcore(cell, kabs))
    return float(np.abs(hc.imag).max())


def _fft_message(symbols, ke, residual, need) -> str:
    fix = f"use --ke-cutoff {need:g}" if need is not None else f"use a --ke-cutoff above {KE_LADDER[-1]:g}"
    return (f"FFT grid too coarse for {'/'.join(symbols)} at ke_cutoff {ke:g} Ha: H(k) carries FFT noise "
            f"{residual:.1e} Ha (Im H at half-integer k, tolerance {FFT_TOL:g} Ha), so H(T) would come out complex "
            f"and wrong; {fix} (or --ke-cutoff auto)")


def choose_ke_cutoff(atoms: Atoms, settings: CrystalSettings, start: float | None = None) -> tuple:
    """The FFT cutoff for this structure, checked: ``(ke_cutoff Ha, residual Ha, cell)``.

    ``settings.ke_cutoff = "auto"``: climb :data:`KE_LADDER` (from ``start``) until :func:`fft_residual`
    is below :data:`FFT_TOL`.  A number: check it and raise ValueError naming the cutoff that is needed.
    None: PySCF's default grid, residual reported only.
    """
    symbols = sorted(set(atoms.get_chemical_symbols()))
    if settings.ke_cutoff is None:
        cell = make_cell(atoms, settings)
        return None, fft_residual(cell), cell
    if settings.ke_cutoff != "auto":
        ke = float(settings.ke_cutoff)
        cell = make_cell(atoms, settings, ke)
        res = fft_residual(cell)
        if res > FFT_TOL:
            need = None
            for k2 in (k for k in KE_LADDER if k > ke):
                if fft_residual(make_cell(atoms, settings, k2)) <= FFT_TOL:
                    need = k2
                    break
            raise ValueError(_fft_message(symbols, ke, res, need))
        return ke, res, cell
    ladder = [k for k in KE_LADDER if start is None or k >= start] or [KE_LADDER[-1]]
    for ke in ladder:
        cell = make_cell(atoms, settings, ke)
        res = fft_residual(cell)
        if res <= FFT_TOL:
            return ke, res, cell
    raise ValueError(_fft_message(symbols, ladder[-1], res, None))


def fourier_mesh(n) -> np.ndarray:
    """Gamma-centred mesh, fractional, shape (n1*n2*n3, 3), entries m/n with m = 0..n-1."""
    n = np.asarray(n, np.int64)
    g = np.stack(np.meshgrid(*[np.arange(x) for x in n], indexing="ij"), -1).reshape(-1, 3)
    return g / n


def _time_reversal_pairs(frac: np.ndarray, n) -> tuple:
    """Representatives of {k, -k} and, for every mesh point, its representative and whether it is the partner."""
    n = np.asarray(n)
    idx = np.rint(frac * n).astype(np.int64)
    key = lambda v: tuple(int(x) for x in (v % n))  # noqa: E731
    where = {key(v): p for p, v in enumerate(idx)}
    reps, rep_of, conj = [], np.zeros(len(idx), np.int64), np.zeros(len(idx), bool)
    seen = {}
    for p, v in enumerate(idx):
        partner = where[key(-v)]
        if partner in seen:
            rep_of[p], conj[p] = seen[partner], True
        else:
            seen[p] = len(reps)
            rep_of[p] = len(reps)
            reps.append(p)
    return np.array(reps), rep_of, conj


def _wigner_seitz_blocks(pos: np.ndarray, cell: np.ndarray, n, r_cut: float) -> list:
    """For each pair (a, b) and residue T0 mod n: the shortest images T (ties within 1e-6 Å) within r_cut.

    Returns
    -------
    list of (a, b, T0 index, T (3,), weight)
    """
    n = np.asarray(n)
    res = np.stack(np.meshgrid(*[np.arange(x) for x in n], indexing="ij"), -1).reshape(-1, 3)
    M = np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    out = []
    natoms = len(pos)
    for a in range(natoms):
        for b in range(natoms):
            T = res[:, None, :] + M[None] * n  # (nres, nM, 3)
            d = np.linalg.norm(pos[b] - pos[a] + T @ cell, axis=-1)
            dmin = d.min(axis=1)
            for r in np.nonzero(dmin <= r_cut)[0]:
                ties = np.nonzero(d[r] <= dmin[r] + 1e-6)[0]
                for t in ties:
                    out.append((a, b, r, T[r, t], 1.0 / len(ties)))
    return out


def _exact_overlap(cell, shifts: np.ndarray) -> np.ndarray:
    """Two-centre overlaps <phi(0)|phi(T)> between the home cell and its images, shape (nT, nao, nao)."""
    pyscf = _import_pyscf()
    mol = cell.to_mol()
    coords = mol.atom_coords(unit="Bohr")
    lat = cell.lattice_vectors()  # Bohr
    out = np.empty((len(shifts), mol.nao, mol.nao))
    for c, T in enumerate(shifts):
        img = mol.copy()
        img.set_geom_(coords + np.asarray(T) @ lat, unit="Bohr", symmetry=False)
        out[c] = pyscf.gto.intor_cross("int1e_ovlp", mol, img)
    return out


#: Second SCF attempt after a non-converged first one, from its last density.  Damping and a level shift
#: change only the path to self-consistency: PySCF's final Fock matrix (and ours, rebuilt from the
#: density) carries neither.
SCF_RETRY = {"damp": 0.5, "level_shift": 0.1, "max_cycle": 150}


#: Fermi-Dirac width (Hartree, 0.14 eV) that ``smearing="auto"`` falls back to: with it, the defect cells whose
#: integer-occupation SCF did not converge (a 17-atom interstitial, a 31-atom vacancy) converged plainly.
AUTO_SMEARING = 0.005

#: ``smearing="auto"`` gives up integer occupations once the aufbau filling has been uneven over the SCF
#: k-points (:func:`uneven_filling`) in this many consecutive SCF cycles (a transient of the initial guess
#: lasts one or two).
UNEVEN_CYCLES = 4


def uneven_filling(mo_occ, n_per_k: int) -> bool:
    """Whether aufbau occupations put other than ``n_per_k`` occupied orbitals at some k-point.

    PySCF fills the lowest orbitals over all k-points together, so an insulator gets the same number at
    every k, while a metal (or a partly filled defect level dispersing across k) gets more at some k than at
    others: the Fermi level lies inside a band, and integer occupations make the SCF jump between fillings.

    Parameters
    ----------
    mo_occ : sequence of ndarray, shape (nk,) of (nmo,)
        Occupation numbers per k-point.
    n_per_k : int
        Occupied orbitals per k-point of an insulator (valence electrons // 2).

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> uneven_filling([np.array([2, 2, 0]), np.array([2, 2, 0])], 2)
    False
    >>> uneven_filling([np.array([2, 2, 2]), np.array([2, 0, 0])], 2)
    True
    """
    return any(int(np.count_nonzero(np.asarray(o) > 0)) != n_per_k for o in mo_occ)


class _MetallicFilling(Exception):
    """Stops an integer-occupation SCF from inside PySCF's loop (its callback); carries the last density."""

    def __init__(self, dm, cycle: int):
        super().__init__(f"uneven filling over k-points in {UNEVEN_CYCLES} consecutive cycles (to cycle {cycle + 1})")
        self.dm, self.cycle = dm, cycle


def _uneven_watch(n_per_k: int):
    """A PySCF SCF callback raising :class:`_MetallicFilling` after :data:`UNEVEN_CYCLES` uneven cycles in a row."""
    run = [0]

    def callback(envs):
        run[0] = run[0] + 1 if uneven_filling(envs["mo_occ"], n_per_k) else 0
        if run[0] >= UNEVEN_CYCLES and not envs.get("scf_conv"):
            raise _MetallicFilling(envs["dm"], int(envs["cycle"]))

    return callback


class SCFNotConverged(ValueError):
    """PySCF's SCF did not reach ``conv_tol`` (a property of the structure and settings, not a bug)."""


def _guess_key(atoms: Atoms, settings: CrystalSettings, scf_kmesh: tuple) -> tuple:
    """What a density matrix's shape and meaning depend on: species in order, basis, SCF k-mesh."""
    return (tuple(int(z) for z in atoms.numbers), settings.basis, settings.pseudo, tuple(scf_kmesh))


#: A previous density seeds the next SCF only if no atom moved further than this (Å, in the new cell,
#: modulo lattice vectors): perturbations of one base (<= ~0.6 Å) qualify; a vacancy or interstitial at
#: another site shifts atom indices by a bond length, and its density would be a misleading guess
#: (the first generator's vacancy cells failed to converge from such guesses).
GUESS_MAX_SHIFT = 1.0


def _same_geometry(prev: Atoms | None, atoms: Atoms, tol: float = GUESS_MAX_SHIFT) -> bool:
    """Same number of atoms, cells within 10 %, and every atom within ``tol`` Å of its predecessor."""
    if prev is None or len(prev) != len(atoms) or not np.array_equal(prev.numbers, atoms.numbers):
        return False
    c0, c1 = np.asarray(prev.cell.array), np.asarray(atoms.cell.array)
    if np.abs(c1 - c0).max() > 0.1 * np.linalg.norm(c0, axis=1).max():
        return False
    df = atoms.get_scaled_positions(wrap=False) - prev.get_scaled_positions(wrap=False)
    df -= np.round(df)
    return bool(np.linalg.norm(df @ c1, axis=1).max() <= tol)


def resolved_settings(atoms: Atoms, settings: CrystalSettings) -> tuple:
    """The concrete SCF and Fourier meshes for this cell: ``(scf_kmesh, fourier_kmesh)``.

    Raises
    ------
    ValueError
        A given Fourier mesh is too coarse for ``r_cut`` (the message names the mesh that is needed); a
        slab's vacuum is not longer than ``r_cut``.
    """
    from .kmesh import check_fourier_kmesh, check_vacuum, fourier_kmesh_for, scf_kmesh_for

    cellv, pbc = atoms.cell.array, np.asarray(atoms.pbc, bool)
    check_vacuum(cellv, atoms.positions, pbc, settings.r_cut)
    scf = scf_kmesh_for(cellv, pbc=pbc) if settings.scf_kmesh == "auto" else tuple(settings.scf_kmesh)
    if settings.fourier_kmesh == "auto":
        four = fourier_kmesh_for(cellv, settings.r_cut, pbc=pbc)
    else:
        four = tuple(settings.fourier_kmesh)
        check_fourier_kmesh(cellv, four, settings.r_cut, pbc=pbc)
    return scf, four


def run_crystal(atoms: Atoms, settings: CrystalSettings = CrystalSettings(), dm0=None, log: Callable | None = None,
                band_window: float = 2.0) -> tuple:
    """Converge a periodic PySCF calculation and return real-space H(T), S(T) in our conventions.

    Parameters
    ----------
    atoms : ase.Atoms
        Å.  Periodic in all three directions, or a slab (wire): an axis with ``pbc`` False holds vacuum
        longer than ``r_cut``; PySCF still sees a 3D-periodic box, the meshes are 1 along that axis,
        ``reference_bands`` lie in the plane ``k`` = 0 along it, and the stored structure keeps its ``pbc``.
    settings : CrystalSettings
    dm0 : dict or ndarray, optional
        A previous call's returned state (dict), or density matrices (nk, nao, nao) in PySCF's AO order.
        Used as the initial guess only when it belongs to the same species order, basis and SCF k-mesh
        (a structures file may mix cell sizes) and no atom moved by more than :data:`GUESS_MAX_SHIFT`
        (a vacancy elsewhere); otherwise PySCF's own guess is used.
    log : callable, optional
        Called with progress strings.
    band_window : float
        Half-width (eV) of the near-Fermi-level window of the stored band error.

    Returns
    -------
    data : StructureData
        H (eV), S, energy (eV), midgap ``fermi_level`` (eV), ``n_electrons`` (valence),
        ``reference_bands`` = (:data:`REFERENCE_KPTS`, PySCF's eigenvalues there, eV).  ``info`` holds
        ``settings`` (as requested), ``resolved`` (the meshes and cutoff used, FFT residual) and
        ``band_error`` (:func:`acehamil.io.band_check.band_errors`, meV), ``seconds`` (wall), ``cpu_seconds`` (this
        process) and ``load_1min`` (the machine's load average when it finished).
    state : dict
        ``{"key", "dm", "ke_cutoff", "atoms"}``: pass it as ``dm0`` to the next call.

    Raises
    ------
    ValueError
        Too coarse Fourier mesh or FFT grid (the message says which option fixes it);
        :class:`SCFNotConverged`.
    """
    from .band_check import band_errors
    from .kmesh import max_r_cut

    pyscf = _import_pyscf()
    pbc = np.asarray(atoms.pbc, bool)
    if not pbc.any():
        raise ValueError("run_crystal needs a structure periodic along at least one axis (use run_molecule for molecules)")
    log = log or (lambda msg: None)
    t0, c0 = time.perf_counter(), time.process_time()
    scf_k, n = resolved_settings(atoms, settings)
    prev = dm0 if isinstance(dm0, dict) else {}
    ke, fft_res, cell = choose_ke_cutoff(atoms, settings, start=prev.get("ke_cutoff"))
    key = _guess_key(atoms, settings, scf_k)
    kscf = cell.make_kpts(list(scf_k))
    guess = prev.get("dm") if prev.get("key") == key and _same_geometry(prev.get("atoms"), atoms) else None
    if isinstance(dm0, np.ndarray) and dm0.shape == (len(kscf), cell.nao, cell.nao):
        guess = dm0
    def new_mf(width):
        m = pyscf.pbc.dft.KRKS(cell, kscf)
        m.xc, m.conv_tol = settings.xc, settings.conv_tol
        if width:
            m = pyscf.pbc.scf.addons.smearing_(m, sigma=width, method="fermi")
        return m

    mf, retried, width, why = _converge(new_mf, guess, settings, cell.nelectron, scf_k, len(atoms), log)
    log(f"scf {time.perf_counter() - t0:.1f}s")
    dm = mf.make_rdm1()
    # Fock on the Fourier mesh from the converged density (time reversal: half the k-points)
    n = np.asarray(n)
    frac = fourier_mesh(n)
    reps, rep_of, conj = _time_reversal_pairs(frac, n)
    kabs = cell.get_abs_kpts(frac[reps])
    hk_rep = np.asarray(mf.get_hcore(cell, kabs)) + np.asarray(mf.get_veff(cell, dm, kpts=kscf, kpts_band=kabs))
    hk = np.where(conj[:, None, None], hk_rep[rep_of].conj(), hk_rep[rep_of])
    log(f"fock on {len(reps)} k {time.perf_counter() - t0:.1f}s")
    b, perm, sign, npa = basis_map(cell)
    hk = to_our_orbitals(hk, perm, sign)
    # H on the supercell residues T0 = 0..n-1, then Wigner-Seitz images
    res = np.stack(np.meshgrid(*[np.arange(x) for x in n], indexing="ij"), -1).reshape(-1, 3)
    phase = np.exp(-2j * np.pi * res @ frac.T) / len(frac)  # (nres, nk)
    HT = np.einsum("rk,kij->rij", phase, hk)
    im = float(np.abs(HT.imag).max())
    if im > FFT_TOL:  # the pre-SCF check passed, yet H(T) is complex: FFT noise in v_eff (or a convention bug)
        raise ValueError(_fft_message(sorted(set(atoms.get_chemical_symbols())), ke if ke is not None else float(cell.ke_cutoff),
                                      im, None).replace("Im H at half-integer k", "Im H(T) after the Fourier transform"))
    HT = HT.real * HA
    pos = atoms.positions
    blocks = _wigner_seitz_blocks(pos, atoms.cell.array, n, settings.r_cut)
    off = np.concatenate([[0], np.cumsum(npa)])
    shifts = np.array([blk[3] for blk in blocks]).reshape(-1, 3)
    ushift, inv = np.unique(shifts, axis=0, return_inverse=True)
    Sx = to_our_orbitals(_exact_overlap(cell, ushift), perm, sign)
    Hb, Sb = [], []
    for (a, bb, r, T, w), c in zip(blocks, inv.reshape(-1)):
        Hb.append(w * HT[r, off[a] : off[a + 1], off[bb] : off[bb + 1]])
        Sb.append(Sx[c, off[a] : off[a + 1], off[bb] : off[bb + 1]])
    ii = [blk[0] for blk in blocks]
    jj = [blk[1] for blk in blocks]
    Hm = hermitise(RealSpaceMatrix.from_blocks(npa, ii, jj, shifts, Hb))
    Sm = hermitise(RealSpaceMatrix.from_blocks(npa, ii, jj, shifts, Sb))
    # PySCF's own bands at off-mesh k-points, and the Fermi level (midgap on the SCF mesh)
    kref = REFERENCE_KPTS * pbc  # a slab's bands at k = 0 along the vacuum (PySCF's box is 3D-periodic)
    eref = np.asarray(mf.get_bands(cell.get_abs_kpts(kref))[0]) * HA
    nocc = cell.nelectron // 2
    mo = np.asarray(mf.mo_energy) * HA
    if width and getattr(mf, "mu", None) is not None:
        fermi = float(np.asarray(mf.mu).max()) * HA  # chemical potential of the smeared occupations
    else:
        fermi = 0.5 * (mo[:, nocc - 1].max() + mo[:, nocc].min())
    resolved = {"scf_kmesh": list(scf_k), "fourier_kmesh": [int(x) for x in n], "ke_cutoff": ke,
                "fft_grid": [int(x) for x in cell.mesh], "fft_residual_Ha": fft_res, "scf_retried": retried, "smearing": width,
                "smearing_reason": why, "imag_HT_Ha": im,
                "r_cut_max": max_r_cut(atoms.cell.array, n, pbc)}
    data = StructureData(
        atoms=Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=pbc),
        basis=b,
        H=(Hm,),
        S=Sm,
        fermi_level=float(fermi),
        energy=float(mf.e_tot * HA),
        reference_bands=(kref, eref),
        n_electrons=float(cell.nelectron),
        info={"source": "pyscf", "method": f"KRKS/{settings.xc}", "settings": settings.to_dict(), "resolved": resolved},
    )
    data = replace(data, info={**data.info, "band_error": band_errors(data, band_window), "seconds": time.perf_counter() - t0,
                                  "cpu_seconds": time.process_time() - c0, "load_1min": os.getloadavg()[0]})
    log(f"done {time.perf_counter() - t0:.1f}s, band error {data.info['band_error']['checked_max_meV']:.2f} meV")
    return data, {"key": key, "dm": dm, "ke_cutoff": ke, "atoms": atoms.copy()}


def _converge(new_mf: Callable, guess, settings: CrystalSettings, nelectron: float, scf_k, natoms: int, log: Callable):
    """A converged PySCF SCF: ``(mf, retried, smearing width used (Ha), why smearing was added or None)``.

    Plain first (integer occupations unless ``settings.smearing`` is a width).  ``smearing="auto"``: an
    integer-occupation SCF whose filling stays uneven over k-points (:data:`UNEVEN_CYCLES` cycles) is stopped
    early, and one that does not converge is given up; both continue from their last density with
    :data:`AUTO_SMEARING`.  Last, a damped and level-shifted retry (:data:`SCF_RETRY`) at the width reached.

    Raises
    ------
    SCFNotConverged
    """
    auto = settings.smearing == "auto"
    width = 0.0 if auto else float(settings.smearing)
    why = None
    mf = new_mf(width)
    n_per_k = int(round(nelectron)) // 2
    if auto and (int(round(nelectron)) % 2 or not float(nelectron).is_integer()):
        why = f"{nelectron:g} valence electrons per cell: odd, so no closed-shell insulator"
    else:
        if auto:
            mf.callback = _uneven_watch(n_per_k)
        try:
            mf.kernel(guess) if guess is not None else mf.kernel()
        except _MetallicFilling as stop:
            why, guess = f"integer occupations: {stop}", stop.dm
        else:
            if mf.converged:
                return mf, False, width, None
            guess = mf.make_rdm1() if getattr(mf, "mo_coeff", None) is not None else guess
            why = f"integer occupations: not converged after {mf.max_cycle} cycles"
    if auto:
        width = AUTO_SMEARING
        log(f"{why}: Fermi-Dirac smearing {AUTO_SMEARING} Ha (--smearing auto)")
        mf = new_mf(width)
        mf.kernel(guess) if guess is not None else mf.kernel()
        if mf.converged:
            return mf, False, width, why
        guess = mf.make_rdm1() if getattr(mf, "mo_coeff", None) is not None else guess
    # e.g. a vacancy's near-degenerate levels at E_F make plain DIIS oscillate
    log(f"scf not converged after {mf.max_cycle} cycles: retrying with damping {SCF_RETRY['damp']}, "
        f"level shift {SCF_RETRY['level_shift']} Ha, {SCF_RETRY['max_cycle']} cycles")
    mf = new_mf(width)
    mf.damp, mf.level_shift, mf.max_cycle = SCF_RETRY["damp"], SCF_RETRY["level_shift"], SCF_RETRY["max_cycle"]
    mf.kernel(guess) if guess is not None else mf.kernel()
    if not mf.converged:
        raise SCFNotConverged(
            f"PySCF's SCF did not converge (neither plainly nor damped and level-shifted, {mf.max_cycle} cycles) "
            f"to conv_tol {settings.conv_tol:g} Ha "
            f"(last energy {float(mf.e_tot):.8f} Ha; {natoms} atoms, SCF k-mesh {'x'.join(map(str, scf_k))}"
            f"{f', smearing {width:g} Ha' if width else ''}); "
            "a metal or a very distorted structure may need a denser --scf-kmesh or a looser --conv-tol"
            f"{'' if width or auto else ', a defect or metal --smearing auto (or a width)'}")
    return mf, True, width, why


def hermitise(m: RealSpaceMatrix) -> RealSpaceMatrix:
    """``(O_ij(T) + O_ji(-T)^T) / 2``: exactly (bitwise) Hermitian, so files can store half of it.

    Raises
    ------
    ValueError
        A block has no partner ``(j, i, -T)``.
    """
    return m.with_data(0.5 * (m.data + m.partner_transpose()))


def band_error(data: StructureData) -> float:
    """Largest |our Bloch-sum bands - stored reference bands| over the reference k-points and all bands, eV
    (see :func:`acehamil.io.band_check.band_errors` for the per-set figures)."""
    from .band_check import band_errors

    return band_errors(data)["all"]["max_meV"] * 1e-3

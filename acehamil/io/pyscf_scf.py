"""How a periodic PySCF calculation is set up and converged: settings, FFT cutoff, k-meshes, SCF.

The set-up half of the PySCF generator (:mod:`acehamil.io.pyscf_gen` runs the calculations,
:mod:`acehamil.io.pyscf_matrices` turns their matrices into our blocks):

* :class:`CrystalSettings`: the frozen spec stored with every structure;
* :func:`choose_ke_cutoff`: the FFT grid, checked (``Im H(k)`` at half-integer k must vanish; "auto" climbs
  :data:`KE_LADDER`), :func:`make_cell`;
* :func:`resolved_settings`: the concrete SCF and Fourier k-meshes of a cell;
* :func:`_converge`: the SCF, with ``smearing="auto"`` (:func:`uneven_filling`), a damped retry
  (:data:`SCF_RETRY`) and :class:`SCFNotConverged`; :func:`_guess_key` and :func:`_same_geometry` decide
  whether a previous density may seed it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from ase import Atoms


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

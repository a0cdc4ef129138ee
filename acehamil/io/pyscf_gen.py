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

Three modules: this one runs the calculations (:func:`run_molecule`, :func:`run_crystal`);
:mod:`acehamil.io.pyscf_scf` sets them up and converges the SCF (:class:`CrystalSettings`, FFT cutoff,
k-meshes, smearing, retries); :mod:`acehamil.io.pyscf_matrices` turns PySCF's matrices into our blocks
(orbital map, steps 2-4).  Their public names are importable from here too.
"""


from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Callable

import numpy as np
from ase import Atoms

from ..conventions import to_our_orbitals
from ..structure import RealSpaceMatrix, StructureData
from .pyscf_matrices import (BOHR, HA, PYSCF, band_error, basis_map, fourier_mesh, hermitise,  # noqa: F401 (re-exported)
                             _time_reversal_pairs, shortest_image_blocks, supercell_matrices)
from .pyscf_scf import (AUTO_SMEARING, FFT_TOL, GUESS_MAX_SHIFT, KE_LADDER, SCF_RETRY,  # noqa: F401 (re-exported)
                        UNEVEN_CYCLES, CrystalSettings, SCFNotConverged, _converge, _fft_message, _guess_key,
                        _import_pyscf, _same_geometry, choose_ke_cutoff, fft_residual, make_cell, resolved_settings,
                        uneven_filling)

__all__ = ["AUTO_SMEARING", "BOHR", "FFT_TOL", "GUESS_MAX_SHIFT", "HA", "KE_LADDER", "REFERENCE_KPTS", "SCF_RETRY",
           "UNEVEN_CYCLES", "CrystalSettings", "SCFNotConverged", "band_error", "basis_map", "choose_ke_cutoff",
           "fft_residual", "fourier_mesh", "hermitise", "make_cell", "resolved_settings", "run_crystal", "run_molecule",
           "uneven_filling"]

#: Off-mesh k-points (fractional) at which PySCF's own bands are stored (none lies on an n <= 12 mesh).
REFERENCE_KPTS = np.array([[0.13, 0.27, 0.41], [0.37, 0.05, 0.21], [0.45, 0.43, 0.11], [0.0, 0.0, 0.17]])


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
    HT = supercell_matrices(hk, frac, n)
    im = float(np.abs(HT.imag).max())
    if im > FFT_TOL:  # the pre-SCF check passed, yet H(T) is complex: FFT noise in v_eff (or a convention bug)
        raise ValueError(_fft_message(sorted(set(atoms.get_chemical_symbols())), ke if ke is not None else float(cell.ke_cutoff),
                                      im, None).replace("Im H at half-integer k", "Im H(T) after the Fourier transform"))
    HT = HT.real * HA
    Hm, Sm = shortest_image_blocks(HT, cell, atoms, n, npa, perm, sign, settings.r_cut)
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

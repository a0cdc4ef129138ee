"""From PySCF's matrices to our real-space blocks: orbital map, Fourier mesh, shortest images, exact overlap.

The conversion half of the PySCF generator (:mod:`acehamil.io.pyscf_gen` runs the calculations):

* :func:`basis_map`: shells per species and the permutation-and-sign map from PySCF's AO order to ours;
* :func:`fourier_mesh`, :func:`_time_reversal_pairs`: the Gamma-centred mesh on which ``H(k)`` is built,
  and which half of it has to be computed (``H(-k) = conj(H(k))``);
* :func:`supercell_matrices`: ``H(T0) = 1/N sum_k H(k) exp(-2 pi i k.T0)`` on the residues of the Fourier
  supercell;
* :func:`shortest_image_blocks`: each atom pair and residue assigned to its shortest images
  (:func:`_wigner_seitz_blocks`) within ``r_cut``, with ``S(T)`` computed exactly as a two-centre
  integral (:func:`_exact_overlap`, no Fourier aliasing), both made exactly Hermitian (:func:`hermitise`);
* :func:`band_error`: how far the stored blocks' bands are from PySCF's own.

Units: Hartree -> eV with PySCF's own factor (:data:`HA`), Bohr -> Å.  Nothing here runs an SCF; only
:func:`_exact_overlap` calls PySCF (integrals of an already built cell).
"""

from __future__ import annotations

import numpy as np

from ..conventions import BOHR_TO_ANGSTROM, CODE_CONVENTIONS, orbital_permutation, to_our_orbitals
from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData

PYSCF = CODE_CONVENTIONS["pyscf"]
HA = PYSCF.hartree_to_ev
BOHR = BOHR_TO_ANGSTROM  # Å, = pyscf.lib.param.BOHR (CODATA 2018)


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


# ----------------------------------------------------------------------------- k-space -> real space
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


def supercell_matrices(hk: np.ndarray, frac: np.ndarray, n) -> np.ndarray:
    """``H(T0) = 1/N sum_k H(k) exp(-2 pi i k.T0)`` for the residues ``T0 = 0..n-1`` of the Fourier supercell.

    Parameters
    ----------
    hk : ndarray of complex, shape (N, nao, nao)
        ``H(k)`` on :func:`fourier_mesh` ``(n)`` (any unit; the result has the same).
    frac : ndarray, shape (N, 3)
        That mesh, fractional.
    n : sequence of 3 int

    Returns
    -------
    ndarray of complex, shape (n1*n2*n3, nao, nao)
        Residues in C order (the index ``r`` of :func:`_wigner_seitz_blocks`); real up to FFT noise.
    """
    res = np.stack(np.meshgrid(*[np.arange(x) for x in n], indexing="ij"), -1).reshape(-1, 3)
    phase = np.exp(-2j * np.pi * res @ frac.T) / len(frac)  # (nres, nk)
    return np.einsum("rk,kij->rij", phase, hk)


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
    import pyscf.gto  # a built cell exists, so PySCF does

    mol = cell.to_mol()
    coords = mol.atom_coords(unit="Bohr")
    lat = cell.lattice_vectors()  # Bohr
    out = np.empty((len(shifts), mol.nao, mol.nao))
    for c, T in enumerate(shifts):
        img = mol.copy()
        img.set_geom_(coords + np.asarray(T) @ lat, unit="Bohr", symmetry=False)
        out[c] = pyscf.gto.intor_cross("int1e_ovlp", mol, img)
    return out


def shortest_image_blocks(HT: np.ndarray, cell, atoms, n, norb_per_atom, perm, sign, r_cut: float) -> tuple:
    """Real-space ``H`` and exact ``S`` blocks of every bond ``<= r_cut``, each on its shortest image(s).

    Parameters
    ----------
    HT : ndarray of float, shape (n1*n2*n3, nao, nao)
        :func:`supercell_matrices`, real part, in our orbital order (eV).
    cell : pyscf.pbc.gto.Cell
        The built cell (for the overlap integrals).
    atoms : ase.Atoms
        Positions and cell, Å.
    n : sequence of 3 int
        The Fourier mesh.
    norb_per_atom, perm, sign : ndarray
        From :func:`basis_map`.
    r_cut : float
        Å.

    Returns
    -------
    H, S : RealSpaceMatrix
        Exactly Hermitian (:func:`hermitise`); a residue with several equally short images shares its
        block among them with equal weights (``H`` only: ``S`` is exact on every image).
    """
    blocks = _wigner_seitz_blocks(atoms.positions, atoms.cell.array, n, r_cut)
    off = np.concatenate([[0], np.cumsum(norb_per_atom)])
    shifts = np.array([blk[3] for blk in blocks]).reshape(-1, 3)
    ushift, inv = np.unique(shifts, axis=0, return_inverse=True)
    Sx = to_our_orbitals(_exact_overlap(cell, ushift), perm, sign)
    Hb, Sb = [], []
    for (a, bb, r, T, w), c in zip(blocks, inv.reshape(-1)):
        Hb.append(w * HT[r, off[a] : off[a + 1], off[bb] : off[bb + 1]])
        Sb.append(Sx[c, off[a] : off[a + 1], off[bb] : off[bb + 1]])
    ii = [blk[0] for blk in blocks]
    jj = [blk[1] for blk in blocks]
    Hm = hermitise(RealSpaceMatrix.from_blocks(norb_per_atom, ii, jj, shifts, Hb))
    Sm = hermitise(RealSpaceMatrix.from_blocks(norb_per_atom, ii, jj, shifts, Sb))
    return Hm, Sm


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

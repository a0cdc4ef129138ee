"""The one place that states acehamil's conventions.

Everything inside acehamil uses these; every conversion from a DFT code's own
convention happens in :mod:`acehamil.io` using the tables below.  The prose
version of this module is ``docs/conventions.md``.

Units
    Energies in eV, lengths in Å, overlaps dimensionless, forces eV/Å,
    stress eV/Å^3.

Real-space matrices
    ``H_ij(T) = <phi_i(r - tau_i) | H | phi_j(r - tau_j - T @ cell)>`` with ``T``
    an integer cell shift (3,), so the bond vector of block ``(i, j, T)`` is
    ``pos[j] - pos[i] + T @ cell``, the same as the neighbour-pair ``vec``.
    Hermiticity: ``H_ji(-T) = H_ij(T)^T``.

Bloch sums
    ``H(k) = sum_T H(T) exp(+2 pi i k . T)`` with ``k`` fractional (reduced,
    no 2 pi) - the "lattice gauge" (atomic positions do not enter).

Real spherical harmonics
    Orthonormal, standard real form without Condon-Shortley phase, ``m = -l..l``
    at flat index ``l*l + l + m``; so p is (y, z, x).  ``Y(Q r) = D^l(Q) Y(r)``
    defines the real Wigner-D for proper and improper ``Q``;
    ``D^l(-Q) = (-1)^l D^l(Q)``.

Orbital blocks
    Rotate as ``H_ij(Q R) = D^{l1}(Q) H_ij(R) D^{l2}(Q)^T``.

Examples
--------
>>> HARTREE_TO_EV["fhi-aims"]
27.2113845
>>> real_sh_index(1, -1), real_sh_index(1, 1)
(1, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

#: Bumped whenever a convention below changes meaning; stored in every file.
CONVENTIONS_VERSION = 1

ENERGY_UNIT = "eV"
LENGTH_UNIT = "Angstrom"
FORCE_UNIT = "eV/Angstrom"
STRESS_UNIT = "eV/Angstrom^3"

#: Sign of the exponent in H(k) = sum_T H(T) exp(BLOCH_SIGN * 2 pi i k.T).
BLOCH_SIGN = +1
#: Bond vector of block (i, j, T) is pos[j] - pos[i] + SHIFT_SIGN * T @ cell.
SHIFT_SIGN = +1

#: Hartree -> eV as used by each code (FHI-aims prints its own factor in aims.out).
HARTREE_TO_EV = MappingProxyType(
    {
        "fhi-aims": 27.2113845,
        "codata2018": 27.211386245988,
        "pyscf": 27.211386245988,  # pyscf.data.nist.HARTREE2EV (CODATA 2018)
    }
)
BOHR_TO_ANGSTROM = 0.529177210903

ANGULAR_LETTERS = "spdfghi"


def real_sh_index(l: int, m: int) -> int:
    """Flat index of the real spherical harmonic ``Y_lm``.

    Parameters
    ----------
    l : int
        Angular momentum, ``l >= 0``.
    m : int
        Magnetic number, ``-l <= m <= l``.

    Returns
    -------
    int
        ``l*l + l + m``.
    """
    if l < 0 or abs(m) > l:
        raise ValueError(f"invalid (l, m) = ({l}, {m}): need l >= 0 and |m| <= l")
    return l * l + l + m


def _fhi_aims_table(l: int) -> tuple[np.ndarray, np.ndarray]:
    # FHI-aims runs m = -l..l and flips the sign of odd positive m only.
    perm = np.arange(2 * l + 1)
    sign = np.array([-1.0 if (m > 0 and m % 2 == 1) else 1.0 for m in range(-l, l + 1)])
    return perm, sign


def _pyscf_table(l: int) -> tuple[np.ndarray, np.ndarray]:
    # PySCF (cartesian=False): p is (px, py, pz) = m (+1, -1, 0); l >= 2 is m = -l..l.
    if l == 1:
        code_m = [1, -1, 0]
    else:
        code_m = list(range(-l, l + 1))
    perm = np.array([code_m.index(m) for m in range(-l, l + 1)])
    return perm, np.ones(2 * l + 1)


def _siesta_table(l: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.arange(2 * l + 1)
    sign = np.array([(-1.0) ** (m % 2) for m in range(-l, l + 1)])
    return perm, sign


#: DeepH's orbital order per shell (the OpenMX one, which DeepH-pack's ABACUS/SIESTA interfaces convert to):
#: p (x, y, z); d (z^2, x^2-y^2, xy, xz, yz); f (m = 0, +1, -1, +2, -2, +3, -3); no sign changes.
_DEEPH_M = {0: [0], 1: [1, -1, 0], 2: [0, 2, -2, 1, -1], 3: [0, 1, -1, 2, -2, 3, -3]}


def _deeph_table(l: int) -> tuple[np.ndarray, np.ndarray]:
    if l not in _DEEPH_M:
        raise ValueError(f"DeepH orbital order is defined for l <= 3, got l={l}")
    code_m = _DEEPH_M[l]
    return np.array([code_m.index(m) for m in range(-l, l + 1)]), np.ones(2 * l + 1)


def _acehamil_table(l: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(2 * l + 1), np.ones(2 * l + 1)


_TABLES = MappingProxyType(
    {
        "acehamil": _acehamil_table,
        "fhi-aims": _fhi_aims_table,
        "pyscf": _pyscf_table,
        "siesta": _siesta_table,
        "deeph": _deeph_table,
    }
)

#: Codes with a known orbital table.
SUPPORTED_CODES = tuple(_TABLES)


def orbital_table(code: str, l: int) -> tuple[np.ndarray, np.ndarray]:
    """Permutation and signs taking one shell of ``code``'s orbitals to ours.

    Our orbital ``m`` (position ``l + m`` in the shell) equals
    ``sign[l + m] * code_orbital[perm[l + m]]``.

    Parameters
    ----------
    code : str
        One of :data:`SUPPORTED_CODES`.
    l : int
        Angular momentum of the shell (0 <= l <= 6).

    Returns
    -------
    perm : ndarray of int, shape (2l+1,)
        Position, within the code's shell, of our orbital ``m``.
    sign : ndarray of float, shape (2l+1,)
        +1 or -1.

    Examples
    --------
    >>> perm, sign = orbital_table("pyscf", 1)
    >>> perm.tolist(), sign.tolist()
    ([1, 2, 0], [1.0, 1.0, 1.0])
    >>> orbital_table("fhi-aims", 2)[1].tolist()
    [1.0, 1.0, 1.0, -1.0, 1.0]
    """
    if code not in _TABLES:
        raise ValueError(f"unknown orbital convention {code!r}; known: {', '.join(SUPPORTED_CODES)}")
    if not (0 <= int(l) <= 6):
        raise ValueError(f"angular momentum l={l} outside the supported range 0..6")
    return _TABLES[code](int(l))


def orbital_permutation(code: str, shells) -> tuple[np.ndarray, np.ndarray]:
    """Permutation and signs taking a code's orbitals (of a whole structure) to ours.

    The one helper every reader uses: our orbital ``k`` equals
    ``sign[k] * code_orbital[perm[k]]``.

    Parameters
    ----------
    code : str
        Key of :func:`orbital_table` (``CODE_CONVENTIONS[...].orbital_table``).
    shells : iterable of (int, array_like of int)
        In our orbital order, each shell's ``l`` and the code's indices of its
        ``2l+1`` functions in the code's own order (e.g. ``start + arange(2l+1)``).

    Returns
    -------
    perm : ndarray of int64, shape (norb,)
    sign : ndarray of float64, shape (norb,)

    Examples
    --------
    >>> perm, sign = orbital_permutation("pyscf", [(0, [0]), (1, [1, 2, 3])])
    >>> perm.tolist(), sign.tolist()
    ([0, 2, 3, 1], [1.0, 1.0, 1.0, 1.0])
    """
    perm, sign = [], []
    for l, functions in shells:
        functions = np.asarray(functions, dtype=np.int64)
        if functions.shape != (2 * int(l) + 1,):
            raise ValueError(f"a shell with l={l} needs {2 * int(l) + 1} function indices, got {functions.shape}")
        p, sg = orbital_table(code, l)
        perm.append(functions[p])
        sign.append(sg)
    if not perm:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(perm).astype(np.int64), np.concatenate(sign).astype(float)


def to_our_orbitals(matrix, perm, sign) -> np.ndarray:
    """A code's matrices ``(..., norb, norb)`` in our orbital order and signs (see :func:`orbital_permutation`).

    Returns
    -------
    ndarray, shape (..., norb, norb)
        ``sign_a sign_b M[..., perm_a, perm_b]``.
    """
    m = np.asarray(matrix)[..., perm, :][..., :, perm]
    return m * sign[:, None] * sign[None, :]


@dataclass(frozen=True)
class CodeConvention:
    """How one DFT code (or file layout) writes its matrices, relative to acehamil.

    Attributes
    ----------
    code : str
    orbital_table : str
        Key for :func:`orbital_table`.
    energy_unit : str
        Unit of H in the code's files.
    hartree_to_ev : float
        The factor the code itself uses.
    bloch_sign : int
        Sign in the code's ``O(k) = sum_T O(T) exp(sign * 2 pi i k.T)``.
    cell_index_sign : int
        Our shift ``T = cell_index_sign * (stored cell index)`` (after any position wrapping).
    verified : str
        How the facts were verified (or "unverified").
    """

    code: str
    orbital_table: str
    energy_unit: str
    hartree_to_ev: float
    bloch_sign: int
    cell_index_sign: int
    verified: str


#: Per-code conventions (see docs/conventions.md; each reader uses its entry).
CODE_CONVENTIONS = MappingProxyType(
    {
        "fhi-aims": CodeConvention(
            "fhi-aims", "fhi-aims", "Hartree", 27.2113845, +1, +1,
            "bands (5e-6 eV) and eigenvalues on shared/data/fhi-aims; s-p and s-d overlaps follow the bond "
            "(tests/test_io_fhi_aims.py). Positions are wrapped to fractional (-0.5, 0.5]: T = R + W_j - W_i.",
        ),
        "acehamiltonians": CodeConvention(
            "acehamiltonians", "fhi-aims", "Hartree", 27.2113845, +1, -1,
            "s-p overlaps follow the bond only with T = -Translations; DOS reproduced (tests/test_io_acehamiltonians.py)",
        ),
        "pyscf": CodeConvention(
            "pyscf", "pyscf", "Hartree", 27.211386245988, +1, +1,
            "AO values rotate with D^l (l <= 3), exact S(T) equals the Fourier transform of pbc S(k), "
            "rotated molecules (tests/test_io_pyscf.py, tests/test_conventions.py)",
        ),
        "siesta": CodeConvention(
            "siesta", "siesta", "Rydberg", 27.211386245988, +1, +1,
            "orbital signs from sisl's documentation only; no SIESTA reader or file verified here",
        ),
        "deeph": CodeConvention(
            "deeph", "deeph", "eV", 27.211386245988, +1, +1,
            "order and signs from DeepH-pack's ABACUS->DeepH transform (OpenMX harmonics); write -> read round trip "
            "bit-identical, s-p overlaps of written files follow the bond in DeepH's (x, y, z) order "
            "(tests/test_interop.py); no file written by DeepH itself was available to check",
        ),
    }
)


def conventions_metadata() -> dict:
    """Attributes written into every acehamil file (units and conventions version)."""
    return {
        "conventions_version": CONVENTIONS_VERSION,
        "energy_unit": ENERGY_UNIT,
        "length_unit": LENGTH_UNIT,
        "bloch_sign": BLOCH_SIGN,
        "shift_sign": SHIFT_SIGN,
        "real_sh": "standard real, no Condon-Shortley phase, index l*l+l+m",
    }

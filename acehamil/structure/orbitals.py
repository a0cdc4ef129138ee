"""Orbital basis definitions and the orbital layout of a structure.

An :class:`OrbitalBasis` says, per species (atomic number), which shells of
atomic orbitals it carries; a shell is ``2l+1`` real orbitals ordered
``m = -l..l`` in acehamil's real-harmonic convention.  The
:class:`OrbitalLayout` of a structure places these orbitals in one global
index: atom ``a``'s orbitals are ``atom_offsets[a]:atom_offsets[a+1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from ase.data import chemical_symbols

from ..conventions import ANGULAR_LETTERS


@dataclass(frozen=True, order=True)
class Shell:
    """One shell of ``2l+1`` real orbitals.

    Attributes
    ----------
    l : int
        Angular momentum (0 = s, 1 = p, 2 = d, 3 = f, ...).
    n : int
        Principal / radial index as labelled by the source code (informational;
        it distinguishes shells of equal ``l``).
    label : str
        Free-form label (e.g. "3s", "hydro 3 d 5.2").
    """

    l: int
    n: int = 0
    label: str = ""

    def __post_init__(self):
        if int(self.l) != self.l or not (0 <= self.l <= 6):
            raise ValueError(f"shell angular momentum must be an integer 0..6, got {self.l!r}")

    @property
    def size(self) -> int:
        """Number of orbitals, ``2l+1``."""
        return 2 * self.l + 1

    @property
    def name(self) -> str:
        return self.label or f"{self.n}{ANGULAR_LETTERS[self.l]}"


@dataclass(frozen=True)
class OrbitalBasis:
    """Shells of each species.

    Parameters
    ----------
    shells : tuple of (int, tuple of Shell)
        ``(atomic_number, shells)`` pairs, sorted by atomic number.  Build it with
        :meth:`from_dict`.

    Examples
    --------
    >>> b = OrbitalBasis.from_dict({14: [(3, 0), (3, 1), (3, 2)]})
    >>> b.norb(14), b.lvalues(14)
    (9, (0, 1, 2))
    >>> b.species
    (14,)
    """

    shells: tuple = field(default=())

    def __post_init__(self):
        zs = [z for z, _ in self.shells]
        if len(set(zs)) != len(zs):
            raise ValueError(f"species listed twice in orbital basis: {zs}")
        if zs != sorted(zs):
            object.__setattr__(self, "shells", tuple(sorted(self.shells)))

    @classmethod
    def from_dict(cls, spec: dict) -> "OrbitalBasis":
        """Build from ``{Z or symbol: [Shell | (n, l) | (n, l, label) | l, ...]}``."""
        items = []
        for key, shells in spec.items():
            z = _as_number(key)
            parsed = []
            for s in shells:
                if isinstance(s, Shell):
                    parsed.append(s)
                elif isinstance(s, (int, np.integer)):
                    parsed.append(Shell(l=int(s)))
                else:
                    s = tuple(s)
                    if len(s) == 2:
                        parsed.append(Shell(n=int(s[0]), l=int(s[1])))
                    elif len(s) == 3:
                        parsed.append(Shell(n=int(s[0]), l=int(s[1]), label=str(s[2])))
                    else:
                        raise ValueError(f"cannot read shell {s!r}: give (n, l) or (n, l, label)")
            if not parsed:
                raise ValueError(f"species {key!r} has no shells")
            items.append((z, tuple(parsed)))
        return cls(tuple(sorted(items)))

    def to_dict(self) -> dict:
        """``{Z: [(n, l, label), ...]}`` (JSON/HDF5 friendly)."""
        return {z: [(s.n, s.l, s.label) for s in shells] for z, shells in self.shells}

    @property
    def species(self) -> tuple:
        """Atomic numbers covered, sorted."""
        return tuple(z for z, _ in self.shells)

    def shells_of(self, z: int) -> tuple:
        """Shells of species ``z``; clear error for an unknown species."""
        for zz, shells in self.shells:
            if zz == z:
                return shells
        sym = chemical_symbols[z] if 0 < z < len(chemical_symbols) else "?"
        raise ValueError(
            f"species {sym} (Z={z}) has no orbital basis; basis covers "
            + ", ".join(f"{chemical_symbols[s]} (Z={s})" for s in self.species)
        )

    def lvalues(self, z: int) -> tuple:
        return tuple(s.l for s in self.shells_of(z))

    def norb(self, z: int) -> int:
        """Number of orbitals of species ``z``."""
        return sum(s.size for s in self.shells_of(z))

    def layout(self, numbers) -> "OrbitalLayout":
        """Orbital layout of a structure with these atomic numbers."""
        return OrbitalLayout(self, tuple(int(z) for z in numbers))


def _as_number(key) -> int:
    if isinstance(key, (int, np.integer)):
        return int(key)
    if isinstance(key, str) and key.isdigit():
        return int(key)
    if key in chemical_symbols:
        return chemical_symbols.index(key)
    raise ValueError(f"unknown species {key!r}")


def atom_offsets(norb_per_atom) -> np.ndarray:
    """First orbital of each atom and the total at the end: ``[0, cumsum(norb_per_atom)]``.

    Parameters
    ----------
    norb_per_atom : array of int, shape (natoms,)

    Returns
    -------
    ndarray of int64, shape (natoms + 1,)

    Examples
    --------
    >>> atom_offsets([9, 1, 9]).tolist()
    [0, 9, 10, 19]
    """
    return np.concatenate([[0], np.cumsum(np.asarray(norb_per_atom, dtype=np.int64))]).astype(np.int64)


@dataclass(frozen=True)
class OrbitalLayout:
    """Global orbital indexing of a structure.

    Attributes
    ----------
    basis : OrbitalBasis
    numbers : tuple of int, length natoms

    Examples
    --------
    >>> lay = OrbitalBasis.from_dict({1: [0], 8: [0, 0, 1]}).layout([8, 1, 1])
    >>> lay.norb, lay.atom_offsets.tolist()
    (7, [0, 5, 6, 7])
    >>> lay.orbital_l.tolist()
    [0, 0, 1, 1, 1, 0, 0]
    """

    basis: OrbitalBasis
    numbers: tuple

    def __post_init__(self):
        for z in set(self.numbers):
            self.basis.shells_of(z)  # raises for unknown species

    @cached_property
    def norb_per_atom(self) -> np.ndarray:
        """Orbitals per atom, shape (natoms,), int."""
        return np.array([self.basis.norb(z) for z in self.numbers], dtype=np.int64)

    @cached_property
    def atom_offsets(self) -> np.ndarray:
        """First orbital of each atom, shape (natoms+1,), int."""
        return atom_offsets(self.norb_per_atom)

    @property
    def norb(self) -> int:
        return int(self.atom_offsets[-1])

    @property
    def natoms(self) -> int:
        return len(self.numbers)

    @cached_property
    def orbital_atom(self) -> np.ndarray:
        """Atom of each orbital, shape (norb,), int."""
        return np.repeat(np.arange(self.natoms), self.norb_per_atom)

    @cached_property
    def orbital_l(self) -> np.ndarray:
        """Angular momentum of each orbital, shape (norb,), int."""
        return np.concatenate(
            [np.repeat([s.l for s in self.basis.shells_of(z)], [s.size for s in self.basis.shells_of(z)]) for z in self.numbers]
        ).astype(np.int64) if self.natoms else np.zeros(0, np.int64)

    @cached_property
    def orbital_shell(self) -> np.ndarray:
        """Index of each orbital's shell within its atom's shell list, shape (norb,), int."""
        return np.concatenate(
            [np.repeat(np.arange(len(self.basis.shells_of(z))), [s.size for s in self.basis.shells_of(z)]) for z in self.numbers]
        ).astype(np.int64) if self.natoms else np.zeros(0, np.int64)

    def shell_slices(self, z: int) -> list:
        """Slices of each shell inside one atom's orbital block of species ``z``."""
        out, start = [], 0
        for s in self.basis.shells_of(z):
            out.append(slice(start, start + s.size))
            start += s.size
        return out

"""One orbital basis for many structures: the combined basis (union) of several, and the check that they agree.

A fit reads every training structure with one orbital basis (the shells of every species of the fit), and a
dataset stores one per structure.  Two kinds of difference:

- a *conflict*: one species with other shells (another basis set, another code's orbital convention,
  ``n``/labels of another reader): no structure can carry both, nothing to combine;
- different *species* (a Si-only run beside a SiC run): compatible; each structure can store the
  combined basis (the union: the extra species have no atoms in it, so no number changes), which is what
  ``acehamil convert --combined-basis`` writes.

Examples
--------
>>> si = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]}); c = OrbitalBasis.from_dict({6: [(2, 0), (2, 1)]})
>>> basis_text(combined_basis([("a", si), ("b", c)]))
'C: 2s 2p; Si: 3s 3p'
"""

from __future__ import annotations

from ase.data import chemical_symbols

from ..errors import UserError
from .orbitals import OrbitalBasis

__all__ = ["basis_text", "combined_basis", "check_same_basis"]


def basis_text(basis: OrbitalBasis) -> str:
    """``"C: 2s 2p; Si: 3s 3p"``: the shells of every species, for messages."""
    return "; ".join(f"{chemical_symbols[z]}: {' '.join(s.name for s in shells)}" for z, shells in basis.shells)


def combined_basis(named) -> OrbitalBasis:
    """The union of the bases ``[(where, OrbitalBasis), ...]``; UserError when one species has other shells
    in two of them (naming both).

    Returns
    -------
    OrbitalBasis
        Every species of any of them, with its (common) shells.
    """
    shells, first = {}, {}
    for where, basis in named:
        for z, sh in basis.shells:
            if z not in shells:
                shells[z], first[z] = sh, where
            elif sh != shells[z]:
                raise UserError(
                    f"{where} stores {chemical_symbols[z]} with shells {' '.join(s.name for s in sh)} "
                    f"{_labels(sh)}but {first[z]} with {' '.join(s.name for s in shells[z])} {_labels(shells[z])}"
                    f"(another basis set or another code's orbital convention): one dataset holds one basis per "
                    f"species; convert such data with the same basis settings, or into separate files")
    return OrbitalBasis(tuple(sorted(shells.items())))


def _labels(shells) -> str:
    text = [s.label for s in shells if s.label and s.label != s.name]
    return f"({', '.join(text)}) " if text else ""


def check_same_basis(named, remedy: str) -> None:
    """UserError unless every basis of ``[(where, OrbitalBasis), ...]`` is the same: a conflict is named by
    :func:`combined_basis`; different species are named with ``remedy`` (how to store the combined basis)."""
    named = list(named)
    union = combined_basis(named)
    for where, basis in named:
        if basis != union:
            other = next(w for w, b in named if b != basis)
            raise UserError(f"{where} stores the orbital basis {{{basis_text(basis)}}}, {other} "
                            f"{{{basis_text(next(b for w, b in named if w == other))}}}: every structure of a dataset "
                            f"must store the combined basis {{{basis_text(union)}}} (a fit reads all with one basis); "
                            f"{remedy}")

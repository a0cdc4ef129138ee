"""One orbital basis per dataset: the bases stored in a dataset file, for the checks of ``convert`` and
``append_dataset`` (:mod:`acehamil.structure.combined_basis`: the union and the check that bases agree)."""

from __future__ import annotations

from ..errors import UserError
from ..structure.combined_basis import basis_text, check_same_basis, combined_basis

__all__ = ["basis_text", "combined_basis", "check_same_basis", "stored_bases"]


def stored_bases(f, path) -> list:
    """``[(where, OrbitalBasis), ...]``: the basis of each structure of the open dataset file ``f``, one entry per
    distinct basis (the first structure storing it), read from the ``basis`` groups only."""
    from .structure_group import _read_basis

    out = []
    for key in sorted(f["structures"]):
        g = f["structures"][key]
        if "basis" not in g:
            raise UserError(f"{path}:/structures/{key}: no 'basis' group (truncated or foreign file?)")
        basis = _read_basis(g["basis"], f"{path}:/structures/{key}")
        if all(basis != b for _, b in out):
            out.append((f"{path} (structure {str(g.attrs.get('name', key))!r})", basis))
    return out

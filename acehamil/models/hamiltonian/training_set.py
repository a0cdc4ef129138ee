"""The training structures of a fit: a checked view of a (lazy) dataset and the full check of one
structure (atoms, Hermitian H and S, positive-definite reference overlap), run once per structure and fit
(:func:`acehamil.models.hamiltonian.fit.fit`).
"""

from __future__ import annotations

import numpy as np

from .sums import counts_and_pairs


class TrainingSubset:
    """Indexable view of some structures of a (lazy) dataset, checking the orbital basis.

    The full check (atoms, Hermiticity of H and S: :func:`~acehamil.structure.validate.validate_structure`)
    runs on the first access of each structure only (``checked``, shared by the views of one
    fit): the fit reads every structure in several passes, and repeating the check cost about
    a fifth of the example's fit.
    """

    def __init__(self, structures, idx, basis, checked: set | None = None):
        self.structures, self.idx, self.basis = structures, np.asarray(idx, dtype=np.int64), basis
        self.checked = set() if checked is None else checked

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, k):
        sd, where = self.unchecked(k)
        if where is not None:
            check_training_structure(sd, where)
            self.checked.add(int(self.idx[k]))
        return sd

    def unchecked(self, k) -> tuple:
        """``(sd, where)``: structure ``k`` after the cheap checks (basis, H and S present), and the name of
        the full check (:func:`check_training_structure`) it still needs (None once checked)."""
        i = int(self.idx[k])
        sd = self.structures[i]
        if sd.basis != self.basis:
            _refuse_other_basis(sd, i, self.structures[0], self.basis)
        if not sd.H or sd.S is None:
            raise ValueError(f"structure {i} lacks H or S")
        return sd, (None if i in self.checked else f"training structure {i} ({sd.info.get('name', '?')!r})")


def _refuse_other_basis(sd, i, first, basis) -> None:
    """UserError: training structure ``i`` stores another orbital basis than structure 0 (``first``, ``basis``).
    The fit reads every structure with one basis; the message names both and how to give each the combined one
    (it said only "structure i has a different orbital basis from structure 0")."""
    from ...errors import UserError
    from ...structure.combined_basis import basis_text, combined_basis

    named = [(f"training structure 0 ({first.info.get('name', '?')!r})", basis),
             (f"training structure {i} ({sd.info.get('name', '?')!r})", sd.basis)]
    union = combined_basis(named)  # one species with other shells: named there, nothing to combine
    raise UserError(f"{named[1][0]} stores the orbital basis {{{basis_text(sd.basis)}}}, {named[0][0]} "
                    f"{{{basis_text(basis)}}}: every structure of a fit must store the combined basis of all its species "
                    f"{{{basis_text(union)}}} (a species without atoms in a structure changes none of its numbers); write "
                    f"the data files into one that stores it: acehamil convert FILE.h5... -o ALL.h5 --combined-basis")


def check_training_structure(sd, where: str) -> None:
    """The full check of a training structure (atoms, Hermitian H and S, positive-definite S(Gamma)):
    UserError naming ``where``."""
    from ...structure.validate import validate_structure

    validate_structure(sd, where)
    _check_reference_overlap(sd, where)


def checked_counts(models, reach: float, sd, where, keep_within: float = 0.0) -> tuple:
    """The fit's counting task for one structure: its full check (:func:`check_training_structure`, unless
    ``where`` is None: checked before), then :func:`~acehamil.models.hamiltonian.sums.counts_and_pairs`
    (with the short-bond counts of the stratified sampling when ``keep_within`` > 0, Å)."""
    if where is not None:
        check_training_structure(sd, where)
    return counts_and_pairs(models, reach, sd.atoms, keep_within)


#: Training structures up to this many orbitals get the S(Gamma) check (a dense eigenvalue solve).
S_CHECK_MAX_ORBITALS = 1000


def _check_reference_overlap(sd, where: str) -> None:
    """UserError unless the reference S(Gamma) is positive definite: a DFT overlap always is, so one that
    is not is damaged data (or data in another orbital convention), not something to fit."""
    if sd.S.norb > S_CHECK_MAX_ORBITALS:
        return
    from ...errors import UserError

    rows, cols, vals, _ = sd.S.coo()
    S0 = np.zeros((sd.S.norb, sd.S.norb))
    np.add.at(S0, (rows, cols), vals)  # S(Gamma): every cell shift with phase 1
    try:
        np.linalg.cholesky(0.5 * (S0 + S0.T))  # cheaper than eigenvalues; they are computed only for the message
        return
    except np.linalg.LinAlgError:
        smin = float(np.linalg.eigvalsh(0.5 * (S0 + S0.T))[0])
    if not smin > 0:
        raise UserError(f"{where}: the reference overlap S(Gamma) is not positive definite (smallest eigenvalue "
                        f"{smin:.3g}); an overlap from DFT always is: damaged data or another orbital convention?")

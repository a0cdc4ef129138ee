"""The Hamiltonian model: H and S models of one orbital basis, and whole-structure prediction.

A :class:`HamiltonianModel` pairs the H and S :class:`~.matrix_model.MatrixModel` of one
orbital basis with the cell's energy zero (:class:`~.energy_zero.EnergyZero`) and the
electron counts per species; :meth:`HamiltonianModel.matrices` is the entry point of
every prediction (H, S and posterior draws of H).

``MatrixModel``, ``Pattern``, ``make_families``, ``shell_offsets``, ``random_coefficients``
(:mod:`.matrix_model`) and ``EnergyZero``, ``add_overlap`` (:mod:`.energy_zero`) are
re-exported here, so ``from acehamil.models.hamiltonian.model import ...`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...structure import OrbitalBasis, RealSpaceMatrix, StructureData
from ...structure.neighbours import neighbour_pairs
from ...tb.overlap import overlap_check
from ...threads import with_inner_threads
from .config import ModelConfig
from .energy_zero import EnergyZero, add_overlap
from .matrix_model import MatrixModel, Pattern, make_families, random_coefficients, shell_offsets

__all__ = ["HamiltonianModel", "ModelMatrices", "OverlapWarning", "warn_if_not_positive_definite", "electrons_per_species",
           "MatrixModel", "Pattern", "make_families", "random_coefficients", "shell_offsets", "EnergyZero", "add_overlap"]


@dataclass(frozen=True, eq=False)
class HamiltonianModel:
    """H and S models of one orbital basis, with the configuration that defines them.

    Attributes
    ----------
    config : ModelConfig
    orbital_basis : OrbitalBasis
    H, S : MatrixModel
    report : dict
        Fit report (per block type statistics), JSON-able.
    valence_electrons : dict or None
        ``{Z: electrons}`` per atom of each species, as counted by the orbital basis of the
        training data (e.g. 4 for Si with a GTH pseudopotential, 6 for all-electron C), found
        from the training structures' ``n_electrons`` (:func:`electrons_per_species`); None when
        unknown.  Gives predictions an electron count, hence a Fermi level.
    energy_zero : EnergyZero or None
        Cell-level energy zero added to H as ``V S`` (periodic cells); None = none.
    """

    config: ModelConfig
    orbital_basis: OrbitalBasis
    H: MatrixModel
    S: MatrixModel
    report: dict = field(default_factory=dict)
    valence_electrons: dict | None = None
    energy_zero: EnergyZero | None = None

    def n_electrons(self, atoms, charge: float = 0.0) -> float | None:
        """Electrons per cell of ``atoms`` with net charge ``charge`` (removed electrons); None
        when the model stores no electron counts.

        Raises
        ------
        ValueError
            A species without a stored count, or a charge that leaves a negative count or more electrons than
            two per orbital.
        """
        if not np.isfinite(float(charge)):
            raise ValueError(f"charge must be a finite number of electrons, got {charge}")
        if self.valence_electrons is None:
            return None
        missing = sorted({int(z) for z in atoms.numbers} - set(self.valence_electrons))
        if missing:
            raise ValueError(f"the model stores no electron count for species Z={missing}")
        n = float(sum(self.valence_electrons[int(z)] for z in atoms.numbers)) - float(charge)
        if n < 0:
            raise ValueError(f"charge {charge} removes more than the {n + charge:g} electrons of the structure")
        seats = 2.0 * sum(self.orbital_basis.norb(int(z)) for z in atoms.numbers)
        if n > seats:  # charge -1e9 was accepted: a Fermi level above every band, without a word
            raise ValueError(f"charge {charge} leaves {n:g} electrons, more than the {seats:g} the structure's orbitals "
                             f"hold (two per orbital)")
        return n

    @classmethod
    def build(cls, config: ModelConfig, orbital_basis: OrbitalBasis, h_coefficients=None, s_coefficients=None,
              report=None, h_posteriors=None, s_posteriors=None, energy_zero=None) -> "HamiltonianModel":
        """Model of ``config`` with the given coefficients (default: zero)."""
        H = MatrixModel.build("H", orbital_basis, config.h_onsite, config.h_offsite, h_coefficients, h_posteriors)
        S = MatrixModel.build("S", orbital_basis, config.s_onsite, config.s_offsite, s_coefficients, s_posteriors)
        return cls(config, orbital_basis, H, S, dict(report or {}), energy_zero=energy_zero)

    @property
    def reach(self) -> float:
        return max(self.H.reach, self.S.reach)

    def energy_zero_of(self, atoms) -> float:
        """The cell's energy zero ``V`` in eV (0 without an :class:`EnergyZero`)."""
        return 0.0 if self.energy_zero is None else self.energy_zero.value(atoms)

    def with_energy_zero(self, H_local, S: RealSpaceMatrix, atoms) -> RealSpaceMatrix:
        """Model H of ``atoms`` from the local part ``H_local`` (``self.H``'s blocks): ``H_local + V S``.

        The one place where the cell's energy zero (:class:`EnergyZero`) enters a predicted H.
        Every path that assembles H from ``self.H`` itself (row chunks on workers, posterior
        draws) goes through here or through :meth:`matrices`; draws are differences from the
        prediction, so the rigid ``V S`` cancels in them.

        ``H_local`` is a :class:`RealSpaceMatrix`, or the flat data of one on ``S``'s pattern handed
        over by the caller (a fresh writable array, :meth:`MatrixModel.predict_data`): then ``V S`` is
        added in place, in slices, and no matrix-sized temporary is made.
        """
        V = self.energy_zero_of(atoms)
        if isinstance(H_local, RealSpaceMatrix):
            return add_overlap(H_local, S, V)
        h = np.asarray(H_local)
        if h.shape != S.data.shape or h.dtype != np.float64 or not h.flags.writeable:
            raise ValueError("H_local data must be a writable float64 array on the pattern of S")
        if V != 0.0:
            for a in range(0, len(h), 1 << 20):
                h[a:a + (1 << 20)] += V * S.data[a:a + (1 << 20)]
        return RealSpaceMatrix.adopt(S.norb_per_atom, S.i, S.j, S.shift, h)

    @with_inner_threads
    def matrices(self, atoms, pairs=None, n_samples: int = 0, rng=None, split: bool = False,
                 scales=None, noise: bool = True) -> "ModelMatrices":
        """Predicted H (with the energy zero), S and, when ``n_samples > 0``, posterior draws of H.

        The entry point of every prediction (:meth:`predict`, :meth:`predict_structure`,
        evaluation, calibration, selection): features are evaluated once per structure for
        the prediction and its draws together.

        Parameters
        ----------
        atoms : ase.Atoms
        pairs : NeighbourPairs, optional
            Neighbour list with cutoff ``>= self.reach`` (built when omitted).
        n_samples : int
            Posterior draws ``K`` of H (0: none; needs posteriors).  Their epistemic part covers the
            on-site blocks and the bonds shorter than ``config.uncertainty.epistemic_bond_cut`` when
            that is > 0 (the blocks its factor was calibrated on), every block otherwise.
        rng : numpy.random.Generator, optional
            Of the draws (default ``default_rng(0)``).
        split : bool
            Draws of the epistemic, noise and shared-noise parts separately, unscaled (what
            the calibration needs); else one calibrated set ``a epi + b noise + c shared``.
        scales : (float, float, float), optional
            ``(a, b, c)``; default the model's calibration (:func:`.spread.scales_of`).
        noise : bool
            False: draws without the noise parts (see :func:`.uncertainty.sample_matrix`).

        Returns
        -------
        ModelMatrices
        """
        _check_atoms_arg(atoms)
        nl = pairs if pairs is not None else neighbour_pairs(atoms, self.reach)
        species = sorted(set(np.asarray(atoms.numbers).tolist()))
        # one block pattern (and one set of index arrays) for H and S when their bond cutoffs agree
        pat = self.S.pattern(atoms, nl) if self.H.same_pattern_as(self.S, species) else None
        S = self.S.predict(atoms, pairs=nl, pattern=pat)
        draws, score, sx = (), None, 0.0
        if n_samples:
            from .spread import scales_of
            from .uncertainty import sample_matrix

            rng = rng if rng is not None else np.random.default_rng(0)
            ab = scales_of(self) if scales is None else scales
            # the epistemic part over the blocks its factor was calibrated on ([uncertainty] epistemic_bond_cut)
            H_local, *draws = sample_matrix(self.H, atoms, int(n_samples), rng, pairs=nl, scales=ab, split=split,
                                            epistemic_cut=self.config.uncertainty.epistemic_bond_cut, noise=noise)
            if not split:
                score, sx = self.extrapolation(atoms, nl)
        else:
            # on the shared pattern, H's fresh data is handed to with_energy_zero (V S added in place)
            H_local = self.H.predict_data(atoms, pat) if pat is not None else self.H.predict(atoms, pairs=nl)
        return ModelMatrices(self.with_energy_zero(H_local, S, atoms), S, tuple(draws), self.energy_zero_of(atoms), nl,
                             sx, score)

    def extrapolation(self, atoms, pairs=None) -> tuple:
        """``(score, sigma)``: per-atom extrapolation score (natoms,) and the extrapolation part of
        the eigenvalue spread (eV, :func:`.spread.extrapolation_sigma`; 0 when uncalibrated)."""
        from .spread import extrapolation_sigma
        from .uncertainty import extrapolation_score

        score = extrapolation_score(self, atoms, pairs=pairs)
        return score, extrapolation_sigma(self, score)

    def predict(self, atoms, check_overlap: bool = True) -> tuple:
        """``(H, S)`` real-space matrices of ``atoms`` (eV, dimensionless).

        H includes the cell's energy zero ``V S`` when the model has one (:class:`EnergyZero`).
        With ``check_overlap`` (as :meth:`predict_structure`) a predicted S(k) that is not
        positive definite emits an :class:`OverlapWarning` (:func:`acehamil.tb.overlap.overlap_check`).
        """
        m = self.matrices(atoms)
        if check_overlap:
            warn_if_not_positive_definite(overlap_check(m.S, atoms), "the structure")
        return m.H, m.S

    def predict_structure(self, atoms, check_overlap: bool = True, info=None, charge: float = 0.0, n_samples: int = 0,
                          rng=None) -> StructureData:
        """Predicted :class:`StructureData` (dataset-ready; no reference data).

        With ``n_samples > 0`` (a model with posteriors) the result carries ``H_draws``
        (calibrated posterior draws minus the prediction, :mod:`.uncertainty`) and
        ``info["uncertainty"]`` = ``{"n_samples", "scale_epistemic", "scale_noise", "scale_shared",
        "sigma_extrapolation_eV", "extrapolation_max", "extrapolation_per_atom"}`` (see
        :func:`~acehamil.models.hamiltonian.uncertainty.extrapolation_score`).

        When ``check_overlap``, the smallest eigenvalue of ``S(k)`` over the k-points of
        :func:`acehamil.tb.overlap.overlap_check_kpts` (Gamma and a grid for periodic cells) is stored in
        ``info["overlap_min_eigenvalue"]``, with ``info["overlap_kpoints_checked"]`` (their
        number), ``info["overlap_min_kpoint"]`` (fractional) and
        ``info["overlap_positive_definite"]``.  A non-positive-definite S raises no error
        here (the eigen-solvers refuse it) but emits an :class:`OverlapWarning`.

        ``n_electrons`` is set from :attr:`valence_electrons` minus ``charge`` (None when the model
        stores no counts; then ``charge`` must be 0).
        """
        _check_atoms_arg(atoms)
        self.orbital_basis.layout(np.asarray(atoms.numbers))  # a species outside the basis, named as such first
        n_el = self.n_electrons(atoms, charge)
        if n_el is None and charge:
            raise ValueError("the model stores no electron counts per species (fitted before they were recorded, "
                             "or training data without n_electrons): a charge cannot be applied")
        meta = {"source": "acehamil prediction", **dict(info or {})}
        draws = None
        if n_samples:
            from .spread import scales_of

            a, b, c = scales_of(self)
            m = self.matrices(atoms, n_samples=int(n_samples), rng=rng, scales=(a, b, c))
            draws = m.draws[0]
            score = m.extrapolation_score
            meta["uncertainty"] = {"n_samples": int(n_samples), "scale_epistemic": a, "scale_noise": b, "scale_shared": c,
                                   "sigma_extrapolation_eV": float(m.sigma_extrapolation),
                                   "extrapolation_max": float(np.nanmax(score)) if np.any(np.isfinite(score)) else None,
                                   "extrapolation_per_atom": [None if not np.isfinite(x) else float(x) for x in score]}
        else:
            m = self.matrices(atoms)
        H, S = m.H, m.S
        if check_overlap:
            smin, kmin, nk = overlap_check(S, atoms)
            meta.update(overlap_min_eigenvalue=smin, overlap_min_kpoint=kmin, overlap_kpoints_checked=nk,
                        overlap_positive_definite=bool(smin > 0))
            warn_if_not_positive_definite((smin, kmin, nk), meta.get("name", "the structure"))
        if charge:
            meta["charge"] = float(charge)
        return StructureData(atoms=atoms.copy(), basis=self.orbital_basis, H=(H,), S=S, n_electrons=n_el, info=meta,
                             H_draws=draws)


def _check_atoms_arg(atoms) -> None:
    """TypeError unless ``atoms`` is an ase.Atoms-like object; ValueError (UserError) when it has no atoms or
    fails the atom checks of every reader and of ``acehamil predict`` (:func:`acehamil.structure.validate.check_atoms`:
    one Si atom in a 1 Å cube was predicted through the API with only an OverlapWarning)."""
    if not hasattr(atoms, "numbers") or not hasattr(atoms, "positions"):
        raise TypeError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms: nothing to predict")
    from ...structure.validate import check_atoms

    check_atoms(atoms, "the structure to predict")


class OverlapWarning(UserWarning):
    """A predicted overlap matrix S(k) is not positive definite."""


def warn_if_not_positive_definite(check: tuple, name: str) -> None:
    """Emit an :class:`OverlapWarning` unless the smallest eigenvalue of ``check`` (the result of
    :func:`acehamil.tb.overlap.overlap_check`) is > 0."""
    smin, kmin, nk = check
    if not smin > 0:
        import warnings

        warnings.warn(f"predicted S of {name} is not positive definite: smallest eigenvalue of S(k) {smin:.4g} at "
                      f"k = {kmin} (over {nk} k-points checked); atoms too close or outside the training data? "
                      f"bands/DOS will refuse it", OverlapWarning, stacklevel=3)


@dataclass(frozen=True, eq=False)
class ModelMatrices:
    """What :meth:`HamiltonianModel.matrices` predicts for one structure.

    Attributes
    ----------
    H : RealSpaceMatrix
        eV, including the cell's energy zero ``V S``.
    S : RealSpaceMatrix
        Dimensionless.
    draws : tuple of ndarray
        Posterior draws of H minus ``H`` (layout of ``H.data``), each (K, H.data.size), eV:
        ``()`` without draws, ``(delta,)`` calibrated, ``(epistemic, noise, shared)`` with ``split``.
    energy_zero : float
        ``V`` (eV) included in H.
    pairs : NeighbourPairs
        The neighbour list used (reusable for more work on the same structure).
    sigma_extrapolation : float
        With calibrated draws: the extrapolation part of the spread of every eigenvalue (eV,
        :func:`.spread.extrapolation_sigma`), added in quadrature to the draws' spread.
    extrapolation_score : ndarray, shape (natoms,), optional
        With calibrated draws: the per-atom extrapolation score it came from.
    """

    H: RealSpaceMatrix
    S: RealSpaceMatrix
    draws: tuple = ()
    energy_zero: float = 0.0
    pairs: object = None
    sigma_extrapolation: float = 0.0
    extrapolation_score: object = None


def electrons_per_species(records) -> dict | None:
    """Electrons per atom of each species from structures' total electron counts.

    Solves ``n_electrons(structure) = sum_Z count_Z(structure) * v_Z`` by least squares over the
    structures that carry ``n_electrons``.

    Parameters
    ----------
    records : iterable of (numbers (natoms,) int, n_electrons float or None)

    Returns
    -------
    dict {Z: float} or None
        None when no structure carries a count, when the compositions cannot separate the
        species (e.g. every structure has the same stoichiometry of two species), or when no
        per-species count reproduces every structure's count to 1e-6 (charged or inconsistent
        training data).

    Examples
    --------
    >>> electrons_per_species([([14, 14], 8.0), ([14, 14, 1], 9.0)])
    {1: 1.0, 14: 4.0}
    >>> electrons_per_species([([14, 1], 5.0), ([14, 1, 14, 1], 10.0)]) is None
    True
    """
    rows = [(np.asarray(z, dtype=np.int64), float(n)) for z, n in records if n is not None]
    if not rows:
        return None
    species = sorted({int(z) for zs, _ in rows for z in zs})
    A = np.array([[np.count_nonzero(zs == z) for z in species] for zs, _ in rows], dtype=np.float64)
    b = np.array([n for _, n in rows])
    if np.linalg.matrix_rank(A) < len(species):
        return None
    v = np.linalg.lstsq(A, b, rcond=None)[0]
    if np.abs(A @ v - b).max() > 1e-6:
        return None
    v = np.where(np.abs(v - np.round(v)) < 1e-9, np.round(v), v)
    return {z: float(x) for z, x in zip(species, v)}

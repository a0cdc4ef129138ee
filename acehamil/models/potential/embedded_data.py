"""Design data of embedded fits: the features of a training set evaluated once (:class:`EmbeddingData`).

Dense linear energy, force and stress rows (the layout of :mod:`.model`), and for the
density features per-site values ``B_i`` and per-particle gradients ``dB_i/dvec_p``;
:mod:`.embedded_fit` runs its iterations on these by matrix products only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ...fitting import NormalEquations
from ...structure.neighbours import neighbour_pairs
from .data import Config
from .fit import Accumulated, FitSettings
from .model import VOIGT, _species_index, cell_volume, feature_degrees, feature_orders, repulsion_terms, rows_from_descriptors, site_descriptors


def density_columns(basis, max_degree) -> np.ndarray:
    """Indices of the invariant features with ``degree <= max_degree[nu - 1]`` (last value repeats)."""
    deg, nu = feature_degrees(basis), feature_orders(basis)
    md = list(max_degree)
    lim = np.array([md[min(n - 1, len(md) - 1)] for n in nu], dtype=float)
    cols = np.flatnonzero(deg <= lim + 1e-9)
    if not len(cols):
        raise ValueError(f"no features satisfy density_max_degree {tuple(max_degree)}")
    return cols


@dataclass(eq=False)
class EmbeddingData:
    """Design data of a training set for embedded fits (module docstring).

    Attributes
    ----------
    energy_rows : ndarray, shape (n_configs, n_cols)
        Linear per-atom energy rows (layout of :mod:`.model`).
    energy_targets : ndarray, shape (n_configs,)
        eV/atom, repulsion removed.
    config_weights, folds, natoms, volumes : ndarray, shape (n_configs,)
    has_forces, has_stress : ndarray of bool, shape (n_configs,)
    force_rows : ndarray, shape (3 n_atoms, n_cols)
        Linear force rows of every atom (row ``3 a + x``).
    force_targets : ndarray, shape (3 n_atoms,)
        eV/Å, repulsion removed (zeros where a configuration has no forces).
    stress_rows : ndarray, shape (n_configs, 6, n_cols); stress_targets (n_configs, 6)
    density_cols : ndarray of int, shape (m,)
        Features entering the densities.
    B : ndarray, shape (n_atoms, m)
        Density features of every site.
    G : ndarray, shape (3, P, m)
        ``dB_i / dvec_p`` of every particle ``p`` of site ``i = pair_i[p]``.
    pair_i, pair_j : ndarray of int, shape (P,)
        Global atom indices of centre and neighbour.
    pair_vec : ndarray, shape (P, 3)
    atom_config, atom_species : ndarray of int, shape (n_atoms,)
    """

    energy_rows: np.ndarray
    energy_targets: np.ndarray
    config_weights: np.ndarray
    folds: np.ndarray
    natoms: np.ndarray
    volumes: np.ndarray
    has_forces: np.ndarray
    has_stress: np.ndarray
    force_rows: np.ndarray
    force_targets: np.ndarray
    stress_rows: np.ndarray
    stress_targets: np.ndarray
    density_cols: np.ndarray
    B: np.ndarray
    G: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_vec: np.ndarray
    atom_config: np.ndarray
    atom_species: np.ndarray
    n_species: int
    config_types: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_cols(self) -> int:
        return int(self.energy_rows.shape[1])

    def accumulated(self, settings: FitSettings) -> Accumulated:
        """The linear fit's :class:`~.fit.Accumulated` from these rows (same folds and weights)."""
        nf = int(self.folds.max()) + 1
        F = [NormalEquations(self.n_cols) for _ in range(nf)]
        S = [NormalEquations(self.n_cols) for _ in range(nf)]
        fcount, fwsum = np.zeros(nf), np.zeros(nf)
        starts = np.concatenate([[0], np.cumsum(self.natoms)])
        for c in range(len(self.folds)):
            f, w = self.folds[c], self.config_weights[c]
            if self.has_forces[c]:
                sl = slice(3 * starts[c], 3 * starts[c + 1])
                wf = w / settings.force_sigma**2
                F[f].add(self.force_rows[sl], self.force_targets[sl], np.full(sl.stop - sl.start, wf))
                fcount[f] += sl.stop - sl.start
                fwsum[f] += wf * (sl.stop - sl.start)
            if self.has_stress[c]:
                S[f].add(self.stress_rows[c], self.stress_targets[c], np.full(6, w / settings.stress_sigma**2))
        return Accumulated(self.energy_rows, self.energy_targets, self.config_weights, self.folds, F, S, fcount, fwsum,
                           self.n_cols, self.seconds, int(self.natoms.sum()), int(fcount.sum()), list(self.config_types))


def embedding_data(basis, species, configs, settings: FitSettings, density_cols, repulsion=None, progress=False) -> EmbeddingData:
    """Evaluate the features of every configuration once and keep what embedded fits need.

    Parameters
    ----------
    basis : ACEBasis
    species : tuple of int
    configs : list of Config
    settings : FitSettings
        Weights, folds (``n_folds``, ``seed``: the same assignment as :func:`~.fit.accumulate`).
    density_cols : array of int
        From :func:`density_columns`.
    repulsion : RepulsionSpec, optional
        Subtracted from the targets.
    progress : bool
    """
    if not configs:
        raise ValueError("no training configurations")
    t0 = time.perf_counter()
    species = tuple(int(z) for z in species)
    dcols = np.asarray(density_cols, dtype=np.int64)
    nf = int(settings.n_folds)
    folds = np.random.default_rng(settings.seed).permutation(len(configs)) % nf
    n = len(configs)
    E_rows, E_t, weights = [], np.zeros(n), np.zeros(n)
    natoms, vols = np.zeros(n, np.int64), np.zeros(n)
    has_f, has_s = np.zeros(n, bool), np.zeros(n, bool)
    F_rows, F_t, S_rows, S_t = [], [], [], np.zeros((n, 6))
    Bs, Gs, pi, pj, pv, a_cfg, a_sp = [], [], [], [], [], [], []
    offset = 0
    for k, c in enumerate(configs):
        if not isinstance(c, Config):
            raise TypeError(f"configs[{k}] is a {type(c).__name__}, expected Config")
        weights[k] = c.weight * settings.config_factor(c.config_type)
        desc = site_descriptors(basis, c.atoms, gradients=True)
        rows = rows_from_descriptors(desc, species, c.atoms.numbers)
        if repulsion is not None and repulsion.r_core:
            e_rep, _, dEdr_rep, dEde_rep = repulsion_terms(repulsion, c.atoms, neighbour_pairs(c.atoms, repulsion.max_radius))
        else:
            e_rep, dEdr_rep, dEde_rep = 0.0, np.zeros((c.natoms, 3)), np.zeros((3, 3))
        natoms[k] = c.natoms
        E_rows.append(rows.energy / c.natoms)
        E_t[k] = (c.energy - e_rep) / c.natoms
        F_rows.append(rows.forces.reshape(-1, rows.forces.shape[-1]))
        if c.forces is not None:
            if c.forces.shape != (c.natoms, 3):
                raise ValueError(f"configs[{k}]: forces must have shape ({c.natoms}, 3), got {c.forces.shape}")
            has_f[k] = True
            F_t.append((c.forces + dEdr_rep).ravel())
        else:
            F_t.append(np.zeros(3 * c.natoms))
        vol = cell_volume(c.atoms)
        vols[k] = vol if vol is not None else np.nan
        S_rows.append(np.array([rows.strain[a, b] for a, b in VOIGT]) / (vol if vol else 1.0))
        if c.stress is not None:
            if vol is None:
                raise ValueError(f"configs[{k}] has a stress but is not periodic in 3-D")
            has_s[k] = True
            S_t[k] = c.stress - np.array([dEde_rep[a, b] for a, b in VOIGT]) / vol
        Bs.append(desc.B[:, dcols])
        Gs.append(np.ascontiguousarray(desc.G[:, dcols, :].transpose(2, 0, 1)))
        pi.append(desc.pairs.i + offset)
        pj.append(desc.pairs.j + offset)
        pv.append(desc.pairs.vec)
        a_cfg.append(np.full(c.natoms, k))
        a_sp.append(_species_index(species, c.atoms.numbers))
        offset += c.natoms
        if progress and (k + 1) % max(1, n // 10) == 0:
            print(f"  features: {k + 1}/{n} configs, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return EmbeddingData(
        np.array(E_rows), E_t, weights, folds, natoms, vols, has_f, has_s, np.concatenate(F_rows), np.concatenate(F_t),
        np.array(S_rows), S_t, dcols, np.concatenate(Bs), np.concatenate(Gs, axis=1), np.concatenate(pi), np.concatenate(pj),
        np.concatenate(pv), np.concatenate(a_cfg), np.concatenate(a_sp), len(species), [c.config_type for c in configs],
        time.perf_counter() - t0,
    )

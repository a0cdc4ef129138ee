"""Which row of a cross-validation table wins: the selection criterion of every potential fit.

Two criteria (:attr:`~.fit.FitSettings.cv_criterion`):

``"combined"`` (the default)
    ``score = E_rmse / cv_energy_scale + F_rmse / cv_force_scale``, smallest wins. It mixes
    energies and forces: of two settings, the one with better forces can win with worse
    energies.
``"energy_mae"``
    ``score = E_mae`` (held-out energy MAE per atom, meV/atom, fold mean), smallest wins,
    among the rows whose held-out force RMSE is at most ``F_ref + cv_force_tolerance``
    (eV/Å); ``F_ref`` is the smallest force RMSE of the table (or a reference passed in,
    e.g. that of the first stage of a two-stage fit). Rows over the force budget come after
    every eligible row, ordered by force RMSE. This is aligned with a target stated as
    "energy MAE, with forces no worse than a margin".

Each row gets ``score`` (the criterion's value) and ``eligible`` (bool).

>>> from acehamil.models.potential.fit import FitSettings
>>> rows = [{"energy_rmse_meV_per_atom": 3.0, "energy_mae_meV_per_atom": 2.0, "force_rmse_eV_per_A": 0.100},
...         {"energy_rmse_meV_per_atom": 2.0, "energy_mae_meV_per_atom": 1.8, "force_rmse_eV_per_A": 0.104},
...         {"energy_rmse_meV_per_atom": 1.0, "energy_mae_meV_per_atom": 0.9, "force_rmse_eV_per_A": 0.150}]
>>> s = FitSettings(cv_criterion="energy_mae", cv_force_tolerance=0.005)
>>> [r["energy_mae_meV_per_atom"] for r in rank_cv(rows, s)]
[1.8, 2.0, 0.9]
>>> [r["energy_mae_meV_per_atom"] for r in rank_cv(rows, FitSettings())]  # scores 5, 4.08, 4
[0.9, 1.8, 2.0]
"""

from __future__ import annotations

import numpy as np

#: Criteria of :func:`rank_cv`.
CRITERIA = ("combined", "energy_mae")


def row_score(row: dict, settings) -> float:
    """The criterion's value of one CV row (smaller is better; ``eligible`` is decided in :func:`rank_cv`).

    Parameters
    ----------
    row : dict
        ``energy_mae_meV_per_atom``, ``energy_rmse_meV_per_atom`` (meV/atom), ``force_rmse_eV_per_A`` (eV/Å).
    settings : FitSettings

    Returns
    -------
    float
        ``"combined"``: ``E_rmse / cv_energy_scale + F_rmse / cv_force_scale`` (dimensionless);
        ``"energy_mae"``: ``E_mae`` in meV/atom.
    """
    if settings.cv_criterion == "energy_mae":
        return float(row["energy_mae_meV_per_atom"])
    return float(row["energy_rmse_meV_per_atom"] * 1e-3 / settings.cv_energy_scale
                 + row["force_rmse_eV_per_A"] / settings.cv_force_scale)


def rank_cv(rows, settings, force_reference: float | None = None) -> list[dict]:
    """CV rows scored and sorted best first by ``settings.cv_criterion`` (new dicts; ``rows`` is not changed).

    Parameters
    ----------
    rows : sequence of dict
        CV rows (see :func:`row_score`).
    settings : FitSettings
    force_reference : float, optional
        ``F_ref`` of the ``"energy_mae"`` force budget, eV/Å; default: the smallest
        ``force_rmse_eV_per_A`` of ``rows`` (and of ``force_reference`` itself when given, the smaller).

    Returns
    -------
    list of dict
        The rows with ``score`` and ``eligible`` set, best first.
    """
    rows = [dict(r) for r in rows]
    if not rows:
        return rows
    forces = np.array([r["force_rmse_eV_per_A"] for r in rows], float)
    if settings.cv_criterion == "energy_mae":
        ref = float(np.min(forces)) if force_reference is None else min(float(force_reference), float(np.min(forces)))
        budget = ref + settings.cv_force_tolerance
    else:
        budget = np.inf
    for r, f in zip(rows, forces, strict=True):
        r["score"] = row_score(r, settings)
        r["eligible"] = bool(f <= budget * (1 + 1e-12))
    return sorted(rows, key=lambda r: (not r["eligible"], r["score"] if r["eligible"] else r["force_rmse_eV_per_A"]))

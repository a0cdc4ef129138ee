"""Labelled structures for potentials and their error metrics.

Files are read by :func:`acehamil.io.labelled.read_configs`; this module only
turns an ``ase.Atoms`` with a ``SinglePointCalculator`` or ``info['energy']`` /
``arrays['forces']`` into a :class:`Config`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Voigt order used by ASE: xx, yy, zz, yz, xz, xy.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass(frozen=True, eq=False)
class Config:
    """One labelled structure.

    Attributes
    ----------
    atoms : ase.Atoms
        Positions in Å (a private copy without calculator).
    energy : float
        Total energy, eV.
    forces : ndarray, shape (natoms, 3) or None
        eV/Å.
    stress : ndarray, shape (6,) or None
        eV/Å^3, ASE sign and Voigt order.
    config_type : str
    weight : float
        Per-configuration weight multiplying all its rows.
    """

    atoms: object
    energy: float
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    config_type: str = "default"
    weight: float = 1.0

    @property
    def natoms(self) -> int:
        return len(self.atoms)


#: Labels beyond these are refused (squares of 1e300 overflowed the fit's sums to a model of garbage): eV per atom,
#: eV/Å, eV/Å^3.  All-electron total energies stay below ~1e6 eV per atom (uranium ~7.7e5).
MAX_ENERGY_PER_ATOM = 1e7
MAX_FORCE = 1e6
MAX_STRESS = 1e6


def config_from_atoms(atoms, config_type_key: str = "config_type") -> Config:
    """Extract the labels of one ``ase.Atoms`` (calculator results or info/arrays).

    Raises
    ------
    ValueError
        No atoms; no energy; a non-finite energy, force or stress; forces not of shape
        ``(natoms, 3)``; a ``config_weight`` that is not a finite number >= 0.
    """
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = results.get("energy", results.get("free_energy", atoms.info.get("energy")))
    if energy is None:
        raise ValueError("structure has no energy (neither calculator results nor info['energy'])")
    try:
        energy = float(energy)
    except (TypeError, ValueError):
        raise ValueError(f"energy must be a number (eV), got {energy!r}") from None
    if not np.isfinite(energy):
        raise ValueError(f"energy is not finite ({energy})")
    if abs(energy) > MAX_ENERGY_PER_ATOM * len(atoms):  # 1e300 overflowed the sums: a fitted model of NaN-like garbage
        raise ValueError(f"energy {energy:g} eV is {abs(energy) / len(atoms):.3g} eV per atom, beyond any total energy "
                         f"(all-electron heavy atoms: < 1e6 eV; at most {MAX_ENERGY_PER_ATOM:g} accepted): another unit?")
    forces = results.get("forces", atoms.arrays.get("forces"))
    if forces is not None:
        forces = np.array(forces, dtype=float)
        if forces.shape != (len(atoms), 3):
            raise ValueError(f"forces must have shape ({len(atoms)}, 3), got {forces.shape}")
        bad = ~np.isfinite(forces).all(axis=1)
        if bad.any():
            raise ValueError(f"force on atom {int(np.argmax(bad))} is not finite ({forces[np.argmax(bad)].tolist()})")
        big = np.abs(forces).max(axis=1) > MAX_FORCE
        if big.any():
            raise ValueError(f"force on atom {int(np.argmax(big))} is {forces[np.argmax(big)].tolist()} eV/Å, beyond "
                             f"{MAX_FORCE:g} eV/Å: another unit?")
    stress = results.get("stress", atoms.info.get("stress"))
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (3, 3):
            stress = np.array([stress[a, b] for a, b in VOIGT])
        if stress.shape != (6,):
            raise ValueError(f"stress must have 6 (Voigt) or 3x3 components, got shape {stress.shape}")
        if not np.isfinite(stress).all():
            raise ValueError(f"stress is not finite ({stress.tolist()})")
        if np.abs(stress).max() > MAX_STRESS:
            raise ValueError(f"stress {stress.tolist()} eV/Å^3 is beyond {MAX_STRESS:g} eV/Å^3: another unit?")
    weight = atoms.info.get("config_weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) or not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"config_weight must be a finite number >= 0, got {weight!r}")
    clean = atoms.copy()
    clean.calc = None
    return Config(
        atoms=clean,
        energy=energy,
        forces=forces,
        stress=stress,
        config_type=str(atoms.info.get(config_type_key, "default")),
        weight=float(weight),
    )


def error_metrics(potential, configs, per_config_type: bool = True) -> dict:
    """Energy and force errors of a potential on labelled structures.

    Returns
    -------
    dict
        ``{"all": {...}, "<config_type>": {...}}`` each with ``nconfigs``,
        ``energy_mae_meV_per_atom``, ``energy_rmse_meV_per_atom``, ``force_mae_eV_per_A``,
        ``force_rmse_eV_per_A`` (force entries over all Cartesian components) and, when
        stresses are present, ``stress_rmse_eV_per_A3``.
    """
    rows = []
    for c in configs:
        res = potential.compute(c.atoms, forces=c.forces is not None, stress=c.stress is not None)
        de = (res["energy"] - c.energy) / c.natoms
        df = None if c.forces is None else (res["forces"] - c.forces).ravel()
        ds = None if c.stress is None or "stress" not in res else res["stress"] - c.stress
        rows.append((c.config_type, de, df, ds))
    return summarise_errors(rows, per_config_type)


def summarise_errors(rows, per_config_type: bool = True) -> dict:
    """Error summaries over ``"all"`` rows and (optionally) per ``config_type``.

    Parameters
    ----------
    rows : list of (config_type, de, df, ds)
        Per configuration: ``config_type`` (str); energy error ``de`` (eV/atom);
        force errors ``df`` (eV/Å, any shape) or None; stress errors ``ds``
        (eV/Å^3) or None.
    per_config_type : bool

    Returns
    -------
    dict
        As :func:`error_metrics`, plus ``energy_max_abs_meV_per_atom``.

    Examples
    --------
    >>> out = summarise_errors([("bulk", 1e-3, None, None), ("bulk", -3e-3, None, None), ("surface", 2e-3, None, None)])
    >>> round(out["bulk"]["energy_mae_meV_per_atom"], 6), out["all"]["nconfigs"], out["all"]["energy_max_abs_meV_per_atom"]
    (2.0, 3, 3.0)
    """
    groups = {"all": rows}
    if per_config_type:
        for ct in sorted({r[0] for r in rows}):
            groups[ct] = [r for r in rows if r[0] == ct]
    return {name: _summary(g) for name, g in groups.items()}


def _summary(rows) -> dict:
    de = np.array([r[1] for r in rows])
    out = {
        "nconfigs": len(rows),
        "energy_mae_meV_per_atom": float(np.mean(np.abs(de)) * 1e3),
        "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de**2)) * 1e3),
        "energy_max_abs_meV_per_atom": float(np.max(np.abs(de)) * 1e3),
    }
    dfs = [r[2] for r in rows if r[2] is not None]
    if dfs:
        df = np.concatenate(dfs)
        out["force_mae_eV_per_A"] = float(np.mean(np.abs(df)))
        out["force_rmse_eV_per_A"] = float(np.sqrt(np.mean(df**2)))
    dss = [r[3] for r in rows if r[3] is not None]
    if dss:
        out["stress_rmse_eV_per_A3"] = float(np.sqrt(np.mean(np.concatenate(dss) ** 2)))
    return out

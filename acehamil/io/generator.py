"""Resumable dataset generation: a deterministic plan of structures, computed one at a time.

The plan is a list of named structures, either read from a structure file or made from a
base structure plus random displacements and strains (seeded, so the same arguments always
give the same plan).  Each finished structure is appended to the output dataset atomically
(:func:`acehamil.io.dataset.append_dataset`); a rerun skips every name already in the file, so
an interrupted generation resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms

from ..progress import Progress
from .dataset import append_dataset, read_dataset


def perturbed_structures(base: Atoms, count: int, displacement=(0.05, 0.15), strain: float = 0.02, seed: int = 0,
                         prefix: str = "s") -> list:
    """Random variants of ``base``: per-atom displacements and a small symmetric strain.

    Parameters
    ----------
    base : ase.Atoms
    count : int
        Number of structures.
    displacement : (float, float)
        Each atom moves by a length drawn uniformly from this range (Å), in a random direction.
    strain : float
        Entries of the symmetric strain tensor are uniform in [-strain, strain] (0 for molecules).
    seed : int
    prefix : str
        Names are ``f"{prefix}-{index:04d}"``.

    Returns
    -------
    list of (str, ase.Atoms)

    Examples
    --------
    >>> from ase.build import bulk
    >>> plan = perturbed_structures(bulk("Si", "diamond", a=5.43, cubic=True), 2, seed=1)
    >>> [name for name, _ in plan], len(plan[0][1])
    (['s-0000', 's-0001'], 8)
    """
    lo, hi = (float(x) for x in displacement)
    if not (0 <= lo <= hi):
        raise ValueError(f"displacement range must satisfy 0 <= low <= high, got {displacement}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    out = []
    periodic = bool(np.any(base.pbc))
    for n in range(count):
        at = base.copy()
        if periodic and strain > 0:
            e = rng.uniform(-strain, strain, size=(3, 3))
            e = 0.5 * (e + e.T)
            at.set_cell(base.cell.array @ (np.eye(3) + e), scale_atoms=True)
        d = rng.normal(size=(len(at), 3))
        d *= (rng.uniform(lo, hi, size=len(at)) / np.linalg.norm(d, axis=1))[:, None]
        at.positions = at.positions + d
        out.append((f"{prefix}-{n:04d}", at))
    return out


def structures_from_file(path, prefix: str | None = None) -> list:
    """Every frame of an ASE-readable structure file, named ``<stem>-<index>``."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such structure file: {path}")
    frames = read(path, index=":")
    stem = prefix or path.stem
    return [(f"{stem}-{n:04d}", at) for n, at in enumerate(frames)]


def generate(plan: list, output, compute: Callable, progress: bool = True, stream=None) -> dict:
    """Compute every planned structure not yet in ``output`` and append it there.

    Parameters
    ----------
    plan : list of (str, ase.Atoms)
    output : str or Path
        Dataset file (created when absent).
    compute : callable
        ``compute(atoms, state) -> (StructureData, state)``; ``state`` carries e.g. a density
        matrix from one structure to the next (None at first).
    progress : bool
        Print a progress line per structure to ``stream`` (default stderr).

    Returns
    -------
    dict
        ``{"done": n computed now, "skipped": n already present, "seconds": wall time}``.
    """
    output = Path(output)
    stream = stream or sys.stderr
    names = [name for name, _ in plan]
    if len(set(names)) != len(names):
        raise ValueError("structure names in the plan are not unique")
    have = set(read_dataset(output).names) if output.exists() else set()
    todo = [(name, at) for name, at in plan if name not in have]
    t0 = time.perf_counter()
    state = None
    bar = Progress(len(plan), "generate", progress, stream, start=len(plan) - len(todo))
    for name, atoms in todo:
        t1 = time.perf_counter()
        data, state = compute(atoms, state)
        info = dict(data.info, name=name)
        data = type(data)(**{**{f: getattr(data, f) for f in data.__dataclass_fields__}, "info": info})
        append_dataset(output, [data])
        bar.step(note=f"{name} {time.perf_counter() - t1:.0f} s")
    return {"done": len(todo), "skipped": len(plan) - len(todo), "seconds": time.perf_counter() - t0}

"""Resumable dataset generation: a deterministic plan of structures, computed one at a time.

The plan is a list of named structures, either read from a structure file or made from a
base structure plus random displacements and strains (seeded, so the same arguments always
give the same plan).  Each finished structure is appended to the output dataset atomically
and under the dataset's lock (:func:`acehamil.io.dataset.append_dataset`); a rerun skips every
name already in the file, so an interrupted generation resumes where it stopped.

Resuming is safe only with the same settings: the generation ``settings`` are stored in the
file, and a rerun with other settings, or whose planned structure differs from the stored one
of the same name (another seed, strain, base), is refused.  Two runs into one file at once
each re-check, under the lock, what the other has already added, so every structure lands
exactly once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms

from ..progress import Progress
from ..errors import UserError
from ..structure.validate import check_atoms
from .dataset import append_dataset, check_settings, read_dataset, read_settings


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


class GenerationError(UserError):
    """A planned structure could not be computed or failed a quality check; the message names it."""


def structures_from_file(path, prefix: str | None = None) -> list:
    """Every frame of an ASE-readable structure file, named ``<stem>-<index>``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such structure file: {path}")
    frames = _read_frames(path, ":")
    if not frames:
        raise UserError(f"{path} holds no structures")
    stem = prefix or path.stem
    for n, at in enumerate(frames):  # before any DFT work
        check_atoms(at, f"{path}, frame {n}")
    return [(f"{stem}-{n:04d}", at) for n, at in enumerate(frames)]


def _read_frames(path: Path, index):
    """``ase.io.read`` with a foreign or malformed file named in a UserError."""
    from ase.io import read

    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty: no structures")
    from .labelled import check_not_cut

    check_not_cut(path)
    try:
        frames = read(path, index=index)
    except Exception as err:  # noqa: BLE001 - ASE's parsers raise anything on foreign input
        msg = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{path}: ASE cannot read structures from it ({type(err).__name__}: {msg})") from None
    return frames if isinstance(frames, list) else [frames]


def first_frame(path) -> Atoms:
    """The first frame of an ASE-readable structure file (a trajectory's start, not its end)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such structure file: {path}")
    at = _read_frames(path, 0)[0]
    check_atoms(at, f"{path}, frame 0")
    return at


def _band_note(info: dict) -> str:
    be = info.get("band_error")
    if not isinstance(be, dict) or be.get("checked_max_meV") is None:
        return ""
    return f", band error {be['checked_max_meV']:.2f} meV (all bands {be['all']['max_meV']:.2f})"


def _same_structure(a: Atoms, b: Atoms, tol: float = 1e-6) -> bool:
    """Same species, cell and positions (modulo lattice vectors for periodic cells), to ``tol`` Å."""
    if len(a) != len(b) or not np.array_equal(a.numbers, b.numbers) or not np.array_equal(a.pbc, b.pbc):
        return False
    if not np.allclose(a.cell.array, b.cell.array, atol=tol):
        return False
    d = a.positions - b.positions
    if np.any(a.pbc):
        cell = a.cell.array
        frac = np.linalg.solve(cell.T, d.T).T
        frac[:, a.pbc] -= np.round(frac[:, a.pbc])
        d = frac @ cell
    return bool(np.abs(d).max(initial=0.0) <= tol)


def _check_resume(output: Path, plan: list, settings: dict | None) -> None:
    """Refuse resuming into ``output`` when its stored settings or structures differ from the plan."""
    stored = read_settings(output)
    if settings is not None and stored is not None:
        check_settings(output, stored, settings)
    ds = read_dataset(output)
    planned = dict(plan)
    for k, name in enumerate(ds.names):
        if name in planned:
            other = ds[k].atoms
            if not _same_structure(planned[name], other):
                raise UserError(f"{output}: stored structure {name!r} differs from the planned one of that name "
                                f"(another seed, strain, displacement or base structure?); refusing to mix two "
                                f"plans in one file: use another output file, or --overwrite to start afresh")


def _names_in(output: Path) -> set:
    return set(read_dataset(output).names) if output.exists() else set()


def generate(plan: list, output, compute: Callable, progress: bool = True, stream=None,
             settings: dict | None = None, overwrite: bool = False) -> dict:
    """Compute every planned structure not yet in ``output`` and append it there.

    Parameters
    ----------
    plan : list of (str, ase.Atoms)
    output : str or Path
        Dataset file (created when absent).  When it exists, its stored settings must
        equal ``settings`` and every stored structure named in the plan must equal the
        planned one, else UserError (nothing is computed).
    compute : callable
        ``compute(atoms, state) -> (StructureData, state)``; ``state`` carries e.g. a density
        matrix from one structure to the next (None at first).
    progress : bool
        Print a progress line per structure to ``stream`` (default stderr).
    settings : dict, optional
        JSON-able generation settings stored in the file (root attribute
        ``generation_settings``) and compared on every resume and append.
    overwrite : bool
        Start afresh: an existing ``output`` is neither resumed nor checked, and stays as it was until
        the first structure computed now replaces it (atomically) with a new file; a run that stops
        before (a failure, an interrupt, a kill) leaves it untouched.

    Returns
    -------
    dict
        ``{"done": n computed and added now, "skipped": n already present (or added meanwhile by
        another run), "seconds": wall time, "band_error_max_meV", "band_error_median_meV"}`` (the
        band figures over the structures computed now whose ``info["band_error"]`` is known, else None).

    Raises
    ------
    GenerationError
        ``compute`` raised ValueError for a structure: the message names it; the structures done
        before it are kept.
    """
    output = Path(output)
    stream = stream or sys.stderr
    names = [name for name, _ in plan]
    if len(set(names)) != len(names):
        raise UserError("structure names in the plan are not unique")
    if output.exists() and not overwrite:
        _check_resume(output, plan, settings)
    have = set() if overwrite else _names_in(output)
    todo = [(name, at) for name, at in plan if name not in have]
    t0 = time.perf_counter()
    state = None
    done = 0
    bar = Progress(len(plan), "generate", progress, stream, start=len(plan) - len(todo))
    errors = []
    fresh = overwrite  # the old file stays in place until the first new structure replaces it
    for name, atoms in todo:
        if not fresh and name in _names_in(output):  # another run added it meanwhile
            bar.step(note=f"{name} present")
            continue
        t1 = time.perf_counter()
        try:
            data, state = compute(atoms, state)
        except ValueError as err:  # bad settings for this structure, SCF failure, band error above tolerance
            raise GenerationError(f"structure {name!r} ({atoms.get_chemical_formula()}, {len(atoms)} atoms): {err}") from err
        info = dict(data.info, name=name)
        data = type(data)(**{**{f: getattr(data, f) for f in data.__dataclass_fields__}, "info": info})
        added = append_dataset(output, [data], on_duplicate="skip", settings=settings, replace=fresh)
        fresh = False
        done += len(added)
        bar.step(note=f"{name} {time.perf_counter() - t1:.0f} s" + _band_note(info)
                 + ("" if added else " (added meanwhile by another run)"))
        if added and isinstance(info.get("band_error"), dict):
            errors.append(info["band_error"].get("checked_max_meV"))
    known = [e for e in errors if e is not None]
    return {"done": done, "skipped": len(plan) - done, "seconds": time.perf_counter() - t0,
            "band_error_max_meV": max(known) if known else None,
            "band_error_median_meV": float(np.median(known)) if known else None}

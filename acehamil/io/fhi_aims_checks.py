"""Consistency of an FHI-aims folder's inputs with the ``aims.out`` of the run that wrote its matrices: the charge and
spin of ``control.in`` and the atoms and cell of ``geometry.in`` (:func:`acehamil.io.fhi_aims.read_fhi_aims` calls
both).  Files of different runs, or an input edited after the run, were converted without a word."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["check_control_against_aims_out", "check_geometry_against_aims_out"]


def check_control_against_aims_out(folder: Path, numbers, aims: dict) -> None:
    """UserError when ``control.in``'s ``charge`` or ``spin`` contradicts ``aims.out`` (the electron count of the
    geometry's atoms minus the charge, and the number of spin channels): the files come from different runs, and
    the structure would carry another run's electron count (wrong Fermi levels) - it was converted without a word."""
    if not (folder / "control.in").is_file() or not (folder / "aims.out").is_file():
        return
    from .fhi_aims_bands import read_control_in

    control = read_control_in(folder / "control.in")
    nuclear = float(np.sum(numbers))
    if aims.get("n_electrons") is not None and abs(nuclear - control.charge - aims["n_electrons"]) > 1e-3:
        raise UserError(f"{folder}: control.in gives charge {control.charge:g}, so {nuclear - control.charge:g} electrons "
                        f"for the atoms of geometry.in ({nuclear:g} nuclear charges), but aims.out counts "
                        f"{aims['n_electrons']:g}: files of different runs, or control.in edited after the run")
    n_spin = 2 if control.spin == "collinear" else 1
    if aims.get("n_spin") is not None and aims["n_spin"] != n_spin:
        raise UserError(f"{folder}: control.in asks 'spin {control.spin}' ({n_spin} spin channel(s)), but aims.out ran "
                        f"{aims['n_spin']}: files of different runs, or control.in edited after the run")


_GEOMETRY_KEYS = ("atom", "atom_frac", "lattice_vector")


def _geometry_lines(lines) -> list:
    """``[(key, (x, y, z), rest), ...]`` of the atom/atom_frac/lattice_vector lines (comments dropped)."""
    out = []
    for raw in lines:
        tok = raw.split("#", 1)[0].split()
        if tok and tok[0].lower() in _GEOMETRY_KEYS:
            try:
                out.append((tok[0].lower(), tuple(float(t) for t in tok[1:4]), tuple(tok[4:])))
            except ValueError:
                out.append((tok[0].lower(), None, tuple(tok[1:])))
    return out


def check_geometry_against_aims_out(folder: Path) -> None:
    """UserError when ``geometry.in`` differs from the geometry ``aims.out`` ran (FHI-aims repeats geometry.in
    verbatim there): a geometry edited after the run (e.g. ``atom`` and ``atom_frac`` swapped, or another cell)
    put the run's matrices on other bonds without a word.  Skipped when aims.out has no such echo."""
    out = folder / "aims.out"
    if not out.is_file():
        return
    lines = out.read_text(errors="replace").splitlines()
    start = next((k for k, ln in enumerate(lines) if "The contents of geometry.in will be repeated verbatim" in ln), None)
    if start is None:
        return
    end = next((k for k in range(start, len(lines)) if "Completed first pass over input file geometry.in" in lines[k]), None)
    if end is None:
        return
    ran = _geometry_lines(lines[start + 1:end])
    have = _geometry_lines((folder / "geometry.in").read_text(errors="replace").splitlines())
    for k in range(max(len(ran), len(have))):
        a = ran[k] if k < len(ran) else None
        b = have[k] if k < len(have) else None
        same = (a is not None and b is not None and a[0] == b[0] and a[2] == b[2] and a[1] is not None and b[1] is not None
                and np.allclose(a[1], b[1], rtol=1e-9, atol=1e-9))
        if not same:
            show = (lambda g: "nothing" if g is None else " ".join([g[0], *(map(str, g[1] or ())), *g[2]]))
            raise UserError(f"{folder}: geometry.in differs from the geometry aims.out ran (line {k + 1} of its atom/"
                            f"lattice lines: {show(b)!r} here, {show(a)!r} in aims.out): files of different runs, or "
                            "geometry.in edited after the run (atom vs atom_frac?)")

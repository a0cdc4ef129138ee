"""FHI-aims ``control.in`` (k-grid, band path, charge) and band-structure output ``band[12]0NN.out``.

``control.in``
    ``k_grid n1 n2 n3``; ``charge Q``; ``spin none|collinear``; one ``output band k_start(3) k_end(3)
    npoints label_start label_end`` line per path segment (fractional coordinates of the reciprocal
    lattice; FHI-aims' ``Gamma``/``G``/``Γ`` all mean the zone centre, stored as ``"G"``).
``band1NNN.out`` (spin up or unpolarised), ``band2NNN.out`` (spin down), one file per segment
    Lines: index, fractional k (3 numbers), then (occupation, energy) pairs; energies in eV
    **relative to the chemical potential** (absolute = value + the last ``Chemical Potential`` of
    ``aims.out``).  FHI-aims prints a fixed number of the lowest states.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "control.in").write_text("k_grid 8 8 1\\noutput band 0 0 0  0.5 0 0  3 Gamma M # comment\\n")
>>> c = read_control_in(d / "control.in")
>>> c.k_grid, c.segments[0].labels, c.segments[0].npoints
((8, 8, 1), ('G', 'M'), 3)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .text_files import check_not_cut

__all__ = ["BandSegment", "AimsControl", "read_control_in", "read_band_files", "path_labels", "read_eigenvalues_out", "band_extras"]

_GAMMA = {"gamma", "g", "γ", "\\gamma"}


def _label(text: str) -> str:
    return "G" if text.strip().lower() in _GAMMA else text.strip()


@dataclass(frozen=True)
class BandSegment:
    """One ``output band`` line.

    Attributes
    ----------
    start, end : ndarray, shape (3,), fractional
    npoints : int
    labels : tuple (str, str)
        Special-point names at the two ends ("G" for the zone centre); "" when not given.
    """

    start: np.ndarray
    end: np.ndarray
    npoints: int
    labels: tuple


@dataclass(frozen=True)
class AimsControl:
    """What acehamil uses from ``control.in``.

    Attributes
    ----------
    k_grid : tuple of 3 int or None
    segments : tuple of BandSegment
    charge : float
        Net charge of the cell (electrons removed), 0 when not given.
    spin : str
        "none" or "collinear".
    """

    k_grid: tuple | None
    segments: tuple
    charge: float
    spin: str


def read_control_in(path) -> AimsControl:
    """Parse the keywords acehamil needs from an FHI-aims ``control.in``.

    Raises
    ------
    ValueError
        A malformed ``k_grid`` or ``output band`` line (named with its line number).
    """
    path = Path(path)
    k_grid, segments, charge, spin = None, [], 0.0, "none"
    for num, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        tok = line.split()
        if not tok:
            continue
        key = tok[0].lower()
        try:
            if key == "k_grid":
                k_grid = tuple(int(t) for t in tok[1:4])
                if len(k_grid) != 3 or min(k_grid) < 1:
                    raise ValueError
            elif key == "charge":
                charge = float(tok[1].lower().replace("d", "e"))
            elif key == "spin":
                spin = tok[1].lower()
            elif key == "output" and len(tok) > 1 and tok[1].lower() == "band":
                vals = tok[2:]
                start = np.array([float(v) for v in vals[0:3]])
                end = np.array([float(v) for v in vals[3:6]])
                npts = int(vals[6])
                if npts < 1 or start.shape != (3,) or end.shape != (3,):
                    raise ValueError
                labels = (_label(vals[7]) if len(vals) > 7 else "", _label(vals[8]) if len(vals) > 8 else "")
                segments.append(BandSegment(start, end, npts, labels))
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{num}: cannot read {tok[0]!r} line: {raw.strip()!r}") from None
    return AimsControl(k_grid, tuple(segments), charge, spin)


def _band_file_number(p: Path) -> tuple:
    m = re.fullmatch(r"band([12])(\d{3})\.out", p.name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def read_band_files(folder, chemical_potential: float | None) -> tuple:
    """FHI-aims band energies along the ``output band`` path.

    Parameters
    ----------
    folder : str or Path
        Holds ``band1001.out`` ... (and ``band2001.out`` ... for spin down).
    chemical_potential : float or None
        eV, added to the printed energies (which are relative to it); None keeps them relative.

    Returns
    -------
    kpts : ndarray, shape (nk, 3), fractional (segments concatenated in file order)
    eps : ndarray, shape (nspin, nk, nbands), eV
    segment_lengths : list of int
        k-points per segment (file).

    Raises
    ------
    FileNotFoundError
        No band files in the folder.
    ValueError
        Unreadable files, spin channels with different k-points, segments with different band counts.
    """
    folder = Path(folder)
    files = sorted((n, p) for p in folder.glob("band[12][0-9][0-9][0-9].out") if (n := _band_file_number(p)))
    if not files:
        raise FileNotFoundError(f"{folder}: no FHI-aims band files (band1001.out ...)")
    by_spin = {}
    for (spin, _), p in files:
        check_not_cut(p)  # FHI-aims ends every k-point's line with a newline
        try:
            a = np.loadtxt(p, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{p}: unreadable band file: {err}") from None
        if a.shape[1] < 6 or (a.shape[1] - 4) % 2:
            raise ValueError(f"{p}: expected index, k (3 numbers) and (occupation, energy) pairs per line")
        by_spin.setdefault(spin, []).append((a[:, 1:4], a[:, 5::2]))
    spins = sorted(by_spin)
    kpts = np.concatenate([k for k, _ in by_spin[spins[0]]])
    lengths = [len(k) for k, _ in by_spin[spins[0]]]
    eps = []
    for s in spins:
        nb = {e.shape[1] for _, e in by_spin[s]}
        if len(nb) != 1:
            raise ValueError(f"{folder}: band files of spin {s} print different numbers of states {sorted(nb)}")
        ks = np.concatenate([k for k, _ in by_spin[s]])
        if ks.shape != kpts.shape or np.abs(ks - kpts).max() > 1e-6:
            raise ValueError(f"{folder}: band{s}NNN.out files are on other k-points than band1NNN.out")
        eps.append(np.concatenate([e for _, e in by_spin[s]]))
    eps = np.stack(eps)
    if chemical_potential is not None:
        eps = eps + float(chemical_potential)
    return kpts, eps, lengths


def path_labels(segments, lengths) -> list:
    """``[[k index, label], ...]`` for concatenated band segments ("" labels dropped), and
    ``[[k index, ""], ...]`` break markers are not needed: a break is where one segment's end label
    differs from the next one's start label (or their k-points differ).

    Parameters
    ----------
    segments : sequence of BandSegment (from ``control.in``)
    lengths : sequence of int
        k-points per segment actually printed.
    """
    if len(segments) != len(lengths):
        raise ValueError(f"control.in has {len(segments)} 'output band' lines but there are {len(lengths)} band files")
    for q, (seg, n) in enumerate(zip(segments, lengths)):
        if n != seg.npoints:  # FHI-aims prints exactly npoints: labels would land on the wrong k-points
            raise ValueError(f"control.in's output band line {q + 1} asks {seg.npoints} k-points but band file "
                             f"{q + 1} holds {n} (a truncated band file?)")
    out, start = [], 0
    for seg, n in zip(segments, lengths):
        a, b = seg.labels
        if a:
            out.append([start, a])
        if b:
            out.append([start + n - 1, b])
        start += n
    return out


def read_eigenvalues_out(path) -> np.ndarray:
    """Levels of a cluster calculation from ``eigenvalues.out`` (one absolute energy in eV per line),
    shape (nlevels,)."""
    if not [ln for ln in Path(path).read_text().splitlines() if ln.split("#")[0].strip()]:  # numpy warned beside it
        raise ValueError(f"{path}: no eigenvalues (an empty file; one energy in eV per line expected)")
    try:
        e = np.loadtxt(path, ndmin=1, comments="#")
    except ValueError as err:
        raise ValueError(f"{path}: unreadable eigenvalues (one energy in eV per line expected): {err}") from None
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"{path}: expected one energy per line, got shape {e.shape}")
    return e


def band_extras(folder, chemical_potential: float | None, periodic: bool) -> dict:
    """What an FHI-aims folder adds to a structure besides H and S: keyword arguments for
    :class:`acehamil.structure.StructureData`.

    Returns
    -------
    dict
        ``reference_bands`` (kpts (nk, 3), eps (nk, nbands) absolute eV; spin up when spin-polarised)
        from ``band1NNN.out`` (periodic) or ``eigenvalues.out`` (cluster), when present;
        ``info`` entries: ``band_path`` = {"labels": [[k index, name], ...], "breaks": [k index, ...]}
        from ``control.in`` (labels are FHI-aims' own names, "G" for the zone centre), ``k_grid``,
        ``charge``, ``spin`` and ``reference_bands_spin1`` (spin-down energies, nested lists).
        Empty when nothing is there.
    """
    folder = Path(folder)
    out, info = {}, {}
    control = read_control_in(folder / "control.in") if (folder / "control.in").is_file() else None
    if control is not None:
        if control.k_grid is not None and periodic:
            info["k_grid"] = list(control.k_grid)
        info["charge"] = control.charge
        info["spin"] = control.spin
    has_bands = any(_band_file_number(p) for p in folder.glob("band[12][0-9][0-9][0-9].out"))
    if periodic and has_bands:
        if chemical_potential is None:
            raise ValueError(f"{folder}: band files hold energies relative to the chemical potential, but aims.out "
                             "(with 'Chemical Potential') is missing")
        kpts, eps, lengths = read_band_files(folder, chemical_potential)
        out["reference_bands"] = (kpts, eps[0])
        if eps.shape[0] == 2:
            info["reference_bands_spin1"] = eps[1].tolist()
        if control is not None and len(control.segments) == len(lengths):
            starts = np.cumsum([0, *lengths[:-1]])
            breaks = [int(s) for s in starts[1:] if np.abs(kpts[s] - kpts[s - 1]).sum() > 1e-6]
            try:
                labels = path_labels(control.segments, lengths)
            except ValueError as err:
                raise ValueError(f"{folder}: {err}") from None
            info["band_path"] = {"labels": labels, "breaks": breaks, "source": "control.in"}
    elif not periodic and (folder / "eigenvalues.out").is_file():
        out["reference_bands"] = (np.zeros((1, 3)), read_eigenvalues_out(folder / "eigenvalues.out")[None])
    if info:
        out["info"] = info
    return out

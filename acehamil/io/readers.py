"""The reader registry: every format acehamil reads H/S from, keyed by name, detected by content.

As ASE's ``ioformats`` and sisl's ``add_sile``: one :class:`ReaderFormat` per
format, with a ``detect(path)`` that looks at the content (files a folder
holds, HDF5 groups and attributes; never only the name) and a ``read(path,
**options)`` returning a list of :class:`~acehamil.structure.StructureData`.
Each reader takes its units, orbital order/signs and cell-index sign from
:data:`acehamil.conventions.CODE_CONVENTIONS` (``convention`` names its entry)
through :func:`acehamil.conventions.orbital_permutation`.

Adding a reader: write ``io/<code>.py`` with a detect and a read function and
add one :class:`ReaderFormat` to :data:`READERS` (see ``docs/design.md``).

Examples
--------
>>> sorted(READERS)
['acehamil', 'acehamiltonians', 'deeph', 'fhi-aims']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable


@dataclass(frozen=True)
class ReaderFormat:
    """One readable format.

    Attributes
    ----------
    name : str
        Format key (``acehamil convert --format NAME``).
    convention : str or None
        Key of :data:`acehamil.conventions.CODE_CONVENTIONS` the reader converts from
        (None: already acehamil's conventions).
    description : str
    detect : callable Path -> bool
        True when the path holds this format (by content).
    read : callable (Path, **options) -> list of StructureData
        Unknown options are ignored (``text``: FHI-aims text value files).
    """

    name: str
    convention: str | None
    description: str
    detect: Callable
    read: Callable


def _hdf5_kind(path: Path):
    """``acehamil_kind`` of an HDF5 file ('' for a foreign HDF5 file), None when not HDF5."""
    import h5py

    if not (path.is_file() and h5py.is_hdf5(path)):
        return None
    with h5py.File(path, "r") as f:
        kind = f.attrs.get("acehamil_kind", "")
        groups = [k for k in f if isinstance(f[k], h5py.Group) and "Structure" in f[k] and "Data" in f[k]]
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    return kind or ("acehamiltonians" if groups else "")


def _is_fhi_aims(path: Path) -> bool:
    from .fhi_aims import REQUIRED

    return path.is_dir() and all((path / n).is_file() for n in REQUIRED)


def _read_fhi_aims(path: Path, text: bool = False, **_) -> list:
    from .fhi_aims import read_fhi_aims

    return [read_fhi_aims(path, prefer_hdf5=False if text else None)]


def _is_deeph(path: Path) -> bool:
    from .deeph import deeph_folders

    return bool(deeph_folders(path))


def _read_deeph(path: Path, **_) -> list:
    from ..errors import UserError
    from .deeph import deeph_folders, read_deeph

    folders = deeph_folders(path)
    if not folders:
        raise UserError(f"{path}: no DeepH folder (element.dat, orbital_types.dat, lat.dat, overlaps.h5) found")
    return [read_deeph(f) for f in folders]


def _read_acehamiltonians(path: Path, **_) -> list:
    from .acehamiltonians import read_acehamiltonians

    return read_acehamiltonians(path)


def _read_dataset(path: Path, **_) -> list:
    from .dataset import read_dataset

    return list(read_dataset(path))


#: The formats, in detection order.
READERS = MappingProxyType({r.name: r for r in (
    ReaderFormat("fhi-aims", "fhi-aims", "FHI-aims output_rs_matrices folder (geometry.in, basis-indices.out, rs_*)",
                 _is_fhi_aims, _read_fhi_aims),
    ReaderFormat("deeph", "deeph", "DeepH folder (element.dat, orbital_types.dat, lat.dat, overlaps.h5) or a folder of them",
                 _is_deeph, _read_deeph),
    ReaderFormat("acehamiltonians", "acehamiltonians", "ACEhamiltonians HDF5 file (groups with Structure/ and Data/)",
                 lambda p: _hdf5_kind(p) == "acehamiltonians", _read_acehamiltonians),
    ReaderFormat("acehamil", None, "acehamil dataset (HDF5, acehamil_kind='dataset')",
                 lambda p: _hdf5_kind(p) == "dataset", _read_dataset),
)})


def detect_format(path) -> str:
    """The one format whose ``detect`` accepts ``path``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, or is a folder of an FHI-aims run that lacks a file the reader needs
        (the message names each and what writes it).
    ValueError
        No format, or more than one, recognises it (message lists the formats).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such source: {path}")
    found = [name for name, r in READERS.items() if r.detect(path)]
    if len(found) == 1:
        return found[0]
    known = "; ".join(f"{r.name}: {r.description}" for r in READERS.values())
    if not found:
        from .fhi_aims import incomplete_folder

        partial = incomplete_folder(path)  # an FHI-aims run missing a file: name it, not every format
        if partial:
            raise FileNotFoundError(partial)
        raise ValueError(f"{path}: not a format acehamil reads ({known})")
    raise ValueError(f"{path}: could be {', '.join(found)}; choose one with --format")


def read_structures(path, format: str | None = None, **options) -> list:
    """Structures of ``path`` in acehamil's conventions, with the reader ``format`` (default: detected).

    Parameters
    ----------
    path : str or Path
    format : str, optional
        A key of :data:`READERS`; forces the reader (no detection).
    **options
        Passed to the reader (``text=True``: FHI-aims text value files).

    Returns
    -------
    list of StructureData
    """
    path = Path(path)
    if format is None:
        format = detect_format(path)
    elif format not in READERS:
        raise ValueError(f"unknown format {format!r}; known: {', '.join(READERS)}")
    elif not path.exists():
        raise FileNotFoundError(f"no such source: {path}")
    return READERS[format].read(path, **options)

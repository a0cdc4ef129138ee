"""HDF5 helpers shared by every acehamil file type: atomic writes and
self-describing headers (units, conventions version, file kind, version)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import h5py

from .._version import __version__
from ..conventions import conventions_metadata
from .safe_write import atomic_path


@contextlib.contextmanager
def atomic_h5(path, mode: str = "w"):
    """Open a new HDF5 file that appears at ``path`` only when the block succeeds.

    Writes to a uniquely named temporary file in the same folder, closes it, then
    renames it over ``path`` (keeping an existing file's mode, else ``0o666 & ~umask``;
    see :mod:`acehamil.io.safe_write`).  An exception (including a full disk) closes
    and removes the temporary and leaves any existing file untouched.

    Parameters
    ----------
    path : str or Path
    mode : {"w"}

    Yields
    ------
    h5py.File
    """
    if mode != "w":
        raise ValueError("atomic_h5 only creates files (mode 'w')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with closing_h5(tmp, "w") as f:
            yield f


@contextlib.contextmanager
def closing_h5(path, mode: str):
    """``h5py.File`` that is closed on every exit, also when a write failed.

    After a failed write (e.g. ``ENOSPC``) HDF5's own close can fail again while
    flushing; that second error is suppressed so the first one propagates and
    the caller can remove the file.
    """
    f = h5py.File(path, mode)
    try:
        yield f
    except BaseException:
        with contextlib.suppress(Exception):
            f.close()
        raise
    f.close()


def write_header(f: h5py.File, kind: str, format_version: int) -> None:
    """Stamp the root attributes every acehamil file carries."""
    f.attrs["acehamil_kind"] = kind
    f.attrs["format_version"] = int(format_version)
    f.attrs["acehamil_version"] = __version__
    for k, v in conventions_metadata().items():
        f.attrs[k] = v


def check_header(f: h5py.File, kind: str, supported_versions) -> int:
    """Raise a clear ValueError unless ``f`` is an acehamil file of ``kind`` with a supported version.

    Returns
    -------
    int
        The file's format version.
    """
    name = getattr(f, "filename", "?")
    got = f.attrs.get("acehamil_kind")
    if got is None:
        raise ValueError(f"{name} is not an acehamil file (no 'acehamil_kind' attribute)")
    got = got.decode() if isinstance(got, bytes) else str(got)
    if got != kind:
        raise ValueError(f"{name} holds an acehamil {got!r}, expected {kind!r}")
    version = int(f.attrs.get("format_version", -1))
    if version not in tuple(supported_versions):
        raise ValueError(
            f"{name} has {kind} format version {version}; this acehamil ({__version__}) reads versions "
            f"{sorted(supported_versions)}"
        )
    conv = int(f.attrs.get("conventions_version", -1))
    if conv != conventions_metadata()["conventions_version"]:
        raise ValueError(f"{name} was written with conventions version {conv}, this acehamil uses {conventions_metadata()['conventions_version']}")
    return version


def open_h5(path) -> h5py.File:
    """Open an existing HDF5 file read-only with a clear error for missing/truncated/foreign files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or foreign?): {err}") from None

"""HDF5 helpers shared by every acehamil file type: atomic writes and
self-describing headers (units, conventions version, file kind, version)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import h5py

from .._version import __version__
from ..conventions import conventions_metadata
from .safe_write import atomic_path


#: Files up to this size are built in memory and written with plain ``os.write`` (a full disk is then
#: a clean OSError); larger ones are written by HDF5 directly, after a free-space check.
IN_MEMORY_LIMIT = 2**30


@contextlib.contextmanager
def atomic_h5(path, mode: str = "w", source=None):
    """Open an HDF5 file that appears at ``path`` only when the block succeeds.

    The file is built in memory (an in-memory copy of ``source`` when given, to extend
    it; else empty), then written to a uniquely named temporary file in the same folder
    with plain ``os.write`` + ``fsync`` and renamed over ``path`` (keeping an existing
    file's mode, else ``0o666 & ~umask``; see :mod:`acehamil.io.safe_write`).  Any
    exception - a full disk included, which is then an ordinary ``OSError`` instead of a
    failure inside HDF5 - leaves ``path`` untouched and no temporary behind.  A
    ``source`` larger than :data:`IN_MEMORY_LIMIT` is copied and extended on disk instead.

    Parameters
    ----------
    path : str or Path
    mode : {"w"}
    source : str or Path, optional
        Existing HDF5 file whose content the new file starts from (``path`` itself to append).

    Yields
    ------
    h5py.File
    """
    if mode != "w":
        raise ValueError("atomic_h5 only creates files (mode 'w'); give source= to extend one")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if source is not None and os.path.getsize(source) > IN_MEMORY_LIMIT:
            import shutil

            shutil.copyfile(source, tmp)
            with closing_h5(tmp, "a") as f:
                yield f
            return
        buf = io.BytesIO(Path(source).read_bytes() if source is not None else b"")
        f = h5py.File(buf, "a" if source is not None else "w")
        try:
            yield f
        finally:
            f.close()
        data = buf.getbuffer()
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def closing_h5(path, mode: str):
    """``h5py.File`` on disk that is closed on every exit, also when a write failed."""
    f = h5py.File(path, mode)
    try:
        yield f
    except BaseException:
        with contextlib.suppress(Exception):
            f.close()
        raise
    f.close()


#: Root attributes that say what a file's numbers mean (:func:`acehamil.conventions.conventions_metadata`).
UNIT_KEYS = ("energy_unit", "length_unit", "bloch_sign", "shift_sign")
#: Files of this conventions version and later must carry every :data:`UNIT_KEYS` attribute: acehamil has written
#: them since its first file (conventions version 1), so a file without them was edited or written by another program.
UNITS_SINCE_CONVENTIONS = 1


def write_header(f: h5py.File, kind: str, format_version: int) -> None:
    """Stamp the root attributes every acehamil file carries."""
    f.attrs["acehamil_kind"] = kind
    f.attrs["format_version"] = int(format_version)
    f.attrs["acehamil_version"] = __version__
    for k, v in conventions_metadata().items():
        f.attrs[k] = v


def _int_attr(f: h5py.File, key: str, name: str) -> int:
    """The integer root attribute ``key``; a missing or non-integer one is named (it was read as version -1,
    or raised int()'s own message)."""
    if key not in f.attrs:
        raise ValueError(f"{name}: no {key} attribute (not written by acehamil, or edited)")
    raw = f.attrs[key]
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {key} {raw!r} is not an integer (file edited or damaged)") from None


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
    version = _int_attr(f, "format_version", name)
    if version not in tuple(supported_versions):
        raise ValueError(
            f"{name} has {kind} format version {version}; this acehamil ({__version__}) reads versions "
            f"{sorted(supported_versions)}"
        )
    conv = _int_attr(f, "conventions_version", name)
    if conv != conventions_metadata()["conventions_version"]:
        raise ValueError(f"{name} was written with conventions version {conv}, this acehamil uses {conventions_metadata()['conventions_version']}")
    missing = [key for key in UNIT_KEYS if key not in f.attrs]
    if missing and conv >= UNITS_SINCE_CONVENTIONS:  # a file without them was read as eV/Angstrom, unasked
        raise ValueError(f"{name}: no {', '.join(missing)} attribute{'s' if len(missing) > 1 else ''}, which every "
                         f"acehamil file of conventions version {conv} carries (file edited, or written by another "
                         f"program?): its units are unknown, refusing to read it as eV and Angstrom")
    for key in UNIT_KEYS:  # files carry their units: check them
        if key not in f.attrs:
            continue
        got, want = f.attrs[key], conventions_metadata()[key]
        got = got.decode() if isinstance(got, bytes) else got
        if (str(got) if isinstance(want, str) else _as_int(got)) != want:
            raise ValueError(f"{name}: {key} is {got!r}, acehamil files use {want!r} (units are converted only when "
                             f"a DFT code's output is read; file edited or written by another program?)")
    return version


def _as_int(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def open_h5(path) -> h5py.File:
    """Open an existing HDF5 file read-only with a clear error for missing/truncated/foreign files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an HDF5 file (a DFT output folder? `acehamil convert` it first)")
    try:
        return _ReadFile(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or foreign?): {err}") from None


class _ReadFile(h5py.File):
    """``h5py.File`` whose ``with`` block turns h5py's own failures on a damaged file into one ValueError naming
    it: bytes changed inside the file's structures raised RuntimeError ("Can't visit links", "bad symbol table
    node signature") or KeyError ("unable to determine object type") from inside h5py, wherever acehamil read
    next - printed as internal errors with a traceback."""

    def __init__(self, path, mode):
        super().__init__(path, mode)
        self.acehamil_path = str(path)  # for the message: the handle is closed by then

    def __exit__(self, typ, err, tb):
        super().__exit__(typ, err, tb)
        if isinstance(err, (RuntimeError, KeyError, OSError)) and _raised_in_h5py(err):
            text = str(err).strip("'\"").splitlines()[0] if str(err) else ""
            raise ValueError(f"{self.acehamil_path}: damaged HDF5 file ({type(err).__name__} in h5py: {text}): changed "
                             "after it was written (a disk or copy fault?); use a backup or write it again") from None
        return False


def _raised_in_h5py(err: BaseException) -> bool:
    """True when the innermost frame of ``err``'s traceback is h5py's (its Python or compiled modules)."""
    tb, last = err.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and "h5py" in last.tb_frame.f_code.co_filename.replace("\\", "/").split("/")

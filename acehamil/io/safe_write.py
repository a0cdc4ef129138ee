"""Safe file writing: atomic replacement, permissions, locks, strict JSON, free-space checks.

Every acehamil file is written through one of these helpers, so one set of rules holds for
all of them (``docs/files-and-safety.md``):

* **Atomic**: data go to a uniquely named temporary file in the target's folder
  (``.<name>.<random>.tmp``) that is renamed over the target only when complete; any failure
  (an exception, ``KeyboardInterrupt``, a full disk) removes the temporary and leaves an
  existing target byte-identical.
* **Permissions**: a new file gets ``0o666 & ~umask`` (as ``open()`` would give); a replaced
  file keeps its mode.
* **Locks**: :func:`file_lock` takes an advisory ``fcntl.flock`` on a sidecar file
  ``.<name>.lock`` beside the target, so read-modify-rename updates (dataset appends) by
  several processes are serialised.  The sidecar stays (removing it would race).
* **Strict JSON**: :func:`dumps_strict` writes ``null`` for NaN/inf, never bare ``NaN``.

Examples
--------
>>> import os, tempfile, json
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "x.json")
>>> atomic_write_text(p, dumps_strict({"a": float("nan"), "b": [1.5]}))
>>> json.loads(open(p).read())
{'a': None, 'b': [1.5]}
>>> sorted(os.listdir(d))
['x.json']
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["atomic_path", "atomic_write_text", "file_lock", "dumps_strict", "to_strict_json", "new_file_mode",
           "check_free_space", "lock_path"]


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - not Linux
        pass
    old = os.umask(0o022)  # pragma: no cover
    os.umask(old)  # pragma: no cover
    return old  # pragma: no cover


def new_file_mode(path) -> int:
    """Mode a write to ``path`` should leave: the existing file's, else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _temp_in(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The caller writes the complete file to the yielded path (and closes it) inside the
    block.  On success the temporary gets :func:`new_file_mode` and is renamed over
    ``path``; on any exception it is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or Path
        Final file; its folder must exist.

    Yields
    ------
    str
        Temporary file path (same folder, unique name ``.<name>.<random>.tmp``).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {str(path.parent)!r} does not exist")
    mode = new_file_mode(path)
    tmp = _temp_in(path)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def lock_path(path) -> Path:
    """The sidecar lock file of ``path``: ``.<name>.lock`` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def file_lock(path, shared: bool = False):
    """Hold an advisory ``flock`` on ``path``'s sidecar lock file for the block.

    Exclusive by default (writers); ``shared=True`` for readers that must not see a
    half-finished read-modify-rename.  Blocks until the lock is free.
    """
    import fcntl

    lp = lock_path(path)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield lp
    finally:
        os.close(fd)  # releases the lock


def to_strict_json(obj):
    """``obj`` with numpy types made Python and NaN/inf replaced by None (recursively)."""
    if isinstance(obj, dict):
        return {str(k): to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def dumps_strict(obj, **kw) -> str:
    """``json.dumps`` that never writes NaN/Infinity (they become null)."""
    return json.dumps(to_strict_json(obj), allow_nan=False, **kw)


def check_free_space(folder, need_bytes: int, what: str) -> None:
    """Refuse (UserError) when ``folder``'s file system has less than ``need_bytes`` free."""
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise UserError(f"not enough disk space for {what}: about {need_bytes / 2**20:.1f} MiB needed in "
                        f"{folder}, {free / 2**20:.1f} MiB free")

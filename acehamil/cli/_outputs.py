"""The output-safety layer of every command that writes a file (``docs/files-and-safety.md``).

One rule for every command:

* An output that already exists is **refused** unless the user says what to do with it:
  ``--overwrite`` replaces it; ``convert --append`` adds to it; ``generate --resume``
  continues it (only with the same settings).
* An output that is the same file as an input or as another output (compared after
  resolving links: ``realpath`` and ``os.path.samefile``, so symlinks and hard links count)
  is refused, whatever the flags.
* Every output's folder must exist and be writable; all this is checked **before any work**,
  and messages name the user's path, never a temporary file.
* Files are then written atomically (:mod:`acehamil.io.safe_write`).

Examples
--------
>>> import os, tempfile
>>> d = tempfile.mkdtemp(); data = os.path.join(d, "data.h5"); open(data, "w").close()
>>> check_outputs({"DATA": data}, {"-o": data})
Traceback (most recent call last):
...
acehamil.errors.UserError: output -o (...data.h5) is the same file as input DATA (...data.h5); refusing to overwrite an input
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputExistsError, UserError

__all__ = ["add_overwrite_arg", "check_outputs", "same_file", "config_input_files"]


def add_overwrite_arg(p) -> None:
    """Add ``--overwrite`` (replace existing output files) to a sub-parser."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (default: refuse to replace any existing file)")


def same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name one file (links resolved; hard links by inode)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_outputs(inputs: dict, outputs: dict, overwrite: bool = False, may_exist=()) -> None:
    """Refuse, before any work, outputs that would destroy inputs, collide, or cannot be written.

    Parameters
    ----------
    inputs : dict {label: path or None}
        Files (or folders) the command reads; ``label`` names them in messages (e.g. ``"DATA"``).
    outputs : dict {label: path or None}
        Files the command writes (``None`` entries are skipped).
    overwrite : bool
        Existing outputs may be replaced.
    may_exist : iterable of str
        Labels of outputs that may exist without ``overwrite`` (an explicit append/resume).

    Raises
    ------
    UserError
        Output equal to an input or to another output; an output that is a folder; a
        missing or read-only folder.
    OutputExistsError
        An existing output without ``--overwrite`` (or the command's append/resume flag).
    """
    ins = {k: v for k, v in inputs.items() if v is not None}
    outs = {k: v for k, v in outputs.items() if v is not None}
    may_exist = set(may_exist)
    labels = list(outs)
    for n, (lab, path) in enumerate(outs.items()):
        for ilab, ipath in ins.items():
            if same_file(path, ipath):
                raise UserError(f"output {lab} ({path}) is the same file as input {ilab} ({ipath}); "
                                f"refusing to overwrite an input")
        for lab2 in labels[n + 1:]:
            if same_file(path, outs[lab2]):
                raise UserError(f"outputs {lab} and {lab2} are the same file ({path}); give each its own file")
    for lab, path in outs.items():
        p = Path(path)
        if p.is_dir():
            raise UserError(f"output {lab} ({path}) is a folder, not a file")
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.is_dir():
            raise UserError(f"cannot write output {lab} ({path}): folder {str(folder)!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"cannot write output {lab} ({path}): folder {str(folder)!r} is not writable")
        if p.exists() and not overwrite and lab not in may_exist:
            raise OutputExistsError(f"output {lab} ({path}) exists; pass --overwrite to replace it "
                                    f"(acehamil never replaces a file silently)")


def config_input_files(config_path) -> dict:
    """Inputs named by a TOML config: every string value that names an existing file.

    Relative paths are tried against the working directory and the config's folder.

    Returns
    -------
    dict {label: path}
        ``{"CONFIG": config_path, "CONFIG[data.train]": ..., ...}``.
    """
    out = {"CONFIG": config_path}
    try:
        import tomllib

        with open(config_path, "rb") as f:
            cfg = tomllib.load(f)
    except (OSError, ValueError):
        return out  # the command's own reader reports it
    base = Path(config_path).parent

    def walk(obj, key):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(obj, list):
            for n, v in enumerate(obj):
                walk(v, f"{key}[{n}]")
        elif isinstance(obj, str) and obj:
            for cand in (Path(obj), base / obj):
                try:
                    if cand.exists():
                        out[f"CONFIG[{key}]"] = str(cand)
                        break
                except OSError:
                    continue

    walk(cfg, "")
    return out

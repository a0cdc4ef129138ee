"""The acehamil dataset file: many structures with their H and S matrices in one HDF5 file.

Layout (format version 1; full description in ``docs/data-format.md``)::

    /                       attrs: acehamil_kind="dataset", format_version, acehamil_version,
                                   conventions_version, energy_unit, length_unit, bloch_sign, shift_sign
    /structures/<000000>/   one group per structure, names are zero-padded running numbers
        attrs: name, info (JSON), fermi_level, energy, n_electrons (each optional; eV),
               checksum ("sha256:<hex>" of the group's content; files before it have none)
        numbers (N,) int64, positions (N,3) Å, cell (3,3) Å (rows are vectors), pbc (3,) bool
        basis/<Z>  (nshell, 2) int64 rows (n, l), attr labels (JSON list of str)
        H/<spin>/{i, j (P,) int64, shift (P,3) int64, data (sum of block sizes,) float64 (or float32) eV}
        S/{i, j, shift, data}   dimensionless
        forces (N,3) eV/Å, reference_bands/{kpts (nk,3) fractional, eps (nk,nb) eV}   optional
        H_draws (K, size of H/0/data) float32 eV   optional: posterior draws of a prediction minus
                                                    the prediction (docs/uncertainty.md)

Everything is in acehamil conventions (:mod:`acehamil.conventions`); block ``(i, j, T)`` is
``<phi_i(0)|O|phi_j(T)>``.  Files are written atomically (a crash never leaves a partial
file), appends hold a lock (``.<name>.lock`` beside the file) across read-modify-rename,
structure names are unique, and each structure's checksum is verified when it is read
(lazily, one structure per access), together with its shapes, atoms and Hermiticity
(:mod:`acehamil.structure.validate`).  See ``docs/files-and-safety.md``.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from ase import Atoms
>>> from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData
>>> basis = OrbitalBasis.from_dict({1: [(1, 0)]})
>>> S = RealSpaceMatrix.from_dense([1, 1], [[0, 0, 0]], [np.array([[1.0, 0.5], [0.5, 1.0]])])
>>> sd = StructureData(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), basis, H=(S.with_data(-S.data),), S=S)
>>> path = os.path.join(tempfile.mkdtemp(), "d.h5")
>>> write_dataset(path, [sd, sd])
>>> ds = read_dataset(path)
>>> len(ds), ds[1].S.nblocks, bool(np.array_equal(ds[0].H[0].data, sd.H[0].data))
(2, 4, True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import UserError
from ..structure import StructureData
from .dataset_basis import check_same_basis, stored_bases
from .hdf5 import atomic_h5, check_header, open_h5, write_header
from .safe_write import atomic_path, check_free_space, file_lock
from .structure_group import PRECISIONS as _PRECISIONS
from .structure_group import read_structure, structure_checksum, write_structure

__all__ = ["write_dataset", "append_dataset", "read_dataset", "read_settings", "check_settings", "Dataset",
           "DatasetGroup", "StreamingWriter", "structure_checksum"]

KIND = "dataset"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)


#: How to put structures of different species in one dataset (every structure storing the combined basis).
BASIS_REMEDY = ("write them together into a new file that stores it for every structure: acehamil convert "
                "OLD.h5 NEW... -o ALL.h5 --combined-basis")


def _structure_name(sd: StructureData, index: int) -> str:
    return str(sd.info.get("name", f"structure-{index}"))


def _named(structures, start: int) -> list:
    """``[(name, sd), ...]``: each structure's ``info["name"]``, default ``structure-<start + n>``."""
    return [(_structure_name(sd, start + n), sd) for n, sd in enumerate(structures)]


def _write_all(root: h5py.Group, named, start: int, names_present, precision: str = "float64") -> list:
    """Write ``(name, sd)`` pairs as groups ``start, start+1, ...``; refuse a repeated name. Returns names."""
    seen = set(names_present)
    written = []
    for n, (name, sd) in enumerate(named):
        if name in seen:
            raise UserError(f"structure name {name!r} is already in the dataset (names must be unique; "
                            f"give each structure its own info['name'])")
        seen.add(name)
        key = f"{start + n:06d}"
        try:
            g = root.create_group(key)
            write_structure(g, sd, name, precision)
            g.attrs["checksum"] = structure_checksum(g)
        except BaseException:
            if key in root:  # no half-written structure stays in the file
                del root[key]
            raise
        written.append(name)
    return written


def _estimate_bytes(structures) -> int:
    """Upper estimate of the bytes the structures take in a file (uncompressed, plus overhead)."""
    total = 0
    for sd in structures:
        total += 64 * len(sd.atoms) + 65536
        for m in list(sd.H) + ([sd.S] if sd.S is not None else []):
            total += m.data.nbytes + 40 * m.nblocks
    return total


def write_dataset(path, structures: Iterable[StructureData], precision: str = "float64") -> None:
    """Write structures to a dataset file (atomically; an existing file is replaced).

    Whether replacing an existing file is wanted is the caller's decision (the command
    line refuses without ``--overwrite``).  Structure names must be unique.

    Parameters
    ----------
    path : str or Path
    structures : iterable of StructureData
        Each stored under its ``info["name"]`` (default ``"structure-<index>"``).
    precision : {"float64", "float32"}
        Stored precision of the H and S values (read back as float64).  float32 halves the
        file; for the shipped Si data it changes bands by < 0.01 meV (``data/README.md``).

    Raises
    ------
    UserError
        Two structures with one name; not enough disk space (estimated before writing).
    ValueError
        An unknown precision.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
    structures = list(structures)
    path = Path(path)
    if path.parent.is_dir():
        check_free_space(path.parent, _estimate_bytes(structures), f"writing {path}")
    with atomic_h5(path) as f:
        write_header(f, KIND, FORMAT_VERSION)
        _write_all(f.create_group("structures"), _named(structures, 0), 0, (), precision)


class StreamingWriter:
    """Write a dataset one structure at a time (``add``); the file appears at ``path`` on ``close()``.

    Use as a context manager: a clean exit publishes the structures written so far; an
    exception publishes them too when ``keep_on_error`` and there are any (the structures computed
    before a failure are kept), else removes the temporary.  Either way no temporary is left.
    """

    def __init__(self, path, keep_on_error: bool = True, precision: str = "float64"):
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        self.path = Path(path)
        self.keep_on_error = keep_on_error
        self.precision = precision
        self.count = 0
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            self._f = h5py.File(self._tmp, "w")
            write_header(self._f, KIND, FORMAT_VERSION)
            self._root = self._f.create_group("structures")
        except BaseException as err:
            self._ctx.__exit__(type(err), err, err.__traceback__)
            raise
        self._names = set()

    def add(self, sd: StructureData) -> None:
        self._names.update(_write_all(self._root, _named([sd], self.count), self.count, self._names, self.precision))
        self._f.flush()
        self.count += 1

    def add_chunked(self, atoms, basis, chunks, *, name: str, info: dict | None = None,
                    n_electrons: float | None = None, progress=None) -> dict:
        """Add one structure whose H and S arrive in chunks of atoms, never held whole
        (:func:`acehamil.io.chunked_group.write_chunked_structure`; returns its summary).  A failure
        removes the structure's partial group."""
        from .chunked_group import write_chunked_structure

        if name in self._names:
            raise UserError(f"structure name {name!r} is already in the dataset (names must be unique)")
        key = f"{self.count:06d}"
        try:
            g = self._root.create_group(key)
            summary = write_chunked_structure(g, atoms, basis, chunks, name=name, info=info, n_electrons=n_electrons,
                                              precision=self.precision, progress=progress)
            g.attrs["checksum"] = structure_checksum(g)
        except BaseException:
            if key in self._root:
                del self._root[key]
            raise
        self._f.flush()
        self._names.add(name)
        self.count += 1
        return summary

    def close(self, error: BaseException | None = None) -> None:
        try:
            self._f.close()
        except Exception as err:  # noqa: BLE001 - a failed flush: never publish that file
            error = error or err
            self.keep_on_error = False
        if error is None or (self.keep_on_error and self.count > 0):  # never publish an empty file after a failure
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(type(error), error, error.__traceback__)

    def __enter__(self):
        return self

    def __exit__(self, typ, err, tb):
        self.close(err)
        return False


def append_dataset(path, structures: Iterable[StructureData], *, on_duplicate: str = "error",
                   settings: dict | None = None, settings_key: str = "generation_settings", replace: bool = False) -> list:
    """Add structures to a dataset file atomically and under a lock (creates the file when absent).

    The existing file is copied, extended and renamed over the original while an
    exclusive advisory lock (``.<name>.lock`` beside it) is held, so concurrent appends by
    several processes all land, each exactly once; an interruption or a failure (a full
    disk included) leaves either the old or the new file and no temporary.

    Parameters
    ----------
    path : str or Path
    structures : iterable of StructureData
    on_duplicate : {"error", "skip"}
        A structure whose name is already in the file: refuse (UserError, nothing written)
        or leave it out (e.g. another process computed it meanwhile).
    settings : dict, optional
        JSON-able settings the file must have been made with (stored as the root attribute
        ``settings_key`` when the file is new or has none); a file with other settings
        is refused (UserError), so two settings never mix in one file.
    replace : bool
        Start the file afresh: the new file holds ``structures`` only and replaces an existing one
        (atomically, once complete: until then the old file stays as it was).

    Returns
    -------
    list of str
        Names actually appended.

    Raises
    ------
    UserError
        A repeated name (``on_duplicate="error"``), other settings, or structures whose orbital basis differs
        from the file's (:func:`acehamil.io.dataset_basis.check_same_basis`: every structure of a dataset stores
        one basis, as a fit reads them).
    """
    if on_duplicate not in ("error", "skip"):
        raise ValueError(f"on_duplicate must be 'error' or 'skip', got {on_duplicate!r}")
    path = Path(path)
    structures = list(structures)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {str(path.parent)!r} does not exist")
    with file_lock(path):
        if replace or not path.exists():
            names = []
            with atomic_h5(path) as f:
                write_header(f, KIND, FORMAT_VERSION)
                if settings is not None:
                    f.attrs[settings_key] = json.dumps(settings, sort_keys=True)
                names = _write_all(f.create_group("structures"), _dedupe(_named(structures, 0), (), on_duplicate),
                                   0, ())
            return names
        with open_h5(path) as f:
            check_header(f, KIND, SUPPORTED_VERSIONS)
            keys = list(f["structures"])
            present = [str(f["structures"][k].attrs.get("name", k)) for k in keys]
            stored = f.attrs.get(settings_key)
            bases = stored_bases(f, path)
        check_same_basis(bases + [(f"structure {name!r} to append", sd.basis) for name, sd in _named(structures, 0)],
                         BASIS_REMEDY)
        if settings is not None and stored is not None:
            check_settings(path, _settings(stored, path, settings_key), settings)
        start = max((int(k) for k in keys if k.isdigit()), default=-1) + 1
        todo = _dedupe(_named(structures, start), present, on_duplicate)
        if not todo and (settings is None or stored is not None):
            return []
        check_free_space(path.parent, os.path.getsize(path) + _estimate_bytes([sd for _, sd in todo]),
                         f"appending to {path}")
        with atomic_h5(path, source=path) as f:
            if settings is not None and stored is None:
                f.attrs[settings_key] = json.dumps(settings, sort_keys=True)
            names = _write_all(f["structures"], todo, start, present)
        return names


def _dedupe(named, present, on_duplicate) -> list:
    """``named`` without the names in ``present`` (``"skip"``) or UserError on the first (``"error"``)."""
    present = set(present)
    out = []
    for name, sd in named:
        if name in present:
            if on_duplicate == "error":
                raise UserError(f"structure name {name!r} is already in the dataset (names must be unique)")
            continue
        present.add(name)
        out.append((name, sd))
    return out


def check_settings(path, stored: dict, wanted: dict) -> None:
    """Refuse (UserError) when stored and wanted settings differ, naming each difference."""
    keys = sorted(set(stored) | set(wanted))
    diff = [f"{k}: file {stored.get(k)!r}, now {wanted.get(k)!r}" for k in keys if stored.get(k) != wanted.get(k)]
    if diff:
        raise UserError(f"{path} was made with other settings ({'; '.join(diff)}); refusing to mix them in one "
                        f"file: use another output file, or --overwrite to start it afresh")


def read_settings(path, settings_key: str = "generation_settings") -> dict | None:
    """The settings stored by :func:`append_dataset` (None when the file has none)."""
    with open_h5(path) as f:
        v = f.attrs.get(settings_key)
    return None if v is None else _settings(v, path, settings_key)


def _settings(text, path, key) -> dict:
    """Stored settings parsed as a JSON object; UserError naming the file otherwise (a damaged attribute was a
    JSONDecodeError or TypeError traceback in ``generate --resume``)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise UserError(f"{path}: attribute {key!r} is not a JSON object of settings (file edited or damaged): "
                        "--resume cannot compare them; use --overwrite to start afresh, or another output file")
    return value


class Dataset(Sequence):
    """Lazy view of a dataset file: ``len``, indexing and iteration read one structure at a time.

    The file is opened for each access, so a ``Dataset`` holds no open handle and
    survives the file being replaced by :func:`append_dataset`.

    Attributes
    ----------
    path : Path
    names : tuple of str
        ``info["name"]`` of each structure, in file order.
    """

    def __init__(self, path, validate: bool = True):
        self.path = Path(path)
        self.validate = bool(validate)
        with open_h5(self.path) as f:
            check_header(f, KIND, SUPPORTED_VERSIONS)
            if "structures" not in f:
                raise ValueError(f"{self.path}: no 'structures' group (truncated or foreign file?)")
            self._keys = tuple(sorted(f["structures"]))
            self.names = tuple(str(f["structures"][k].attrs.get("name", k)) for k in self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[n] for n in range(*index.indices(len(self)))]
        n = _as_index(index)
        if not -len(self) <= n < len(self):
            raise IndexError(f"structure {index} out of range for a dataset of {len(self)}")
        key = self._keys[n % len(self)]
        with open_h5(self.path) as f:
            try:
                return read_structure(f["structures"][key], f"{self.path}:/structures/{key}", self.validate)
            except (KeyError, OSError) as err:
                raise ValueError(f"{self.path}:/structures/{key} cannot be read (truncated file?): {err}") from None

    def kinds(self) -> tuple:
        """``info["kind"]`` of each structure (None where it has none), read without the matrices."""
        return _kinds(self)

    def summary(self) -> list:
        """Cheap per-structure facts without reading matrix values.

        Returns
        -------
        list of dict
            ``natoms``, ``norb``, ``species`` (sorted chemical symbols), ``nblocks_H``,
            ``periodic``, ``name``, ``n_electrons`` and ``fermi_level`` (eV; None when not stored),
            ``basis`` ({symbol: shell names, e.g. ["3s", "3p"]}), ``reference_bands``
            ([nk, nbands] or None) for each structure.
        """
        from ase.data import chemical_symbols

        out = []
        with open_h5(self.path) as f:
            for key, name in zip(self._keys, self.names):
                try:
                    out.append(_summary_row(f["structures"][key], name, chemical_symbols))
                except (KeyError, OSError, TypeError, ValueError, IndexError) as err:
                    raise UserError(f"{self.path}:/structures/{key} ({name!r}): missing or malformed data "
                                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; "
                                    f"truncated or foreign file?)") from None
        return out


def _kinds(ds) -> tuple:
    """``info["kind"]`` of every structure of one file (None where absent), from the attributes only."""
    with open_h5(ds.path) as f:
        infos = [f["structures"][k].attrs.get("info", "{}") for k in ds._keys]
    out = []
    for text in infos:
        try:
            kind = json.loads(text).get("kind")
        except (ValueError, AttributeError):
            kind = None  # a malformed info is reported when the structure is read
        out.append(None if kind is None else str(kind))
    return tuple(out)


def _as_index(index) -> int:
    """``index`` as an int; TypeError for a float, string, bool, ... (``ds[1.5]`` is not structure 1)."""
    import operator

    if isinstance(index, bool):
        raise TypeError(f"a structure index must be an integer, got {index!r}")
    try:
        return operator.index(index)
    except TypeError:
        raise TypeError(f"a structure index must be an integer (or a slice), got {index!r}") from None


def _summary_row(g, name, chemical_symbols) -> dict:
    """One row of :meth:`Dataset.summary` (raises KeyError etc. on a malformed group)."""
    for key in ("positions", "cell", "pbc", "basis"):  # present, even if not read here
        if key not in g:
            raise KeyError(f"no '{key}'")
    numbers = g["numbers"][()]
    norb_z = {int(z): int(sum(2 * l + 1 for _, l in d[()])) for z, d in g["basis"].items()}
    h = g["H"] if "H" in g else {}  # an S-only dataset has no H
    ref = g["reference_bands/eps"].shape if "reference_bands" in g else None
    basis = {chemical_symbols[int(z)]: [f"{n}{'spdfghi'[l]}" for n, l in d[()]] for z, d in g["basis"].items()}
    return {
        "name": name,
        "natoms": int(len(numbers)),
        "norb": int(sum(norb_z.get(int(z), 0) for z in numbers)),
        "species": sorted({chemical_symbols[int(z)] for z in numbers}),
        "nblocks_H": int(h["0"]["i"].shape[0]) if "0" in h else 0,
        "periodic": bool(np.any(g["pbc"][()])),
        "n_electrons": float(g.attrs["n_electrons"]) if "n_electrons" in g.attrs else None,
        "fermi_level": float(g.attrs["fermi_level"]) if "fermi_level" in g.attrs else None,
        "basis": basis,
        "reference_bands": None if ref is None else [int(x) for x in ref],
    }


class DatasetGroup(Sequence):
    """Several dataset files read as one lazy sequence, in the order given.

    Index ``n`` runs over the structures of the first file, then the second, ...

    Attributes
    ----------
    datasets : tuple of Dataset
    names : tuple of str
        Structure names, file after file.
    path : tuple of Path
        The files.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from ase import Atoms
    >>> from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData
    >>> basis = OrbitalBasis.from_dict({1: [(1, 0)]})
    >>> S = RealSpaceMatrix.from_dense([1, 1], [[0, 0, 0]], [np.array([[1.0, 0.5], [0.5, 1.0]])])
    >>> sd = StructureData(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), basis, H=(S,), S=S)
    >>> d = tempfile.mkdtemp()
    >>> write_dataset(os.path.join(d, "a.h5"), [sd, sd]); write_dataset(os.path.join(d, "b.h5"), [sd])
    >>> ds = read_dataset([os.path.join(d, "a.h5"), os.path.join(d, "b.h5")])
    >>> len(ds), ds.names[2], ds.file_of(2)
    (3, 'structure-0', (1, 0))
    """

    def __init__(self, paths, validate: bool = True):
        self.datasets = tuple(Dataset(p, validate) for p in paths)
        if not self.datasets:
            raise ValueError("no dataset files given")
        self.path = tuple(d.path for d in self.datasets)
        self.names = tuple(n for d in self.datasets for n in d.names)
        self._starts = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def file_of(self, index: int) -> tuple:
        """``(file number, index within that file)`` of structure ``index``."""
        n = _as_index(index)
        if not -len(self) <= n < len(self):
            raise IndexError(f"structure {index} out of range for {len(self)} structures in {len(self.datasets)} files")
        n %= len(self)
        f = int(np.searchsorted(self._starts, n, side="right") - 1)
        return f, n - int(self._starts[f])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[n] for n in range(*index.indices(len(self)))]
        f, k = self.file_of(index)
        return self.datasets[f][k]

    def kinds(self) -> tuple:
        """:meth:`Dataset.kinds` of every file, concatenated."""
        return tuple(k for d in self.datasets for k in d.kinds())

    def summary(self) -> list:
        """:meth:`Dataset.summary` of every file, concatenated (each entry gains ``file``)."""
        return [{**row, "file": str(d.path)} for d in self.datasets for row in d.summary()]


def read_dataset(path, validate: bool = True) -> Dataset:
    """Open a dataset file (or, given a list of paths, several as one :class:`DatasetGroup`) for lazy reading.

    Each structure read is checked: its checksum (files written before checksums have
    none and still read), field shapes and dtypes, and - with ``validate`` (default) - its
    atoms and the Hermiticity of every matrix stored in full
    (:mod:`acehamil.structure.validate`).  ``validate=False`` is for inspecting bad files.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not HDF5, truncated, not an acehamil dataset, or an unsupported format/conventions version
        (on opening); a checksum mismatch, wrong shapes, impossible atoms or a non-Hermitian
        matrix (when the structure is read, naming it).
    """
    if isinstance(path, (list, tuple)):
        return DatasetGroup(path, validate)
    return Dataset(path, validate)

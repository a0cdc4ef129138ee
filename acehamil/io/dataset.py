"""The acehamil dataset file: many structures with their H and S matrices in one HDF5 file.

Layout (format version 1; full description in ``docs/data-format.md``)::

    /                       attrs: acehamil_kind="dataset", format_version, acehamil_version,
                                   conventions_version, energy_unit, length_unit, bloch_sign, shift_sign
    /structures/<000000>/   one group per structure, names are zero-padded running numbers
        attrs: name, info (JSON), fermi_level, energy, n_electrons (each optional; eV)
        numbers (N,) int64, positions (N,3) Å, cell (3,3) Å (rows are vectors), pbc (3,) bool
        basis/<Z>  (nshell, 2) int64 rows (n, l), attr labels (JSON list of str)
        H/<spin>/{i, j (P,) int64, shift (P,3) int64, data (sum of block sizes,) float64 eV}
        S/{i, j, shift, data}   dimensionless
        forces (N,3) eV/Å, reference_bands/{kpts (nk,3) fractional, eps (nk,nb) eV}   optional

Everything is in acehamil conventions (:mod:`acehamil.conventions`); block ``(i, j, T)`` is
``<phi_i(0)|O|phi_j(T)>``.  Files are written atomically (a crash never leaves a partial
file) and read lazily, one structure per access.

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
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms

from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData
from .hdf5 import atomic_h5, check_header, open_h5, write_header

KIND = "dataset"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_COMPRESS = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


# ---------------------------------------------------------------------------- write
def _hermitian_partners(m: RealSpaceMatrix):
    """Partner block of each block when ``m`` is exactly Hermitian (bitwise), else None.

    Returns
    -------
    partner : ndarray of int, shape (P,)
        Index of block ``(j, i, -T)``.
    canonical : ndarray of bool, shape (P,)
        The half that is stored: ``i < j``, or ``i == j`` and ``T >= 0`` lexicographically.
    """
    partner = np.array([m.find(j, i, -t) for i, j, t in zip(m.i, m.j, m.shift)], dtype=np.int64)
    if m.nblocks == 0 or (partner < 0).any():
        return None
    for p, q in enumerate(partner):
        if not np.array_equal(m.block(q), m.block(p).T):
            return None
    t = m.shift
    tpos = (t[:, 0] > 0) | ((t[:, 0] == 0) & ((t[:, 1] > 0) | ((t[:, 1] == 0) & (t[:, 2] >= 0))))
    canonical = (m.i < m.j) | ((m.i == m.j) & tpos)
    return partner, canonical


def _write_matrix(g: h5py.Group, m: RealSpaceMatrix) -> None:
    big = _COMPRESS if m.nblocks > 64 else {}
    g.create_dataset("i", data=m.i, **big)
    g.create_dataset("j", data=m.j, **big)
    g.create_dataset("shift", data=m.shift, **big)
    herm = _hermitian_partners(m)
    if herm is None:
        g.attrs["storage"] = "full"
        g.create_dataset("data", data=m.data, **(_COMPRESS if m.data.size > 1024 else {}))
        return
    # exactly Hermitian: store the canonical half, the rest are transposes (bit-identical on read)
    partner, canonical = herm
    g.attrs["storage"] = "hermitian-half"
    data = np.concatenate([m.block(p).ravel() for p in np.nonzero(canonical)[0]]) if canonical.any() else np.zeros(0)
    g.create_dataset("data", data=data, **(_COMPRESS if data.size > 1024 else {}))


def _write_structure(g: h5py.Group, sd: StructureData, name: str) -> None:
    if not isinstance(sd, StructureData):
        raise TypeError(f"expected StructureData, got {type(sd).__name__}")
    at = sd.atoms
    g.attrs["name"] = name
    g.attrs["info"] = json.dumps(sd.info, default=_json_default, sort_keys=True)
    g.create_dataset("numbers", data=np.asarray(at.numbers, np.int64))
    g.create_dataset("positions", data=np.asarray(at.positions, np.float64))
    g.create_dataset("cell", data=np.asarray(at.cell.array, np.float64))
    g.create_dataset("pbc", data=np.asarray(at.pbc, bool))
    gb = g.create_group("basis")
    for z, shells in sd.basis.shells:
        d = gb.create_dataset(str(z), data=np.array([[s.n, s.l] for s in shells], np.int64).reshape(-1, 2))
        d.attrs["labels"] = json.dumps([s.label for s in shells])
    gh = g.create_group("H")
    for spin, h in enumerate(sd.H):
        _write_matrix(gh.create_group(str(spin)), h)
    if sd.S is not None:
        _write_matrix(g.create_group("S"), sd.S)
    for key in ("fermi_level", "energy", "n_electrons"):
        val = getattr(sd, key)
        if val is not None:
            g.attrs[key] = float(val)
    if sd.forces is not None:
        g.create_dataset("forces", data=np.asarray(sd.forces, np.float64).reshape(len(at), 3))
    if sd.reference_bands is not None:
        kpts, eps = sd.reference_bands
        gr = g.create_group("reference_bands")
        gr.create_dataset("kpts", data=np.asarray(kpts, np.float64).reshape(-1, 3))
        gr.create_dataset("eps", data=np.asarray(eps, np.float64).reshape(len(np.asarray(kpts).reshape(-1, 3)), -1))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"info value of type {type(obj).__name__} cannot be stored (use numbers, strings, lists, dicts)")


def _structure_name(sd: StructureData, index: int) -> str:
    return str(sd.info.get("name", f"structure-{index}"))


def write_dataset(path, structures: Iterable[StructureData]) -> None:
    """Write structures to a new dataset file (atomically; an existing file is replaced).

    Parameters
    ----------
    path : str or Path
    structures : iterable of StructureData
        Each stored under its ``info["name"]`` (default ``"structure-<index>"``).
    """
    with atomic_h5(path) as f:
        write_header(f, KIND, FORMAT_VERSION)
        root = f.create_group("structures")
        for n, sd in enumerate(structures):
            _write_structure(root.create_group(f"{n:06d}"), sd, _structure_name(sd, n))


def append_dataset(path, structures: Iterable[StructureData]) -> None:
    """Add structures to a dataset file atomically (creates the file when absent).

    The existing file is copied, extended and renamed over the original, so an
    interruption leaves either the old or the new file, never a partial one.

    Parameters
    ----------
    path : str or Path
    structures : iterable of StructureData
    """
    path = Path(path)
    structures = list(structures)
    if not path.exists():
        write_dataset(path, structures)
        return
    with open_h5(path) as f:
        check_header(f, KIND, SUPPORTED_VERSIONS)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            root = f["structures"]
            start = len(root)
            for n, sd in enumerate(structures):
                _write_structure(root.create_group(f"{start + n:06d}"), sd, _structure_name(sd, start + n))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------- read
def _read_matrix(g: h5py.Group, norb_per_atom: np.ndarray, where: str) -> RealSpaceMatrix:
    for key in ("i", "j", "shift", "data"):
        if key not in g:
            raise ValueError(f"{where}: missing dataset {key!r} (truncated or foreign file?)")
    try:
        i, j, shift, data = g["i"][()], g["j"][()], g["shift"][()], g["data"][()]
        storage = g.attrs.get("storage", "full")
        storage = storage.decode() if isinstance(storage, bytes) else str(storage)
        if storage == "hermitian-half":
            data = _unfold_hermitian(norb_per_atom, i, j, shift, data, where)
        elif storage != "full":
            raise ValueError(f"unknown matrix storage {storage!r}")
        return RealSpaceMatrix(norb_per_atom, i, j, shift, data)
    except ValueError as err:
        raise ValueError(f"{where}: {err} (basis mismatch?)") from None


def _unfold_hermitian(norb, i, j, shift, half, where) -> np.ndarray:
    """Full block data from the canonical half (see :func:`_hermitian_partners`)."""
    norb = np.asarray(norb, np.int64)
    if len(i) and (max(i.max(), j.max()) >= len(norb) or min(i.min(), j.min()) < 0):
        raise ValueError("atom index out of range")
    t = shift
    tpos = (t[:, 0] > 0) | ((t[:, 0] == 0) & ((t[:, 1] > 0) | ((t[:, 1] == 0) & (t[:, 2] >= 0))))
    canonical = (i < j) | ((i == j) & tpos)
    sizes = norb[i] * norb[j]
    if int(sizes[canonical].sum()) != half.size:
        raise ValueError(f"{half.size} stored values, the canonical blocks need {int(sizes[canonical].sum())}")
    index = {(int(a), int(b), tuple(int(x) for x in s)): p for p, (a, b, s) in enumerate(zip(i, j, t))}
    starts = np.concatenate([[0], np.cumsum(np.where(canonical, sizes, 0))])
    blocks = []
    for p in range(len(i)):
        if canonical[p]:
            blocks.append(half[starts[p] : starts[p + 1]])
        else:
            q = index.get((int(j[p]), int(i[p]), tuple(-int(x) for x in t[p])), -1)
            if q < 0 or not canonical[q]:
                raise ValueError(f"block ({i[p]}, {j[p]}, {t[p].tolist()}) has no stored Hermitian partner")
            blocks.append(half[starts[q] : starts[q + 1]].reshape(norb[i[q]], norb[j[q]]).T.ravel())
    return np.concatenate(blocks) if blocks else np.zeros(0)


def _read_structure(g: h5py.Group, where: str) -> StructureData:
    for key in ("numbers", "positions", "cell", "pbc", "basis", "H"):
        if key not in g:
            raise ValueError(f"{where}: missing {key!r} (truncated or foreign file?)")
    atoms = Atoms(numbers=g["numbers"][()], positions=g["positions"][()], cell=g["cell"][()], pbc=g["pbc"][()])
    shells = {}
    for z, d in g["basis"].items():
        labels = json.loads(d.attrs.get("labels", "[]")) or [""] * len(d)
        shells[int(z)] = [Shell(l=int(l), n=int(n), label=lab) for (n, l), lab in zip(d[()], labels)]
    basis = OrbitalBasis.from_dict(shells)
    norb = basis.layout(atoms.numbers).norb_per_atom  # raises for a species without a basis
    H = tuple(_read_matrix(g["H"][s], norb, f"{where}/H/{s}") for s in sorted(g["H"], key=int))
    S = _read_matrix(g["S"], norb, f"{where}/S") if "S" in g else None
    attrs = g.attrs
    ref = None
    if "reference_bands" in g:
        ref = (g["reference_bands/kpts"][()], g["reference_bands/eps"][()])
    return StructureData(
        atoms=atoms,
        basis=basis,
        H=H,
        S=S,
        fermi_level=float(attrs["fermi_level"]) if "fermi_level" in attrs else None,
        energy=float(attrs["energy"]) if "energy" in attrs else None,
        forces=g["forces"][()] if "forces" in g else None,
        reference_bands=ref,
        n_electrons=float(attrs["n_electrons"]) if "n_electrons" in attrs else None,
        info=json.loads(attrs.get("info", "{}")),
    )


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

    def __init__(self, path):
        self.path = Path(path)
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
        n = int(index)
        if not -len(self) <= n < len(self):
            raise IndexError(f"structure {index} out of range for a dataset of {len(self)}")
        key = self._keys[n % len(self)]
        with open_h5(self.path) as f:
            try:
                return _read_structure(f["structures"][key], f"{self.path}:/structures/{key}")
            except (KeyError, OSError) as err:
                raise ValueError(f"{self.path}:/structures/{key} cannot be read (truncated file?): {err}") from None

    def summary(self) -> list:
        """Cheap per-structure facts without reading matrix values.

        Returns
        -------
        list of dict
            ``natoms``, ``norb``, ``species`` (sorted chemical symbols), ``nblocks_H``,
            ``periodic``, ``name`` for each structure.
        """
        from ase.data import chemical_symbols

        out = []
        with open_h5(self.path) as f:
            for key, name in zip(self._keys, self.names):
                g = f["structures"][key]
                numbers = g["numbers"][()]
                norb_z = {int(z): int(sum(2 * l + 1 for _, l in d[()])) for z, d in g["basis"].items()}
                h = g["H"]
                out.append(
                    {
                        "name": name,
                        "natoms": int(len(numbers)),
                        "norb": int(sum(norb_z.get(int(z), 0) for z in numbers)),
                        "species": sorted({chemical_symbols[int(z)] for z in numbers}),
                        "nblocks_H": int(h["0"]["i"].shape[0]) if "0" in h else 0,
                        "periodic": bool(np.any(g["pbc"][()])),
                    }
                )
        return out


def read_dataset(path) -> Dataset:
    """Open a dataset file for lazy reading.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not HDF5, truncated, not an acehamil dataset, or an unsupported format/conventions version.
    """
    return Dataset(path)

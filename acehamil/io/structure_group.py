"""One structure of a dataset file <-> one HDF5 group: writing, checksums, reading and checking.

The group layout is described in :mod:`acehamil.io.dataset` and ``docs/data-format.md``.  A
group is read into memory once (:class:`_Loaded`): its checksum is computed from, and the
:class:`~acehamil.structure.StructureData` parsed from, the same values, so every dataset of the
group is read from the file once.  Matrices that are exactly Hermitian are stored as their
canonical half (``storage = "hermitian-half"``) and unfolded bit for bit on reading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms

from ..errors import UserError
from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData

#: Stored precision of matrix values (``write_dataset(precision=...)``); always read as float64.
PRECISIONS = {"float64": np.float64, "float32": np.float32}
_COMPRESS = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_HASH_SLICE_BYTES = 1 << 26  # structure_checksum reads bigger datasets in slices of this size


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
    partner = m.partner
    if m.nblocks == 0 or (partner < 0).any() or not np.array_equal(m.partner_transpose(), m.data):
        return None
    t = m.shift
    tpos = (t[:, 0] > 0) | ((t[:, 0] == 0) & ((t[:, 1] > 0) | ((t[:, 1] == 0) & (t[:, 2] >= 0))))
    canonical = (m.i < m.j) | ((m.i == m.j) & tpos)
    return partner, canonical


def _write_matrix(g: h5py.Group, m: RealSpaceMatrix, precision: str = "float64") -> None:
    dtype = PRECISIONS[precision]
    big = _COMPRESS if m.nblocks > 64 else {}
    g.create_dataset("i", data=m.i, **big)
    g.create_dataset("j", data=m.j, **big)
    g.create_dataset("shift", data=m.shift, **big)
    herm = _hermitian_partners(m)
    if herm is None:
        g.attrs["storage"] = "full"
        g.create_dataset("data", data=m.data.astype(dtype), **(_COMPRESS if m.data.size > 1024 else {}))
        return
    # exactly Hermitian: store the canonical half, the rest are transposes (bit-identical on read)
    partner, canonical = herm
    g.attrs["storage"] = "hermitian-half"
    # the canonical blocks' values in block order (each block is contiguous in m.data)
    data = m.data[np.repeat(canonical, np.diff(m.offsets))]
    g.create_dataset("data", data=data.astype(dtype), **(_COMPRESS if data.size > 1024 else {}))


def write_structure(g: h5py.Group, sd: StructureData, name: str, precision: str = "float64") -> None:
    """Write ``sd`` into the empty group ``g`` under ``name`` (matrix values at ``precision``)."""
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
        _write_matrix(gh.create_group(str(spin)), h, precision)
    if sd.S is not None:
        _write_matrix(g.create_group("S"), sd.S, precision)
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
    if sd.H_draws is not None:
        g.create_dataset("H_draws", data=np.asarray(sd.H_draws, np.float32), **_COMPRESS)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"info value of type {type(obj).__name__} cannot be stored (use numbers, strings, lists, dicts)")


def _hash_attrs(h, obj, prefix: str) -> None:
    """Feed ``obj``'s attributes (all but the group's own ``checksum``) into the hash ``h``, sorted by name.

    Shared by :func:`structure_checksum` (h5py objects) and :func:`_digest` (loaded groups), so both
    give the same digest for the same group.
    """
    for k in sorted(obj.attrs):
        if k == "checksum" and prefix == "":
            continue
        v = obj.attrs[k]
        h.update(f"@{prefix}{k}=".encode())
        h.update(v.encode() if isinstance(v, str) else v if isinstance(v, bytes) else np.asarray(v).tobytes())


def structure_checksum(g: h5py.Group) -> str:
    """``"sha256:<hex>"`` of a structure group's datasets (name, dtype, shape, bytes) and attributes
    (all but ``checksum``), walked in sorted order.

    Datasets above 64 MB are read in slices along their first axis (the same bytes in the same
    order, so the same digest as :func:`_digest` of the loaded group): a structure streamed to the
    file (:mod:`acehamil.io.stream`) is never loaded whole to be checksummed.
    """
    h = hashlib.sha256()

    def walk(grp, prefix):
        _hash_attrs(h, grp, prefix)
        for k in sorted(grp):
            obj = grp[k]
            if isinstance(obj, h5py.Group):
                walk(obj, f"{prefix}{k}/")
                continue
            if obj.shape == () or obj.size * obj.dtype.itemsize <= _HASH_SLICE_BYTES:
                a = np.asarray(obj[()])
                h.update(f"{prefix}{k}|{a.dtype.str}|{a.shape}".encode())
                h.update(np.ascontiguousarray(a).tobytes())
            else:
                h.update(f"{prefix}{k}|{obj.dtype.str}|{obj.shape}".encode())
                step = max(1, _HASH_SLICE_BYTES // max(1, obj.dtype.itemsize * int(np.prod(obj.shape[1:]))))
                for a0 in range(0, obj.shape[0], step):
                    h.update(np.ascontiguousarray(obj[a0:a0 + step]).tobytes())
            _hash_attrs(h, obj, f"{prefix}{k}:")

    walk(g, "")
    return "sha256:" + h.hexdigest()


class _Loaded:
    """An HDF5 group (or dataset) read into memory: attributes, and children or value.

    Offers the h5py calls the reader makes (``g[key]``, ``key in g``, iteration, ``items()``,
    ``attrs``, ``d[()]``, ``len(d)``), so a structure is parsed from the values its checksum was
    computed from.
    """

    __slots__ = ("attrs", "children", "value")

    def __init__(self, obj):
        self.attrs = {k: obj.attrs[k] for k in obj.attrs}
        if isinstance(obj, h5py.Group):
            self.children, self.value = {k: _Loaded(obj[k]) for k in obj}, None
        else:
            self.children, self.value = None, obj[()]

    def __getitem__(self, key):
        if self.children is None:
            if key == ():
                return self.value
            raise TypeError(f"a dataset is read whole ([()]), got index {key!r}")
        return self.children[key]

    def __contains__(self, key) -> bool:
        return self.children is not None and key in self.children

    def __iter__(self):
        return iter(self.children or ())

    def __len__(self) -> int:
        return len(self.children) if self.children is not None else len(self.value)

    def items(self):
        return self.children.items()


def _digest(node: _Loaded) -> str:
    """``"sha256:<hex>"`` of a loaded structure group (see :func:`structure_checksum`)."""
    h = hashlib.sha256()

    def walk(grp, prefix):
        _hash_attrs(h, grp, prefix)
        for k in sorted(grp.children):
            obj = grp.children[k]
            if obj.children is not None:
                walk(obj, f"{prefix}{k}/")
            else:
                a = np.asarray(obj.value)
                h.update(f"{prefix}{k}|{a.dtype.str}|{a.shape}".encode())
                h.update(np.ascontiguousarray(a).tobytes())
                _hash_attrs(h, obj, f"{prefix}{k}:")

    walk(node, "")
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------- read
def _read_matrix(g, norb_per_atom: np.ndarray, where: str) -> RealSpaceMatrix:
    for key in ("i", "j", "shift", "data"):
        if key not in g:
            raise ValueError(f"{where}: missing dataset {key!r} (truncated or foreign file?)")
    i = _field(g, "i", where, (None,), "i")  # float indices (NaN) were cast with a RuntimeWarning
    j = _field(g, "j", where, (len(i),), "i")
    shift = _field(g, "shift", where, (len(i), 3), "i")
    _field(g, "data", where, (None,), "f")
    try:
        data = np.asarray(g["data"][()], dtype=np.float64)
        storage = g.attrs.get("storage", "full")
        storage = storage.decode() if isinstance(storage, bytes) else str(storage)
        if storage == "hermitian-half":
            data = _unfold_hermitian(norb_per_atom, i, j, shift, data, where)
        elif storage != "full":
            raise ValueError(f"unknown matrix storage {storage!r}")
        return RealSpaceMatrix(norb_per_atom, i, j, shift, data)
    except ValueError as err:
        raise UserError(f"{where}: {err} (basis mismatch?)") from None


def _unfold_hermitian(norb, i, j, shift, half, where) -> np.ndarray:
    """Full block data from the canonical half (see :func:`_hermitian_partners`).

    Vectorised: canonical blocks are scattered into place, every other block is the transpose
    of its partner ``(j, i, -T)`` (found for all blocks at once, :func:`acehamil.structure.pair_index.lookup`);
    values are copied, so the result is bit-identical to what was written.
    """
    from ..structure.pair_index import lookup

    norb = np.asarray(norb, np.int64)
    i, j, t = np.asarray(i, np.int64), np.asarray(j, np.int64), np.asarray(shift, np.int64).reshape(-1, 3)
    if len(i) and (max(i.max(), j.max()) >= len(norb) or min(i.min(), j.min()) < 0):
        raise ValueError("atom index out of range")
    tpos = (t[:, 0] > 0) | ((t[:, 0] == 0) & ((t[:, 1] > 0) | ((t[:, 1] == 0) & (t[:, 2] >= 0))))
    canonical = (i < j) | ((i == j) & tpos)
    sizes = norb[i] * norb[j]
    if int(sizes[canonical].sum()) != half.size:
        raise ValueError(f"{half.size} stored values, the canonical blocks need {int(sizes[canonical].sum())}")
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    full = np.empty(int(offsets[-1]))

    def entries(blocks):
        """Block (repeated), and position inside it, of every value of ``blocks`` in order."""
        n = sizes[blocks]
        rep = np.repeat(blocks, n)
        return rep, np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)

    p, local = entries(np.nonzero(canonical)[0])
    full[offsets[p] + local] = half
    rest = np.nonzero(~canonical)[0]
    if len(rest):
        q = lookup(i, j, t, j[rest], i[rest], -t[rest])
        ok = q >= 0
        ok[ok] = canonical[q[ok]]
        if not ok.all():
            b = int(rest[np.argmin(ok)])
            raise ValueError(f"block ({i[b]}, {j[b]}, {t[b].tolist()}) has no stored Hermitian partner")
        p, local = entries(rest)
        qq = np.repeat(q, sizes[rest])
        r, c = local // norb[j[p]], local % norb[j[p]]
        full[offsets[p] + local] = full[offsets[qq] + c * norb[j[qq]] + r]
    return full


def _field(g, key: str, where: str, shape, kind: str) -> np.ndarray:
    """Dataset ``key`` of ``g`` checked for shape (None = any length) and dtype kind ('i', 'f', 'b')."""
    a = g[key][()]
    a = np.asarray(a)
    ok_kind = a.dtype.kind in {"i": "iu", "f": "fiu", "b": "b?iu"}[kind]
    ok_shape = a.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, a.shape))
    if not (ok_kind and ok_shape):
        want = "x".join("N" if s is None else str(s) for s in shape)
        raise UserError(f"{where}/{key}: expected shape ({want}) of {dict(i='integers', f='floats', b='booleans')[kind]}, "
                        f"got shape {a.shape} dtype {a.dtype}")
    return a


def _scalar(value, where: str, key: str) -> float:
    """``value`` (an HDF5 attribute) as a float; UserError naming ``key`` for a string, array or other non-number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {key} is {value!r}, not a number (file edited or written by another program?)") from None


def read_structure(group: h5py.Group, where: str, validate: bool = True) -> StructureData:
    """The StructureData stored in ``group``, its checksum verified (when it has one) and, with
    ``validate``, its atoms and the Hermiticity of every matrix stored in full checked."""
    g = _Loaded(group)  # every dataset read once, for the checksum and the values
    for key in ("numbers", "positions", "cell", "pbc", "basis", "H"):
        if key not in g:
            raise ValueError(f"{where}: missing {key!r} (truncated or foreign file?)")
    stored = g.attrs.get("checksum")
    if stored is not None:
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        if _digest(g) != stored:
            name = g.attrs.get("name", "?")
            raise UserError(f"{where} (structure {str(name)!r}): checksum mismatch - the stored data were changed "
                            f"or corrupted after writing; do not use this structure")
    numbers = _field(g, "numbers", where, (None,), "i")
    n = len(numbers)
    positions = _field(g, "positions", where, (n, 3), "f")
    cell = _field(g, "cell", where, (3, 3), "f")
    pbc = _field(g, "pbc", where, (3,), "b")
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc.astype(bool))
    if validate:
        from ..structure.validate import check_atoms, check_hermitian

        check_atoms(atoms, where)
    for key in ("basis", "H") + (("S",) if "S" in g else ()):
        if g[key].children is None:  # a dataset there was a TypeError traceback or no H at all
            raise UserError(f"{where}/{key}: a dataset where a group belongs (file edited or written by another program?)")
    basis = _read_basis(g["basis"], f"{where}/basis")
    try:
        norb = basis.layout(atoms.numbers).norb_per_atom  # raises for a species without a basis
    except ValueError as err:
        raise UserError(f"{where}/basis: {err}") from None
    if not all(str(s).isdigit() for s in g["H"]):  # an empty H is an overlap-only structure (DeepH without hamiltonians.h5)
        raise UserError(f"{where}/H: expected spin channels 0 (and 1), got {sorted(g['H'])} (truncated or edited file?)")
    H = tuple(_read_matrix(g["H"][s], norb, f"{where}/H/{s}") for s in sorted(g["H"], key=int))
    S = _read_matrix(g["S"], norb, f"{where}/S") if "S" in g else None
    if validate:
        # "hermitian-half" storage is Hermitian by construction; check what was stored in full
        for s, h in zip(sorted(g["H"], key=int), H):
            if _storage(g["H"][s]) == "full":
                check_hermitian(h, f"H (spin {s})", where)
        if S is not None and _storage(g["S"]) == "full":
            check_hermitian(S, "S", where)
    attrs = g.attrs
    for key in ("fermi_level", "energy", "n_electrons"):  # NaN here gave NaN occupations or a silent fallback
        if key in attrs and not np.isfinite(_scalar(attrs[key], where, key)):
            raise UserError(f"{where}: {key} is {float(attrs[key])}, not a finite number (file edited or written by "
                            "another program?)")
    if "n_electrons" in attrs and float(attrs["n_electrons"]) < 0:
        raise UserError(f"{where}: n_electrons is {float(attrs['n_electrons']):g}, a count must be >= 0")
    try:
        info = json.loads(attrs.get("info", "{}"))
    except (TypeError, ValueError):  # a number or other text: a JSONDecodeError traceback
        info = None
    if not isinstance(info, dict):
        raise UserError(f"{where}: attribute 'info' is {str(attrs.get('info'))[:60]!r}, not a JSON object (file edited "
                        "or written by another program?)")
    ref = None
    if "reference_bands" in g:
        kp = _field(g["reference_bands"], "kpts", f"{where}/reference_bands", (None, 3), "f")
        ref = (kp, _field(g["reference_bands"], "eps", f"{where}/reference_bands", (len(kp), None), "f"))
    return StructureData(
        atoms=atoms,
        basis=basis,
        H=H,
        S=S,
        fermi_level=float(attrs["fermi_level"]) if "fermi_level" in attrs else None,
        energy=float(attrs["energy"]) if "energy" in attrs else None,
        forces=_field(g, "forces", where, (n, 3), "f") if "forces" in g else None,
        reference_bands=ref,
        n_electrons=float(attrs["n_electrons"]) if "n_electrons" in attrs else None,
        info=info,
        H_draws=_field(g, "H_draws", where, (None, H[0].data.size if H else 0), "f") if "H_draws" in g else None,
    )


def _read_basis(group, where: str) -> OrbitalBasis:
    """The orbital basis stored in ``group``: one (N, 2) integer dataset of (n, l) per species, with N labels."""
    shells = {}
    for z, d in group.items():
        a = np.asarray(d[()])
        if not str(z).isdigit() or a.ndim != 2 or a.shape[1:] != (2,) or a.dtype.kind not in "iu":
            raise UserError(f"{where}/{z}: expected shells as (N, 2) integers (n, l) under an atomic number, got shape "
                            f"{a.shape} dtype {a.dtype} (file edited or written by another program?)")
        try:
            labels = json.loads(d.attrs.get("labels", "[]")) or [""] * len(a)
        except (TypeError, ValueError):
            labels = None
        if not isinstance(labels, list) or len(labels) != len(a) or not all(isinstance(s, str) for s in labels):
            raise UserError(f"{where}/{z}: attribute 'labels' must be a JSON list of {len(a)} strings")
        shells[int(z)] = [Shell(l=int(l), n=int(n), label=lab) for (n, l), lab in zip(a, labels)]
    return OrbitalBasis.from_dict(shells)


def _storage(g) -> str:
    st = g.attrs.get("storage", "full")
    return st.decode() if isinstance(st, bytes) else str(st)

"""One structure group of a dataset file written from a stream of chunks of atoms, never held whole.

:func:`write_chunked_structure` lays the group out exactly as :func:`acehamil.io.dataset.write_dataset`
lays out the same structure held in memory (format version 1, ``docs/data-format.md``): the on-site
blocks of all atoms first (their region is allocated up front and filled chunk by chunk), then the bonds
in atom order, into resizable, chunked HDF5 datasets; the matrix values are stored as the canonical half
(``storage = "hermitian-half"``: blocks with ``i < j``, or ``i == j`` and ``T >= 0``), the others being
their partners' transposes (each chunk is checked to be exactly Hermitian where both blocks are inside it,
:func:`check_chunk_hermitian`).  :meth:`acehamil.io.dataset.StreamingWriter.add_chunked` writes it into a
dataset file; :func:`acehamil.io.stream.predict_to_file` feeds it a model's predictions.
"""

from __future__ import annotations

import json
import time

import h5py
import numpy as np

from ..structure import RealSpaceMatrix

_INDEX_CHUNK = 1 << 16  # HDF5 chunk of the index datasets (entries)
_DATA_CHUNK = 1 << 18  # HDF5 chunk of the value datasets (values, 2 MB in float64)
_GZIP = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


def _canonical(m: RealSpaceMatrix) -> np.ndarray:
    """Blocks stored by the hermitian-half layout: ``i < j``, or ``i == j`` and ``T >= 0`` lexicographically."""
    t = m.shift
    tpos = (t[:, 0] > 0) | ((t[:, 0] == 0) & ((t[:, 1] > 0) | ((t[:, 1] == 0) & (t[:, 2] >= 0))))
    return (m.i < m.j) | ((m.i == m.j) & tpos)


def _block_values(m: RealSpaceMatrix, blocks: np.ndarray) -> np.ndarray:
    """The values of ``blocks`` of ``m`` concatenated, shape (sum of their sizes,)."""
    sizes = m.offsets[blocks + 1] - m.offsets[blocks]
    idx = np.repeat(m.offsets[blocks] - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
    return m.data[idx]


def check_chunk_hermitian(m: RealSpaceMatrix, start: int, stop: int, what: str) -> None:
    """Refuse a chunk whose blocks inside it (``i`` and ``j`` in ``start..stop``) are not exactly
    (bitwise) the transposes of their partners: the half layout would then not be the prediction."""
    inside = np.nonzero((m.j >= start) & (m.j < stop))[0]
    sub = RealSpaceMatrix.adopt(m.norb_per_atom, m.i[inside], m.j[inside], m.shift[inside], _block_values(m, inside))
    err = sub.hermiticity_error()
    if err != 0.0:
        raise RuntimeError(f"{what}: the predicted blocks of atoms {start}..{stop - 1} are not exactly Hermitian "
                           f"(largest difference {err:.3g}); please report it")


class MatrixStream:
    """One block-sparse matrix of a structure group, written chunk after chunk of atoms.

    Parameters
    ----------
    g : h5py.Group
        Empty group (``H/<spin>`` or ``S``) of a structure.
    norb : ndarray of int, shape (natoms,)
        Orbitals per atom.
    dtype : numpy dtype
        Stored value type (float64 or float32).
    """

    def __init__(self, g: h5py.Group, norb: np.ndarray, dtype):
        self.norb = np.asarray(norb, dtype=np.int64)
        natoms = len(self.norb)
        self.onsite_offsets = np.concatenate([[0], np.cumsum(self.norb**2)]).astype(np.int64)
        self.next_atom = 0
        self.n_entries = natoms  # on-site blocks first (filled chunk by chunk), then bonds appended
        self.n_values = int(self.onsite_offsets[-1])
        g.attrs["storage"] = "hermitian-half"
        idx = dict(maxshape=(None,), chunks=(_INDEX_CHUNK,), **_GZIP)
        self.i = g.create_dataset("i", shape=(natoms,), dtype=np.int64, **idx)
        self.j = g.create_dataset("j", shape=(natoms,), dtype=np.int64, **idx)
        self.shift = g.create_dataset("shift", shape=(natoms, 3), dtype=np.int64, maxshape=(None, 3),
                                      chunks=(_INDEX_CHUNK, 3), **_GZIP)
        self.data = g.create_dataset("data", shape=(self.n_values,), dtype=dtype, maxshape=(None,),
                                     chunks=(_DATA_CHUNK,), **_GZIP)

    def add(self, m: RealSpaceMatrix, start: int, stop: int, what: str) -> None:
        """Write the blocks ``(i, j, T)`` of atoms ``start <= i < stop``: ``m``'s first ``stop - start``
        blocks are their on-site blocks in atom order, the rest their bonds (sorted by i, j, shift)."""
        n = stop - start
        if start != self.next_atom:
            raise ValueError(f"{what}: chunk starts at atom {start}, expected {self.next_atom} (chunks in atom order)")
        if (m.nblocks < n or not np.array_equal(m.i[:n], np.arange(start, stop)) or not np.array_equal(m.j[:n], m.i[:n])
                or np.any(m.shift[:n]) or np.any((m.i[n:] < start) | (m.i[n:] >= stop)) or np.any(np.diff(m.i[n:]) < 0)):
            raise ValueError(f"{what}: a chunk must hold the on-site blocks of atoms {start}..{stop - 1} in order, "
                             f"then their bonds sorted by atom")
        check_chunk_hermitian(m, start, stop, what)
        self.i[start:stop] = m.i[:n]
        self.j[start:stop] = m.j[:n]
        self.shift[start:stop] = 0
        self.data[self.onsite_offsets[start]:self.onsite_offsets[stop]] = m.data[:m.offsets[n]]
        bonds = np.arange(n, m.nblocks)
        nb = len(bonds)
        e0 = self.n_entries
        for ds in (self.i, self.j, self.shift):
            ds.resize(e0 + nb, axis=0)
        self.i[e0:] = m.i[n:]
        self.j[e0:] = m.j[n:]
        self.shift[e0:] = m.shift[n:]
        vals = _block_values(m, bonds[_canonical(m)[n:]])
        v0 = self.n_values
        self.data.resize(v0 + len(vals), axis=0)
        self.data[v0:] = vals
        self.n_entries, self.n_values, self.next_atom = e0 + nb, v0 + len(vals), stop

    @property
    def stored_bytes(self) -> int:
        """Bytes of the values and indices written so far (before compression)."""
        return int(self.n_values * self.data.dtype.itemsize + 40 * self.n_entries)


def write_chunked_structure(g: h5py.Group, atoms, basis, chunks, *, name: str, info: dict | None = None,
                            n_electrons: float | None = None, precision: str = "float64", progress=None) -> dict:
    """Write one structure into the empty group ``g`` from a stream of chunks of its H and S.

    Parameters
    ----------
    g : h5py.Group
        ``/structures/<key>`` of an open dataset file (its checksum is set by the caller).
    atoms : ase.Atoms
    basis : OrbitalBasis
    chunks : iterable of Chunk
        :func:`acehamil.models.hamiltonian.chunked.predict_chunks` (attributes ``start``, ``stop``,
        ``H``, ``S``), in atom order, covering every atom.
    name, info, n_electrons
        As stored by :func:`acehamil.io.dataset.write_dataset`.
    precision : {"float64", "float32"}
    progress : callable, optional
        Called after each chunk with ``(stop, natoms, seconds so far, stored bytes so far)``.

    Returns
    -------
    dict
        ``natoms``, ``nblocks`` (H), ``stored_bytes`` (values + indices before compression), ``seconds``.
    """
    from .structure_group import PRECISIONS as _PRECISIONS, _json_default

    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
    dtype = _PRECISIONS[precision]
    numbers = np.asarray(atoms.numbers, np.int64)
    natoms = len(numbers)
    norb = basis.layout(numbers).norb_per_atom
    g.attrs["name"] = name
    g.create_dataset("numbers", data=numbers)
    g.create_dataset("positions", data=np.asarray(atoms.positions, np.float64))
    g.create_dataset("cell", data=np.asarray(atoms.cell.array, np.float64))
    g.create_dataset("pbc", data=np.asarray(atoms.pbc, bool))
    gb = g.create_group("basis")
    for z, shells in basis.shells:
        d = gb.create_dataset(str(z), data=np.array([[s.n, s.l] for s in shells], np.int64).reshape(-1, 2))
        d.attrs["labels"] = json.dumps([s.label for s in shells])
    if n_electrons is not None:
        g.attrs["n_electrons"] = float(n_electrons)
    streams = {"H": MatrixStream(g.create_group("H").create_group("0"), norb, dtype),
               "S": MatrixStream(g.create_group("S"), norb, dtype)}
    t0 = time.perf_counter()
    for c in chunks:
        for key, st in streams.items():
            st.add(getattr(c, key), c.start, c.stop, f"{name} {key}")
        g.file.flush()
        if progress is not None:
            progress(c.stop, natoms, time.perf_counter() - t0, sum(s.stored_bytes for s in streams.values()))
    for key, st in streams.items():
        if st.next_atom != natoms:
            raise ValueError(f"{name} {key}: the chunks covered atoms 0..{st.next_atom - 1} of {natoms}")
    g.attrs["info"] = json.dumps(dict(info or {}), default=_json_default, sort_keys=True)
    return {"natoms": natoms, "nblocks": int(streams["H"].n_entries),
            "stored_bytes": sum(s.stored_bytes for s in streams.values()), "seconds": time.perf_counter() - t0}

"""Supercells of a structure *with* its matrices: tile a (predicted) cell ``n1 x n2 x n3`` times.

The tiled matrices are exactly those of the periodic supercell (the blocks only depend on the
cell's environments, which repeat): block ``(i, j, T)`` of the cell becomes, for every image
``m`` of the cell, block ``(m*nat + i, m'*nat + j, T')`` with ``m + T = m' + reps * T'``
(``0 <= m' < reps``).  Atom order is that of ``ase.Atoms.repeat`` (image-major, ``m = (m0, m1, m2)``
with ``m2`` fastest), so ``tile_structure(sd, reps).atoms`` equals ``sd.atoms.repeat(reps)``.
Use it to build large test systems cheaply: predicting an ``N``-atom cell and tiling it costs
``N`` predictions instead of ``N * n1 n2 n3``.

Examples
--------
>>> import numpy as np
>>> from acehamil.structure import RealSpaceMatrix
>>> chain = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], [[0, 0, 0], [1, 0, 0], [-1, 0, 0]],
...                                     [np.zeros((1, 1)), -np.ones((1, 1)), -np.ones((1, 1))])
>>> big = tile_matrix(chain, (3, 1, 1))
>>> big.natoms, big.nblocks, sorted({tuple(t) for t in big.shift.tolist()})
(3, 9, [(-1, 0, 0), (0, 0, 0), (1, 0, 0)])
"""

from __future__ import annotations

import numpy as np

from .blocks import RealSpaceMatrix

__all__ = ["MAX_TILE_BYTES", "tile_matrix", "tile_structure", "check_reps", "tiled_bytes"]

#: Largest estimated memory (bytes) of a tiled structure's matrices (:func:`tiled_bytes`); more is refused with
#: the estimate (``predict --supercell 100 100 100`` of a 2-atom cell was killed for memory at 18.7 GB RSS).
MAX_TILE_BYTES = 4 * 2**30
#: Bytes per tiled block beside its values: index arrays of the result and the temporaries that build them.
_BYTES_PER_BLOCK = 160


def check_reps(reps, pbc=(True, True, True)) -> np.ndarray:
    """Validated repetitions: 3 ints >= 1, 1 along non-periodic axes."""
    r = np.asarray(reps).reshape(-1)
    if r.shape != (3,) or not np.all(r == np.round(r)) or np.any(r < 1):
        raise ValueError(f"supercell repetitions must be 3 integers >= 1, got {reps}")
    r = r.astype(np.int64)
    bad = [a for a in range(3) if r[a] > 1 and not bool(np.asarray(pbc)[a])]
    if bad:
        raise ValueError(f"cannot repeat along non-periodic axes {bad}")
    return r


def tile_matrix(matrix: RealSpaceMatrix, reps) -> RealSpaceMatrix:
    """The matrix of the ``reps`` supercell (same units; blocks in image-major order).

    Parameters
    ----------
    matrix : RealSpaceMatrix
    reps : 3 ints

    Returns
    -------
    RealSpaceMatrix with ``natoms * prod(reps)`` atoms and ``nblocks * prod(reps)`` blocks.
    """
    if not isinstance(matrix, RealSpaceMatrix):
        raise TypeError(f"matrix must be a RealSpaceMatrix, got {type(matrix).__name__}")
    r = check_reps(reps)
    nat = matrix.natoms
    m = np.stack(np.meshgrid(*[np.arange(x) for x in r], indexing="ij"), axis=-1).reshape(-1, 3)  # (nimg, 3)
    img = lambda v: (v[..., 0] * r[1] + v[..., 1]) * r[2] + v[..., 2]  # noqa: E731
    tgt = m[:, None, :] + matrix.shift[None, :, :]  # (nimg, nb, 3)
    new_shift = np.floor_divide(tgt, r)
    m2 = tgt - new_shift * r
    I = (img(m)[:, None] * nat + matrix.i[None, :]).reshape(-1)
    J = (img(m2) * nat + matrix.j[None, :]).reshape(-1)
    data = np.tile(matrix.data, len(m))
    return RealSpaceMatrix(np.tile(matrix.norb_per_atom, len(m)), I, J, new_shift.reshape(-1, 3), data)


def tiled_bytes(data, reps) -> int:
    """Estimated peak memory (bytes) of the matrices of ``tile_structure(data, reps)``: values and indices."""
    n = int(np.prod(np.asarray(reps, dtype=np.int64)))
    mats = [*data.H] + ([] if data.S is None else [data.S])
    return n * sum(int(m.data.nbytes) + _BYTES_PER_BLOCK * int(m.nblocks) for m in mats)


def tile_structure(data, reps):
    """A :class:`StructureData` and its matrices repeated ``reps`` times (electron count scaled).

    Parameters
    ----------
    data : StructureData (periodic along every repeated axis)
    reps : 3 ints

    Returns
    -------
    StructureData
    """
    from dataclasses import replace

    r = check_reps(reps, data.atoms.pbc)
    n = int(np.prod(r))
    if n == 1:
        return data
    need = tiled_bytes(data, r)
    if need > MAX_TILE_BYTES:
        raise ValueError(f"a {' x '.join(map(str, r.tolist()))} supercell of this {len(data.atoms)}-atom cell has "
                         f"{n * len(data.atoms)} atoms whose H and S need ~{need / 2**30:.3g} GiB (limit "
                         f"{MAX_TILE_BYTES / 2**30:.3g} GiB): ask for fewer repetitions")
    info = {**dict(data.info), "supercell": r.tolist()}
    return replace(
        data,
        atoms=data.atoms.repeat(tuple(int(x) for x in r)),
        H=tuple(tile_matrix(h, r) for h in data.H),
        S=None if data.S is None else tile_matrix(data.S, r),
        energy=None if data.energy is None else data.energy * n,
        forces=None if data.forces is None else np.tile(data.forces, (n, 1)),
        n_electrons=None if data.n_electrons is None else data.n_electrons * n,
        reference_bands=None,
        info=info,
    )

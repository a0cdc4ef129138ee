"""Predictions of big structures streamed to a dataset file, chunk by chunk of atoms.

The H and S of 10^5 atoms at 12 Å bonds (~9 GB in float64) cannot be held in memory next to
the work of predicting them; :func:`predict_to_file` writes each chunk's blocks
(:func:`acehamil.models.hamiltonian.chunked.predict_chunks`) into resizable, chunked HDF5
datasets as they come, so the peak memory is the model plus one chunk's working set.

The structure group is laid out exactly as :func:`acehamil.io.dataset.write_dataset` lays out
the same prediction held in memory (format version 1, ``docs/data-format.md``): the on-site
blocks of all atoms first (their region is allocated up front and filled chunk by chunk), then
the bonds in atom order; the matrix values are stored as the canonical half (``storage =
"hermitian-half"``: blocks with ``i < j``, or ``i == j`` and ``T >= 0``), the others being
their partners' transposes (each chunk is checked to be exactly Hermitian where both blocks
are inside it).  So the file reads back as the same dataset (tested to 1e-12 against the
in-memory path), through every reader.  The file is written to a temporary beside the output
and renamed at the end (:class:`acehamil.io.dataset.StreamingWriter`, which writes the group with
:func:`acehamil.io.chunked_group.write_chunked_structure`): a crash never leaves a
partial file.  The structure's checksum is computed by reading the written datasets back in
slices, so no dataset is ever loaded whole.
"""

from __future__ import annotations

import sys

from ..errors import UserError

# re-exported (their home was this module): listed in __all__
from .chunked_group import MatrixStream, check_chunk_hermitian, write_chunked_structure

__all__ = ["STREAM_MIN_ATOMS", "predict_to_file", "progress_printer",
           "MatrixStream", "check_chunk_hermitian", "write_chunked_structure"]

#: Structures with at least this many atoms are streamed by ``acehamil predict`` (``--stream`` forces it).
STREAM_MIN_ATOMS = 20000


def progress_printer(label: str, stream=None):
    """A ``progress`` callable for :func:`write_chunked_structure` printing one line per call
    (atoms done, elapsed, estimated remaining time, bytes stored) to ``stream`` (stderr)."""
    out = sys.stderr if stream is None else stream

    def show(done: int, total: int, seconds: float, nbytes: int) -> None:
        eta = seconds * (total - done) / max(done, 1)
        print(f"{label}: {done}/{total} atoms ({100 * done / max(total, 1):.0f} %), {seconds:.0f} s, "
              f"~{eta:.0f} s left, {nbytes / 2**30:.2f} GiB of matrices written", file=out, flush=True)

    return show


def predict_to_file(model, atoms, path, *, name: str = "structure-0", info: dict | None = None, charge: float = 0.0,
                    precision: str = "float64", chunk_atoms: int | None = None, progress: bool = False) -> dict:
    """Predict H and S of ``atoms`` straight into a new dataset file, chunk by chunk of atoms.

    The Python API of ``acehamil predict --stream``.  Peak memory is the model plus one chunk's
    working set (independent of the number of atoms); the file appears at ``path`` only when
    complete (an existing file is replaced: whether that is wanted is the caller's decision).

    Parameters
    ----------
    model : HamiltonianModel
    atoms : ase.Atoms
    path : str or Path
    name : str
        Structure name in the file.
    info : dict, optional
        Extra JSON-able metadata stored in the structure's ``info``.
    charge : float
        Net charge (electrons removed) for ``n_electrons`` (needs the model's electron counts).
    precision : {"float64", "float32"}
        Stored value type (read back as float64).
    chunk_atoms : int, optional
        Atoms per chunk (default :data:`acehamil.models.hamiltonian.chunked.CHUNK_ATOMS`).
    progress : bool
        One line per chunk on stderr.

    Returns
    -------
    dict
        ``natoms``, ``nblocks``, ``stored_bytes``, ``seconds`` (see :func:`write_chunked_structure`).

    Examples
    --------
    >>> import os, tempfile
    >>> from ase.build import bulk
    >>> from acehamil.io.dataset import read_dataset
    >>> from acehamil.models.hamiltonian.config import ModelConfig
    >>> from acehamil.models.hamiltonian.model import HamiltonianModel
    >>> from acehamil.structure import OrbitalBasis
    >>> cfg = ModelConfig.from_dict({"h_offsite": {"r_cut": 4.0, "max_nu": 1, "n_max": 2, "max_degree": [2]},
    ...                              "s_offsite": {"r_cut": 4.0, "max_nu": 1, "n_max": 2, "max_degree": [2]}})
    >>> model = HamiltonianModel.build(cfg, OrbitalBasis.from_dict({14: [(3, 0)]}))
    >>> path = os.path.join(tempfile.mkdtemp(), "big.h5")
    >>> predict_to_file(model, bulk("Si", "diamond", a=5.43) * (2, 2, 2), path, chunk_atoms=5)["natoms"]
    16
    >>> read_dataset(path)[0].H[0].nblocks == model.predict(bulk("Si", "diamond", a=5.43) * (2, 2, 2))[0].nblocks
    True
    """
    from ..models.hamiltonian.chunked import CHUNK_ATOMS, predict_chunks
    from .dataset import StreamingWriter

    n_el = model.n_electrons(atoms, charge)
    if n_el is None and charge:
        raise UserError("the model stores no electron counts per species: a charge cannot be applied")
    meta = {"source": "acehamil prediction", "streamed": True, "name": name, **dict(info or {})}
    if charge:
        meta["charge"] = float(charge)
    with StreamingWriter(path, keep_on_error=False, precision=precision) as out:
        return out.add_chunked(atoms, model.orbital_basis, predict_chunks(model, atoms, chunk_atoms or CHUNK_ATOMS),
                               name=name, info=meta, n_electrons=n_el,
                               progress=progress_printer(f"predict {name}") if progress else None)

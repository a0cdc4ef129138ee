"""Scale-out on Dask (``pip install -e ".[dask]"``): fitting in structure batches and prediction
in atom chunks on workers.

Serial execution stays the default everywhere; these functions take a
``dask.distributed.Client`` (a ``LocalCluster`` on one machine, or e.g. ``dask-jobqueue``'s
``SLURMCluster`` on many nodes: ``cluster = SLURMCluster(cores=..., memory=...);
cluster.scale(jobs=N); client = Client(cluster)``).

:func:`dask_mapper` is the fit's engine on Dask: ``fit(structures, config, mapper=dask_mapper(client))``
sends each batch of ``batch_structures`` training structures to a worker, which returns the
batch's partial normal equations and its on-site designs
(:func:`acehamil.models.hamiltonian.sums.batch_parts`); the client adds the sums in batch order.  Sampling is seeded per structure and the batches are fixed by
the configuration, so the fit equals the serial one bit for bit, for any number of workers and
any completion order (tested on a 2-worker ``LocalCluster``).

:func:`predict` splits the atoms into chunks; each worker computes the blocks ``(i, j, T)``
of the atoms ``i`` of its chunk (:meth:`MatrixModel.predict` with ``rows``), and the client
gathers them into one block-sparse matrix with the serial pattern.  The arithmetic is the
serial one (only batch sizes differ), so the result equals the serial prediction to rounding
(tested to 1e-12 on a 2-worker ``LocalCluster``).

Examples
--------
>>> chunks = atom_chunks(10, 3)
>>> [c.tolist() for c in chunks]
[[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["atom_chunks", "dask_mapper", "predict", "predict_rows"]


def atom_chunks(natoms: int, n_chunks: int) -> list:
    """Contiguous atom index chunks, as equal as possible."""
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
    return [c for c in np.array_split(np.arange(natoms), min(n_chunks, max(natoms, 1))) if len(c)]


def predict_rows(model, atoms, rows) -> tuple:
    """Worker task: the H and S blocks of atoms ``rows``.

    Returns
    -------
    tuple of 2 (block indices (m,), data (sum of their sizes,)) for H and S
    """
    out = []
    from .structure.neighbours import neighbour_pairs

    nl = neighbour_pairs(atoms, model.reach)
    rows = np.asarray(rows, dtype=np.int64)
    for mm in (model.H, model.S):
        m = mm.predict(atoms, pairs=nl, rows=rows)
        mask = np.zeros(m.natoms, dtype=bool)
        mask[rows] = True
        blocks = np.nonzero(mask[m.i])[0]
        sizes = m.offsets[blocks + 1] - m.offsets[blocks]
        idx = np.repeat(m.offsets[blocks], sizes) + (np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        out.append((blocks, m.data[idx]))
    return tuple(out)


def predict(model, atoms, client, n_chunks: int | None = None) -> tuple:
    """``(H, S)`` of ``atoms`` computed in atom chunks on the workers of ``client``.

    Parameters
    ----------
    model : HamiltonianModel
    atoms : ase.Atoms
    client : dask.distributed.Client
    n_chunks : int, optional
        Default: 2 per worker.

    Returns
    -------
    H, S : RealSpaceMatrix (the serial pattern and, to rounding, the serial values)
    """
    from .structure import RealSpaceMatrix
    from .structure.neighbours import neighbour_pairs

    nworkers = max(1, len(client.scheduler_info().get("workers", {})))
    chunks = atom_chunks(len(atoms), n_chunks or 2 * nworkers)
    nl = neighbour_pairs(atoms, model.reach)
    pats = [model.H.pattern(atoms, nl), model.S.pattern(atoms, nl)]
    data = [np.zeros(int(p.offsets[-1])) for p in pats]
    m_f, a_f = client.scatter([model, atoms], broadcast=True)
    futures = [client.submit(predict_rows, m_f, a_f, rows, pure=False) for rows in chunks]
    for fut in futures:
        parts = fut.result()
        for which, (blocks, vals) in enumerate(parts):
            off = pats[which].offsets
            sizes = off[blocks + 1] - off[blocks]
            idx = np.repeat(off[blocks], sizes) + (np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
            data[which][idx] = vals
        fut.release()
    H, S = (RealSpaceMatrix(p.norb, p.i, p.j, p.shift, d) for p, d in zip(pats, data))
    return model.with_energy_zero(H, S, atoms), S  # the cell's energy zero V S, as every prediction path


def dask_mapper(client, in_flight: int | None = None):
    """A ``mapper`` for :func:`acehamil.models.hamiltonian.fit.fit` that runs the tasks on Dask.

    ``mapper(fn, common, tasks)`` broadcasts ``common[0]`` (the model template) to every worker
    once, submits ``fn(*common, *task)`` for each task and yields the results in task order,
    keeping at most ``in_flight`` tasks (default: 2 per worker) submitted, so the client holds a
    bounded number of structures at a time.

    Parameters
    ----------
    client : dask.distributed.Client
    in_flight : int, optional
    """
    from collections import deque

    def run(fn, common, tasks):
        nworkers = max(1, len(client.scheduler_info().get("workers", {})))
        window = int(in_flight or 2 * nworkers)
        if window < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight}")
        # hash=False: a fresh key per run (a content-hashed key scattered again while the previous run
        # releases it is lost: "lost dependencies")
        shared = (client.scatter(common[0], broadcast=True, hash=False),) + tuple(common[1:]) if common else ()
        pending = deque()
        for task in tasks:
            pending.append(client.submit(fn, *shared, *task, pure=False))
            while len(pending) >= window:
                fut = pending.popleft()
                yield fut.result()
                fut.release()
        while pending:
            fut = pending.popleft()
            yield fut.result()
            fut.release()

    return run

"""Checks applied where data enter acehamil (readers, dataset files, fitting, eigen-solves).

Each check raises :class:`acehamil.errors.UserError` (a ``ValueError``) whose message names
where the data came from (``where``: a file, a structure) and what is wrong, instead of
letting impossible data give silent garbage downstream.

* :func:`check_atoms`: at least one atom, finite positions within :data:`MAX_COORDINATE` Å and a
  finite cell, a non-degenerate cell when periodic, known chemical species (1..118), no partially
  occupied sites, no two atoms closer than :data:`MIN_DISTANCE` Å or :data:`MIN_BOND_FRACTION` of
  their covalent bond length (periodic images included), no atom with more than
  :data:`MAX_DENSE_NEIGHBOURS` atoms within :data:`DENSE_RADIUS` Å.
* :func:`check_hermitian`: every block has its partner and ``X_ji(-T) = X_ij(T)^T`` to
  ``atol + rtol * max|X|`` (:data:`HERMITIAN_ATOL`, :data:`HERMITIAN_RTOL`); the message
  names the worst block.
* :func:`validate_structure`: both, for every H channel and S.

Examples
--------
>>> import numpy as np
>>> from acehamil.structure import RealSpaceMatrix
>>> m = RealSpaceMatrix.from_blocks([1, 1], [0, 1], [1, 0], [[0, 0, 0], [0, 0, 0]],
...                                 [np.full((1, 1), 0.5), np.full((1, 1), 0.75)])
>>> hermiticity_error(m)
(0.25, 0)
>>> check_hermitian(m, "S", "demo")
Traceback (most recent call last):
...
acehamil.errors.UserError: demo: S is not Hermitian: block (i=0, j=1, T=[0, 0, 0]) differs from the transpose of its partner (1, 0, [0, 0, 0]) by 0.25 (tolerance 1.01e-06); X_ji(-T) = X_ij(T)^T must hold
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .blocks import RealSpaceMatrix

__all__ = ["MIN_DISTANCE", "MIN_BOND_FRACTION", "MAX_COORDINATE", "DENSE_RADIUS", "MAX_DENSE_NEIGHBOURS", "HERMITIAN_ATOL", "HERMITIAN_RTOL", "hermiticity_error", "check_hermitian", "check_atoms",
           "validate_structure", "check_same_basis"]

#: Two atoms closer than this (Å) are refused as "on top of each other", whatever their species.
MIN_DISTANCE = 0.1
#: Two atoms (periodic images included) closer than this fraction of their covalent bond length (the sum
#: of ASE's covalent radii: 2.22 Å for Si-Si, 0.62 Å for H-H) are refused too.  No structure DFT is run on
#: comes near it (the H2 bond is 1.2 times the sum, compressed Si's bonds over 0.9 times), while a cell too
#: small for its atoms gives a model's S(k) that is not positive definite (one Si atom in a 1 Å cube, its
#: images 1 Å away: min eig S(k) -1.47, accepted with a warning before).
MIN_BOND_FRACTION = 0.5
#: Largest |coordinate| (Å) accepted: 1e8 Å (1 cm) keeps positions to 1.5e-8 Å in float64; at 1e20 Å a
#: periodic atom's place in its cell was rounding noise (spacing 16384 Å), and a cluster spread over 1e6 Å
#: or more is a unit or file error.
MAX_COORDINATE = 1e8
#: Radius (Å) and the most atoms within it around one atom that :func:`check_atoms` accepts.  The shortest
#: bonds are ~0.74 Å (H2): real structures have a few atoms within 1 Å, while a cell or positions given in
#: the wrong unit put hundreds there, and the models' neighbour lists (10 Å) then exhaust the memory (a
#: Si atom in a 0.6 Å cube: 6.4 GB and no answer after 300 s).
DENSE_RADIUS = 1.0
MAX_DENSE_NEIGHBOURS = 12
#: Absolute tolerance of the Hermiticity check (eV for H, dimensionless for S).
HERMITIAN_ATOL = 1e-6
#: Relative tolerance (times the largest |entry|) of the Hermiticity check.
HERMITIAN_RTOL = 1e-8


def _partners(m: RealSpaceMatrix):
    """Index of the partner ``(j, i, -T)`` of every block (-1 where absent), shape (P,)."""
    return m.partner


def hermiticity_error(m: RealSpaceMatrix) -> tuple:
    """Largest ``|X_ji(-T) - X_ij(T)^T|`` and the block where it occurs.

    Returns
    -------
    (float, int)
        Error (``inf`` when a non-zero block has no partner) and block index
        (-1 for an empty matrix).  A missing partner of an all-zero block is no error.
    """
    if m.nblocks == 0:
        return 0.0, -1
    q = _partners(m)
    norb, off = m.norb_per_atom, m.offsets
    ni, nj = norb[m.i], norb[m.j]
    missing = q < 0
    if missing.any():
        mags = np.array([np.abs(m.block(p)).max(initial=0.0) for p in np.nonzero(missing)[0]])
        if (mags > 0).any():
            return float("inf"), int(np.nonzero(missing)[0][np.argmax(mags > 0)])
    err = np.zeros(m.nblocks)
    for shape in set(zip(ni.tolist(), nj.tolist())):
        sel = np.nonzero((ni == shape[0]) & (nj == shape[1]) & ~missing)[0]
        if not len(sel):
            continue
        size = shape[0] * shape[1]
        idx = np.arange(size)
        bp = m.data[off[sel][:, None] + idx].reshape(-1, shape[0], shape[1])
        bq = m.data[off[q[sel]][:, None] + idx].reshape(-1, shape[1], shape[0])
        err[sel] = np.abs(bq - bp.transpose(0, 2, 1)).reshape(len(sel), -1).max(axis=1, initial=0.0)
    worst = int(np.argmax(err))
    return float(err[worst]), worst


def check_hermitian(m: RealSpaceMatrix, name: str, where: str, atol: float = HERMITIAN_ATOL,
                    rtol: float = HERMITIAN_RTOL) -> None:
    """Raise UserError unless ``m`` is Hermitian (``X_ji(-T) = X_ij(T)^T``) within ``atol + rtol max|X|``."""
    err, p = hermiticity_error(m)
    tol = atol + rtol * (float(np.abs(m.data).max()) if m.data.size else 0.0)
    if err <= tol:
        return
    blk = f"(i={int(m.i[p])}, j={int(m.j[p])}, T={m.shift[p].tolist()})"
    partner = f"({int(m.j[p])}, {int(m.i[p])}, {(-m.shift[p]).tolist()})"
    if not np.isfinite(err):
        raise UserError(f"{where}: {name} is not Hermitian: block {blk} has no partner block {partner} "
                        f"(a one-triangle or truncated matrix?)")
    raise UserError(f"{where}: {name} is not Hermitian: block {blk} differs from the transpose of its partner "
                    f"{partner} by {err:.3g} (tolerance {tol:.3g}); X_ji(-T) = X_ij(T)^T must hold")


def check_atoms(atoms, where: str, min_distance: float = MIN_DISTANCE) -> None:
    """Raise UserError for no atoms, non-finite or absurdly far positions, a non-finite cell, a degenerate
    periodic cell, unknown species, partially occupied sites, atoms (or an atom and its own periodic image)
    closer than ``min_distance`` Å or :data:`MIN_BOND_FRACTION` of their covalent bond length, or an
    impossibly dense structure (wrong length unit)."""
    pos = np.asarray(atoms.positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise UserError(f"{where}: positions must have shape (natoms, 3), got {pos.shape}")
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise UserError(f"{where}: position of atom {int(np.argmax(bad))} is not finite ({pos[np.argmax(bad)].tolist()})")
    far = np.abs(pos).max(axis=1, initial=0.0) > MAX_COORDINATE
    if far.any():
        k = int(np.argmax(far))
        raise UserError(f"{where}: atom {k} is at {pos[k].tolist()} Å, beyond {MAX_COORDINATE:.0e} Å from the "
                        f"origin: float64 keeps such a coordinate only to {np.spacing(np.abs(pos[k]).max()):.2g} Å "
                        f"(positions in the wrong unit, or garbage?)")
    _check_occupancy(atoms, where)
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.isfinite(cell).all():
        raise UserError(f"{where}: the cell contains NaN or inf")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        vol = abs(float(np.linalg.det(cell)))
        if vol < 1e-6:  # the rule of the neighbour search (structure.neighbours), said before any work
            axes = "".join("xyz"[a] for a in np.nonzero(pbc)[0])
            raise UserError(f"{where}: periodic along {axes} but the cell is degenerate (volume {vol:.3g} Å^3, "
                            f"vectors {np.round(cell, 4).tolist()} Å); give three independent cell vectors (a "
                            f"non-periodic axis needs one too, e.g. the vacuum length)")
    z = np.asarray(atoms.numbers)
    unknown = (z < 1) | (z > 118)
    if unknown.any():
        k = int(np.argmax(unknown))
        raise UserError(f"{where}: atom {k} has unknown chemical species (atomic number {int(z[k])}; "
                        f"'X' or a typo in the element symbol?)")
    if len(pos) < 1:
        raise UserError(f"{where}: the structure has no atoms")
    from ase.data import covalent_radii

    from .neighbours import pairs_closer_than

    rad = MIN_BOND_FRACTION * covalent_radii[z]  # each atom's share of the shortest accepted distance
    _check_self_images(cell, pbc, z, rad, min_distance, where)
    radius = max(min_distance, DENSE_RADIUS, 2.0 * float(rad.max()))  # one search serves both checks
    try:
        i, j, d = pairs_closer_than(atoms, radius)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - degenerate cells: fall back to a direct check in the home cell
        diff = pos[:, None] - pos[None]
        dd = np.linalg.norm(diff, axis=-1) + np.eye(len(pos)) * 1e9
        i, j = np.nonzero(dd < radius)
        d = dd[i, j]
    if len(d) and d.min() < min_distance:
        k = int(np.argmin(d))
        raise UserError(f"{where}: atoms {int(i[k])} and {int(j[k])} are {float(d[k]):.3g} Å apart (less than "
                        f"{min_distance} Å: on top of each other?)")
    shortest = np.maximum(rad[i] + rad[j], min_distance)
    if len(d) and (d < shortest).any():
        k = int(np.argmin(d / shortest))
        from ase.data import chemical_symbols

        a, b = int(i[k]), int(j[k])
        bond = f"{chemical_symbols[z[a]]}-{chemical_symbols[z[b]]}"
        who = (f"atom {a} is {float(d[k]):.3g} Å from its own periodic image" if a == b
               else f"atoms {a} and {b} are {float(d[k]):.3g} Å apart")
        hint = ("the cell is too small for its atoms (in the wrong unit?)" if a == b
                else "on top of each other, or a cell too small (in the wrong unit?)")
        raise UserError(f"{where}: {who}, less than {MIN_BOND_FRACTION:g} times the {bond} covalent bond length "
                        f"({float(shortest[k]):.3g} Å of {float(shortest[k]) / MIN_BOND_FRACTION:.3g} Å): {hint}")
    counts = np.bincount(i, minlength=len(pos)) if len(i) else np.zeros(len(pos), int)
    if counts.max(initial=0) > MAX_DENSE_NEIGHBOURS:
        k = int(np.argmax(counts))
        raise UserError(f"{where}: atom {k} has {int(counts[k])} atoms (periodic images included) within "
                        f"{DENSE_RADIUS} Å, more than {MAX_DENSE_NEIGHBOURS}: no matter is that dense (a cell or "
                        f"positions in nm, or fractional coordinates read as Å?)")


def _check_self_images(cell, pbc, z, rad, min_distance: float, where: str) -> None:
    """Refuse, before any neighbour search, a periodic cell whose shortest lattice vector (Minkowski-reduced
    cell: the distance of every atom to its nearest own image) is shorter than ``min_distance`` or twice the
    largest ``rad`` of the atoms: a nearly singular or too small cell would otherwise ask the search for
    millions of images."""
    if not pbc.any():
        return
    from ase.geometry import minkowski_reduce

    try:
        reduced, _ = minkowski_reduce(cell, pbc=pbc)
    except Exception:  # noqa: BLE001 - the search below names what is wrong with such a cell
        return
    shortest = float(np.linalg.norm(reduced[pbc], axis=1).min())
    k = int(np.argmax(rad))
    limit = max(min_distance, 2.0 * float(rad[k]))
    if shortest < limit:
        from ase.data import chemical_symbols

        sym = chemical_symbols[int(z[k])]
        raise UserError(f"{where}: atom {k} is {shortest:.3g} Å from its own periodic image (the shortest lattice "
                        f"vector), less than {limit:.3g} Å ({MIN_BOND_FRACTION:g} times the {sym}-{sym} covalent bond "
                        f"length): the cell is too small for its atoms or nearly singular (in the wrong unit?)")


def _check_occupancy(atoms, where: str) -> None:
    """Refuse a structure with partially occupied sites (ASE's CIF reader keeps ``info["occupancy"]``,
    ``{kind: {symbol: fraction}}``, and places one species per site with full weight: a disordered crystal
    was predicted as one arbitrary ordered configuration)."""
    occ = getattr(atoms, "info", {}).get("occupancy") if hasattr(atoms, "info") else None
    if not isinstance(occ, dict):
        return
    for kind, shares in occ.items():
        try:
            parts = {str(k): float(v) for k, v in dict(shares).items()}
        except (TypeError, ValueError):
            raise UserError(f"{where}: unreadable site occupancy {shares!r} of site kind {kind}") from None
        if any(abs(v - 1.0) > 1e-6 for v in parts.values()):
            raise UserError(f"{where}: site kind {kind} is partially occupied ({parts}): a disordered crystal has "
                            f"no single H and S; give one ordered configuration (a supercell with each site's "
                            f"species chosen)")


def validate_structure(sd, where: str, hermitian: bool = True) -> None:
    """Check the atoms and (when ``hermitian``) every H channel and S of a StructureData."""
    check_atoms(sd.atoms, where)
    if hermitian:
        for s, h in enumerate(sd.H):
            check_hermitian(h, f"H (spin {s})", where)
        if sd.S is not None:
            check_hermitian(sd.S, "S", where)


def check_same_basis(model_basis, data_basis, numbers, where: str, what: str = "the model") -> None:
    """Raise UserError unless every species in ``numbers`` has the same shells (n, l) in both bases."""
    from ase.data import chemical_symbols

    for z in sorted({int(x) for x in numbers}):
        sym = chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"
        try:
            mine = [(s.n, s.l) for s in model_basis.shells_of(z)]
        except ValueError:
            raise UserError(f"{where}: species {sym} is not in the orbital basis of {what}") from None
        theirs = [(s.n, s.l) for s in data_basis.shells_of(z)]
        if [l for _, l in mine] != [l for _, l in theirs]:
            raise UserError(f"{where}: the data's orbital basis of {sym} (shells (n, l) {theirs}) differs from that of "
                            f"{what} ({mine}); basis mismatch: use data made with the model's basis")

"""k-paths and k-meshes: which axes are periodic, standard paths, labelled paths through given k-points.

- :func:`effective_pbc`: a periodic axis along which the atoms leave a vacuum gap of at least
  ``vacuum`` Å (a slab or a molecule in a big box, as FHI-aims and VASP users set them up) counts
  as non-periodic for k-paths and k-meshes: bilayer graphene in a 100 Å cell gets the 2D hexagonal
  path Γ-M-K-Γ and an ``n x n x 1`` mesh.
- :func:`band_path`: ASE's standard path of the (2D or 3D) Bravais lattice, found with the lattice
  tolerance ``eps`` (Å, ASE's ``Cell.bandpath(eps=...)``).  The default :data:`LATTICE_TOLERANCE`
  = 0.05 Å gives a slightly strained or rattled cubic cell its cubic path instead of a triclinic
  one; pass ``eps=2e-4`` for ASE's strict default.
- :func:`path_from_kpts`: a path through given k-points (e.g. a DFT code's band k-points), labelled
  from the caller's labels or by matching the lattice's special points (also symmetry-equivalent
  copies such as K').
- :class:`KAxis` / :func:`linear_axis`: the plot axis of a path: cumulative length (1/Å, no 2 pi),
  tick labels ("Γ" for the zone centre, "X|K" at a break) and the **breaks**, where the path jumps
  (ASE's "," in "GX,KL", or separate FHI-aims ``output band`` segments): bands are not drawn across
  a break.

Examples
--------
>>> from ase.build import bulk
>>> ax = linear_axis(band_path(bulk("Si", "diamond", a=5.43), "GX,KL", npoints=20))
>>> ax.labels, ax.breaks
(['Γ', 'X|K', 'L'], [12])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.dft.kpoints import BandPath

from .bloch import as_kpts

__all__ = ["VACUUM", "LATTICE_TOLERANCE", "DOS_K_DENSITY", "BANDS_K_DENSITY", "effective_pbc", "kmesh_for", "dos_kmesh", "path_npoints", "band_path", "path_from_kpts", "KAxis",
           "linear_axis", "lattice_name"]

#: A vacuum gap (Å) at least this wide makes an axis non-periodic for paths and meshes.
VACUUM = 8.0
#: Default lattice tolerance (Å) when identifying the Bravais lattice of a cell for its k-path.
LATTICE_TOLERANCE = 0.05


def _cell(atoms):
    """Cell with non-periodic/zero axes completed (for reciprocal lengths)."""
    return atoms.cell.complete()


def effective_pbc(atoms, vacuum: float = VACUUM) -> np.ndarray:
    """Periodic axes that are not separated by a vacuum gap of ``>= vacuum`` Å, shape (3,) bool.

    The gap along axis ``i`` is the widest empty interval of the atoms' fractional coordinates
    ``x_i`` (periodically) times the layer spacing ``1 / |b_i|``.

    >>> from ase.build import graphene
    >>> effective_pbc(graphene(vacuum=10.0)).tolist()
    [True, True, False]
    """
    pbc = np.asarray(atoms.pbc, dtype=bool).copy()
    if not pbc.any() or len(atoms) == 0:
        return pbc
    cell = _cell(atoms)
    frac = np.linalg.solve(np.asarray(cell).T, atoms.positions.T).T
    spacing = 1.0 / np.linalg.norm(cell.reciprocal(), axis=1)
    for i in np.nonzero(pbc)[0]:
        x = np.sort(np.mod(frac[:, i], 1.0))
        gaps = np.diff(np.concatenate([x, [x[0] + 1.0]]))
        if gaps.max() * spacing[i] >= vacuum:
            pbc[i] = False
    return pbc


def kmesh_for(atoms, density: float = 25.0, vacuum: float = VACUUM) -> tuple:
    """k-mesh with ``n_i = ceil(density * |b_i|)`` (``b`` reciprocal vectors in 1/Å, no 2 pi); 1 on
    non-periodic axes (including vacuum-separated ones, :func:`effective_pbc`).

    >>> from ase.build import bulk
    >>> kmesh_for(bulk("Si", "diamond", a=5.43))
    (8, 8, 8)
    """
    if not density > 0:
        raise ValueError(f"k-point density must be > 0 Å, got {density}")
    b = np.linalg.norm(_cell(atoms).reciprocal(), axis=1)
    return tuple(int(max(1, np.ceil(density * bi))) if p else 1 for bi, p in zip(b, effective_pbc(atoms, vacuum)))


#: k-point density of the default DOS grid (Å): ``n_i = ceil(DOS_K_DENSITY |b_i|)`` gives 8x8x8 for the
#: 8-atom 5.43 Å Si cell (the README's DOS), 4x4x4 for its 64-atom 2x2x2 supercell, 3x3x3 for a 3x3x3
#: supercell (216 atoms, was a fixed 12x12x12: 864 k-points, 6 min) and Gamma only beyond 40 Å and for
#: molecules: the same sampling of the Brillouin zone per volume, whatever the cell.
DOS_K_DENSITY = 40.0


def dos_kmesh(atoms, density: float = DOS_K_DENSITY, vacuum: float = VACUUM) -> tuple:
    """Default Monkhorst-Pack grid of a density of states: :func:`kmesh_for` at ``density`` Å
    (:data:`DOS_K_DENSITY`), i.e. about ``density / |a_i|`` k-points along a cubic cell's axis.

    Examples
    --------
    >>> from ase.build import bulk
    >>> si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    >>> dos_kmesh(si8), dos_kmesh(si8 * (2, 2, 2)), dos_kmesh(si8 * (3, 3, 3)), dos_kmesh(si8 * (8, 8, 8))
    ((8, 8, 8), (4, 4, 4), (3, 3, 3), (1, 1, 1))
    """
    return kmesh_for(atoms, density, vacuum)


#: Default k-points per reciprocal length (Å, no 2 pi) along a band path: 199 points on the 8-atom
#: Si cell's Γ-X-M-Γ-R-X|M-R, 100 on its 64-atom supercell, 67 on a 216-atom one (folded bands, the same
#: resolution in k; each point costs ~norb^3), within [BANDS_MIN_POINTS, BANDS_MAX_POINTS].
BANDS_K_DENSITY = 285.0
BANDS_MIN_POINTS, BANDS_MAX_POINTS = 40, 200


def path_npoints(atoms, path: str | None = None, eps: float = LATTICE_TOLERANCE, vacuum: float = VACUUM,
                 density: float = BANDS_K_DENSITY) -> int:
    """Default number of k-points of a band path: ``ceil(density * length)`` (length of the path's
    continuous pieces in 1/Å, no 2 pi), within ``[BANDS_MIN_POINTS, BANDS_MAX_POINTS]``;
    ``BANDS_MAX_POINTS`` without a periodic axis.

    Examples
    --------
    >>> from ase.build import bulk
    >>> si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    >>> path_npoints(si8), path_npoints(si8 * (2, 2, 2)), path_npoints(si8 * (3, 3, 3)), path_npoints(si8 * (6, 6, 6))
    (199, 100, 67, 40)
    """
    if not density > 0:
        raise ValueError(f"k-point density must be > 0 Å, got {density}")
    if not effective_pbc(atoms, vacuum).any():
        return BANDS_MAX_POINTS
    length = float(linear_axis(band_path(atoms, path, BANDS_MAX_POINTS, eps, vacuum)).x[-1])
    return int(np.clip(np.ceil(density * length), BANDS_MIN_POINTS, BANDS_MAX_POINTS))


def lattice_name(atoms, eps: float = LATTICE_TOLERANCE, vacuum: float = VACUUM) -> str | None:
    """ASE's Bravais-lattice name (e.g. "CUB", "HEX2D") with tolerance ``eps``; None for a molecule."""
    pbc = effective_pbc(atoms, vacuum)
    if not pbc.any():
        return None
    try:
        return atoms.cell.get_bravais_lattice(eps=eps, pbc=pbc).name
    except Exception:  # noqa: BLE001 - ASE cannot classify (e.g. 1D): no name
        return None


def band_path(atoms, path: str | None = None, npoints: int = 200, eps: float = LATTICE_TOLERANCE,
              vacuum: float = VACUUM) -> BandPath:
    """A k-path: the lattice's standard path, or any path string (e.g. "GXWKGL", "GMK,GA").

    Parameters
    ----------
    atoms : ase.Atoms
    path : str, optional
        ASE special-point letters, "," for a break; default the lattice's standard path.
    npoints : int
        k-points along the whole path.
    eps : float, Å
        Lattice tolerance for identifying the Bravais lattice (ASE's ``eps``).
    vacuum : float, Å
        Axes with a vacuum gap at least this wide are treated as non-periodic (2D paths for slabs).

    Molecules (no periodic axis) get the single point Γ.
    """
    if int(npoints) < 1:
        raise ValueError(f"npoints must be >= 1, got {npoints}")
    if not eps > 0:
        raise ValueError(f"lattice tolerance must be > 0 Å, got {eps}")
    if path is not None and not str(path).replace(",", "").strip():
        raise ValueError(f"the k-path {path!r} names no special points (e.g. 'GXWKGL', or 'GMK,GA')")
    pbc = effective_pbc(atoms, vacuum)
    if not np.any(pbc):
        if path is not None and str(path).replace(",", "").strip() not in ("G", "Γ"):  # it was ignored without a word
            raise ValueError(f"the k-path {path!r} does not apply: this structure has no periodic axis (a molecule or "
                             f"cluster, or >= {vacuum:g} Å of vacuum along every periodic axis), its levels are at Γ only; "
                             "leave out the path")
        return BandPath(_cell(atoms), kpts=np.zeros((1, 3)), special_points={"G": np.zeros(3)}, path="G")
    try:
        return atoms.cell.bandpath(path, npoints=int(npoints), pbc=pbc, eps=eps)
    except (ValueError, KeyError) as err:
        raise ValueError(f"cannot build k-path {path!r} for this lattice: {err}") from None


def _lattice_rotations(cell) -> np.ndarray:
    """Cartesian orthogonal matrices ``Q`` (n, 3, 3) mapping the lattice onto itself (integer
    combinations with coefficients -1..1 that preserve the metric)."""
    a = np.asarray(cell, dtype=np.float64)
    grid = np.array(np.meshgrid(*[[-1, 0, 1]] * 9, indexing="ij")).reshape(9, -1).T.reshape(-1, 3, 3)
    grid = grid[np.abs(np.round(np.linalg.det(grid))) == 1]
    ma = grid @ a
    metric = a @ a.T
    ok = np.all(np.abs(ma @ ma.transpose(0, 2, 1) - metric) < 1e-6 * np.abs(metric).max(), axis=(1, 2))
    q_t = np.linalg.solve(a, ma[ok])  # M A = A Q^T
    return q_t.transpose(0, 2, 1)


def _special_labels(atoms, k, eps, tolerance, vacuum) -> list:
    """``[[index, name], ...]`` of k-points that are (images of) the lattice's special points."""
    pbc = effective_pbc(atoms, vacuum)
    special = {}
    if np.any(pbc):
        try:
            special = dict(atoms.cell.bandpath(npoints=0, pbc=pbc, eps=tolerance).special_points)
        except Exception:  # lattice not recognised: no labels  # noqa: BLE001
            special = {}
    if not special:
        return []
    a = np.asarray(_cell(atoms))
    b = np.linalg.inv(a).T
    rots = _lattice_rotations(a)
    names = list(special)
    sp = np.array([special[n] for n in names])  # (ns, 3)
    kc = k @ b  # (nk, 3) Cartesian (no 2 pi)
    images = np.einsum("rij,kj->kri", rots, kc) @ a.T  # fractional images of each k, (nk, nrot, 3)
    diff = images[:, :, None, :] - sp[None, None]
    dist = np.abs(diff - np.round(diff)).sum(axis=-1).min(axis=1)  # (nk, ns)
    out = []
    for q in range(len(k)):
        hit = np.nonzero(dist[q] < eps)[0]
        if len(hit):
            out.append([q, names[hit[0]]])
    return out


def path_from_kpts(atoms, kpts, eps: float = 1e-4, labels=None, breaks=None, tolerance: float = LATTICE_TOLERANCE,
                   vacuum: float = VACUUM) -> BandPath:
    """A BandPath through given fractional k-points, labelled.

    Parameters
    ----------
    atoms : ase.Atoms
    kpts : array (nk, 3), fractional
    eps : float
        Match tolerance (fractional coordinates) between a k-point and a special point.
    labels : list of [index, name], optional
        Labels to use (e.g. from FHI-aims' ``control.in``); default: the lattice's special points
        found among the k-points (also symmetry-equivalent copies such as K').
    breaks : list of int, optional
        Indices ``q`` where the path jumps between k-points ``q-1`` and ``q`` (both must be
        labelled).  Default: between two consecutive labelled k-points with different names whose
        distance is more than 3 times the median step (the end of one segment, the start of another).
    tolerance : float, Å
        Lattice tolerance for the special points (see :func:`band_path`).

    Returns
    -------
    BandPath
        ``special_points`` holds every label at its own coordinates (a name used at two different
        coordinates gets keys ``K``, ``K1``...; :func:`linear_axis` prints the name); breaks are
        "," in the path string.

    Examples
    --------
    >>> from ase.build import bulk
    >>> si = bulk("Si", "diamond", a=5.43)
    >>> k = np.concatenate([np.linspace([0, 0, 0], [0.5, 0, 0.5], 11), np.linspace([0.375, 0.375, 0.75], [0.5, 0.5, 0.5], 4)])
    >>> bp = path_from_kpts(si, k)
    >>> bp.path, linear_axis(bp).breaks
    ('GX,KL', [11])
    """
    k = as_kpts(kpts)
    if labels is None:
        found = _special_labels(atoms, k, eps, tolerance, vacuum)
    else:
        found = []
        for q, name in labels:
            q = int(q)
            if not 0 <= q < len(k):
                raise ValueError(f"label {name!r} at k-point {q}, but there are {len(k)} k-points")
            found.append([q, str(name)])
    found.sort(key=lambda t: t[0])
    at = dict((q, name) for q, name in found)
    if breaks is None:
        kc = k @ np.linalg.inv(np.asarray(_cell(atoms))).T
        step = np.linalg.norm(np.diff(kc, axis=0), axis=1)
        typical = np.median(step[step > 1e-9]) if np.any(step > 1e-9) else 0.0
        breaks = [q for q in range(1, len(k)) if q - 1 in at and q in at and at[q - 1] != at[q]
                  and step[q - 1] > 3 * typical]
    breaks = sorted({int(q) for q in breaks})
    for q in breaks:
        if q - 1 not in at or q not in at:
            raise ValueError(f"a path break between k-points {q - 1} and {q} needs labels on both")
    # one key per distinct coordinate; a label repeated on a run of equal points is written once
    points, path, last = {}, "", None
    for q, name in found:
        key, n = name, 1
        while key in points and np.abs(points[key] - k[q]).sum() > eps:
            key, n = f"{name}{n}", n + 1
        points.setdefault(key, k[q])
        if last is not None and q in breaks:
            path += ","
        elif last is not None and last[1] == key and np.abs(k[last[0]] - k[q]).sum() <= eps:
            last = (q, key)
            continue
        path += key
        last = (q, key)
    return BandPath(_cell(atoms), kpts=k, special_points=points, path=path)


@dataclass(frozen=True)
class KAxis:
    """Plot axis of a k-path.

    Attributes
    ----------
    x : ndarray, shape (nk,)
        Cumulative path length (1/Å, no 2 pi); a break adds no length.
    ticks : list of float
        Positions of labelled points.
    labels : list of str
        Tick labels ("Γ" for the zone centre; "X|K" where the path breaks from X to K).
    breaks : list of int
        Indices ``i`` where the path jumps between k-points ``i-1`` and ``i``: draw no line across.
    """

    x: np.ndarray
    ticks: list
    labels: list
    breaks: list

    def segments(self) -> list:
        """``[slice, ...]`` of the continuous pieces of the path."""
        edges = [0, *self.breaks, len(self.x)]
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _display(name: str) -> str:
    base = name.rstrip("0123456789") or name
    return "Γ" if base in ("G", "Gamma") else base


def linear_axis(path: BandPath, eps: float = 1e-6) -> KAxis:
    """The plot axis (:class:`KAxis`) of a BandPath.

    Labels are the path's special points at the k-points where they occur; a break is a step
    between two consecutive labelled k-points that the path string separates with "," (ASE's
    "GX,KL"; :func:`path_from_kpts` writes its breaks the same way).  In a path without any
    label, a step more than 4 times the median step is a break.
    """
    k = np.asarray(path.kpts, dtype=np.float64)
    nk = len(k)
    cell = np.asarray(path.cell.complete())
    kc = k @ np.linalg.inv(cell).T  # Cartesian, 1/Å without 2 pi
    step = np.linalg.norm(np.diff(kc, axis=0), axis=1) if nk > 1 else np.zeros(0)
    # labels at k-points: each special point named in the path string, matched in path order
    names = [n for part in path.path.split(",") for n in _split_names(part, path.special_points)]
    labelled = {}
    q0 = 0
    for name in names:
        pt = np.asarray(path.special_points[name], dtype=np.float64)
        hit = np.nonzero(np.abs(k[q0:] - pt).sum(axis=1) < 1e-5)[0]
        if len(hit):
            q = q0 + int(hit[0])
            labelled.setdefault(q, name)
            q0 = q
    # breaks: "," in an ASE path string: the end of one part and the start of the next
    breaks = set()
    parts = [p for p in path.path.split(",") if p]
    if len(parts) > 1:
        ends, q0 = [], 0
        for part in parts:
            pn = _split_names(part, path.special_points)
            first = _find(k, path.special_points[pn[0]], q0)
            last = first
            for n in pn[1:]:
                last = _find(k, path.special_points[n], last)
            ends.append((first, last))
            q0 = last
        for (_, end), (start, _) in zip(ends[:-1], ends[1:]):
            if start == end + 1:
                breaks.add(start)
    if not labelled and nk > 1:
        # an unlabelled k list (e.g. ``bands --kpts FILE``): a step over 4 times the median step is a jump
        pos = step[step > 1e-12]
        if len(pos) >= 3:
            breaks.update(int(q) + 1 for q in np.nonzero(step > 4 * np.median(pos))[0])
    x = np.concatenate([[0.0], np.cumsum(np.where(np.isin(np.arange(1, nk), list(breaks)), 0.0, step))]) if nk else np.zeros(0)
    ticks, labels = [], []
    for q in sorted(labelled):
        lab = _display(labelled[q])
        if ticks and abs(x[q] - ticks[-1]) < 1e-12:
            if lab != labels[-1]:
                labels[-1] = f"{labels[-1]}|{lab}"
            continue
        ticks.append(float(x[q]))
        labels.append(lab)
    return KAxis(x, ticks, labels, sorted(breaks))


def _find(k, pt, q0) -> int:
    hit = np.nonzero(np.abs(k[q0:] - np.asarray(pt)).sum(axis=1) < 1e-5)[0]
    return q0 + int(hit[0]) if len(hit) else q0


def _split_names(part: str, special) -> list:
    """Split a path part such as "GXW" or "K1G" into special-point names (longest match first)."""
    out, i = [], 0
    keys = sorted(special, key=len, reverse=True)
    while i < len(part):
        for key in keys:
            if part.startswith(key, i):
                out.append(key)
                i += len(key)
                break
        else:
            raise ValueError(f"path {part!r}: unknown special point at {part[i:]!r}")
    return out

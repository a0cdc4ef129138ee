"""Reader for the ACEhamiltonians(.jl) HDF5 layout (FHI-aims matrices in dense cell stacks).

One group per structure::

    <group>/Structure/{atomic_numbers (N,), positions (N,3) Å, lattice (3,3) Å rows = vectors, pbc (3,)}
    <group>/Info/Basis/<Z>   (nshell, 2) rows (n, l), FHI-aims shell order
    <group>/Info/Translations (C, 3) int, [0,0,0] first
    <group>/Info/k-points     (nk, 4) fractional k and weight
    <group>/Data/{H, S (C, norb, norb) Hartree / 1, fermi_level eV, total_energy eV, forces eV/Å,
                  DoS/{energies eV, values, broadening eV}}

Conventions (checked on ``acehamiltonians-si/example_data.h5``, see ``tests/test_io_acehamiltonians.py``):
orbitals follow FHI-aims (``m = -l..l``, odd positive ``m`` sign-flipped); as read by h5py,
``Data/H[c]`` is our block matrix at cell shift ``T = -Translations[c]`` (the older translation
sign; equivalently its transpose at ``+Translations[c]``).  The test requires every s-p overlap
vector to be parallel to its bond vector ``pos[j] - pos[i] + T @ cell`` with one common sign, which
singles out this choice among transposition x sign (s-s overlaps alone cannot: the stored
2-atom cells have inversion symmetry).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from ase import Atoms

from ..conventions import CODE_CONVENTIONS, orbital_permutation, to_our_orbitals
from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData
from ..errors import UserError
from .hdf5 import open_h5

#: Units, orbital order/signs and cell-index sign of ACEhamiltonians files.
CONVENTION = CODE_CONVENTIONS["acehamiltonians"]
#: Sign applied to the stored translations to get our cell shift T.
TRANSLATION_SIGN = CONVENTION.cell_index_sign


def _shells(basis, numbers, layout):
    """``(l, file indices)`` of every shell, atom by atom (shells are contiguous in the file)."""
    for a, z in enumerate(numbers):
        start = int(layout.atom_offsets[a])
        for s in basis.shells_of(z):
            yield s.l, start + np.arange(2 * s.l + 1)
            start += 2 * s.l + 1


def read_acehamiltonians(path, group: str | None = None, drop_tol: float = 0.0) -> StructureData | list:
    """Read one structure (``group``) or all structures (``group=None``) of an ACEhamiltonians file.

    Parameters
    ----------
    path : str or Path
    group : str or None
        Group name, e.g. ``"0224"``; None reads every group and returns a list.
    drop_tol : float
        Blocks whose H and S entries are all ``<= drop_tol`` in magnitude are left out
        (0 keeps every non-zero block; the file stores many all-zero cells).

    Returns
    -------
    StructureData or list of StructureData
        H in eV (FHI-aims' factor 27.2113845), S, Fermi level, total energy, forces, and
        ``info["dos"] = {"energies", "values", "broadening", "kpts", "weights"}`` when stored.

    Raises
    ------
    ValueError
        Missing groups/datasets (named), a basis that does not match the matrix size,
        or a species without a basis.
    """
    path = Path(path)
    with open_h5(path) as f:
        if group is None:
            names = [k for k in f if isinstance(f[k], h5py.Group) and "Structure" in f[k] and "Data" in f[k]]
            if not names:
                raise ValueError(f"{path}: no ACEhamiltonians structure groups (with Structure/ and Data/) found")
            half = [k for k in f if isinstance(f[k], h5py.Group) and ("Structure" in f[k]) != ("Data" in f[k])]
            if half:  # a structure group that lost a part: never skipped silently
                raise UserError(f"{path}:/{half[0]} has {'Structure/ but no Data/' if 'Structure' in f[half[0]] else 'Data/ but no Structure/'} "
                                f"(truncated or damaged file?); {len(names)} complete group(s) besides")
            return [_read_group(f, k, path, drop_tol) for k in names]
        if group not in f:
            raise ValueError(f"{path}: no group {group!r}; groups: {', '.join(f)}")
        return _read_group(f, group, path, drop_tol)


#: Unit labels the layout uses (first: the one it documents); a dataset labelled otherwise is refused.
_UNITS = {"Data/H": ("Ha", "Hartree", "hartree"), "Structure/positions": ("Angstrom", "Å", "angstrom", "Ang"),
          "Structure/lattice": ("Angstrom", "Å", "angstrom", "Ang"), "Data/fermi_level": ("eV",),
          "Data/total_energy": ("eV",), "Data/forces": ("eV/Angstrom", "eV/Å", "eV/Ang")}


def _get(g, key, path, name):
    if key not in g:
        raise ValueError(f"{path}:/{name}/{key} missing (not an ACEhamiltonians file, or truncated)")
    return g[key][()]


def _typed(g, key, path, name, kind: str, shape=None) -> np.ndarray:
    """Dataset ``key`` of group ``name`` as integers (``kind`` "i": whole numbers of any type), real numbers ("f")
    or booleans ("b"), checked against ``shape`` (None entries: any length).  A complex H was cast to real with a
    ComplexWarning, atomic numbers 14.5 and translations 0.5 were truncated, a (3,) fermi_level was a TypeError
    traceback, and a text value or an array of the wrong width was numpy's message naming no file."""
    a = np.asarray(_get(g, key, path, name))
    ok = a.dtype.kind in {"i": "iu", "f": "fiu", "b": "biu"}[kind]
    if kind == "i" and a.dtype.kind == "f" and np.isfinite(a).all():
        ok = bool(np.all(a == np.round(a)))
    if ok and shape is not None:
        ok = a.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, a.shape))
    if not ok:
        want = {"i": "integers", "f": "real numbers", "b": "booleans"}[kind]
        form = "a scalar" if shape == () else ("shape (" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
                                             if shape is not None else "an array")
        raise UserError(f"{path}:/{name}/{key}: expected {want}, {form}; got shape {a.shape} dtype {a.dtype}"
                        f"{' (values such as ' + repr(a.ravel()[:2].tolist())[:60] + ')' if a.size and a.dtype.kind != 'S' else ''}")
    return a.astype({"i": np.int64, "f": np.float64, "b": bool}[kind])


def _read_group(f, name: str, path: Path, drop_tol: float) -> StructureData:
    g = f[name]
    numbers = _typed(g, "Structure/atomic_numbers", path, name, "i", (None,))
    positions = _typed(g, "Structure/positions", path, name, "f")
    lattice = _typed(g, "Structure/lattice", path, name, "f")
    pbc = _typed(g, "Structure/pbc", path, name, "b") if "Structure/pbc" in g else np.ones(3, bool)
    where = f"{path}:/{name}"
    if positions.shape != (len(numbers), 3) or lattice.shape != (3, 3) or pbc.shape not in ((), (3,)):
        raise UserError(f"{where}/Structure: positions {positions.shape}, lattice {lattice.shape}, pbc {pbc.shape} do not "
                        f"fit {len(numbers)} atoms (expected ({len(numbers)}, 3), (3, 3), (3,))")
    for key, want in _UNITS.items():  # the file's own unit labels, where it has them
        if key in g and "unit" in g[key].attrs:
            unit = g[key].attrs["unit"]
            unit = unit.decode() if isinstance(unit, bytes) else str(unit)
            if unit not in want:
                raise UserError(f"{where}/{key}: unit {unit!r}, the ACEhamiltonians layout stores {want[0]!r} "
                                f"(a file in other units would be read wrongly)")
    atoms = Atoms(numbers=numbers, positions=positions, cell=lattice, pbc=pbc)
    if "Info/Basis" not in g:
        raise ValueError(f"{path}:/{name}/Info/Basis missing (not an ACEhamiltonians file, or truncated)")
    bad = [z for z in g["Info/Basis"] if not str(z).isdigit()]
    if bad:  # was int()'s "invalid literal" naming no file
        raise UserError(f"{path}:/{name}/Info/Basis: keys must be atomic numbers, got {bad[0]!r}")
    shells = {int(z): [Shell(n=int(n), l=int(l)) for n, l in _typed(g, f"Info/Basis/{z}", path, name, "i", (None, 2))]
              for z in g["Info/Basis"]}
    basis = OrbitalBasis.from_dict(shells)
    layout = basis.layout(numbers)  # raises for a species without a basis
    H = _typed(g, "Data/H", path, name, "f")
    S = _typed(g, "Data/S", path, name, "f")
    T = TRANSLATION_SIGN * _typed(g, "Info/Translations", path, name, "i", (None, 3))
    norb = layout.norb
    for key, M in (("Data/H", H), ("Data/S", S)):
        if not np.isfinite(M).all():
            c, r, q = np.argwhere(~np.isfinite(M))[0] if M.ndim == 3 else (0, 0, 0)
            raise UserError(f"{where}/{key}: contains NaN or inf (first at cell {c}, row {r}, column {q})")
    if H.shape != S.shape or H.shape[1:] != (norb, norb) or len(T) != len(H):
        raise ValueError(
            f"{path}:/{name}: H {H.shape}, S {S.shape}, {len(T)} translations, basis gives {norb} orbitals (basis mismatch)"
        )
    # FHI-aims -> our orbital order and signs, per atom
    perm, sign = orbital_permutation(CONVENTION.orbital_table, _shells(basis, numbers, layout))
    H = to_our_orbitals(H, perm, sign) * CONVENTION.hartree_to_ev
    S = to_our_orbitals(S, perm, sign)
    # keep only blocks that carry something
    ii, jj, cc = [], [], []
    off = layout.atom_offsets
    for c in range(len(T)):
        for a in range(len(numbers)):
            for b in range(len(numbers)):
                sl = (c, slice(off[a], off[a + 1]), slice(off[b], off[b + 1]))
                if max(np.abs(H[sl]).max(), np.abs(S[sl]).max()) > drop_tol:
                    ii.append(a), jj.append(b), cc.append(c)
    blocks = lambda M: [M[c, off[a] : off[a + 1], off[b] : off[b + 1]] for a, b, c in zip(ii, jj, cc)]  # noqa: E731
    npa = layout.norb_per_atom
    Hm = RealSpaceMatrix.from_blocks(npa, ii, jj, T[cc].reshape(-1, 3), blocks(H))
    Sm = RealSpaceMatrix.from_blocks(npa, ii, jj, T[cc].reshape(-1, 3), blocks(S))
    info = {"source": "acehamiltonians", "file": str(path), "group": name, "name": name, "hartree_to_ev": CONVENTION.hartree_to_ev}
    if "Data/DoS" in g and "Info/k-points" in g:
        kw = np.asarray(g["Info/k-points"][()], float)
        info["dos"] = {
            "energies": g["Data/DoS/energies"][()].tolist(),
            "values": g["Data/DoS/values"][()].tolist(),
            "broadening": float(g["Data/DoS/broadening"][()]),
            "kpts": kw[:, :3].tolist(),
            "weights": kw[:, 3].tolist(),
        }
    data = g["Data"]
    scalars = {key: _typed(g, f"Data/{key}", path, name, "f", shape)
               for key, shape in (("fermi_level", ()), ("total_energy", ()), ("forces", (len(numbers), 3))) if key in data}
    for key, value in scalars.items():
        if not np.isfinite(value).all():
            raise UserError(f"{where}/Data/{key}: not finite")
    sd = StructureData(
        atoms=atoms,
        basis=basis,
        H=(Hm,),
        S=Sm,
        fermi_level=float(scalars["fermi_level"]) if "fermi_level" in scalars else None,
        energy=float(scalars["total_energy"]) if "total_energy" in scalars else None,
        forces=scalars.get("forces"),
        info=info,
    )
    from ..structure.validate import validate_structure

    validate_structure(sd, f"{path}:/{name}")
    return sd

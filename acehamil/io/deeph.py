"""DeepH dataset folders (one folder per structure), read and written.

Layout (DeepH-pack's preprocessed format, as its ABACUS/OpenMX/SIESTA interfaces write it)::

    lat.dat              3 x 3, lattice vectors as COLUMNS, Å
    site_positions.dat   3 x natoms, Cartesian positions as columns, Å
    element.dat          atomic numbers, one per line
    orbital_types.dat    one line per atom: the l of each shell, e.g. "0  0  1  1  2"
    info.json            {"nsites", "isorthogonal", "isspinful", "norbits", "fermi_level" (eV)}
    hamiltonians.h5      one dataset per block, key "[Rx, Ry, Rz, i, j]" (1-based atoms), (norb_i, norb_j), eV
    overlaps.h5          the same keys, dimensionless

Block ``"[R, i, j]"`` is ``<phi_i(0)|O|phi_j(R)>``: our block ``(i-1, j-1, T=R)``.  Within a
shell DeepH orders orbitals as OpenMX does: p (x, y, z), d (z^2, x^2-y^2, xy, xz, yz),
f (m = 0, +1, -1, +2, -2, +3, -3), with no sign changes relative to the standard real
harmonics (:func:`acehamil.conventions.orbital_table` ``("deeph", l)``).

acehamil adds, in ``info.json``, ``"acehamil"``: {"shells": {Z: [[n, l, label], ...]}, "pbc",
"name", "n_electrons", "energy"} so that a written folder reads back bit for bit; a foreign DeepH
folder without it gets shells numbered ``n = l + 1, l + 2, ...`` per l and full periodicity.
Spinful (``isspinful``) data are refused: acehamil's H is real and spin-free per channel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..conventions import orbital_table
from ..errors import UserError
from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData

__all__ = ["write_deeph", "read_deeph", "is_deeph_folder", "deeph_folders"]

FILES = ("lat.dat", "site_positions.dat", "element.dat", "orbital_types.dat", "info.json", "overlaps.h5")
_KEY = re.compile(r"^\[\s*(-?\d+),\s*(-?\d+),\s*(-?\d+),\s*(\d+),\s*(\d+)\s*\]$")


def is_deeph_folder(path) -> bool:
    """True when ``path`` is a folder with DeepH's structure files and ``overlaps.h5``."""
    p = Path(path)
    return p.is_dir() and all((p / f).is_file() for f in ("element.dat", "orbital_types.dat", "lat.dat", "overlaps.h5"))


def deeph_folders(path) -> list:
    """``[path]`` for a DeepH folder, else its DeepH subfolders sorted by name (a DeepH dataset)."""
    p = Path(path)
    if is_deeph_folder(p):
        return [p]
    if not p.is_dir():
        return []
    subs = [q for q in p.iterdir() if is_deeph_folder(q)]
    return sorted(subs, key=lambda q: (len(q.name), q.name))


def _permutation(basis: OrbitalBasis, numbers) -> tuple:
    """Per atom: DeepH index of each of our orbitals and the sign (all +1 for DeepH)."""
    out = []
    for z in numbers:
        perm, sign, off = [], [], 0
        for s in basis.shells_of(int(z)):
            p, g = orbital_table("deeph", s.l)
            perm.extend((off + p).tolist())
            sign.extend(g.tolist())
            off += s.size
        out.append((np.array(perm, np.int64), np.array(sign)))
    return out


def _blocks_to_deeph(m: RealSpaceMatrix, maps) -> dict:
    out = {}
    for p in range(m.nblocks):
        i, j, t = int(m.i[p]), int(m.j[p]), m.shift[p]
        (pi, si), (pj, sj) = maps[i], maps[j]
        ours = m.block(p)
        code = np.empty_like(ours)
        code[np.ix_(pi, pj)] = ours * si[:, None] * sj[None, :]  # ours[a, b] = s s' code[perm[a], perm[b]]
        out[f"[{int(t[0])}, {int(t[1])}, {int(t[2])}, {i + 1}, {j + 1}]"] = code
    return out


def write_deeph(folder, sd: StructureData) -> Path:
    """Write one structure as a DeepH folder (created; refused when it already holds DeepH files).

    Raises
    ------
    ValueError
        Two spin channels (DeepH has no collinear-spin layout), no S, or l > 3.
    FileExistsError
        ``folder`` already holds DeepH files.
    """
    import h5py

    from .safe_write import atomic_path

    folder = Path(folder)
    if sd.nspin > 1:
        raise ValueError("DeepH folders hold one spin-free H: a spin-polarised structure (two H) cannot be exported")
    if sd.S is None:
        raise ValueError("DeepH folders need the overlap S (overlaps.h5); this structure has none")
    if folder.exists() and any((folder / f).exists() for f in (*FILES, "hamiltonians.h5")):
        raise FileExistsError(f"{folder} already holds DeepH files; choose an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    at = sd.atoms
    numbers = [int(z) for z in at.numbers]
    maps = _permutation(sd.basis, numbers)
    np.savetxt(folder / "lat.dat", np.asarray(at.cell.array).T, fmt="%.17g")
    np.savetxt(folder / "site_positions.dat", np.asarray(at.positions).T.reshape(3, -1), fmt="%.17g")
    np.savetxt(folder / "element.dat", np.array(numbers, dtype=np.int64), fmt="%d")
    (folder / "orbital_types.dat").write_text(
        "".join("  ".join(str(s.l) for s in sd.basis.shells_of(z)) + "\n" for z in numbers))
    info = {
        "nsites": len(at), "isorthogonal": False, "isspinful": False, "norbits": int(sd.layout.norb),
        "fermi_level": None if sd.fermi_level is None else float(sd.fermi_level),
        "acehamil": {
            "shells": {str(z): [[s.n, s.l, s.label] for s in shells] for z, shells in sd.basis.shells},
            "pbc": [bool(x) for x in at.pbc], "name": str(sd.info.get("name", "")),
            "n_electrons": sd.n_electrons, "energy": sd.energy,
        },
    }
    (folder / "info.json").write_text(json.dumps(info, indent=1))
    for name, m in (("hamiltonians.h5", sd.H[0] if sd.H else None), ("overlaps.h5", sd.S)):
        if m is None:
            continue
        with atomic_path(folder / name) as tmp, h5py.File(tmp, "w") as f:
            for key, block in _blocks_to_deeph(m, maps).items():
                f.create_dataset(key, data=block)
    return folder


def _read_blocks(path, norb, maps, where) -> RealSpaceMatrix:
    import h5py

    i_, j_, t_, blocks, seen = [], [], [], [], {}
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise UserError(f"{where} is not a readable HDF5 file (truncated or foreign?): {err}") from None
    with f:
        for key in f:
            m = _KEY.match(key)
            if not m:
                raise ValueError(f"{where}: dataset {key!r} is not a DeepH block key '[Rx, Ry, Rz, i, j]'")
            r1, r2, r3, i, j = (int(x) for x in m.groups())
            if (r1, r2, r3, i, j) in seen:  # '[0, 0, 0, 1, 1]' and '[0,0,0,1,1]': one block read twice
                raise ValueError(f"{where}: block {key!r} appears twice (also as {seen[(r1, r2, r3, i, j)]!r})")
            seen[(r1, r2, r3, i, j)] = key
            i, j = i - 1, j - 1
            if not (0 <= i < len(norb) and 0 <= j < len(norb)):
                raise ValueError(f"{where}: block {key} names an atom outside 1..{len(norb)}")
            code = np.asarray(f[key][()])
            if np.iscomplexobj(code):
                raise ValueError(f"{where}: block {key} is complex (spinful DeepH data are not supported)")
            if code.shape != (norb[i], norb[j]):
                raise ValueError(f"{where}: block {key} has shape {code.shape}, orbital_types.dat gives "
                                 f"({norb[i]}, {norb[j]})")
            if not np.isfinite(code).all():
                raise ValueError(f"{where}: block {key} contains NaN or inf")
            (pi, si), (pj, sj) = maps[i], maps[j]
            blocks.append(code[np.ix_(pi, pj)] * si[:, None] * sj[None, :])
            i_.append(i)
            j_.append(j)
            t_.append((r1, r2, r3))
    if not blocks:  # read as a matrix of zeros: flat bands at 0 eV, no error
        raise ValueError(f"{where}: no blocks (an empty or foreign file)")
    t = np.array(t_, np.int64).reshape(-1, 3)
    order = np.lexsort((t[:, 2], t[:, 1], t[:, 0], np.array(j_, np.int64), np.array(i_, np.int64))) if len(t) else []
    return RealSpaceMatrix.from_blocks(norb, np.array(i_)[order], np.array(j_)[order], t[order], [blocks[q] for q in order])


def _numbers(path, ndmin: int) -> np.ndarray:
    """``np.loadtxt`` of a DeepH text file, a malformed or cut-off one named in a UserError."""
    from .text_files import check_not_cut

    try:
        check_not_cut(path)  # np.savetxt ends every line with a newline; a number cut mid-digits still parses
    except ValueError as err:
        raise UserError(f"{err}; if the file is complete, end it with a newline") from None
    try:
        if not Path(path).read_text().split():  # numpy warned "input contained no data" beside a shape message
            raise UserError(f"{path} holds no numbers (an empty file)")
        return np.loadtxt(path, ndmin=ndmin)
    except (ValueError, UnicodeDecodeError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"{path}: unreadable numbers ({str(err).splitlines()[0] if str(err) else err!r})") from None


def read_deeph(folder) -> StructureData:
    """Read one DeepH folder into acehamil conventions (eV, Å, our orbital order).

    Raises
    ------
    FileNotFoundError
        A required file is missing (named).
    ValueError
        Spinful data, inconsistent files (atom counts, block shapes, keys), atoms of one
        species with different shells.
    """
    from ase import Atoms

    folder = Path(folder)
    for f in FILES:
        if not (folder / f).is_file():
            raise FileNotFoundError(f"DeepH folder {folder} lacks {f}")
    try:
        info = json.loads((folder / "info.json").read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{folder / 'info.json'}: not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise UserError(f"{folder / 'info.json'}: expected a JSON object, got {type(info).__name__}")
    for key in ("isspinful", "isorthogonal"):
        if key in info and info[key] not in (True, False):  # a string "false" was read as spinful
            raise UserError(f"{folder / 'info.json'}: {key} must be true or false, got {info[key]!r}")
    if info.get("isspinful"):
        raise ValueError(f"{folder}: spinful DeepH data (isspinful=true) are not supported")
    cell = _numbers(folder / "lat.dat", 2).T
    pos = _numbers(folder / "site_positions.dat", 2)
    numbers = _numbers(folder / "element.dat", 1)
    if not (np.all(numbers == np.round(numbers)) and np.all((numbers >= 1) & (numbers <= 118))):
        raise UserError(f"{folder / 'element.dat'}: atomic numbers must be integers 1..118, got {numbers.tolist()}")
    numbers = numbers.astype(np.int64)
    pos = pos.T if pos.shape[0] == 3 and pos.shape[1] == len(numbers) else pos
    if cell.shape != (3, 3) or pos.shape != (len(numbers), 3):
        raise ValueError(f"{folder}: lat.dat {cell.shape} / site_positions.dat {pos.shape} do not match "
                         f"{len(numbers)} atoms")
    try:
        ls = [[int(x) for x in line.split()] for line in (folder / "orbital_types.dat").read_text().splitlines()
              if line.strip()]
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{folder / 'orbital_types.dat'}: expected integer l values, one line per atom ({err})") from None
    if any(l < 0 or l > 3 for lz in ls for l in lz):
        raise UserError(f"{folder / 'orbital_types.dat'}: l must be 0..3 (s, p, d, f), got {sorted({l for lz in ls for l in lz})}")
    if len(ls) != len(numbers):
        raise ValueError(f"{folder}: orbital_types.dat has {len(ls)} lines for {len(numbers)} atoms")
    extra = info.get("acehamil") or {}
    if extra.get("shells"):
        spec = {int(z): [Shell(l=int(l), n=int(n), label=str(lab)) for n, l, lab in v] for z, v in extra["shells"].items()}
    else:
        spec = {}
        for z, lz in zip(numbers, ls):
            count = {}
            shells = []
            for l in lz:
                count[l] = count.get(l, 0) + 1
                shells.append(Shell(l=l, n=l + count[l]))
            spec.setdefault(int(z), shells)
    for z, lz in zip(numbers, ls):
        if int(z) not in spec:
            raise UserError(f"{folder / 'info.json'}: acehamil shells name no shells for Z={int(z)}")
        if [s.l for s in spec[int(z)]] != lz:
            raise ValueError(f"{folder}: atoms of Z={int(z)} carry different shells in orbital_types.dat")
    basis = OrbitalBasis.from_dict(spec)
    norb = basis.layout(numbers).norb_per_atom
    maps = _permutation(basis, numbers)
    pbc = extra.get("pbc", True)
    if not (isinstance(pbc, bool) or (isinstance(pbc, list) and len(pbc) == 3 and all(isinstance(x, bool) for x in pbc))):
        raise UserError(f"{folder / 'info.json'}: acehamil pbc must be true/false or 3 of them, got {pbc!r}")
    for key, val in (("fermi_level", info.get("fermi_level")), ("energy", extra.get("energy")),
                     ("n_electrons", extra.get("n_electrons"))):
        if val is not None and (isinstance(val, bool) or not isinstance(val, (int, float)) or not np.isfinite(val)
                                or (key == "n_electrons" and val < 0)):
            raise UserError(f"{folder / 'info.json'}: {key} must be a finite number{' >= 0' if key == 'n_electrons' else ''}"
                            f" or null, got {val!r}")
    atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=pbc)
    H = ()
    if (folder / "hamiltonians.h5").is_file():
        H = (_read_blocks(folder / "hamiltonians.h5", norb, maps, f"{folder}/hamiltonians.h5"),)
    S = _read_blocks(folder / "overlaps.h5", norb, maps, f"{folder}/overlaps.h5")
    ef = info.get("fermi_level")
    sd = StructureData(
        atoms=atoms, basis=basis, H=H, S=S,
        fermi_level=None if ef is None else float(ef),
        energy=extra.get("energy"), n_electrons=extra.get("n_electrons"),
        info={"source": "deeph", "folder": str(folder), "name": extra.get("name") or folder.name},
    )
    _check_counts(info, sd, folder / "info.json")
    return sd


#: A stored Fermi level may lie this far (eV) outside the band edges that the electron count allows on the coarse
#: k-grid of :func:`_check_counts` (the grid's band minima and maxima are not the bands' own).
FERMI_TOL_EV = 1.0
#: Structures above this many orbitals skip the Fermi-level check (eigenvalues on up to 8 k-points).
FERMI_CHECK_MAX_ORBITALS = 2000


def _check_counts(info: dict, sd: StructureData, where) -> None:
    """UserError when ``info.json`` contradicts the other files: ``nsites`` (atoms of ``element.dat``), ``norbits``
    (orbitals of ``orbital_types.dat``), ``isorthogonal`` true with an overlap that is not the identity, or a
    ``fermi_level`` that the electron count (acehamil's ``n_electrons``) puts outside the bands: at zero
    temperature E_F lies above the lowest level of band ceil(N/2) and below the highest of band floor(N/2) + 1
    (checked on Gamma and the zone boundary, 2 points per periodic axis, within :data:`FERMI_TOL_EV`).  Each was
    read without a word (a Fermi level in Hartree put the evaluation window eV away from the bands)."""
    norb = int(sd.layout.norb)
    for key, have, what in (("nsites", len(sd.atoms), "atoms in element.dat"), ("norbits", norb,
                                                                                "orbitals by orbital_types.dat")):
        got = info.get(key)
        if got is None:
            continue
        if isinstance(got, bool) or not isinstance(got, (int, float)) or got != have:
            raise UserError(f"{where}: {key} is {got!r}, but there are {have} {what} (files of different structures?)")
    if info.get("isorthogonal"):
        S, err = sd.S, 0.0
        for p in range(S.nblocks):
            b = S.block(p)
            err = max(err, float(np.abs(b - (np.eye(len(b)) if S.i[p] == S.j[p] and not S.shift[p].any() else 0)).max()))
        if err > 1e-6:
            raise UserError(f"{where}: isorthogonal is true, but overlaps.h5 is not the identity (it differs by {err:.3g}):"
                            " an overlap of another structure, or isorthogonal set wrongly")
    n_el, ef = sd.n_electrons, sd.fermi_level
    if n_el is None or ef is None or not sd.H or norb > FERMI_CHECK_MAX_ORBITALS or not 0 < n_el < 2 * norb:
        return
    from ..tb.bands import eigenvalues
    from ..tb.overlap import overlap_check_kpts

    try:
        eps = eigenvalues(sd, overlap_check_kpts(sd.atoms, max(norb, 301)))[0]
    except ValueError:  # an S that is not positive definite: refused where it is used, not here
        return
    top, bottom = int(np.ceil(n_el / 2)), int(np.floor(n_el / 2)) + 1
    lo = float(eps[:, top - 1].min()) if top >= 1 else -np.inf
    hi = float(eps[:, bottom - 1].max()) if bottom <= eps.shape[1] else np.inf
    if not lo - FERMI_TOL_EV <= ef <= hi + FERMI_TOL_EV:
        raise UserError(f"{where}: fermi_level {ef:g} eV is outside the levels {n_el:g} electrons can reach (band {top} "
                        f"starts at {lo:.3f} eV, band {bottom} ends at {hi:.3f} eV in hamiltonians.h5): a Fermi level in "
                        f"another unit (Hartree?), of another run, or a wrong n_electrons")

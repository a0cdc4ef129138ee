"""Reader for FHI-aims ``output_rs_matrices`` (plain text and HDF5), periodic and cluster.

Files used (all in one output folder):

``geometry.in``
    atoms, lattice (ASE reader).
``basis-indices.out``
    one line per basis function: ``fn type atom n l m``; consecutive functions of one atom with
    equal ``(type, n, l)`` and ``m = -l..l`` form a shell.  Radial functions of one ``l`` are *not*
    ordered by ``n``: shells keep FHI-aims' order.
``rs_indices.out``
    sparse layout: ``n_hamiltonian_matrix_size``, ``n_cells_in_hamiltonian`` (one dummy trailing cell
    included), ``n_basis``, the cell indices, ``index_hamiltonian(1|2, cell, row)`` (first/last entry of
    each row, 1-based; empty rows have first > last) and ``column_index_hamiltonian``.
``rs_hamiltonian.out|.h5``, ``rs_overlap.out|.h5``
    the values, Hartree for H.  Only columns ``a <= row b`` are stored; the rest follows from
    ``O_ba(-R) = O_ab(R)``.
``aims.out``
    the Hartree->eV factor FHI-aims used and the last chemical potential (eV).

Convention facts (verified on real files, see ``docs/conventions.md``): entry (cell ``R``, row
``b``, column ``a``) is ``<phi_a(r - tau_a)|O|phi_b(r - tau_b - R @ L)>`` with ``tau`` the positions
wrapped to fractional coordinates in (-0.5, 0.5]; orbitals of a shell run ``m = -l..l`` and
odd positive ``m`` carry a sign flip relative to our real harmonics
(:func:`acehamil.conventions.orbital_table`).  We keep the positions of ``geometry.in`` and move
the wrapping into the cell shift: ``T = R + W_b - W_a`` with ``tau = pos + W @ L``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conventions import CODE_CONVENTIONS, orbital_permutation, to_our_orbitals
from ..errors import UserError
from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData

REQUIRED = ("geometry.in", "basis-indices.out", "rs_indices.out")
#: Units, orbital order and signs of FHI-aims files.
AIMS = CODE_CONVENTIONS["fhi-aims"]


#: What writes each file the reader needs (named when one is missing).
PRODUCED_BY = {
    "geometry.in": "the run's input geometry: copy it from the folder FHI-aims ran in",
    "basis-indices.out": "written by FHI-aims when control.in has 'output_rs_matrices plain' (or HDF5)",
    "rs_indices.out": "written by FHI-aims when control.in has 'output_rs_matrices plain' (or HDF5)",
    "rs_hamiltonian": "written by FHI-aims when control.in has 'output_rs_matrices plain' (.out) or "
                      "'output_rs_matrices HDF5' (.h5)",
    "rs_overlap": "written by FHI-aims when control.in has 'output_rs_matrices plain' (.out) or "
                  "'output_rs_matrices HDF5' (.h5)",
}
#: Files that mark a folder as (part of) an FHI-aims run.
_AIMS_MARKERS = ("control.in", "geometry.in", "aims.out", "basis-indices.out", "rs_indices.out", "rs_hamiltonian.out",
                 "rs_hamiltonian.h5", "rs_overlap.out", "rs_overlap.h5")


def _missing_message(folder: Path, names) -> str:
    """'FHI-aims folder F lacks A (what writes it); B (...)'."""
    return f"FHI-aims folder {folder} lacks " + "; ".join(
        f"{n} ({PRODUCED_BY.get(n) or PRODUCED_BY[n.split('.')[0]]})" for n in names)


def incomplete_folder(folder) -> str | None:
    """For a folder that holds some files of an FHI-aims run but not all those the reader needs, the message
    naming each missing file and what writes it; None for a complete folder or one with no FHI-aims file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "control.in").write_text("xc pbe")
    >>> print(incomplete_folder(d).split(" lacks ")[1].split(";")[0])
    geometry.in (the run's input geometry: copy it from the folder FHI-aims ran in)
    """
    folder = Path(folder)
    if not folder.is_dir() or not any((folder / m).is_file() for m in _AIMS_MARKERS):
        return None
    missing = [n for n in REQUIRED if not (folder / n).is_file()]
    for stem in ("rs_hamiltonian", "rs_overlap"):
        if not ((folder / f"{stem}.out").is_file() or (folder / f"{stem}.h5").is_file()):
            missing.append(f"{stem}.out or .h5")
    return _missing_message(folder, missing) if missing else None


def _need(folder: Path, name: str) -> Path:
    p = folder / name
    if not p.is_file():
        raise FileNotFoundError(_missing_message(folder, [name]))
    return p


# ----------------------------------------------------------------------------- basis
@dataclass(frozen=True)
class AimsBasisMap:
    """How FHI-aims' basis functions map to acehamil's orbital order.

    Attributes
    ----------
    basis : OrbitalBasis
        Shells per species in FHI-aims' order (labels ``"<type> n l"``).
    perm : ndarray of int, shape (norb,)
        FHI-aims function index (0-based) of each of our orbitals.
    sign : ndarray of float, shape (norb,)
        Our orbital = ``sign * aims function[perm]``.
    fn_atom : ndarray of int, shape (norb,)
        Atom (0-based) of each FHI-aims function, in FHI-aims order.
    """

    basis: OrbitalBasis
    perm: np.ndarray
    sign: np.ndarray
    fn_atom: np.ndarray

    def to_acehamil(self, dense: np.ndarray) -> np.ndarray:
        """Reorder a dense (..., norb, norb) matrix from FHI-aims' order to ours."""
        return to_our_orbitals(dense, self.perm, self.sign)


def read_basis_indices(path, numbers) -> AimsBasisMap:
    """Parse ``basis-indices.out`` into shells and the FHI-aims -> acehamil orbital map.

    Parameters
    ----------
    path : str or Path
    numbers : sequence of int, shape (natoms,)
        Atomic numbers (from ``geometry.in``), to name species and check consistency.

    Raises
    ------
    ValueError
        Malformed lines, incomplete shells, or two atoms of one species with different shells.
    """
    rows = []
    for line in Path(path).read_text().splitlines():
        tok = line.split()
        if len(tok) == 6 and tok[0].isdigit():
            rows.append((int(tok[0]) - 1, tok[1], int(tok[2]) - 1, int(tok[3]), int(tok[4]), int(tok[5])))
    if not rows:
        raise ValueError(f"{path}: no basis functions found")
    numbers = [int(z) for z in numbers]
    natoms = len(numbers)
    fn_atom = np.array([r[2] for r in rows])
    if fn_atom.min() < 0 or fn_atom.max() >= natoms:
        raise ValueError(f"{path}: basis functions on atom {fn_atom.max() + 1}, but geometry.in has {natoms} atoms (basis mismatch)")
    # group into shells, per atom, in file order
    shells_of_atom = [[] for _ in range(natoms)]  # list of (Shell, [fn indices])
    k = 0
    while k < len(rows):
        fn, typ, at, n, l, m = rows[k]
        if m != -l:
            raise ValueError(f"{path}: function {fn + 1} (l={l}, m={m}) does not start a shell at m=-l")
        block = rows[k : k + 2 * l + 1]
        if len(block) < 2 * l + 1 or any((b[1], b[2], b[3], b[4], b[5]) != (typ, at, n, l, -l + q) for q, b in enumerate(block)):
            raise ValueError(f"{path}: incomplete shell at function {fn + 1} (atom {at + 1}, {typ} n={n} l={l})")
        shells_of_atom[at].append((Shell(l=l, n=n, label=f"{typ} {n} {'spdfghi'[l]}"), [b[0] for b in block]))
        k += 2 * l + 1
    species_shells = {}
    for at, z in enumerate(numbers):
        sh = tuple(s for s, _ in shells_of_atom[at])
        if not sh:
            raise ValueError(f"{path}: atom {at + 1} (Z={z}) has no basis functions")
        if species_shells.setdefault(z, sh) != sh:
            raise ValueError(f"{path}: atoms of species Z={z} carry different shells (basis mismatch)")
    basis = OrbitalBasis.from_dict(species_shells)
    perm, sign = orbital_permutation(AIMS.orbital_table, [(shell.l, fns) for at in range(natoms) for shell, fns in shells_of_atom[at]])
    return AimsBasisMap(basis, perm, sign, fn_atom)


# ----------------------------------------------------------------------------- sparse layout
@dataclass(frozen=True)
class RsIndices:
    """Contents of ``rs_indices.out``.

    Attributes
    ----------
    cells : ndarray of int, shape (ncells, 3)
        Cell indices ``R`` (the dummy trailing cell dropped; one zero cell for a cluster).
    row_start, row_end : ndarray of int, shape (ncells, n_basis)
        0-based first index and one-past-last index into the value array of each row.
    columns : ndarray of int, shape (size,)
        0-based column of each stored value.
    """

    cells: np.ndarray
    row_start: np.ndarray
    row_end: np.ndarray
    columns: np.ndarray

    @property
    def size(self) -> int:
        return len(self.columns)


def read_rs_indices(path) -> RsIndices:
    """Parse ``rs_indices.out`` by tokens (cluster files hold garbage in the dummy cell's rows)."""
    text = Path(path).read_text()

    def header(key):
        m = re.search(rf"{key}:\s*(\d+)", text)
        if not m:
            raise ValueError(f"{path}: missing '{key}' (not an FHI-aims rs_indices.out?)")
        return int(m.group(1))

    size, ncells, nbasis = header("n_hamiltonian_matrix_size"), header("n_cells_in_hamiltonian"), header("n_basis")
    heads = []
    for name, pat in (
        ("cell", r"cell_index[^\n]*\n"),
        ("i1", r"index_hamiltonian\(1,:,:\)[^\n]*\n"),
        ("i2", r"index_hamiltonian\(2,:,:\)[^\n]*\n"),
        ("col", r"column_index_hamiltonian[^\n]*\n"),
    ):
        m = re.search(pat, text)
        if not m:
            raise ValueError(f"{path}: missing section {name!r} (truncated or foreign file?)")
        heads.append((name, m.start(), m.end()))
    body = {name: text[end : (heads[k + 1][1] if k + 1 < len(heads) else len(text))] for k, (name, _, end) in enumerate(heads)}

    def tokens(name):
        return body[name].split()

    def ints(tok, name):
        try:
            return np.array(tok, dtype=np.int64)
        except ValueError:  # numpy's "invalid literal for int() with base 10: 'x'" named no file
            bad = next(x for x in tok if not x.lstrip("+-").isdigit())
            raise ValueError(f"{path}: {name} holds {bad[:20]!r}, not an integer (a damaged file?)") from None

    cell_tok = tokens("cell")
    periodic = len(cell_tok) >= 3 * ncells
    if periodic:
        cells = ints(cell_tok[: 3 * ncells], "cell_index").reshape(ncells, 3)[: ncells - 1]
    else:
        cells = np.zeros((max(ncells - 1, 1), 3), np.int64)
    nreal = len(cells)

    def index_rows(name):
        tok = tokens(name)
        if len(tok) < ncells * nbasis:
            raise ValueError(f"{path}: index_hamiltonian has {len(tok)} values, expected {ncells}x{nbasis} (truncated file?)")
        return ints(tok[: nreal * nbasis], "index_hamiltonian").reshape(nreal, nbasis)

    i1, i2 = index_rows("i1"), index_rows("i2")
    col_tok = tokens("col")
    if len(col_tok) < size:
        raise ValueError(f"{path}: column_index_hamiltonian has {len(col_tok)} values, expected {size} (truncated file?)")
    columns = ints(col_tok[:size], "column_index_hamiltonian") - 1
    start = i1 - 1
    end = np.where(i2 >= i1, i2, i1 - 1)  # empty rows: FHI-aims writes 0 / -1
    end = np.maximum(end, start)
    used = columns[: int(end.max(initial=0))]  # the value array ends in one padding entry
    if end.max(initial=0) > size or (used < 0).any() or (used >= nbasis).any():
        raise ValueError(f"{path}: sparse indices out of range (corrupt file?)")
    return RsIndices(cells, start, end, columns)


def _read_values(folder: Path, stem: str, size: int, prefer_hdf5: bool | None) -> np.ndarray:
    """Values of ``rs_<stem>`` as (nspin, size) float64, from .h5 or .out."""
    h5, txt = folder / f"rs_{stem}.h5", folder / f"rs_{stem}.out"
    use_h5 = h5.is_file() if prefer_hdf5 is None else prefer_hdf5
    if use_h5:
        if not h5.is_file():
            raise FileNotFoundError(_missing_message(folder, [f"rs_{stem}.h5"]))
        import h5py

        try:
            with h5py.File(h5, "r") as f:
                if "sparse_matrix" not in f:
                    raise ValueError(f"{h5}: no 'sparse_matrix' dataset (not an FHI-aims rs file?)")
                vals = np.asarray(f["sparse_matrix"][()], np.float64)
        except OSError as err:
            raise ValueError(f"{h5} is not a readable HDF5 file (truncated?): {err}") from None
        vals = vals.reshape(-1, size) if vals.shape[-1] == size else vals.reshape(size, -1).T
    else:
        if not txt.is_file():
            raise FileNotFoundError(_missing_message(folder, [f"rs_{stem}.out or .h5"]))
        from .text_files import check_not_cut

        check_not_cut(txt, "value")  # FHI-aims ends every value with a newline
        lines = [ln.split() for ln in txt.read_text().splitlines() if ln.strip()]
        ncol = len(lines[0]) if lines else 1
        try:
            vals = np.array(lines, dtype=np.float64)
        except ValueError:
            raise ValueError(f"{txt}: unreadable values (truncated or corrupt file?)") from None
        if ncol > 1:
            vals = vals.T
        elif vals.size == size:
            vals = vals.reshape(1, size)
        elif vals.size == 2 * size and _spin_polarised(folder):
            vals = vals.reshape(2, size)
        else:
            raise ValueError(f"{txt}: {vals.size} values, but rs_indices.out says {size} per spin channel and the run is "
                             f"{'spin-polarised' if _spin_polarised(folder) else 'not spin-polarised'} (a truncated, "
                             f"concatenated or foreign file?)")
    if vals.shape[-1] != size:
        raise ValueError(f"rs_{stem}: {vals.shape[-1]} values but rs_indices.out says {size} (files from different runs?)")
    if not np.isfinite(vals).all():  # was "real-space matrix contains NaN or inf", naming no file
        bad = int(np.flatnonzero(~np.isfinite(vals).all(axis=0))[0])
        raise ValueError(f"{h5 if use_h5 else txt}: value {bad + 1} of {size} is {vals[:, bad].tolist()}, not a finite "
                         "number (a damaged file?)")
    return vals


def _check_species_blocks(folder: Path) -> None:
    """UserError when ``geometry.in`` names a species that ``control.in`` (if present, with ``species``
    blocks) does not define: FHI-aims refuses such a run, so the files come from different runs and
    basis-indices.out describes another element's basis (a Si geometry with C's basis was read as Si)."""
    control = folder / "control.in"
    if not control.is_file():
        return
    labels = {ln.split()[1] for ln in control.read_text(errors="replace").splitlines()
              if len(ln.split()) > 1 and ln.split()[0].lower() == "species"}
    if not labels:
        return
    used = {ln.split("#", 1)[0].split()[-1] for ln in (folder / "geometry.in").read_text(errors="replace").splitlines()
            if ln.split() and ln.split()[0].lower() in ("atom", "atom_frac")}
    missing = sorted(used - labels)
    if missing:
        raise UserError(f"{folder}: geometry.in has species {missing} but control.in defines only {sorted(labels)} "
                        f"(FHI-aims would not run this: geometry.in and the outputs come from different runs?)")


def _spin_polarised(folder: Path) -> bool:
    """True when control.in (or aims.out's echo of it) asks for ``spin collinear``."""
    import re

    for name in ("control.in", "aims.out"):
        f = folder / name
        if f.is_file():
            text = f.read_text(errors="replace")
            return re.search(r"^\s*spin\s+collinear", text, flags=re.MULTILINE) is not None
    return False


# ----------------------------------------------------------------------------- aims.out
def read_aims_out(path) -> dict:
    """Hartree factor, chemical potential (eV), total energy (eV), electron count from ``aims.out``.

    Missing quantities are ``None`` (the Hartree factor defaults to FHI-aims' 27.2113845).
    """
    text = Path(path).read_text(errors="replace")
    out = {"hartree": AIMS.hartree_to_ev, "chemical_potential": None, "energy": None, "n_electrons": None}
    m = re.findall(r"value of 1 Hartree used in FHI-aims is\s*:\s*([-+.\dEe]+)", text)
    if m:
        out["hartree"] = float(m[-1])
    m = re.findall(r"\|\s*Chemical Potential\s*:\s*([-+.\dEe]+)\s*eV", text)
    if m:
        out["chemical_potential"] = float(m[-1])
    m = re.findall(r"\|\s*Total energy of the DFT / Hartree-Fock s.c.f. calculation\s*:\s*([-+.\dEe]+)\s*eV", text)
    if m:
        out["energy"] = float(m[-1])
    m = re.findall(r"\|\s*Total number of electrons\s*:?\s*([-+.\dEe]+)", text) or re.findall(
        r"Formal number of electrons \(from input files\)\s*:\s*([-+.\dEe]+)", text
    )
    if m:
        out["n_electrons"] = float(m[-1])
    m = re.findall(r"\|\s*Number of spin channels\s*:\s*(\d+)", text)
    if m:
        out["n_spin"] = int(m[-1])
    return out


# ----------------------------------------------------------------------------- main reader
def _wrap_offsets(frac: np.ndarray) -> np.ndarray:
    """Integer W with ``frac + W`` in (-0.5, 0.5] (FHI-aims' internal positions), shape (natoms, 3)."""
    return np.floor(0.5 - frac).astype(np.int64)


def _assemble(idx: RsIndices, vals: np.ndarray, bmap: AimsBasisMap, wrap: np.ndarray, natoms: int, factor: float) -> RealSpaceMatrix:
    """Sparse FHI-aims values (size,) -> RealSpaceMatrix in our conventions."""
    nbasis = idx.row_start.shape[1]
    counts = idx.row_end - idx.row_start  # (ncells, nbasis)
    cell_of = np.repeat(np.arange(len(idx.cells)), counts.sum(axis=1))
    row_of = np.repeat(np.tile(np.arange(nbasis), len(idx.cells)), counts.ravel())
    pos = np.concatenate([np.arange(s, e) for s, e in zip(idx.row_start.ravel(), idx.row_end.ravel())]) if counts.sum() else np.zeros(0, np.int64)
    b, a, R = row_of, idx.columns[pos], idx.cells[cell_of]
    v = vals[pos] * factor
    # value = <phi_a(0)|O|phi_b(R)> (tau gauge); add the mirrored lower triangle O_ba(-R) = O_ab(R)
    off = (a != b) | np.any(R != 0, axis=1)
    rows = np.concatenate([a, b[off]])
    cols = np.concatenate([b, a[off]])
    Rall = np.concatenate([R, -R[off]])
    vall = np.concatenate([v, v[off]])
    # to our orbital order and signs
    inv = np.empty_like(bmap.perm)
    inv[bmap.perm] = np.arange(len(bmap.perm))
    ours_r, ours_c = inv[rows], inv[cols]
    vall = vall * bmap.sign[ours_r] * bmap.sign[ours_c]
    at_r, at_c = bmap.fn_atom[rows], bmap.fn_atom[cols]
    T = Rall + wrap[at_c] - wrap[at_r]
    norb = np.bincount(bmap.fn_atom, minlength=natoms).astype(np.int64)
    offs = np.concatenate([[0], np.cumsum(norb)])
    # group entries into blocks (i, j, T)
    key = np.stack([at_r, at_c, T[:, 0], T[:, 1], T[:, 2]], axis=1)
    ukeys, which = np.unique(key, axis=0, return_inverse=True)
    which = which.reshape(-1)
    sizes = norb[ukeys[:, 0]] * norb[ukeys[:, 1]]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    data = np.zeros(int(starts[-1]))
    local_r = ours_r - offs[at_r]
    local_c = ours_c - offs[at_c]
    flat = starts[which] + local_r * norb[ukeys[which, 1]] + local_c
    data[flat] = vall
    return RealSpaceMatrix(norb, ukeys[:, 0], ukeys[:, 1], ukeys[:, 2:], data)


def read_fhi_aims(folder, prefer_hdf5: bool | None = None) -> StructureData:
    """Read an FHI-aims ``output_rs_matrices`` folder into acehamil conventions.

    Parameters
    ----------
    folder : str or Path
        Holds ``geometry.in``, ``basis-indices.out``, ``rs_indices.out``, ``rs_hamiltonian.(out|h5)``,
        ``rs_overlap.(out|h5)`` and optionally ``aims.out`` (Hartree factor, chemical potential, energy).
    prefer_hdf5 : bool or None
        Read the ``.h5`` value files (True), the ``.out`` files (False), or whichever exists,
        HDF5 first (None).

    Returns
    -------
    StructureData
        H (eV) per spin channel, S, ``fermi_level`` = FHI-aims' last chemical potential (eV),
        ``energy`` (eV), ``info`` with the source and Hartree factor; ``reference_bands`` = FHI-aims'
        own band energies (``band1NNN.out``, absolute eV) or cluster levels (``eigenvalues.out``)
        when present, with the path labels, ``k_grid`` and charge of ``control.in`` in ``info``
        (:func:`acehamil.io.fhi_aims_bands.band_extras`).

    Raises
    ------
    FileNotFoundError
        A required file is missing (named in the message).
    ValueError
        Inconsistent or corrupt files (basis mismatch, truncated indices, ...).
    """
    from ase.io import read

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such FHI-aims output folder: {folder}")
    for name in REQUIRED:
        _need(folder, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ASE's note about its aims plugin
        try:
            atoms = read(folder / "geometry.in", format="aims")
        except Exception as err:  # noqa: BLE001 - ASE's parser raises anything on a malformed file
            msg = str(err).splitlines()[0] if str(err) else ""
            if isinstance(err, KeyError):
                msg = f"unknown chemical species {msg}"
            raise UserError(f"{folder / 'geometry.in'}: not a readable FHI-aims geometry ({type(err).__name__}: "
                            f"{msg}; a malformed 'atom'/'lattice_vector' line, an unknown species or not "
                            f"exactly 0 or 3 lattice vectors?)") from None
    natoms = len(atoms)
    from ..structure.validate import check_atoms

    check_atoms(atoms, str(folder / "geometry.in"))
    bmap = read_basis_indices(folder / "basis-indices.out", atoms.numbers)
    idx = read_rs_indices(folder / "rs_indices.out")
    if idx.row_start.shape[1] != len(bmap.perm):
        raise ValueError(
            f"{folder}: rs_indices.out has n_basis={idx.row_start.shape[1]} but basis-indices.out lists {len(bmap.perm)} functions (basis mismatch)"
        )
    aims = read_aims_out(folder / "aims.out") if (folder / "aims.out").is_file() else read_aims_out_defaults()
    periodic = bool(np.any(atoms.pbc))
    if periodic:
        frac = np.linalg.solve(atoms.cell.array.T, atoms.positions.T).T
        wrap = _wrap_offsets(frac)
    else:
        wrap = np.zeros((natoms, 3), np.int64)
    _check_species_blocks(folder)
    hv = _read_values(folder, "hamiltonian", idx.size, prefer_hdf5)
    if len(hv) == 1 and _spin_polarised(folder):  # one spin's H read as both: silently wrong bands
        raise UserError(f"{folder}: control.in asks 'spin collinear' but rs_hamiltonian holds one spin channel "
                        f"(FHI-aims writes both): a file from another (spin-restricted) run, or cut after the first?")
    from .fhi_aims_checks import check_control_against_aims_out, check_geometry_against_aims_out

    check_control_against_aims_out(folder, atoms.numbers, aims)
    check_geometry_against_aims_out(folder)
    sv = _read_values(folder, "overlap", idx.size, prefer_hdf5)
    H = tuple(_assemble(idx, h, bmap, wrap, natoms, aims["hartree"]) for h in hv)
    S = _assemble(idx, sv[0], bmap, wrap, natoms, 1.0)
    _check_overlap_file(H, S, folder, aims["hartree"])
    from ..structure.validate import validate_structure
    from .fhi_aims_bands import band_extras

    extras = band_extras(folder, aims["chemical_potential"], periodic)
    sd = StructureData(
        atoms=atoms,
        basis=bmap.basis,
        H=H,
        S=S,
        fermi_level=aims["chemical_potential"],
        energy=aims["energy"],
        n_electrons=aims["n_electrons"],
        reference_bands=extras.get("reference_bands"),
        info={"source": "fhi-aims", "folder": str(folder), "hartree_to_ev": aims["hartree"], "name": folder.name,
              **extras.get("info", {})},
    )
    validate_structure(sd, str(folder))
    return sd


#: FHI-aims' basis functions are normalised: the on-site diagonal of S is 1 to ~1e-3 (measured on the
#: shared bilayer-graphene and water-dimer outputs); a diagonal further than this from 1 is not an overlap.
OVERLAP_DIAGONAL_TOL = 0.05


def _onsite_diagonal(M: RealSpaceMatrix) -> np.ndarray:
    """The diagonal entries of the on-site blocks ``(i, i, 0)`` of ``M``, concatenated."""
    out = []
    for p in np.nonzero((M.i == M.j) & ~M.shift.any(axis=1))[0]:
        b = M.data[M.offsets[p]:M.offsets[p + 1]]
        m = int(round(np.sqrt(b.size)))
        out.append(np.diag(b.reshape(m, m)))
    return np.concatenate(out) if out else np.zeros(0)


def _check_overlap_file(H: tuple, S: RealSpaceMatrix, folder: Path, hartree: float) -> None:
    """UserError unless ``S`` looks like the overlap of normalised orbitals (on-site diagonal 1 within
    :data:`OVERLAP_DIAGONAL_TOL`) and H is not the overlap again: a swapped or copied
    ``rs_hamiltonian``/``rs_overlap`` pair was read as a valid structure with meaningless bands."""
    d = _onsite_diagonal(S)
    if len(d) and np.all(np.isfinite(d)) and np.abs(d - 1.0).max() > OVERLAP_DIAGONAL_TOL:
        hd = _onsite_diagonal(H[0]) / hartree
        swapped = len(hd) == len(d) and np.abs(hd - 1.0).max() <= OVERLAP_DIAGONAL_TOL
        raise UserError(f"{folder}: rs_overlap does not hold an overlap matrix: the on-site diagonal of S runs "
                        f"{d.min():.4g}..{d.max():.4g}, not 1 as for FHI-aims' normalised basis functions"
                        + ("; rs_hamiltonian and rs_overlap look swapped (H's diagonal is 1 in Hartree)" if swapped else
                           " (a foreign or damaged file?)"))
    for s, h in enumerate(H):
        if h.same_pattern(S) and np.allclose(h.data, hartree * S.data, rtol=1e-9, atol=0.0):
            raise UserError(f"{folder}: rs_hamiltonian{'' if len(H) == 1 else f' (spin {s})'} holds the overlap matrix "
                            "again (H = S in Hartree): a copied rs_overlap file?")


def read_aims_out_defaults() -> dict:
    """What :func:`read_aims_out` gives without an ``aims.out``."""
    return {"hartree": AIMS.hartree_to_ev, "chemical_potential": None, "energy": None, "n_electrons": None}

"""sisl ``Hamiltonian`` objects and SIESTA ``.TSHS`` files (optional extra: ``pip install -e ".[sisl]"``).

sisl (and SIESTA, whose TSHS it writes for TBtrans transport) orders a shell's orbitals
``m = -l..l`` and multiplies every ``m`` by ``(-1)^m`` relative to the standard real harmonics
(sisl's documentation; :func:`acehamil.conventions.orbital_table` ``("siesta", l)``).  Eigenvalues
and transmissions do not depend on these signs; orbital projections by ``m`` do.

A sisl Hamiltonian stores ``H[io, jo + isc * no]`` = ``<io(0)|H|jo(T)>`` with ``isc =
lattice.sc_index(T)``: the same block convention as ours, so cell shifts carry over unchanged.
Units: eV and Å in sisl; a TSHS file holds Ry and Bohr, converted by sisl.
"""

from __future__ import annotations

import numpy as np

from ..conventions import orbital_table
from ..structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData

__all__ = ["to_sisl", "from_sisl", "write_tshs", "read_tshs", "require_sisl"]


def require_sisl():
    """Import sisl or explain how to install it."""
    try:
        import sisl
    except ImportError:
        raise ImportError('sisl export needs the optional dependency sisl: pip install -e ".[sisl]" '
                          "(or pip install sisl)") from None
    return sisl


def _signs(basis: OrbitalBasis, numbers) -> np.ndarray:
    """sisl orbital = sign * our orbital, per orbital of the structure (siesta table, identity order)."""
    out = []
    for z in numbers:
        for s in basis.shells_of(int(z)):
            perm, sign = orbital_table("siesta", s.l)
            if not np.array_equal(perm, np.arange(2 * s.l + 1)):
                raise ValueError("sisl orbital table with a permutation is not supported")
            out.extend(sign.tolist())
    return np.array(out)


def _reach(sd: StructureData) -> float:
    """Largest bond length of the structure's blocks (Å), for the orbitals' range R."""
    m = sd.S if sd.S is not None else sd.H[0]
    if m.nblocks == 0:
        return 1.0
    pos, cell = sd.atoms.positions, np.asarray(sd.atoms.cell.array)
    d = pos[m.j] - pos[m.i] + m.shift @ cell
    return float(np.linalg.norm(d, axis=1).max())


def to_sisl(sd: StructureData):
    """A ``sisl.Hamiltonian`` (non-orthogonal unless S is None; spin-polarised for two H).

    Raises
    ------
    ImportError
        sisl is not installed.
    """
    sisl = require_sisl()
    import scipy.sparse as sp

    at = sd.atoms
    numbers = [int(z) for z in at.numbers]
    reach = max(_reach(sd) / 2 + 1e-3, 0.5)
    species = {}
    for z in sorted(set(numbers)):
        orbs = [sisl.AtomicOrbital(n=s.n, l=s.l, m=m, R=reach) for s in sd.basis.shells_of(z) for m in range(-s.l, s.l + 1)]
        species[z] = sisl.Atom(z, orbitals=orbs)
    mats = [*sd.H] + ([sd.S] if sd.S is not None else [])
    shifts = np.concatenate([m.shift for m in mats]) if mats else np.zeros((0, 3), np.int64)
    nsc = [2 * int(np.abs(shifts[:, a]).max(initial=0)) + 1 for a in range(3)]
    lattice = sisl.Lattice(np.asarray(at.cell.array), nsc=nsc)
    geom = sisl.Geometry(np.asarray(at.positions), atoms=[species[z] for z in numbers], lattice=lattice)
    no = geom.no
    sign = _signs(sd.basis, numbers)

    def csr(m: RealSpaceMatrix):
        rows, cols, vals, bidx = m.coo()
        ushift, inv = np.unique(m.shift, axis=0, return_inverse=True)
        isc_u = np.array([lattice.sc_index(t) for t in ushift], dtype=np.int64).reshape(-1)
        isc = isc_u[np.asarray(inv).reshape(-1)][bidx]
        return sp.csr_matrix((vals * sign[rows] * sign[cols], (rows, cols + isc * no)), shape=(no, no * lattice.n_s))

    P = [csr(h) for h in sd.H]
    kw = {} if len(P) == 1 else {"spin": sisl.Spin("polarized")}
    if sd.S is None:
        return sisl.Hamiltonian.fromsp(geom, P, **kw)
    return sisl.Hamiltonian.fromsp(geom, P, S=csr(sd.S), **kw)


def from_sisl(H, numbers_basis: OrbitalBasis | None = None, info=None, numbers=None) -> StructureData:
    """StructureData from a ``sisl.Hamiltonian`` (inverse of :func:`to_sisl`).

    Shells are rebuilt from the atoms' orbitals (consecutive orbitals with equal ``(n, l)`` and
    ``m = -l..l``); pass ``numbers_basis`` to use a known basis instead, and ``numbers`` (natoms,)
    when the source does not carry atomic numbers (a TSHS file).
    """
    from ase import Atoms

    geom = H.geometry
    numbers = np.array([a.Z for a in geom.atoms] if numbers is None else numbers, dtype=np.int64)
    if len(numbers) != geom.na:
        raise ValueError(f"{len(numbers)} atomic numbers for {geom.na} atoms")
    if numbers_basis is None:
        spec = {}
        for a in geom.atoms:
            shells, orbs, k = [], list(a.orbitals), 0
            while k < len(orbs):
                o = orbs[k]
                l = int(o.l)
                shells.append(Shell(l=l, n=int(o.n)))
                k += 2 * l + 1
            spec.setdefault(int(a.Z), shells)
        basis = OrbitalBasis.from_dict(spec)
    else:
        basis = numbers_basis
    atoms = Atoms(numbers=numbers, positions=geom.xyz, cell=geom.lattice.cell, pbc=True)
    norb = basis.layout(numbers).norb_per_atom
    sign = _signs(basis, numbers)
    no = geom.no
    offs = np.concatenate([[0], np.cumsum(norb)])
    atom_of = np.repeat(np.arange(len(numbers)), norb)
    sc_off = np.asarray(geom.lattice.sc_off, dtype=np.int64)

    def blocks(csr) -> RealSpaceMatrix:
        c = csr.tocoo()
        rows, cols, vals = c.row, c.col % no, c.data * sign[c.row] * sign[c.col % no]
        T = sc_off[c.col // no]
        ai, aj = atom_of[rows], atom_of[cols]
        key = np.stack([ai, aj, T[:, 0], T[:, 1], T[:, 2]], axis=1)
        ukeys, which = np.unique(key, axis=0, return_inverse=True)
        which = np.asarray(which).reshape(-1)
        sizes = norb[ukeys[:, 0]] * norb[ukeys[:, 1]]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        data = np.zeros(int(starts[-1]))
        data[starts[which] + (rows - offs[ai]) * norb[ukeys[which, 1]] + (cols - offs[aj])] = vals
        return RealSpaceMatrix(norb, ukeys[:, 0], ukeys[:, 1], ukeys[:, 2:], data)

    nspin = 2 if H.spin.is_polarized else 1
    Hs = tuple(blocks(H.tocsr(s)) for s in range(nspin))
    S = None if H.orthogonal else blocks(H.tocsr(H.S_idx))
    return StructureData(atoms=atoms, basis=basis, H=Hs, S=S, info=dict(info or {"source": "sisl"}))


def write_tshs(path, sd: StructureData) -> None:
    """Write a SIESTA ``.TSHS`` file (via sisl) for TBtrans and other SIESTA tools."""
    sisl = require_sisl()
    from pathlib import Path

    from .safe_write import atomic_path

    path = Path(path)
    if path.suffix.upper() != ".TSHS":
        raise ValueError(f"a TSHS file name must end in .TSHS, got {path.name!r}")
    H = to_sisl(sd)
    with atomic_path(path) as tmp:
        tmp = Path(tmp)
        real = tmp.with_name(tmp.name + ".TSHS")  # sisl picks the format from the suffix
        H.write(sisl.get_sile(str(real), "w"))
        real.replace(tmp)


def read_tshs(path, basis: OrbitalBasis | None = None, numbers=None) -> StructureData:
    """Read a ``.TSHS`` file (via sisl) into acehamil conventions.

    A TSHS file stores orbitals per atom but not reliably the species: give ``numbers``
    (atomic numbers, shape (natoms,)) and ``basis`` to restore them.
    """
    sisl = require_sisl()
    H = sisl.get_sile(str(path)).read_hamiltonian()
    return from_sisl(H, basis, info={"source": "siesta-tshs", "file": str(path)}, numbers=numbers)

"""Shared structures of the potential tests (tests/test_potential*.py): a rattled, slightly strained Si cell,
a random cluster, the three cases every potential model is checked on (:func:`case`), and configurations
labelled by a known potential (:func:`labelled`)."""

from __future__ import annotations

from ase import Atoms
from ase.build import bulk

from acehamil.models.potential.data import Config
from acehamil.models.potential.repulsion import RepulsionSpec


def rattled_si(rng, n=1, amp=0.15, numbers=None) -> Atoms:
    """The 8-atom diamond Si cell (``n`` > 1: repeated ``n x n x n``), positions rattled by ``amp`` Å and the
    cell by 0.05 Å (normal draws of ``rng``); ``numbers`` replaces the atomic numbers."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    if n > 1:
        atoms = atoms.repeat((n, n, n))
    atoms.positions += amp * rng.normal(size=atoms.positions.shape)
    atoms.cell = atoms.cell.array + 0.05 * rng.normal(size=(3, 3))
    if numbers is not None:
        atoms.numbers = numbers
    return atoms


def cluster(rng, natoms=7, numbers=None) -> Atoms:
    """``natoms`` atoms (Si unless ``numbers``) at normal positions of spread 1.6 Å, no cell."""
    pos = rng.normal(size=(natoms, 3)) * 1.6
    return Atoms(numbers=numbers if numbers is not None else [14] * natoms, positions=pos)


def case(kind: str, rng, potential) -> tuple:
    """``(model, atoms)`` of one case: ``"binary"`` (C/Si cell, pair repulsion), ``"cluster"`` (Si cluster,
    repulsion) or else ``"bulk"`` (Si cell); ``potential(rng, species=..., repulsion=...)`` makes the model,
    drawn from ``rng`` before the atoms."""
    if kind == "binary":
        pot = potential(rng, species=(6, 14), repulsion=RepulsionSpec((((6, 14), 2.0), ((14, 14), 2.2)), 5.0))
        return pot, rattled_si(rng, numbers=[6, 14] * 4)
    if kind == "cluster":
        pot = potential(rng, repulsion=RepulsionSpec((((14, 14), 2.0),), 5.0))
        return pot, cluster(rng)
    return potential(rng), rattled_si(rng)


def labelled(pot, rng, n, kind, stress=False) -> list:
    """``n`` configurations of type ``kind`` labelled by ``pot`` (energy, forces; ``stress`` too): rattled Si
    cells (0.12 Å), for ``kind == "strain"`` also scaled by ``1 + 0.04 x`` (``x`` a normal draw)."""
    out = []
    for _ in range(n):
        atoms = rattled_si(rng, amp=0.12)
        if kind == "strain":
            atoms.set_cell(atoms.cell.array * (1 + 0.04 * rng.normal()), scale_atoms=True)
        r = pot.compute(atoms)
        out.append(Config(atoms, r["energy"], r["forces"], r["stress"] if stress else None, kind))
    return out

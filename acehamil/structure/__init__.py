"""Structures: orbital basis definitions, orbital layouts, block-sparse real-space matrices, neighbour pairs."""

from .blocks import RealSpaceMatrix
from .orbitals import OrbitalBasis, OrbitalLayout, Shell
from .record import StructureData

__all__ = ["OrbitalBasis", "OrbitalLayout", "RealSpaceMatrix", "Shell", "StructureData"]

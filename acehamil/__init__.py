"""acehamil: equivariant Atomic Cluster Expansion models of electronic-structure
Hamiltonians, overlaps and site energies.

Importing the package has no side effects; heavy submodules load on use.
"""

from ._version import __version__
from .structure import OrbitalBasis, RealSpaceMatrix, Shell, StructureData

__all__ = ["__version__", "OrbitalBasis", "RealSpaceMatrix", "Shell", "StructureData"]

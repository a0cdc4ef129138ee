"""The O(3)-equivariant ACE basis engine (see docs/basis.md and docs/design.md)."""

from .ace import ACEBasis, Centres
from .product import FeatureInfo
from .spec import BOND, BasisSpec, RadialSpec

__all__ = ["ACEBasis", "BOND", "BasisSpec", "Centres", "FeatureInfo", "RadialSpec"]

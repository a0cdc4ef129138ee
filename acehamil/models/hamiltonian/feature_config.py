"""Features of one block family (on-site or off-site, H or S): :class:`FeatureConfig`, the tables
``[h_onsite]``, ``[h_offsite]``, ``[s_onsite]``, ``[s_offsite]`` of a model's TOML file
(:mod:`acehamil.models.hamiltonian.config`), and their defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Most radial functions a [h_onsite]/[h_offsite]/... table may ask (typical models use 6-20).
MAX_N_MAX = 100


@dataclass(frozen=True)
class FeatureConfig:
    """Features of one block family (on-site or off-site, H or S).

    Attributes
    ----------
    r_cut : float
        Å. On-site: environment cutoff.  Off-site: longest bond modelled.
    r_env : float
        Å. Off-site only: transverse semi-axis of the bond ellipsoid (0 = bond only).
    max_nu : int
        Correlation order; 0 = constant only (on-site), 1 = two-centre (off-site).
    max_degree : tuple of int
        Total degree per correlation order ``nu = 1..max_nu``.
    n_max : int
        Radial functions per channel.
    weight_l : float
        Degree of a one-particle function is ``n + weight_l * l``.
    env_bond_cut : float
        Å. Off-site only: environment weights fade with the bond length as
        ``(1 - (|r|/env_bond_cut)^2)^2``, bonds longer than this are two-centre
        (cheaper for long cutoffs); 0 = no fading.
    bond_decay : float
        Å. Off-site only: the radial functions of the bond particle are multiplied by
        ``exp(-|r| / bond_decay)`` (:class:`acehamil.basis.RadialSpec` ``decays``), so a
        block that falls off exponentially with the bond length is a slowly varying
        polynomial times the decay, fitted to similar relative accuracy at every length;
        0 = none.
    origin_smoothing : float
        Å. Environment atoms closer than this to the centre (off-site: the bond midpoint) enter with
        their harmonics damped as ``(r/r0)^l`` near 0 (:attr:`acehamil.basis.BasisSpec.origin_smoothing`),
        so an atom passing through the midpoint of a bond changes the features smoothly; 0 = off.
    """

    r_cut: float = 5.0
    r_env: float = 0.0
    max_nu: int = 2
    max_degree: tuple = (8, 6)
    n_max: int = 6
    weight_l: float = 1.0
    env_bond_cut: float = 0.0
    bond_decay: float = 0.0
    origin_smoothing: float = 0.0

    def __post_init__(self):
        if not all(math.isfinite(float(d)) for d in self.max_degree):  # NaN: "cannot convert float NaN to integer"
            raise ValueError(f"max_degree entries must be finite numbers, got {list(self.max_degree)}")
        object.__setattr__(self, "max_degree", tuple(int(d) if float(d).is_integer() else float(d) for d in self.max_degree))
        if not (0 < self.r_cut < float("inf")):
            raise ValueError(f"r_cut must be a finite number > 0 Å, got {self.r_cut}")
        if not (0 <= self.r_env < float("inf")):  # NaN passed and fitted an environment-free model
            raise ValueError(f"r_env must be finite and >= 0 Å, got {self.r_env}")
        if int(self.max_nu) != self.max_nu or self.max_nu < 0:
            raise ValueError(f"max_nu must be a non-negative integer, got {self.max_nu}")
        if self.max_nu > 0 and len(self.max_degree) < self.max_nu:
            raise ValueError(f"max_degree needs one entry per nu = 1..{self.max_nu}, got {list(self.max_degree)}")
        if not (0 <= self.env_bond_cut < float("inf")):
            raise ValueError(f"env_bond_cut must be finite and >= 0 Å, got {self.env_bond_cut}")
        if not (self.bond_decay >= 0 and self.bond_decay < float("inf")):
            raise ValueError(f"bond_decay must be finite and >= 0 Å, got {self.bond_decay}")
        if not (self.origin_smoothing >= 0 and self.origin_smoothing < float("inf")):
            raise ValueError(f"origin_smoothing must be finite and >= 0 Å, got {self.origin_smoothing}")
        if int(self.n_max) != self.n_max or self.n_max < 1:
            raise ValueError(f"n_max must be a positive integer, got {self.n_max}")
        if self.n_max > MAX_N_MAX:
            raise ValueError(f"n_max = {self.n_max} radial functions is more than {MAX_N_MAX} (models use ~6-20; the radial "
                             f"basis' quadrature alone grows as n_max^2: 74.5 GiB at n_max = 100000)")

    @property
    def bond_environment(self) -> bool:
        """Off-site: whether atoms near the bond enter (``max_nu > 1`` and ``r_env > 0``); else the bond alone."""
        return self.max_nu > 1 and self.r_env > 0

    def degrees_used(self, offsite: bool) -> int:
        """How many leading ``max_degree`` entries the family's basis uses (the rest are ignored).

        On-site: ``max_nu``.  Off-site: ``max_nu`` with a :attr:`bond_environment`, else 1 (the bond particle).

        Examples
        --------
        >>> FeatureConfig(max_nu=1, max_degree=(8, 6)).degrees_used(offsite=False)
        1
        >>> FeatureConfig(r_env=0.0, max_nu=2, max_degree=(8, 6)).degrees_used(offsite=True)
        1
        """
        if offsite:
            return self.max_nu if self.bond_environment else 1
        return self.max_nu


def _default_h_onsite():
    return FeatureConfig(r_cut=5.0, max_nu=2, max_degree=(8, 6), n_max=6)


def _default_h_offsite():
    return FeatureConfig(r_cut=6.0, r_env=2.5, max_nu=2, max_degree=(10, 6), n_max=8)


def _default_s_onsite():
    return FeatureConfig(r_cut=5.0, max_nu=0, max_degree=(), n_max=1)


def _default_s_offsite():
    return FeatureConfig(r_cut=6.0, r_env=0.0, max_nu=1, max_degree=(14,), n_max=14)

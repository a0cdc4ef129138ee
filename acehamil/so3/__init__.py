"""Rotations: real Wigner-D matrices and real Clebsch-Gordan coupling coefficients."""

from .clebsch_gordan import cg_complex, cg_real, complex_to_real
from .wigner import random_rotation, real_sph_harm, wigner_d_real

__all__ = ["cg_complex", "cg_real", "complex_to_real", "random_rotation", "real_sph_harm", "wigner_d_real"]

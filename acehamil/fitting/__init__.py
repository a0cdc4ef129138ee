"""Linear fitting: batched normal equations, ridge with smoothness priors,
Bayesian linear regression with evidence maximisation (numpy/scipy only)."""

from .normal_equations import NormalEquations
from .solvers import (
    BLRPosterior,
    RidgeResult,
    bayesian_linear_regression,
    blr_normal,
    ridge,
    ridge_normal,
    ridge_posterior,
    ridge_path,
    smoothness_prior,
)

__all__ = [
    "NormalEquations",
    "BLRPosterior",
    "RidgeResult",
    "bayesian_linear_regression",
    "blr_normal",
    "ridge",
    "ridge_normal",
    "ridge_posterior",
    "ridge_path",
    "smoothness_prior",
]

"""radial: orthonormality, smooth envelope (value and slope vanish at the cutoff),
per-particle cutoffs, gradients by central differences."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.basis.radial import RadialBasis
from acehamil.basis.spec import RadialSpec


@pytest.mark.parametrize("n_max, power", [(1, 2), (6, 2), (12, 3)])
def test_orthonormal(n_max, power):
    rb = RadialBasis(RadialSpec(n_max=n_max, r_cut=3.0, envelope_power=power))
    x, w = np.polynomial.legendre.leggauss(60)
    r = 1.5 * (x + 1)  # r in [0, 3], u = r / 3, du = dr / 3
    R = rb.evaluate(r, np.full(len(r), 3.0))
    gram = (R * (w * 0.5)[:, None]).T @ R
    np.testing.assert_allclose(gram, np.eye(n_max), atol=1e-10)


@pytest.mark.parametrize("r_cut", [2.5, 5.0])
def test_value_and_slope_vanish_at_cutoff(r_cut):
    rb = RadialBasis(RadialSpec(n_max=8, r_cut=r_cut))
    eps = np.array([1e-3, 1e-4, 1e-5])
    R, dR = rb.evaluate(r_cut - eps, np.full(3, r_cut), gradients=True)
    # value ~ eps^2, slope ~ eps
    assert np.all(np.abs(R).max(axis=1) < 1e4 * eps**2)
    assert np.all(np.abs(dR).max(axis=1) < 1e4 * eps)
    R, dR = rb.evaluate(np.array([r_cut, r_cut + 1.0]), np.full(2, r_cut), gradients=True)
    assert np.all(R == 0) and np.all(dR == 0)


def test_per_particle_cutoff_is_a_rescaling():
    rb = RadialBasis(RadialSpec(n_max=5, r_cut=4.0))
    r = np.linspace(0.1, 3.9, 7)
    a = rb.evaluate(r, np.full(7, 4.0))
    b = rb.evaluate(r / 2, np.full(7, 2.0))
    np.testing.assert_allclose(a, b, atol=1e-13)


def test_gradients_central_differences(rng):
    rb = RadialBasis(RadialSpec(n_max=10, r_cut=5.0))
    r = rng.uniform(0.3, 4.9, size=20)
    rc = np.full(20, 5.0)
    _, dR = rb.evaluate(r, rc, gradients=True)
    errs = [np.abs((rb.evaluate(r + h, rc) - rb.evaluate(r - h, rc)) / (2 * h) - dR).max() for h in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)]
    assert errs[2] < errs[0] / 50 and min(errs) < 1e-6, errs

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


def test_decay_multiplies_by_exponential_and_zero_means_none(rng):
    rb = RadialBasis(RadialSpec(n_max=6, r_cut=8.0))
    r = rng.uniform(0.5, 7.9, size=9)
    rc = np.full(9, 8.0)
    lengths = np.where(np.arange(9) % 3 == 0, 0.0, rng.uniform(0.5, 3.0, size=9))
    plain = rb.evaluate(r, rc)
    decayed = rb.evaluate(r, rc, decay=lengths)
    factor = np.where(lengths > 0, np.exp(-r / np.where(lengths > 0, lengths, 1.0)), 1.0)
    np.testing.assert_allclose(decayed, plain * factor[:, None], rtol=1e-13, atol=0)
    np.testing.assert_array_equal(rb.evaluate(r, rc, decay=np.zeros(9)), plain)
    with pytest.raises(ValueError, match="shape"):
        rb.evaluate(r, rc, decay=np.ones(3))
    with pytest.raises(ValueError, match="decay"):
        rb.evaluate(r, rc, decay=-np.ones(9))


def test_decay_gradients_central_differences(rng):
    rb = RadialBasis(RadialSpec(n_max=8, r_cut=6.0))
    r = rng.uniform(0.3, 5.9, size=15)
    rc = np.full(15, 6.0)
    lengths = rng.uniform(0.4, 2.0, size=15)
    R, dR = rb.evaluate(r, rc, gradients=True, decay=lengths)
    np.testing.assert_allclose(R, rb.evaluate(r, rc, decay=lengths), rtol=1e-13, atol=1e-15)
    errs = [np.abs((rb.evaluate(r + h, rc, decay=lengths) - rb.evaluate(r - h, rc, decay=lengths)) / (2 * h) - dR).max()
            for h in (1e-2, 1e-3, 1e-4)]
    assert errs[1] < errs[0] / 50 and errs[2] < errs[1] / 50, errs


def test_spec_decays_round_trip_and_validation():
    spec = RadialSpec(n_max=4, r_cut=6.0, decays=((14, -1, 1.5), (6, -1, 1.0)))
    assert spec.decays == ((6, -1, 1.0), (14, -1, 1.5))
    assert RadialSpec.from_dict(spec.to_dict()) == spec
    assert "decays" not in RadialSpec(n_max=4, r_cut=6.0).to_dict()  # files written before load and compare unchanged
    np.testing.assert_array_equal(spec.decay_lengths(np.array([14, 14, 6]), np.array([-1, 14, -1])), [1.5, 0.0, 1.0])
    assert RadialSpec(n_max=4, r_cut=6.0).decay_lengths([14], [-1]) is None
    for bad in (((14, -1, 0.0),), ((14, -1, float("inf")),), ((14, -1),), ((14, -1, 1.0), (14, -1, 2.0))):
        with pytest.raises(ValueError):
            RadialSpec(n_max=4, r_cut=6.0, decays=bad)

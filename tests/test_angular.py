"""angular: sphericart real harmonics against scipy, rotation property, gradients by FD."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import sph_harm_y

from acehamil.basis.angular import AngularBasis
from acehamil.so3 import random_rotation, wigner_d_real

L_MAX = 6


def scipy_real(l, m, theta, phi):
    """Standard real harmonics from scipy's complex ones (Condon-Shortley removed)."""
    if m == 0:
        return sph_harm_y(l, 0, theta, phi).real
    y = sph_harm_y(l, abs(m), theta, phi)
    if m > 0:
        return np.sqrt(2) * (-1) ** m * y.real
    return np.sqrt(2) * (-1) ** m * y.imag


def test_against_scipy(rng):
    v = rng.normal(size=(50, 3)) * rng.uniform(0.5, 3, size=(50, 1))
    Y = AngularBasis(L_MAX).evaluate(v)
    r = np.linalg.norm(v, axis=1)
    theta, phi = np.arccos(v[:, 2] / r), np.arctan2(v[:, 1], v[:, 0])
    for l in range(L_MAX + 1):
        for m in range(-l, l + 1):
            np.testing.assert_allclose(Y[:, l * l + l + m], scipy_real(l, m, theta, phi), atol=1e-12, err_msg=f"l={l} m={m}")


def test_p_is_y_z_x(rng):
    v = rng.normal(size=(5, 3))
    Y = AngularBasis(1).evaluate(v)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(Y[:, 1:4], np.sqrt(3 / (4 * np.pi)) * u[:, [1, 2, 0]], atol=1e-14)


@pytest.mark.parametrize("improper", [False, True])
def test_rotation(improper, rng):
    Q = random_rotation(rng, improper=improper)
    v = rng.normal(size=(10, 3))
    ang = AngularBasis(L_MAX)
    Y, YQ = ang.evaluate(v), ang.evaluate(v @ Q.T)
    for l in range(L_MAX + 1):
        s = slice(l * l, (l + 1) ** 2)
        np.testing.assert_allclose(YQ[:, s], Y[:, s] @ wigner_d_real(l, Q).T, atol=1e-12)


def test_gradients_central_differences(rng):
    ang = AngularBasis(L_MAX)
    v = rng.normal(size=(6, 3))
    _, dY = ang.evaluate(v, gradients=True)
    errs = []
    for h in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        e = 0.0
        for x in range(3):
            d = np.zeros(3)
            d[x] = h
            num = (ang.evaluate(v + d) - ang.evaluate(v - d)) / (2 * h)
            e = max(e, np.abs(num - dY[:, :, x]).max())
        errs.append(e)
    assert errs[2] < errs[0] / 50 and min(errs) < 1e-7, errs


def test_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        AngularBasis(2).evaluate(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        AngularBasis(-1)


def test_threads_share_one_angular_basis(rng):
    """Several threads evaluating one AngularBasis at once get the serial values bit for bit
    (the fit, calibration and prediction run structures on threads over one model; a shared
    sphericart calculator returned wrong l >= 7 harmonics under concurrent calls)."""
    from concurrent.futures import ThreadPoolExecutor

    ang = AngularBasis(8)
    vecs = [rng.normal(size=(int(n), 3)) for n in rng.integers(500, 3000, 24)]
    ref = [ang.evaluate(v) for v in vecs]
    ref_g = [ang.evaluate(v, gradients=True)[1] for v in vecs]

    def one(k):
        y = ang.evaluate(vecs[k])
        dy = ang.evaluate(vecs[k], gradients=True)[1]
        return np.array_equal(y, ref[k]) and np.array_equal(dy, ref_g[k])

    with ThreadPoolExecutor(4) as pool:
        same = list(pool.map(one, list(range(len(vecs))) * 8))
    assert all(same), f"{same.count(False)} of {len(same)} concurrent evaluations differ from the serial ones"


def test_angular_basis_pickles():
    import pickle

    ang = AngularBasis(3)
    v = np.array([[0.3, -1.0, 2.0]])
    assert np.array_equal(pickle.loads(pickle.dumps(ang)).evaluate(v), ang.evaluate(v))

"""ACE basis: analytic gradients (full Jacobian and the contracted reverse mode) against
central differences whose error falls with the step."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.basis import BOND, ACEBasis, BasisSpec, Centres, RadialSpec
from acehamil.testing import assert_fd_converges, fd_errors, random_centres

SPECS = {
    "site": BasisSpec(
        categories=(1, 14), radial=RadialSpec(n_max=3, r_cut=4.0, cutoffs=((14, 1, 3.0),)), max_nu=3, max_degree=(4, 4, 3), L_max=4
    ),
    "nu4": BasisSpec(categories=(14,), radial=RadialSpec(n_max=2, r_cut=4.0), max_nu=4, max_degree=3, L_max=2),
    "bond": BasisSpec(
        categories=(BOND, 14), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=3, max_degree=(4, 4, 3), L_max=4,
        singleton_categories=(BOND,),
    ),
    "bond_origin": BasisSpec(  # BasisSpec.origin_smoothing: the factor's gradient on particles within 2 Å of the centre
        categories=(BOND, 14), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=3, max_degree=(4, 4, 3), L_max=4,
        singleton_categories=(BOND,), origin_smoothing=2.0,
    ),
}


def make_centres(rng, spec, n_centres=2, per_centre=5, weights=False):
    return random_centres(rng, spec, n_centres=n_centres, per_centre=per_centre, weights=weights)


def particle_fd_errors(f, analytic, centres, particles):
    """Central-difference errors per step of ``f`` (of the particle vectors) against
    ``analytic[p][..., x]``, which only moves the row of particle ``p``'s centre."""
    c = centres

    def of(vec):
        return f(Centres(c.centre_species, c.particle_centre, vec, c.particle_category, c.particle_weight))

    shape = np.shape(of(c.particle_vec))
    directions, expected = [], []
    for p in particles:
        for x in range(3):
            u = np.zeros_like(c.particle_vec)
            u[p, x] = 1.0
            directions.append(u)
            e = np.zeros(shape)
            e[c.particle_centre[p]] = analytic[p][..., x]
            expected.append(e)
    return fd_errors(of, np.array(expected), c.particle_vec, directions)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("weights", [False, True])
def test_full_gradients_by_central_differences(name, weights, rng):
    basis = ACEBasis(SPECS[name])
    centres = make_centres(rng, basis.spec, weights=weights)
    vals, grads = basis.evaluate(centres, gradients=True)
    particles = rng.choice(centres.n_particles, size=3, replace=False)
    for key in basis.feature_keys:
        assert grads[key].shape == (centres.n_particles,) + vals[key].shape[1:] + (3,)
    flat = lambda c: np.concatenate([v.reshape(len(v), -1) for v in basis.evaluate(c).values()], axis=1)  # noqa: E731
    ana = np.concatenate([g.reshape(len(g), -1, 3) for g in grads.values()], axis=1)
    errs = particle_fd_errors(flat, ana, centres, particles)
    assert_fd_converges(errs, max(1.0, np.abs(ana).max()))


@pytest.mark.parametrize("name", ["site", "bond"])
@pytest.mark.parametrize("key", [(0, 1), (2, 1), (1, -1)])
def test_evaluate_linear_matches_full_path(name, key, rng):
    basis = ACEBasis(SPECS[name])
    centres = make_centres(rng, basis.spec, n_centres=3)
    nB = basis.n_features[key]
    coeffs = {14: rng.normal(size=nB)}
    E, g = basis.evaluate_linear(centres, coeffs, key=key)
    vals, grads = basis.evaluate(centres, gradients=True)
    E_ref = np.einsum("f,cfM->cM", coeffs[14], vals[key])
    g_ref = np.einsum("f,pfMx->pMx", coeffs[14], grads[key])
    if key[0] == 0:
        E_ref, g_ref = E_ref[:, 0], g_ref[:, 0]
    np.testing.assert_allclose(E, E_ref, atol=1e-12 * np.abs(E_ref).max())
    np.testing.assert_allclose(g, g_ref, atol=1e-12 * np.abs(g_ref).max())


def test_evaluate_linear_by_central_differences(rng):
    basis = ACEBasis(SPECS["site"])
    centres = make_centres(rng, basis.spec, n_centres=2)
    coeffs = {14: rng.normal(size=basis.n_features[(0, 1)])}
    E, g = basis.evaluate_linear(centres, coeffs)
    errs = particle_fd_errors(lambda c: basis.evaluate_linear(c, coeffs)[0], g, centres, range(4))
    assert_fd_converges(errs, max(1.0, np.abs(g).max()))


def test_evaluate_linear_species_selection(rng):
    spec = BasisSpec(categories=(1, 14), radial=RadialSpec(n_max=2, r_cut=4.0), max_nu=2, max_degree=3, L_max=0)
    basis = ACEBasis(spec)
    c = Centres([1, 14], [0, 0, 1, 1], rng.normal(size=(4, 3)), [1, 14, 14, 1])
    nB = basis.n_features[(0, 1)]
    cH, cSi = rng.normal(size=nB), rng.normal(size=nB)
    E, _ = basis.evaluate_linear(c, {1: cH, 14: cSi})
    B = basis.evaluate(c)[(0, 1)][:, :, 0]
    np.testing.assert_allclose(E, [B[0] @ cH, B[1] @ cSi], rtol=1e-12)
    E_only_H, g_only_H = basis.evaluate_linear(c, {1: cH})
    assert E_only_H[1] == 0.0 and np.all(g_only_H[c.particle_centre == 1] == 0.0)


def test_contraction_mixed_centre_species_and_reuse(rng):
    """A prebuilt contraction gives the same result as the dict; centres of two species
    (one with no coefficients) each use their own vector; a foreign basis is refused."""
    basis = ACEBasis(SPECS["site"])
    c = make_centres(rng, basis.spec, n_centres=5)
    species = np.array([14, 1, 14, 6, 1])  # 6: no coefficients -> contributes 0
    c = Centres(species, c.particle_centre, c.particle_vec, c.particle_category)
    nB = basis.n_features[(0, 1)]
    coeffs = {14: rng.normal(size=nB), 1: rng.normal(size=nB)}
    lc = basis.contraction(coeffs)
    E, g = basis.evaluate_linear(c, lc)
    E2, g2 = basis.evaluate_linear(c, coeffs)
    np.testing.assert_array_equal(E, E2)
    np.testing.assert_array_equal(g, g2)
    vals, grads = basis.evaluate(c, gradients=True, keys=[(0, 1)])
    cmat = np.array([coeffs.get(int(s), np.zeros(nB)) for s in species])
    E_ref = np.einsum("cf,cf->c", cmat, vals[(0, 1)][:, :, 0])
    g_ref = np.einsum("pf,pfx->px", cmat[c.particle_centre], grads[(0, 1)][:, :, 0])
    np.testing.assert_allclose(E, E_ref, atol=1e-12 * np.abs(E_ref).max())
    np.testing.assert_allclose(g, g_ref, atol=1e-12 * np.abs(g_ref).max())
    assert E[3] == 0.0 and np.all(g[c.particle_centre == 3] == 0.0)
    with pytest.raises(ValueError, match="differs from the contraction's key"):
        basis.evaluate_linear(c, lc, key=(1, -1))
    other = ACEBasis(SPECS["nu4"])
    with pytest.raises(ValueError, match="different basis"):
        other.evaluate_linear(make_centres(rng, other.spec), lc)
    with pytest.raises(ValueError, match="shape"):
        basis.contraction({14: np.ones(nB + 1)})

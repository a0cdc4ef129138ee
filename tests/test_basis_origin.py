"""Bond-centred features of an atom passing through the bond midpoint (BasisSpec.origin_smoothing).

``R_n(r) Y_lm(x/r)`` with ``R_n(0) != 0`` has no limit at ``r -> 0`` for ``l > 0``: without the
smoothing, an environment atom 1e-4 Å on either side of the midpoint gives features that differ
by O(1) (an interstitial between two host atoms, the middle atom of a bond twice a lattice vector
long).  With it, the features are continuous there and unchanged beyond ``r0``."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.basis import BOND, ACEBasis, BasisSpec, Centres, RadialSpec
from acehamil.basis.spec import origin_factor


def _spec(r0):
    return BasisSpec(categories=(BOND, 14), radial=RadialSpec(n_max=4, r_cut=6.0), max_nu=3, max_degree=(6, 6, 4), L_max=2,
                     singleton_categories=(BOND,), origin_smoothing=r0)


def _features(basis, env_vecs):
    """Flat features of one bond (bond particle along z, 4.6 Å) per environment position: (n, n_features)."""
    rows = []
    for x in env_vecs:
        others = [[1.9, 0.4, 1.2], [-0.7, 2.1, -1.5]]  # two more atoms, away from the midpoint
        vec = np.array([[0.0, 0.0, 4.6], x] + others)
        c = Centres([14], [0] * len(vec), vec, [BOND] + [14] * (len(vec) - 1))
        rows.append(np.concatenate([v.ravel() for _, v in sorted(basis.evaluate(c).items())]))
    return np.array(rows)


@pytest.mark.parametrize("r0, continuous", [(0.0, False), (0.8, True)])
def test_features_through_the_midpoint(r0, continuous, rng):
    basis = ACEBasis(_spec(r0))
    eps = 1e-4
    dirs = rng.normal(size=(6, 3))
    dirs /= np.linalg.norm(dirs, axis=1)[:, None]
    f = _features(basis, eps * dirs)
    scale = np.abs(f).max()
    jump = np.abs(f - f[0]).max() / scale
    if continuous:
        assert jump < 1e-3  # O(eps / r0)
    else:
        assert jump > 1e-2  # the direction of an atom at the midpoint decides the features


def test_features_unchanged_beyond_r0(rng):
    x = rng.normal(size=(5, 3))
    x *= (rng.uniform(0.81, 3.0, size=5) / np.linalg.norm(x, axis=1))[:, None]  # |x| > r0 = 0.8 Å
    a, b = _features(ACEBasis(_spec(0.0)), x), _features(ACEBasis(_spec(0.8)), x)
    np.testing.assert_array_equal(a, b)


def test_origin_factor_values_and_smoothness():
    l_of = np.array([0, 1, 2, 3])
    r = np.array([0.0, 0.25, 0.5, 1.0, 1.5])
    g, dg = origin_factor(r, 1.0, l_of, gradients=True)
    assert np.all(g[:, 0] == 1) and np.all(g[3:] == 1) and np.all(dg[3:] == 0)
    np.testing.assert_allclose(g[1:3, 1], [0.25 * (15 - 10 * 0.0625 + 3 * 0.0625**2) / 8, 0.5 * (15 - 2.5 + 3 * 0.0625) / 8])
    h = 1e-6
    for r_ in (0.3, 0.7, 0.999):
        num = (origin_factor(np.array([r_ + h]), 1.0, l_of) - origin_factor(np.array([r_ - h]), 1.0, l_of)) / (2 * h)
        np.testing.assert_allclose(origin_factor(np.array([r_]), 1.0, l_of, gradients=True)[1], num, atol=1e-6)
    # t(x)/x is even: g(r) Y_lm = polynomial x r^l Y_lm near 0
    assert g[0, 1:].max() == 0


def test_spec_round_trip_and_old_files():
    s = _spec(0.8)
    assert BasisSpec.from_dict(s.to_dict()) == s
    old = _spec(0.0).to_dict()
    assert "origin_smoothing" not in old  # model files of the earlier code read back unchanged
    assert BasisSpec.from_dict(old).origin_smoothing == 0.0
    with pytest.raises(ValueError, match="origin_smoothing"):
        _spec(-1.0)


@pytest.mark.parametrize("r0, continuous", [(0.0, False), (1.0, True)])
def test_offsite_family_bond_with_an_atom_at_its_midpoint(r0, continuous):
    """The off-site H family (``[h_offsite] origin_smoothing``): three Si atoms in a row, the middle one
    moved 1e-4 Å off the midpoint of the outer pair's 4.6 Å bond along x or along y."""
    from ase import Atoms

    from acehamil.models.hamiltonian.config import FeatureConfig
    from acehamil.models.hamiltonian.offsite import OffsiteFamily
    from acehamil.structure.neighbours import neighbour_pairs

    fam = OffsiteFamily(14, 14, FeatureConfig(r_cut=5.0, r_env=2.5, max_nu=2, max_degree=(8, 6), n_max=6, origin_smoothing=r0),
                        (14,), 2)
    assert fam.basis.spec.origin_smoothing == r0
    rows = []
    for d in ([1e-4, 0, 0], [0, 1e-4, 0], [0, 0, 1e-4]):
        atoms = Atoms("Si3", positions=[[0, 0, 0], np.add([2.3, 0, 0.0], d), [4.6, 0, 0]], cell=[20, 20, 20], pbc=False)
        pairs = neighbour_pairs(atoms, fam.reach)
        sel = fam.select(atoms, pairs)
        k = [s for s in sel if pairs.i[s] == 0 and pairs.j[s] == 2]
        env = fam.environments(atoms, pairs, np.array(k))
        assert env.n_particles == 2  # the bond and the middle atom
        rows.append(np.concatenate([v.ravel() for _, v in sorted(fam.basis.evaluate(env.to_centres()).items())]))
    rows = np.array(rows)
    jump = np.abs(rows - rows[0]).max() / np.abs(rows).max()
    assert (jump < 1e-3) if continuous else (jump > 1e-2)


def test_one_particle_path_smooths_as_the_centres_path(rng):
    """``evaluate_mapped_one_particle`` of an atom category (a site basis, no singleton) applies the
    same ``origin_smoothing`` as the general path."""
    spec = BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=4.0), max_nu=1, max_degree=(5,), L_max=3,
                     origin_smoothing=1.5)
    basis = ACEBasis(spec)
    vec = rng.normal(size=(8, 3))
    vec *= (rng.uniform(0.2, 3.0, size=8) / np.linalg.norm(vec, axis=1))[:, None]
    W = rng.normal(size=(basis.tables.n_out, 3))
    got = basis.evaluate_mapped_one_particle(vec, np.full(8, 14), 14, W)
    c = Centres(np.full(8, 14), np.arange(8), vec, np.full(8, 14))
    vals = basis.evaluate(c)
    expect = np.concatenate([vals[k].reshape(8, -1) for k in basis.feature_keys], axis=1) @ W
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12 * np.abs(expect).max())
    plain = ACEBasis(BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=4.0), max_nu=1, max_degree=(5,), L_max=3))
    assert np.abs(plain.evaluate_mapped_one_particle(vec, np.full(8, 14), 14, W) - got).max() > 1e-3 * np.abs(got).max()

"""ACE basis: O(3) equivariance with the parity convention of docs/design.md, under
random proper and improper rotations together with random particle permutations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from acehamil.basis import BOND, ACEBasis, BasisSpec, Centres, RadialSpec
from acehamil.so3 import random_rotation, wigner_d_real

SPECS = {
    "nu1": BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=1, max_degree=6, L_max=4),
    "nu2": BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=2, max_degree=(4, 6), L_max=4),
    "nu3": BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=5.0), max_nu=3, max_degree=(4, 5, 5), L_max=4),
    "nu4": BasisSpec(categories=(14,), radial=RadialSpec(n_max=2, r_cut=5.0), max_nu=4, max_degree=(4, 4, 4, 4), L_max=4),
    "multi": BasisSpec(
        categories=(1, 8, 14),
        radial=RadialSpec(n_max=2, r_cut=5.0, cutoffs=((1, 1, 3.5), (14, 8, 4.5))),
        max_nu=3,
        max_degree=(3, 4, 4),
        L_max=4,
    ),
    "bond": BasisSpec(
        categories=(BOND, 6, 14),
        radial=RadialSpec(n_max=3, r_cut=6.0),
        max_nu=3,
        max_degree=(5, 5, 4),
        L_max=4,
        singleton_categories=(BOND,),
    ),
    "bond_nu4": BasisSpec(
        categories=(BOND, 14),
        radial=RadialSpec(n_max=2, r_cut=6.0),
        max_nu=4,
        max_degree=(4, 4, 4, 3),
        L_max=4,
        singleton_categories=(BOND,),
    ),
}
# the bond basis with its environment harmonics damped within 2 Å of the midpoint (most particles here)
SPECS["bond_origin"] = dataclasses.replace(SPECS["bond"], origin_smoothing=2.0)


def random_centres(rng, spec, n_centres=3, per_centre=7):
    cats = [c for c in spec.categories if c not in spec.singleton_categories]
    pcs, vecs, cs = [], [], []
    species = rng.choice([c for c in cats if c > 0] or [14], size=n_centres)
    for c in range(n_centres):
        for s in spec.singleton_categories:  # exactly one bond particle per centre
            pcs.append(c)
            vecs.append(rng.normal(size=3) * 1.5)
            cs.append(s)
        for _ in range(per_centre):
            pcs.append(c)
            vecs.append(rng.normal(size=3) * 1.6)
            cs.append(rng.choice(cats))
    return Centres(species, np.array(pcs), np.array(vecs), np.array(cs))


def transformed(centres, Q, perm):
    return Centres(
        centres.centre_species,
        centres.particle_centre[perm],
        centres.particle_vec[perm] @ Q.T,
        centres.particle_category[perm],
    )


@pytest.fixture(scope="module")
def bases():
    return {}


def _basis(bases, name):
    if name not in bases:
        bases[name] = ACEBasis(SPECS[name])
    return bases[name]


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("improper", [False, True])
def test_equivariance_all_keys(bases, name, improper, rng):
    basis = _basis(bases, name)
    centres = random_centres(rng, basis.spec)
    vals = basis.evaluate(centres)
    Q = random_rotation(rng, improper=improper)
    perm = rng.permutation(centres.n_particles)
    rotated = basis.evaluate(transformed(centres, Q, perm))
    assert set(vals) == set(basis.feature_keys)
    for (L, parity), x in vals.items():
        sign = parity if improper else 1
        D = wigner_d_real(L, np.linalg.det(Q) * Q)
        expect = sign * np.einsum("MN,cfN->cfM", D, x)
        err = np.abs(rotated[(L, parity)] - expect).max() / np.abs(x).max()
        assert err <= 1e-10, f"{name} key {(L, parity)}: relative equivariance error {err:.2e}"


@pytest.mark.parametrize("name", ["nu3", "multi", "bond"])
def test_inversion_gives_parity(bases, name, rng):
    basis = _basis(bases, name)
    centres = random_centres(rng, basis.spec)
    vals = basis.evaluate(centres)
    inv = basis.evaluate(transformed(centres, -np.eye(3), np.arange(centres.n_particles)))
    for (L, parity), x in vals.items():
        assert np.allclose(inv[(L, parity)], parity * x, atol=1e-12 * np.abs(x).max())


@pytest.mark.parametrize("name", list(SPECS))
def test_all_L_up_to_L_max(bases, name):
    basis = _basis(bases, name)
    Ls = {L for L, _ in basis.feature_keys}
    assert Ls == set(range(basis.spec.L_max + 1))
    for key, infos in basis.feature_info.items():
        for info in infos:
            assert (-1) ** sum(l for _, _, l in info.factors) == key[1]
            assert 1 <= info.nu <= basis.spec.max_nu
            assert info.degree <= basis.spec.degree_limit(info.nu) + 1e-9


@pytest.mark.parametrize("name", ["bond", "bond_nu4"])
def test_bond_singleton_rule(bases, name):
    basis = _basis(bases, name)
    for infos in basis.feature_info.values():
        for info in infos:
            assert sum(c == BOND for c, _, _ in info.factors) == 1


def test_two_centre_basis_depends_on_bond_only(rng):
    """max_nu=1 with a bond singleton: a pure function of the bond vector."""
    spec = BasisSpec(
        categories=(BOND, 14), radial=RadialSpec(n_max=4, r_cut=6.0), max_nu=1, max_degree=8, L_max=4,
        singleton_categories=(BOND,),
    )
    basis = ACEBasis(spec)
    bond = rng.normal(size=3)
    a = Centres([14], [0, 0, 0], [bond, rng.normal(size=3), rng.normal(size=3)], [BOND, 14, 14])
    b = Centres([14], [0], [bond], [BOND])
    va, vb = basis.evaluate(a), basis.evaluate(b)
    for key in basis.feature_keys:
        np.testing.assert_allclose(va[key], vb[key], rtol=0, atol=1e-14)

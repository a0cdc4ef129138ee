"""ACE basis: specs (frozen, JSON round trip, validation), bad input, cutoffs, weights,
batching and determinism."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from acehamil.basis import BOND, ACEBasis, BasisSpec, Centres, RadialSpec
from acehamil.basis import ace as ace_module

SPEC = BasisSpec(
    categories=(1, 14),
    radial=RadialSpec(n_max=3, r_cut=4.0, cutoffs=((14, 1, 3.0),)),
    max_nu=3,
    max_degree=(4, 4, 3),
    L_max=3,
)


@pytest.fixture(scope="module")
def basis():
    return ACEBasis(SPEC)


def test_spec_json_round_trip_rebuilds_identical_basis(basis, rng):
    text = json.dumps(SPEC.to_dict())
    spec2 = BasisSpec.from_dict(json.loads(text))
    assert spec2 == SPEC
    b2 = ACEBasis(spec2)
    c = Centres([14, 1], [0, 0, 1, 1, 1], rng.normal(size=(5, 3)), [14, 1, 1, 14, 14])
    v1, v2 = basis.evaluate(c), b2.evaluate(c)
    assert basis.feature_keys == b2.feature_keys
    for k in v1:
        assert np.array_equal(v1[k], v2[k])
    assert b2.feature_info == basis.feature_info


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.max_nu = 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_nu=5), "max_nu"),
        (dict(max_nu=0), "max_nu"),
        (dict(max_degree=(3, 3)), "max_degree"),
        (dict(L_max=-1), "L_max"),
        (dict(weight_l=0.0), "weight_l"),
        (dict(singleton_categories=(BOND,)), "singleton"),
        (dict(categories=()), "categories"),
        (dict(categories=(14, 14)), "duplicate"),
    ],
)
def test_spec_validation(kwargs, match):
    base = dict(categories=(14,), radial=RadialSpec(n_max=2, r_cut=4.0), max_nu=3, max_degree=(3, 3, 3), L_max=2)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BasisSpec(**base)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(n_max=0), "n_max"), (dict(r_cut=-1.0), "r_cut"), (dict(envelope_power=1), "envelope_power"),
     (dict(cutoffs=((14, 14),)), "cutoffs"), (dict(cutoffs=((14, 14, 3.0), (14, 14, 4.0))), "duplicate")],
)
def test_radial_spec_validation(kwargs, match):
    base = dict(n_max=3, r_cut=4.0)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        RadialSpec(**base)


def test_bad_centres_input(basis):
    good = dict(centre_species=[14], particle_centre=[0, 0], particle_vec=[[1.0, 0, 0], [0, 1.0, 0]], particle_category=[14, 1])
    Centres(**good)
    cases = [
        (dict(particle_vec=[[np.nan, 0, 0], [0, 1.0, 0]]), "NaN"),
        (dict(particle_vec=[[0.0, 0, 0], [0, 1.0, 0]]), "zero-length"),
        (dict(particle_vec=[1.0, 0, 0]), "shape"),
        (dict(particle_centre=[0, 1]), "particle_centre"),
        (dict(particle_category=[14]), "length"),
        (dict(particle_weight=[1.0]), "particle_weight"),
        (dict(particle_weight=[1.0, np.inf]), "particle_weight"),
    ]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            Centres(**{**good, **change})
    with pytest.raises(TypeError, match="particle_category"):
        Centres(**{**good, "particle_category": [14.5, 1]})
    with pytest.raises(ValueError, match="unknown particle categories"):
        basis.evaluate(Centres(**{**good, "particle_category": [14, 8]}))
    with pytest.raises(TypeError):
        basis.evaluate({"not": "centres"})
    with pytest.raises(ValueError, match="shape"):
        basis.evaluate_linear(Centres(**good), {14: np.zeros(3)})


def test_centres_do_not_alias_inputs(rng):
    vec = rng.normal(size=(3, 3))
    c = Centres([14], [0, 0, 0], vec, [14, 14, 14])
    vec[0, 0] = 99.0
    assert c.particle_vec[0, 0] != 99.0
    assert not c.particle_vec.flags.writeable


def test_particles_beyond_cutoff_contribute_nothing(basis, rng):
    vec = rng.normal(size=(4, 3))
    vec = vec / np.linalg.norm(vec, axis=1, keepdims=True) * 2.0
    near = Centres([14], [0] * 4, vec, [14, 14, 1, 1])
    far_vec = np.concatenate([vec, [[0, 0, 4.0], [3.1, 0, 0]]])  # Si beyond 4.0 and H beyond the (14, 1) cutoff 3.0
    far = Centres([14], [0] * 6, far_vec, [14, 14, 1, 1, 14, 1])
    a, (b, g) = basis.evaluate(near), basis.evaluate(far, gradients=True)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-14)
        assert np.all(g[k][4:] == 0)


def test_smooth_at_cutoff(basis):
    """Features and gradients go to zero continuously as a particle crosses the cutoff."""
    for r in (4.0 - 1e-4, 4.0 - 1e-6):
        base = Centres([14], [0, 0], [[1.5, 0, 0], [0, 0, 1.2]], [14, 14])
        more = Centres([14], [0, 0, 0], [[1.5, 0, 0], [0, 0, 1.2], [0, r, 0]], [14, 14, 14])
        v0 = basis.evaluate(base)
        v1, g1 = basis.evaluate(more, gradients=True)
        diff = max(np.abs(v1[k] - v0[k]).max() for k in v0)
        grad = max(np.abs(g1[k][2]).max() for k in v0)
        assert diff < 1e3 * (4.0 - r) ** 2 and grad < 1e3 * (4.0 - r)


def test_nu1_scales_with_particle_weight(rng):
    spec = BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=4.0), max_nu=2, max_degree=4, L_max=2)
    b = ACEBasis(spec)
    vec = rng.normal(size=(3, 3))
    v1 = b.evaluate(Centres([14], [0, 0, 0], vec, [14] * 3, [0.5, 0.5, 0.5]))
    v2 = b.evaluate(Centres([14], [0, 0, 0], vec, [14] * 3))
    for k, infos in b.feature_info.items():
        nu = np.array([i.nu for i in infos])
        np.testing.assert_allclose(v1[k], v2[k] * (0.5**nu)[None, :, None], atol=1e-14)


def test_batching_does_not_change_results(basis, rng, monkeypatch):
    n = 7
    pc = rng.integers(0, n, size=40)
    c = Centres(rng.choice([1, 14], size=n), pc, rng.uniform(-2, 2, size=(40, 3)), rng.choice([1, 14], size=40))
    full, gfull = basis.evaluate(c, gradients=True)
    monkeypatch.setattr(ace_module, "_BUDGET", 1)  # one centre (and one particle) per batch
    small, gsmall = basis.evaluate(c, gradients=True)
    for k in full:
        np.testing.assert_allclose(small[k], full[k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(gsmall[k], gfull[k], rtol=1e-13, atol=1e-15)


def test_centre_without_particles_is_zero(basis):
    c = Centres([14, 14], [1], [[1.0, 0.5, 0.0]], [14])
    v = basis.evaluate(c)
    for k in v:
        assert np.all(v[k][0] == 0)


def test_feature_counts_are_deterministic():
    b1, b2 = ACEBasis(SPEC), ACEBasis(SPEC)
    assert b1.n_features == b2.n_features
    assert (b1.tables.C != b2.tables.C).nnz == 0


@pytest.mark.parametrize("n_centres", [0, 2])
def test_no_particles(basis, n_centres):
    c = Centres(np.full(n_centres, 14), np.zeros(0, int), np.zeros((0, 3)), np.zeros(0, int))
    vals, grads = basis.evaluate(c, gradients=True)
    for key, infos in basis.feature_info.items():
        L = key[0]
        assert vals[key].shape == (n_centres, len(infos), 2 * L + 1) and np.all(vals[key] == 0)
        assert grads[key].shape == (0, len(infos), 2 * L + 1, 3)
    E, g = basis.evaluate_linear(c, {14: np.ones(basis.n_features[(0, 1)])})
    assert E.shape == (n_centres,) and g.shape == (0, 3)


def test_iter_evaluate_matches_evaluate(basis, rng):
    n = 5
    pc = rng.integers(0, n, size=30)
    c = Centres(np.full(n, 14), pc, rng.uniform(-2, 2, size=(30, 3)), rng.choice([1, 14], size=30))
    vals, grads = basis.evaluate(c, gradients=True)
    seen = []
    for sl, idx, v, g in basis.iter_evaluate(c, gradients=True, max_centres=2):
        assert sl.stop - sl.start <= 2
        seen.extend(idx.tolist())
        for k in vals:
            np.testing.assert_array_equal(v[k], vals[k][sl])
            np.testing.assert_array_equal(g[k], grads[k][idx])
            assert np.all(np.isin(c.particle_centre[idx], np.arange(sl.start, sl.stop)))
    assert sorted(seen) == list(range(30))


@pytest.mark.parametrize("keys", [[(0, 1)], [(2, -1), (1, 1)]])
def test_key_subset_matches_full(basis, rng, keys):
    c = Centres([14, 1], rng.integers(0, 2, size=12), rng.uniform(-2, 2, size=(12, 3)), rng.choice([1, 14], size=12))
    vals, grads = basis.evaluate(c, gradients=True)
    sub, gsub = basis.evaluate(c, gradients=True, keys=keys)
    assert sorted(sub) == sorted(keys)
    for k in keys:
        np.testing.assert_array_equal(sub[k], vals[k])
        np.testing.assert_allclose(gsub[k], grads[k], rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="no features"):
        basis.evaluate(c, keys=[(7, 1)])


def test_pickle_and_deepcopy_rebuild_from_spec(basis, rng):
    import copy
    import pickle

    c = Centres([14], [0, 0, 0], rng.normal(size=(3, 3)), [14, 1, 14])
    ref = basis.evaluate(c)
    for other in (pickle.loads(pickle.dumps(basis)), copy.deepcopy(basis)):
        assert other.spec == basis.spec
        for k, v in other.evaluate(c).items():
            np.testing.assert_array_equal(v, ref[k])


def test_parities_subset_keeps_the_same_features_and_prunes_products():
    from acehamil.basis import ACEBasis, BasisSpec, RadialSpec

    kw = dict(categories=(14,), radial=RadialSpec(n_max=4, r_cut=5.0), max_nu=3, max_degree=(6, 6, 8), L_max=0)
    full = ACEBasis(BasisSpec(**kw))
    even = ACEBasis(BasisSpec(**kw, parities=(1,)))
    assert even.feature_keys == [(0, 1)] and (0, -1) in full.feature_keys
    assert even.tables.n_AA < full.tables.n_AA
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(12, 3)) * 1.5
    cen = Centres(np.array([14, 14]), np.repeat([0, 1], 6), vec, np.full(12, 14))
    np.testing.assert_allclose(even.evaluate(cen)[(0, 1)], full.evaluate(cen)[(0, 1)], rtol=1e-13, atol=1e-14)
    assert BasisSpec.from_dict(even.spec.to_dict()) == even.spec
    with pytest.raises(ValueError, match="parities"):
        BasisSpec(**kw, parities=(2,))


def test_feature_degrees_and_orders_follow_feature_info():
    spec = BasisSpec(categories=(14,), radial=RadialSpec(n_max=4, r_cut=5.0), max_nu=3, max_degree=(6, 6, 4), L_max=2)
    basis = ACEBasis(spec)
    for key in basis.feature_keys:
        info = basis.feature_info[key]
        deg, nu = basis.feature_degrees(key), basis.feature_orders(key)
        assert deg.shape == nu.shape == (basis.n_features[key],)
        assert deg.tolist() == [f.degree for f in info] and nu.tolist() == [f.nu for f in info]
        assert deg.max() <= max(spec.max_degree) and set(nu.tolist()) <= {1, 2, 3}
    with pytest.raises(ValueError, match="no features with key"):
        basis.feature_degrees((7, 1))


def test_features_by_row_products_equal_dense_times_sparse(basis, rng):
    """The features are ``AA @ C``, computed one sparse product per AA row from ``C^T``: the same
    nonzeros summed in the same order as scipy's dense-times-sparse, so the same numbers bit for bit."""
    import scipy.sparse as sp

    sel = basis._selection(None)
    AA = rng.normal(size=(7, basis.tables.n_AA))
    assert np.array_equal(ace_module._rows_times(AA, sel["CT"]), AA @ sel["C"])
    # a random sparse matrix too (unsorted CSR input is sorted first), and a strided AA
    C = sp.random(40, 13, density=0.2, random_state=1, format="csr")
    CT = sp.csr_matrix(C.T)
    CT.sort_indices()
    X = rng.normal(size=(5, 80))[:, ::2]
    assert np.array_equal(ace_module._rows_times(X, CT), X @ C)
    with pytest.raises(ValueError, match="shape"):
        ace_module._rows_times(rng.normal(size=(5, 39)), CT)

"""Mapped features ``flat(B) @ W`` (the prediction kernel) against the features themselves: the product
map, its mirrored form (the reversed bond from the same products) and the one-particle path of
two-centre bonds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from acehamil.basis import BOND, ACEBasis, BasisSpec, Centres, RadialSpec
from acehamil.so3 import wigner_d_real

ENV_SPEC = BasisSpec(
    categories=(BOND, 6, 14),
    radial=RadialSpec(n_max=3, r_cut=4.0, cutoffs=((14, 6, 3.5),)),
    max_nu=3,
    max_degree=(4, 4, 3),
    L_max=3,
    singleton_categories=(BOND,),
)
PAIR_SPEC = BasisSpec(
    categories=(BOND,),
    radial=RadialSpec(n_max=5, r_cut=5.0, cutoffs=((6, BOND, 4.0),)),
    max_nu=1,
    max_degree=(7,),
    L_max=4,
    singleton_categories=(BOND,),
)


def _flat(basis, centres):
    vals = basis.evaluate(centres)
    return np.concatenate([vals[k].reshape(len(vals[k]), -1) for k in basis.feature_keys], axis=1)


def _centres(rng, n=7):
    counts = rng.integers(0, 6, size=n)
    pc = np.concatenate([[c] + [c] * k for c, k in enumerate(counts)])  # each centre: its bond, then k atoms
    cat = np.concatenate([[BOND] + list(rng.choice([6, 14], size=k)) for k in counts])
    vec = rng.normal(size=(len(pc), 3))
    vec *= (rng.uniform(0.8, 3.2, size=len(pc)) / np.linalg.norm(vec, axis=1))[:, None]
    return Centres(rng.choice([6, 14], size=n), pc, vec, cat, particle_weight=rng.uniform(0.2, 1.0, size=len(pc)))


@pytest.mark.parametrize("origin", [0.0, 2.0])  # 2 Å: BasisSpec.origin_smoothing acts on most particles here
def test_mapped_features_and_their_mirror_images(rng, origin):
    basis = ACEBasis(replace(ENV_SPEC, origin_smoothing=origin))
    centres = _centres(rng)
    W = rng.normal(size=(basis.tables.n_out, 5))
    expect = _flat(basis, centres) @ W
    flip = np.diag([1.0, -1.0, -1.0])  # rotation by pi about x: every real harmonic only changes sign
    t = basis.tables
    signs = np.rint(np.concatenate([np.diag(wigner_d_real(l, flip)) for l in range(t.l_max + 1)]))[t.a_lm]
    got, mirrored = basis.evaluate_mapped(centres, W, mirror=signs)
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12 * np.abs(expect).max())
    flipped = Centres(centres.centre_species, centres.particle_centre, centres.particle_vec @ flip.T,
                      centres.particle_category, particle_weight=centres.particle_weight)
    other = _flat(basis, flipped) @ W
    np.testing.assert_allclose(mirrored, other, rtol=0, atol=1e-12 * np.abs(other).max())
    assert np.abs(mirrored - got).max() > 1e-3 * np.abs(got).max()  # the mirror is a different environment


def test_mirror_signs_must_be_signs(rng):
    basis = ACEBasis(ENV_SPEC)
    pm = basis.mapping(rng.normal(size=(basis.tables.n_out, 2)))
    with pytest.raises(ValueError, match="mirror signs"):
        pm.with_mirror(np.full(basis.tables.n_A, 0.5))


@pytest.mark.parametrize("basis_spec", [PAIR_SPEC, ENV_SPEC], ids=["two-centre", "with-environment"])
def test_one_particle_path_equals_the_centres_path(rng, basis_spec):
    basis = ACEBasis(basis_spec)
    n = 9
    vec = rng.normal(size=(n, 3)) * 1.5
    species = rng.choice([6, 14], size=n)
    W = rng.normal(size=(basis.tables.n_out, 4))
    pm = basis.mapping(W)
    one = Centres(species, np.arange(n), vec, np.full(n, BOND))
    rev = Centres(species, np.arange(n), -vec, np.full(n, BOND))
    got, got_rev = basis.evaluate_mapped_one_particle(vec, species, BOND, pm, mirror=True)
    np.testing.assert_allclose(basis.evaluate_mapped_one_particle(vec, species, BOND, pm), got, rtol=0, atol=1e-13 * np.abs(got).max())
    for g, c in ((got, one), (got_rev, rev)):
        expect = _flat(basis, c) @ W
        np.testing.assert_allclose(g, expect, rtol=0, atol=1e-12 * np.abs(expect).max())
    with pytest.raises(ValueError, match="zero-length"):
        basis.evaluate_mapped_one_particle(np.zeros((1, 3)), [6], BOND, pm)
    with pytest.raises(ValueError, match="category"):
        basis.evaluate_mapped_one_particle(vec, species, 99, pm)


def _equivariant_map(basis, rng):
    """``W`` of the form a model's output map has: each key's features, each ``M``, to the same ``M`` of
    one ``(2L+1)``-column group per key (columns mix no ``M``)."""
    t = basis.tables
    keys = basis.feature_keys
    starts = np.cumsum([0] + [2 * L + 1 for L, _ in keys])
    W = np.zeros((t.n_out, int(starts[-1])))
    for g, key in enumerate(keys):
        m = 2 * key[0] + 1
        for f in range(basis.n_features[key]):
            W[t.out_slices[key].start + f * m + np.arange(m), starts[g] + np.arange(m)] = rng.normal()
    return W


def test_two_centre_map_is_factorised_and_equal(rng):
    from acehamil.basis.mapped import OneParticleMap

    basis = ACEBasis(PAIR_SPEC)
    W = _equivariant_map(basis, rng)
    pm = basis.mapping(W)
    assert OneParticleMap.build(pm, BOND) is not None  # the fast form applies to a model's map
    n = 11
    vec = rng.normal(size=(n, 3)) * 1.7
    species = rng.choice([6, 14], size=n)
    got, got_rev = basis.evaluate_mapped_one_particle(vec, species, BOND, pm, mirror=True)
    for g, v in ((got, vec), (got_rev, -vec)):
        expect = _flat(basis, Centres(species, np.arange(n), v, np.full(n, BOND))) @ W
        np.testing.assert_allclose(g, expect, rtol=0, atol=1e-12 * np.abs(expect).max())
    assert OneParticleMap.build(basis.mapping(rng.normal(size=W.shape)), BOND) is None  # mixed columns: generic path


def test_product_map_grouped_products_equal_the_dense_ones():
    """ProductMap.evaluate multiplies by CW's non-zero columns only, group by group of rows with one pattern
    (_column_groups): the dense products AA_low @ CW_low + top @ CW_top up to rounding, also with zero
    rows and columns, with a mirrored map, and batch after batch of different sizes (scratch buffers)."""
    from acehamil.basis.mapped import ProductMap

    rng = np.random.default_rng(11)
    basis = ACEBasis(ENV_SPEC)
    t = basis.tables
    W = rng.normal(size=(t.n_out, 6)) * (rng.random((t.n_out, 6)) < 0.3)
    W[:, 2] = 0.0  # an output no feature feeds
    pm = ProductMap(t, np.asarray(t.C @ W))
    mirrored = pm.with_mirror(rng.choice([-1.0, 1.0], size=t.n_A))
    for m in (pm, mirrored, pm):
        for nb in (5, 1, 9):
            A = rng.normal(size=(nb, t.n_A))
            low = basis._products(A, upto=m.n_low)
            dense = low @ m.CW_low + (low[:, m.pre] * A[:, m.last]) @ m.CW_top
            got = m.evaluate(low, A)
            assert got.shape == (nb, m.n_y)
            np.testing.assert_allclose(got, dense, rtol=1e-12, atol=1e-13 * np.abs(dense).max())
    assert np.all(pm.evaluate(basis._products(A, upto=pm.n_low), A)[:, 2] == 0.0)


@pytest.mark.parametrize("sets", [1, 4])
def test_sparse_map_in_grouped_form_equals_the_dense_map(sets):
    """ProductMap.from_sparse builds the grouped plan straight from the sparse C and W (no dense C @ W, no
    dense mirror; MatrixModel.predict_many's draws): its outputs, mirrored outputs and (formed when read)
    CW_low / CW_top equal the dense map's, with W sparse or dense, with ``sets`` column blocks whose
    patterns differ (a zero block, a column no feature feeds), and a bad ``sets`` is refused."""
    import scipy.sparse as sp

    from acehamil.basis.mapped import ProductMap

    rng = np.random.default_rng(5)
    basis = ACEBasis(ENV_SPEC)
    t = basis.tables
    y = 5
    W = rng.normal(size=(t.n_out, sets * y)) * (rng.random((t.n_out, sets * y)) < 0.3)
    W[:, 1] = 0.0
    if sets > 1:
        W[:, y:2 * y] = 0.0  # one set entirely zero
        W[: t.n_out // 2, 2 * y + 3] = 0.0  # one set's column with fewer rows than the others
    dense = ProductMap(t, np.asarray(t.C @ W))
    sign = rng.choice([-1.0, 1.0], size=t.n_A)
    for Wi in (W, sp.csr_matrix(W)):
        pm = basis.mapping(Wi, sparse=True, sets=sets)
        assert "CW_low" not in pm.__dict__ and pm.n_rows_low == dense.CW_low.shape[0]
        for a, b in ((pm, dense), (pm.with_mirror(sign), dense.with_mirror(sign))):
            A = rng.normal(size=(6, t.n_A))
            low = basis._products(A, upto=a.n_low)
            np.testing.assert_allclose(a.evaluate(low, A), b.evaluate(low, A), rtol=1e-12,
                                       atol=1e-13 * np.abs(b.evaluate(low, A)).max())
        # the dense rows, formed when read (the kept top products may include rows that are zero here)
        np.testing.assert_allclose(pm.CW_low, dense.CW_low, atol=1e-14)
        top = {(p, q): row for p, q, row in zip(dense.pre, dense.last, dense.CW_top)}
        for p, q, row in zip(pm.pre, pm.last, pm.CW_top):
            np.testing.assert_allclose(row, top.get((p, q), np.zeros_like(row)), atol=1e-14)
    with pytest.raises(ValueError, match="sets"):
        basis.mapping(W, sparse=True, sets=sets * y + 1)  # not a divisor of the columns


@pytest.mark.parametrize("sparse", [False, True])
def test_bond_frame_map_forms_only_the_lower_products_it_reads(rng, sparse):
    """In the bond frame (the bond particle on +z: its m != 0 harmonics vanish) a nu = 3 map drops the lower
    products with a vanishing factor and ProductMap.evaluate_atomic forms only the lower products it reads
    (fewer than the map's n_low); the outputs equal the features' (and evaluate on every lower product)."""
    basis = ACEBasis(ENV_SPEC)
    t = basis.tables
    c = _centres(rng, n=9)
    vec = c.particle_vec.copy()
    bond = c.particle_category == BOND
    vec[bond] = np.c_[np.zeros((bond.sum(), 2)), np.linalg.norm(vec[bond], axis=1)]  # exactly on +z
    centres = Centres(c.centre_species, c.particle_centre, vec, c.particle_category, particle_weight=c.particle_weight)
    W = rng.normal(size=(t.n_out, 4)) * (rng.random((t.n_out, 4)) < 0.5)
    pm = basis.mapping(W, vanishing=basis.vanishing_on_z(BOND), sparse=sparse)
    assert t.spec.max_nu == 3 and pm.n_formed < pm.n_low // 2
    expect = _flat(basis, centres) @ W
    got = basis.evaluate_mapped(centres, pm)
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12 * np.abs(expect).max())
    A = basis.atomic(centres)
    np.testing.assert_allclose(pm.evaluate_atomic(A), pm.evaluate(basis._products(A, upto=pm.n_low), A), rtol=0,
                               atol=1e-13 * np.abs(expect).max())

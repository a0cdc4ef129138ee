"""The one block index (structure.pair_index, RealSpaceMatrix.lookup/partner/on_pattern) against
a brute-force search, on random block patterns."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.structure import RealSpaceMatrix
from acehamil.structure.pair_index import KeyIndex, lookup, reverse_index


def _random_matrix(rng, natoms=5, nblocks=40, hermitian=True) -> RealSpaceMatrix:
    norb = rng.integers(1, 4, size=natoms)
    keys = {}
    while len(keys) < nblocks:
        i, j = (int(x) for x in rng.integers(natoms, size=2))
        t = tuple(int(x) for x in rng.integers(-2, 3, size=3))
        b = rng.normal(size=(norb[i], norb[j]))
        keys[(i, j, t)] = b
        if hermitian:
            keys[(j, i, tuple(-x for x in t))] = b.T if (i, j, t) != (j, i, tuple(-x for x in t)) else 0.5 * (b + b.T)
    ks = list(keys)
    order = rng.permutation(len(ks))
    ks = [ks[k] for k in order]
    return RealSpaceMatrix.from_blocks(norb, [k[0] for k in ks], [k[1] for k in ks], [k[2] for k in ks], [keys[k] for k in ks])


def test_lookup_and_reverse_index_match_brute_force(rng):
    m = _random_matrix(rng, hermitian=False)
    q = rng.integers(-1, 6, size=(60, 5))
    got = lookup(m.i, m.j, m.shift, q[:, 0], q[:, 1], q[:, 2:])
    brute = [m.find(a, b, t) for a, b, *t in q.tolist()]
    assert got.tolist() == brute
    rev = reverse_index(m.i, m.j, m.shift)
    assert rev.tolist() == [m.find(b, a, -t) for a, b, t in zip(m.i, m.j, m.shift)]
    assert lookup([], [], np.zeros((0, 3)), [1], [2], [[0, 0, 0]]).tolist() == [-1]


@pytest.mark.parametrize("hermitian", [True, False])
def test_partner_transpose_and_hermiticity(rng, hermitian):
    m = _random_matrix(rng, hermitian=hermitian)
    if not hermitian and np.any(m.partner < 0):
        assert m.hermiticity_error() == float("inf")
        with pytest.raises(ValueError, match="no Hermitian partner"):
            m.partner_transpose()
        return
    pt = m.partner_transpose()
    for p in range(m.nblocks):
        q = m.partner[p]
        assert np.array_equal(pt[m.offsets[p]:m.offsets[p + 1]].reshape(m.block(p).shape), m.block(q).T)
    assert m.hermiticity_error() == pytest.approx(max(np.abs(m.block(m.partner[p]).T - m.block(p)).max()
                                                      for p in range(m.nblocks)), abs=0)


def test_on_pattern_matches_block_by_block_copy(rng):
    m = _random_matrix(rng)
    keep = rng.random(m.nblocks) < 0.6
    sub = RealSpaceMatrix.from_blocks(m.norb_per_atom, m.i[keep], m.j[keep], m.shift[keep],
                                      [rng.normal(size=m.block(p).shape) for p in np.nonzero(keep)[0]])
    vals, used = m.on_pattern(sub)
    for p in range(sub.nblocks):
        q = m.find(sub.i[p], sub.j[p], sub.shift[p])
        assert np.array_equal(vals[sub.offsets[p]:sub.offsets[p + 1]], m.data[m.offsets[q]:m.offsets[q + 1]])
    assert used.tolist() == keep.tolist()
    vals2, used2 = sub.on_pattern(m)  # the other way: blocks sub lacks are zero
    assert used2.all() and np.count_nonzero(vals2) <= sub.data.size


@pytest.mark.parametrize("scale", [1, 2**40])
def test_lookup_with_duplicates_and_huge_ranges_matches_brute_force(rng, scale):
    """Duplicated keys give their last position; index ranges too wide for the int64 code
    (scale 2**40) take the row-wise fallback and give the same answers."""
    keys = rng.integers(-2, 3, size=(80, 5)) * scale
    keys[40:60] = keys[:20]  # duplicates
    q = np.concatenate([keys[rng.permutation(80)[:30]], rng.integers(-3, 4, size=(30, 5)) * scale])
    got = lookup(keys[:, 0], keys[:, 1], keys[:, 2:], q[:, 0], q[:, 1], q[:, 2:])
    brute = [max([p for p, k in enumerate(keys.tolist()) if k == row], default=-1) for row in q.tolist()]
    assert got.tolist() == brute
    # the same keys sorted once (KeyIndex) answer the same, also for queries outside the keys' ranges
    ix = KeyIndex(keys[:, 0], keys[:, 1], keys[:, 2:])
    assert ix.find(q[:, 0], q[:, 1], q[:, 2:]).tolist() == brute
    assert ix.find(q[:5, 0], q[:5, 1], q[:5, 2:]).tolist() == brute[:5]

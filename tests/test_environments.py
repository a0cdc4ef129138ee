"""Site and bond environments: contents, the ellipsoidal bond cutoff, reversal symmetry, slicing."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from acehamil.environments import BOND, bond_environments, ellipsoid_weight, site_environments
from acehamil.structure.pair_index import reverse_index
from acehamil.so3 import random_rotation
from acehamil.structure.neighbours import neighbour_pairs


@pytest.fixture
def si(rng):
    at = bulk("Si", "diamond", a=5.43) * (2, 2, 1)
    at.rattle(0.1, rng=rng)
    return at


def test_site_environments_match_neighbour_list(si):
    env = site_environments(si, 3.0)
    nl = neighbour_pairs(si, 3.0)
    assert env.n_centres == len(si) and env.n_particles == len(nl)
    assert np.all(np.diff(env.particle_centre) >= 0)
    for c in range(len(si)):
        mine = np.sort(np.linalg.norm(env.particle_vec[env.particle_centre == c], axis=1))
        np.testing.assert_allclose(mine, np.sort(nl.dist[nl.i == c]))
    sub = site_environments(si, 3.0, centres=[3, 1])
    assert sub.i.tolist() == [3, 1]
    np.testing.assert_array_equal(sub.particle_vec[sub.particle_centre == 0], env.particle_vec[env.particle_centre == 3])


@pytest.mark.parametrize("improper", [False, True])
def test_ellipsoid_weight_invariances_and_support(rng, improper):
    p = rng.normal(size=(200, 3)) * 2.5
    r = rng.normal(size=(200, 3)) * 2.0
    w = ellipsoid_weight(p, r, 2.0)
    Q = random_rotation(rng, improper=improper)
    np.testing.assert_allclose(ellipsoid_weight(p @ Q.T, r @ Q.T, 2.0), w, atol=1e-13)
    np.testing.assert_array_equal(ellipsoid_weight(p, -r, 2.0), w)  # bond reversal
    assert np.all((w >= 0) & (w <= 1))
    a = np.linalg.norm(r, axis=1) / 2 + 2.0
    assert np.all(w[np.linalg.norm(p, axis=1) >= a] == 0)  # nothing beyond the long semi-axis
    # smooth at the surface: weight -> 0 continuously along the bond axis and across it
    u = r[0] / np.linalg.norm(r[0])
    for h in (1e-2, 1e-3):
        inside = ellipsoid_weight(((a[0] - h) * u)[None], r[:1], 2.0)[0]
        assert inside < 5 * h**2
    perp = np.cross(u, [1.0, 0.0, 0.0])
    perp /= np.linalg.norm(perp)
    assert ellipsoid_weight((1.999 * perp)[None], r[:1], 2.0)[0] < 1e-5


def test_bond_environments_reversal_and_exclusions(si):
    nl = neighbour_pairs(si, 4.0)
    env = bond_environments(si, nl, 2.0)
    rev = reverse_index(nl.i, nl.j, nl.shift)
    assert np.all(rev >= 0) and np.array_equal(rev[rev], np.arange(len(nl)))
    counts = np.bincount(env.particle_centre, minlength=env.n_centres)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for b in range(0, len(nl), 7):
        s, e = starts[b], starts[b + 1]
        assert env.particle_category[s] == BOND
        np.testing.assert_array_equal(env.particle_vec[s], nl.vec[b])
        q = rev[b]
        s2, e2 = starts[q], starts[q + 1]
        np.testing.assert_array_equal(env.particle_vec[s2], -nl.vec[b])
        # same environment atoms about the same midpoint, same weights
        mine = np.round(np.c_[env.particle_vec[s + 1:e], env.particle_weight[s + 1:e]], 9)
        theirs = np.round(np.c_[env.particle_vec[s2 + 1:e2], env.particle_weight[s2 + 1:e2]], 9)
        assert sorted(map(tuple, mine)) == sorted(map(tuple, theirs))
        # the two bond atoms themselves (at -r/2 and +r/2) are not environment particles
        for end in (0.5 * nl.vec[b], -0.5 * nl.vec[b]):
            assert np.linalg.norm(env.particle_vec[s + 1:e] - end, axis=1).min(initial=9.0) > 1e-6
        assert np.all(env.particle_weight[s + 1:e] > 0)
        assert np.all(np.linalg.norm(env.particle_vec[s + 1:e], axis=1) < np.linalg.norm(nl.vec[b]) / 2 + 2.0)


def test_bond_only_environment_and_bad_bonds(si):
    nl = neighbour_pairs(si, 3.0)
    env = bond_environments(si, nl, 0.0)
    assert env.n_particles == len(nl) and np.all(env.particle_category == BOND)
    zero = neighbour_pairs(si, 3.0, self_interaction=True)
    with pytest.raises(ValueError, match="non-zero bond"):
        bond_environments(si, zero, 1.0)


def test_subset_take_and_chunks_agree(si):
    nl = neighbour_pairs(si, 4.0)
    env = bond_environments(si, nl, 2.0)
    pieces = list(env.chunks(max_particles=500))
    assert pieces[0][0] == 0 and pieces[-1][1] == env.n_centres
    assert sum(p[2].n_particles for p in pieces) == env.n_particles
    idx = np.array([5, 2, 9])
    t = env.take(idx)
    for k, c in enumerate(idx):
        np.testing.assert_array_equal(t.particle_vec[t.particle_centre == k], env.particle_vec[env.particle_centre == c])
    s = env.subset(2, 6)
    np.testing.assert_array_equal(s.particle_vec, env.particle_vec[(env.particle_centre >= 2) & (env.particle_centre < 6)])


def test_reverse_index_missing_partner():
    assert reverse_index([0], [1], [[0, 0, 1]]).tolist() == [-1]


def test_environment_fades_with_bond_length(si):
    nl = neighbour_pairs(si, 4.0)
    full = bond_environments(si, nl, 2.0)
    cut = 3.0
    tapered = bond_environments(si, nl, 2.0, env_bond_cut=cut)
    n_full = np.bincount(full.particle_centre, minlength=len(nl))
    n_tap = np.bincount(tapered.particle_centre, minlength=len(nl))
    long = nl.dist >= cut
    assert np.all(n_tap[long] == 1) and np.all(n_full[long] > 1)  # only the bond particle
    short = np.nonzero(~long)[0][0]
    wf = full.particle_weight[full.particle_centre == short][1:]
    wt = tapered.particle_weight[tapered.particle_centre == short][1:]
    x2 = (nl.dist[short] / cut) ** 2
    np.testing.assert_allclose(np.sort(wt), np.sort(wf) * (1 - x2) ** 2, rtol=1e-12)


@pytest.mark.parametrize("env_bond_cut", [0.0, 3.6])
def test_bond_environments_match_brute_force(si, env_bond_cut):
    """Every bond's particles and weights equal a scan of all neighbours of atom i with the documented
    weight (:func:`ellipsoid_weight` and the bond-length taper), in the neighbour-list order."""
    r_env = 2.0
    nl = neighbour_pairs(si, 4.0)
    big = neighbour_pairs(si, 4.0 + r_env + 0.5)
    env = bond_environments(si, nl, r_env, env_bond_cut=env_bond_cut)
    counts = np.bincount(env.particle_centre, minlength=env.n_centres)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for b in range(len(nl)):
        cand = np.nonzero(big.i == nl.i[b])[0]
        cand = cand[~((big.j[cand] == nl.j[b]) & np.all(big.shift[cand] == nl.shift[b], axis=1))]
        p = big.vec[cand] - 0.5 * nl.vec[b]
        w = ellipsoid_weight(p, np.repeat(nl.vec[b][None], len(cand), axis=0), r_env)
        if env_bond_cut > 0:
            w = w * max(0.0, 1.0 - (nl.dist[b] / env_bond_cut) ** 2) ** 2
        keep = (w > 0) & (np.einsum("ni,ni->n", p, p) > 1e-12)
        ref = np.c_[p[keep], w[keep], si.numbers[big.j[cand[keep]]]]
        mine = np.c_[env.particle_vec[starts[b] + 1:starts[b + 1]], env.particle_weight[starts[b] + 1:starts[b + 1]],
                     env.particle_category[starts[b] + 1:starts[b + 1]]]
        order = lambda x: x[np.lexsort(np.round(x.T, 9))]  # noqa: E731
        assert mine.shape == ref.shape, b
        np.testing.assert_allclose(order(mine), order(ref), rtol=0, atol=1e-12)

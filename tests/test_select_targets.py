"""Targets of the V-optimal selection: the ``eigen`` criterion's gain is the expected reduction of the mean
epistemic variance of the pool's eigenvalues (sensitivities by finite differences of the eigenvalues,
brute force), the ``leverage`` one the noise-whitened block-variance reduction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.fit import fit
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

from sk_si import TINY_CFG as CFG, noisy_h


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(11)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for k in range(6):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.012 * k))
        at.rattle(0.12, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        H = noisy_h(H, rng, 0.01)
        out.append(StructureData(at, basis, H=(H,), S=S, n_electrons=8))
    return out


@pytest.fixture(scope="module")
def small_model(cells):
    """Fitted on two cells only, so that the others still teach it something."""
    cfg = ModelConfig.from_dict({**CFG, "solver": {"method": "blr", "lam": 1e-3}})
    return fit(cells[:2], cfg, progress=False)


def _precision(post):
    Q = post.eigvecs * np.sqrt(post.prior_diag)[:, None]
    return (Q * (post.beta * post.eigvals + post.alpha)) @ Q.T


def _fd_sensitivities(mm, S_real, atoms, h=1e-4):
    """d (eps_n - E_F) / d c_f of every Gamma eigenvalue (8 electrons; E_F as ``evaluate`` takes it: mid-gap
    here), by central differences of the eigenvalues of the exact linear H(c) (brute force: one prediction per
    coefficient, one dense solve per side)."""
    import scipy.linalg

    from acehamil.tb.bloch import BlochAssembler
    from acehamil.tb.smearing import fermi_level

    def rel(e):
        return e - fermi_level(e[None, None], np.ones(1), 8.0, 0.01, "fermi-dirac", 2)

    gamma = np.zeros((1, 3))
    H0 = BlochAssembler(mm.predict(atoms)).dense(gamma)[0]
    S = BlochAssembler(S_real).dense(gamma)[0]
    out = {}
    for key, byL in mm.coefficients.items():
        for L, c in byL.items():
            cols = []
            for f in range(c.size):
                e = np.zeros(c.size)
                e[f] = 1.0
                dH = BlochAssembler(dataclasses.replace(mm, coefficients={key: {L: e}}).predict(atoms)).dense(gamma)[0]
                up = scipy.linalg.eigh(H0 + h * dH, S, eigvals_only=True)
                dn = scipy.linalg.eigh(H0 - h * dH, S, eigvals_only=True)
                cols.append((rel(up) - rel(dn)) / (2 * h))
            out[(key, L)] = np.array(cols).T  # (n_states, n_F)
    return out


def test_eigen_target_gain_is_the_reduction_of_the_pools_eigenvalue_variance(small_model, cells):
    """Gain of candidate j = mean over the pool's structures and Gamma states of J_n Sigma J_n^T - J_n Sigma' J_n^T,
    Sigma' = (P + beta w_j G_j)^-1, J by finite differences of the model's eigenvalues; after the first pick the
    posterior is updated (the second pick maximises the brute-force reduction given the first)."""
    from acehamil.models.hamiltonian.select import gram, variance_select
    from acehamil.models.hamiltonian.select_targets import eigen_gram, mean_target

    model = small_model
    pool = [cells[2].atoms, cells[3].atoms]
    cands = [cells[2], cells[4], cells[5], cells[5]]
    weights = np.array([1.0, 1.0, 0.5, 1.0])
    # Gamma only, every state in the window, relative to E_F
    target = mean_target([eigen_gram(model, at, 8, kmesh=(1, 1, 1), window_eV=50.0, max_states=0) for at in pool])
    grams = [gram(model, sd.atoms) for sd in cands]
    Js = [_fd_sensitivities(model.H, model.S.predict(at), at) for at in pool]
    posts = {(key, L): post for key, byL in model.H.posteriors.items() for L, post in byL.items()}
    assert set(target) == set(Js[0]) == set(posts)

    def mean_variance(added):
        """Mean first-order epistemic eigenvalue variance over the pool's states, eV^2, after adding ``added``."""
        tot = 0.0
        for J in Js:
            v = 0.0
            for key, post in posts.items():
                P = _precision(post) + sum(post.beta * w * G[key] for G, w in added)
                v = v + np.einsum("nf,fg,ng->n", J[key], np.linalg.inv(P), J[key])
            tot += v.mean() / len(Js)
        return tot

    base = mean_variance([])
    expect = [base - mean_variance([(G, w)]) for G, w in zip(grams, weights)]
    picked, gains = variance_select(model.H, grams, 2, target, weights=weights)
    assert min(expect) > 0
    np.testing.assert_allclose(gains, expect, rtol=2e-3)
    assert gains[2] < gains[3]  # the same cell at half the weight reduces less
    assert picked[0] == int(np.argmax(expect))
    first = (grams[picked[0]], weights[picked[0]])
    after = [mean_variance([first]) - mean_variance([first, (G, w)]) if j != picked[0] else -np.inf
             for j, (G, w) in enumerate(zip(grams, weights))]
    assert picked[1] == int(np.argmax(after))


def test_eigen_gram_window_and_fermi_reference(small_model, cells):
    """The target is a symmetric positive semi-definite Gram per (block type, L); without an electron count the
    model's own (4 per Si) gives the same window; a window of 0 eV is refused."""
    from acehamil.models.hamiltonian.select_targets import eigen_gram

    at = cells[3].atoms
    rel = eigen_gram(small_model, at, 8, kmesh=(2, 2, 2), max_states=0)
    for key in rel:
        assert np.allclose(rel[key], rel[key].T) and np.all(np.linalg.eigvalsh(rel[key]) > -1e-10 * np.abs(rel[key]).max())
    # the model stores 4 electrons per Si: the default count is the same as 8 given
    for key, g in eigen_gram(small_model, at, kmesh=(2, 2, 2), max_states=0).items():
        np.testing.assert_allclose(g, rel[key], rtol=1e-10, atol=1e-14 * np.abs(rel[key]).max())
    with pytest.raises(ValueError, match="window_eV"):
        eigen_gram(small_model, at, 8, window_eV=0.0)


def test_leverage_target_is_the_noise_whitened_reduction(small_model, cells):
    """``leverage``: each gain is sum_{bt, L} beta (tr(T Sigma) - tr(T Sigma')), the pool's block variances in
    units of each block type's noise variance."""
    from acehamil.models.hamiltonian.select import gram, pool_target, variance_select
    from acehamil.models.hamiltonian.select_targets import whitened

    model = small_model
    cands = [cells[2], cells[4], cells[5]]
    grams = [gram(model, sd.atoms) for sd in cands]
    target = pool_target(grams, [len(sd.atoms) for sd in cands])
    _, gains = variance_select(model.H, grams, 1, whitened(model.H, target))
    expect = []
    for G in grams:
        tot = 0.0
        for key, byL in model.H.posteriors.items():
            for L, post in byL.items():
                P = _precision(post)
                T = target[(key, L)]
                tot += post.beta * (np.trace(T @ np.linalg.inv(P)) - np.trace(T @ np.linalg.inv(P + post.beta * G[(key, L)])))
        expect.append(tot)
    np.testing.assert_allclose(gains, expect, rtol=1e-4)


@pytest.mark.parametrize("criterion", ["eigen", "leverage"])
def test_select_new_criteria_take_kind_weights(small_model, cells, criterion):
    """select(eigen / leverage): a candidate of a kind fitted at weight 0 gains nothing and is picked last."""
    from acehamil.models.hamiltonian.select import select

    cands = [(sd.atoms.copy(), sd.n_electrons) for sd in (cells[2], cells[4], cells[5])]
    picked, gains = select(small_model, cands, 3, criterion)
    best = picked[0]
    assert gains[best] > 0
    cands[best][0].info["kind"] = "never-fitted"
    cfg = dataclasses.replace(small_model.config, fit=dataclasses.replace(small_model.config.fit,
                                                                          kind_weights=(("never-fitted", 0.0),)))
    picked0, gains0 = select(dataclasses.replace(small_model, config=cfg), cands, 3, criterion)
    assert gains0[best] == 0.0 and picked0[-1] == best


def test_information_select_with_costs_takes_the_largest_gain_per_cost(small_model, cells):
    """costs: the first gains are the plain gains divided by each cost, the first pick their argmax (a cost
    that makes the best candidate dear moves the pick); bad costs are refused."""
    from acehamil.models.hamiltonian.select import gram, information_select

    grams = [gram(small_model, sd.atoms) for sd in (cells[2], cells[4], cells[5])]
    picked, gains = information_select(small_model.H, grams, 2)
    costs = np.ones(3)
    costs[picked[0]] = 100.0
    picked_c, gains_c = information_select(small_model.H, grams, 2, costs=costs)
    np.testing.assert_allclose(gains_c, gains / costs, rtol=1e-12)
    assert picked_c[0] == int(np.argmax(gains / costs)) != picked[0]
    with pytest.raises(ValueError, match="costs"):
        information_select(small_model.H, grams, 1, costs=[1.0, 0.0, 1.0])

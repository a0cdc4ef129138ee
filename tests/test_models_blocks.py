"""Block models: exact O(3) equivariance, bond reversal, on-site symmetry, CG algebra,
and a Slater-Koster two-centre model (s, p, d) recovered by the off-site model."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.models.hamiltonian.blocks import BlockType, assemble, block_types, project, transpose_sign
from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.model import HamiltonianModel, random_coefficients
from acehamil.so3 import random_rotation, wigner_d_real
from acehamil.testing import assert_blocks_equivariant, random_cluster, rotated
from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData
from acehamil.structure.neighbours import neighbour_pairs

SMALL = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 2, "max_degree": [5, 4], "n_max": 4},
    "h_offsite": {"r_cut": 4.0, "r_env": 2.0, "max_nu": 2, "max_degree": [5, 4], "n_max": 4},
    "s_offsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [6], "n_max": 6},
}


def _random_model(rng, basis, overrides=SMALL) -> HamiltonianModel:
    cfg = ModelConfig.from_dict(overrides)
    template = HamiltonianModel.build(cfg, basis)
    return HamiltonianModel.build(cfg, basis, random_coefficients(template.H, rng), random_coefficients(template.S, rng))


BASES = {
    "Si-spd": OrbitalBasis.from_dict({14: [(3, 0), (3, 1), (3, 2)]}),
    "SiC-multi": OrbitalBasis.from_dict({6: [(2, 0), (2, 1)], 14: [(3, 0), (4, 0), (3, 1), (3, 2)]}),
}


TAPERED = {**SMALL, "h_offsite": {**SMALL["h_offsite"], "env_bond_cut": 3.2}}
DECAYED = {**SMALL, "h_offsite": {**SMALL["h_offsite"], "env_bond_cut": 3.2, "bond_decay": 1.3}}


@pytest.mark.parametrize("basis_name", sorted(BASES))
@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("config", [SMALL, TAPERED, DECAYED], ids=["env", "env-tapered", "env-tapered-decay"])
def test_predicted_blocks_equivariant_and_hermitian(rng, basis_name, improper, periodic, config):
    basis = BASES[basis_name]
    atoms = random_cluster(rng, list(basis.species), 8, periodic=periodic)
    model = _random_model(rng, basis, config)
    Q = random_rotation(rng, improper=improper)
    rot = rotated(atoms, Q)
    for name, (M, Mr) in zip("HS", zip(model.predict(atoms), model.predict(rot))):
        assert M.nblocks > len(atoms)
        # bond reversal / Hermiticity exactly by construction
        assert M.hermiticity_error() <= 1e-12, name
        assert_blocks_equivariant(M, Mr, atoms.numbers, basis, Q, rtol=1e-10)


def test_onsite_same_shell_blocks_symmetric_and_bond_blocks_nontrivial(rng):
    basis = BASES["SiC-multi"]
    atoms = random_cluster(rng, list(basis.species), 8)
    H, _ = _random_model(rng, basis).predict(atoms)
    for p in range(len(atoms)):
        blk = H.block(p)
        assert np.abs(blk - blk.T).max() <= 1e-12
    off = H.data[H.offsets[len(atoms)]:]
    assert np.abs(off).max() > 1e-3


@pytest.mark.parametrize("l1,l2", [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3)])
def test_project_assemble_round_trip_and_transpose_sign(rng, l1, l2):
    X = rng.normal(size=(5, 2 * l1 + 1, 2 * l2 + 1))
    Ls = range(abs(l1 - l2), l1 + l2 + 1)
    parts = {L: project(X, l1, l2, L) for L in Ls}
    np.testing.assert_allclose(assemble(parts, l1, l2, 5), X, atol=1e-13)
    np.testing.assert_allclose(sum((p**2).sum() for p in parts.values()), (X**2).sum(), rtol=1e-13)
    if l1 == l2:
        XT = X.transpose(0, 2, 1)
        for L in Ls:
            np.testing.assert_allclose(project(XT, l1, l2, L), transpose_sign(L) * parts[L], atol=1e-13)


def test_block_types_and_bad_input():
    ob = BASES["SiC-multi"]
    off = block_types(ob, "offsite")
    assert {(t.species_i, t.species_j) for t in off} == {(6, 6), (6, 14), (14, 14)}
    # same species: a <= b only; different species: every (a, b)
    assert sum(t.species_i == t.species_j == 14 for t in off) == 4 * 5 // 2
    assert sum(t.species_i == 6 and t.species_j == 14 for t in off) == 2 * 4
    assert BlockType("onsite", 6, 6, 1, 1, 1, 1).L_values() == (0, 2)
    assert BlockType("offsite", 6, 6, 1, 1, 1, 1).L_values() == (0, 1, 2)
    with pytest.raises(ValueError, match="kind"):
        BlockType("diagonal", 6, 6, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="one species"):
        BlockType("onsite", 6, 14, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="shape"):
        project(np.zeros((2, 3, 3)), 1, 2, 1)


# ---------------------------------------------------------------- Slater-Koster two-centre model
SK_RC = 4.6


def _sk_radial(r, v0, decay):
    return v0 * np.exp(-decay * (r - 2.35)) * (1 - r / SK_RC) ** 2 * (r < SK_RC)


# (l1, l2) -> [(V_m0, decay), (V_m1, decay), ...] for |m| = 0..min(l1, l2) (sigma, pi, delta)
SK_H = {(0, 0): [(-1.9, 1.1)], (0, 1): [(2.5, 1.0)], (0, 2): [(-1.4, 0.9)], (1, 1): [(4.4, 1.0), (-1.1, 1.3)],
        (1, 2): [(-1.6, 1.0), (1.2, 1.2)], (2, 2): [(-1.2, 1.0), (2.2, 1.1), (-0.4, 1.4)]}
SK_S = {k: [(0.05 * v, d) for v, d in vs] for k, vs in SK_H.items()}


def _z_to(u):
    """Rotation matrices taking z to the unit vectors ``u`` (n, 3) -> (n, 3, 3) (Rodrigues)."""
    out = np.empty((len(u), 3, 3))
    for q, v in enumerate(u):
        a = np.cross([0.0, 0.0, 1.0], v)
        s, c = np.linalg.norm(a), v[2]
        if s < 1e-12:
            out[q] = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
            continue
        k = a / s
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        out[q] = np.eye(3) + s * K + (1 - c) * K @ K
    return out


def _sk_blocks(l1, l2, r, D1, D2, table):
    """Two-centre blocks (n, 2l1+1, 2l2+1): diagonal in the bond frame (V_{l1 l2 |m|}), rotated."""
    frame = np.zeros((len(r), 2 * l1 + 1, 2 * l2 + 1))
    for m, (v0, decay) in enumerate(table[(l1, l2)]):
        for sgn in {m, -m}:
            frame[:, l1 + sgn, l2 + sgn] = _sk_radial(r, v0, decay)
    return D1 @ frame @ D2.transpose(0, 2, 1)


def _sk_matrix(atoms, basis, table, onsite):
    nl = neighbour_pairs(atoms, SK_RC)
    shells = basis.shells_of(14)
    norb = basis.layout(atoms.numbers).norb_per_atom
    lmax = max(s.l for s in shells)
    u = nl.vec / nl.dist[:, None]
    Dp = {l: wigner_d_real(l, _z_to(u)) for l in range(lmax + 1)}
    Dm = {l: wigner_d_real(l, _z_to(-u)) for l in range(lmax + 1)}
    rows = []
    for s1 in shells:
        row = []
        for s2 in shells:
            if s1.l <= s2.l:
                row.append(_sk_blocks(s1.l, s2.l, nl.dist, Dp[s1.l], Dp[s2.l], table))
            else:  # H^{ba}(r) = H^{ab}(-r)^T
                row.append(_sk_blocks(s2.l, s1.l, nl.dist, Dm[s2.l], Dm[s1.l], table).transpose(0, 2, 1))
        rows.append(np.concatenate(row, axis=2))
    bonds = np.concatenate(rows, axis=1)
    diag = np.diag(np.concatenate([np.full(s.size, onsite[s.l]) for s in shells]))
    n = len(atoms)
    blocks = [diag] * n + list(bonds)
    return RealSpaceMatrix.from_blocks(norb, np.r_[np.arange(n), nl.i], np.r_[np.arange(n), nl.j],
                                       np.r_[np.zeros((n, 3), int), nl.shift], blocks)


def test_slater_koster_spd_recovered_by_two_centre_model(rng):
    from ase.build import bulk

    from acehamil.models.hamiltonian.evaluate import block_errors, matrix_residuals
    from acehamil.models.hamiltonian.fit import fit

    basis = BASES["Si-spd"]
    data = []
    for k in range(7):
        at = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
        at.rattle(0.15 if k < 6 else 0.08, rng=rng)  # held-out bonds inside the training range
        H = _sk_matrix(at, basis, SK_H, {0: -4.2, 1: 1.7, 2: 6.0})
        S = _sk_matrix(at, basis, SK_S, {0: 1.0, 1: 1.0, 2: 1.0})
        assert H.hermiticity_error() < 1e-13
        data.append(StructureData(at, basis, H=(H,), S=S))
    two_centre = {"r_cut": SK_RC, "r_env": 0.0, "max_nu": 1, "max_degree": [16], "n_max": 16}
    cfg = ModelConfig.from_dict({"h_onsite": {"max_nu": 0}, "h_offsite": two_centre, "s_offsite": two_centre,
                                 "solver": {"lam": 1e-16, "smoothness": 0.0}})
    model = fit(data[:6], cfg, progress=False)
    held_out = data[6:]
    for which in "HS":
        Hp = (model.H if which == "H" else model.S).predict(held_out[0].atoms)
        ref = held_out[0].H[0] if which == "H" else held_out[0].S
        res, unmodelled = matrix_residuals(Hp, ref)
        assert unmodelled == 0.0
        assert np.abs(res).max() <= 1e-6, (which, np.abs(res).max())
    err = block_errors(model, held_out, "H")
    assert err["rmse"] <= 1e-3  # meV
    assert set(err["per_block"]) == {t.key for t in block_types(basis, "onsite") + block_types(basis, "offsite")}


@pytest.mark.parametrize("config", [SMALL, TAPERED, DECAYED], ids=["env", "env-tapered", "env-tapered-decay"])
def test_streamed_prediction_does_not_depend_on_the_chunk(rng, config):
    """Bond environments built chunk by chunk (bounded memory) give the same matrices as one pass."""
    model = _random_model(rng, BASES["SiC-multi"], config)
    atoms = random_cluster(rng, [6, 14], 12, periodic=True)
    ref = model.H.predict(atoms, bond_chunk=10**9)
    for chunk in (1, 7):
        m = model.H.predict(atoms, bond_chunk=chunk)
        assert m.same_pattern(ref)
        np.testing.assert_allclose(m.data, ref.data, rtol=0, atol=1e-12)  # batch sizes change only rounding


@pytest.mark.parametrize("config", [SMALL, TAPERED], ids=["env", "env-tapered"])
@pytest.mark.parametrize("decay", [0.7, 2.5])
def test_bond_decay_multiplies_every_offsite_block_by_the_decay(rng, config, decay):
    """Every off-site feature carries the bond particle's radial function once, so with the same
    coefficients ``bond_decay`` multiplies each off-site block by ``exp(-|r|/bond_decay)`` (the
    environment and the bond-only path beyond ``env_bond_cut`` alike) and leaves on-site blocks."""
    basis = BASES["SiC-multi"]
    plain = _random_model(rng, basis, config)
    cfg = ModelConfig.from_dict({**config, "h_offsite": {**config["h_offsite"], "bond_decay": decay}})
    decayed = HamiltonianModel.build(cfg, basis, plain.H.coefficients, plain.S.coefficients)
    atoms = random_cluster(rng, [6, 14], 10, periodic=True)
    a, b = plain.H.predict(atoms), decayed.H.predict(atoms)
    assert a.same_pattern(b)
    cell = np.asarray(atoms.cell.array)
    dist = np.linalg.norm(atoms.positions[a.j] - atoms.positions[a.i] + a.shift @ cell, axis=1)
    factor = np.where(dist > 0, np.exp(-dist / decay), 1.0)
    expected = a.data * np.repeat(factor, np.diff(a.offsets))
    assert np.abs(a.data[np.repeat(dist > 0, np.diff(a.offsets))]).max() > 1e-3
    np.testing.assert_allclose(b.data, expected, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(decayed.S.predict(atoms).data, plain.S.predict(atoms).data)  # S has no decay


def test_bond_decay_bad_values():
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(Exception, match="bond_decay"):
            ModelConfig.from_dict({"h_offsite": {"bond_decay": bad}})


def test_small_unique_equals_numpy_unique():
    """evaluate's block-type keys: the counting unique (no sort) returns np.unique's arrays, also for
    codes spread too far for a count (the sorting fallback), and for no entries."""
    from acehamil.models.hamiltonian.evaluate import _small_unique

    rng = np.random.default_rng(3)
    for code in (rng.integers(0, 50, 1000), rng.integers(0, 10**9, 300), np.zeros(0, np.int64), np.array([5])):
        u, inv = _small_unique(code)
        u0, inv0 = np.unique(code, return_inverse=True)
        assert np.array_equal(u, u0) and np.array_equal(inv, np.asarray(inv0).reshape(-1))
        assert u.dtype == np.int64 and inv.dtype.kind == "i"

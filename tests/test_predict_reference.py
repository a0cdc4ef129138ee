"""The fast prediction kernels (mapped features, fast block index, streamed chunks) against the
straightforward path: full environments -> every feature -> design -> coefficients -> blocks,
with the bond partners found by a Python dictionary.  Equal to 1e-12 relative on periodic and
non-periodic multi-species structures, for several feature settings."""

from __future__ import annotations

import numpy as np
import pytest

from acehamil.models.hamiltonian.blocks import assemble, transpose_sign
from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.model import HamiltonianModel, random_coefficients
from acehamil.structure import OrbitalBasis
from acehamil.structure.neighbours import neighbour_pairs
from acehamil.testing import random_cluster

CONFIGS = {
    "env": {
        "h_onsite": {"r_cut": 4.0, "max_nu": 2, "max_degree": [5, 4], "n_max": 4},
        "h_offsite": {"r_cut": 4.5, "r_env": 2.0, "max_nu": 2, "max_degree": [5, 4], "n_max": 4},
        "s_offsite": {"r_cut": 4.5, "max_nu": 1, "max_degree": [6], "n_max": 6},
    },
    "tapered-nu3": {
        "h_onsite": {"r_cut": 4.0, "max_nu": 3, "max_degree": [4, 4, 3], "n_max": 3},
        "h_offsite": {"r_cut": 5.0, "r_env": 2.0, "max_nu": 3, "max_degree": [5, 4, 3], "n_max": 4, "env_bond_cut": 3.6},
        "s_offsite": {"r_cut": 5.0, "max_nu": 1, "max_degree": [6], "n_max": 6},
    },
}
BASIS = OrbitalBasis.from_dict({6: [(2, 0), (2, 1)], 14: [(3, 0), (4, 0), (3, 1), (3, 2)]})


def _reference(mm, atoms) -> dict:
    """``{(i, j, shift): block}`` of every block, by the straightforward path."""
    nl = neighbour_pairs(atoms, mm.reach)
    so = {z: np.concatenate([[0], np.cumsum([s.size for s in BASIS.shells_of(z)])]) for z in BASIS.species}
    norb = {z: int(so[z][-1]) for z in BASIS.species}
    Z = atoms.numbers
    blocks = {}
    for fam in mm.families:
        sel = fam.select(atoms, nl)
        if len(sel) == 0:
            continue
        ci, cj, cs = fam.centre_blocks(atoms, nl, sel)
        keys = [(int(a), int(b), tuple(int(x) for x in t)) for a, b, t in zip(ci, cj, cs)]
        where = {k: p for p, k in enumerate(keys)}
        rev = np.array([where.get((b, a, tuple(-x for x in t)), -1) for a, b, t in keys])
        env = fam.environments(atoms, nl, sel)
        feats = fam.basis.evaluate(env.to_centres()) if fam.basis is not None else {}  # the plain basis, lab frame
        for bt in fam.block_types(BASIS):
            parts = {}
            for L, D in fam.design(feats, bt, len(sel)).items():
                x = np.einsum("nfM,f->nM", D, mm.coefficient(bt, L, D.shape[1]))
                if fam.symmetrised(bt):
                    x = 0.5 * (x + transpose_sign(L) * x[rev])
                parts[L] = x
            X = assemble(parts, bt.l1, bt.l2, len(sel))
            ra, cb = so[bt.species_i][bt.shell_a], so[bt.species_j][bt.shell_b]
            for p, (a, b, t) in enumerate(keys):
                for key, blk, r0, c0 in (((a, b, t), X[p], ra, cb), ((b, a, tuple(-x for x in t)), X[p].T, cb, ra)):
                    if key == (a, b, t) or not bt.symmetric:
                        full = blocks.setdefault(key, np.zeros((norb[Z[key[0]]], norb[Z[key[1]]])))
                        full[r0:r0 + blk.shape[0], c0:c0 + blk.shape[1]] = blk
    return blocks


@pytest.mark.parametrize("periodic", [False, True], ids=["cluster", "periodic"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_prediction_equals_the_straightforward_path(rng, periodic, config):
    cfg = ModelConfig.from_dict(CONFIGS[config])
    template = HamiltonianModel.build(cfg, BASIS)
    model = HamiltonianModel.build(cfg, BASIS, random_coefficients(template.H, rng), random_coefficients(template.S, rng))
    atoms = random_cluster(rng, [6, 14], 10, periodic=periodic)
    for mm in (model.H, model.S):
        got = mm.predict(atoms, bond_chunk=3)  # several chunks
        ref = _reference(mm, atoms)
        assert got.nblocks == len(ref)
        scale = max(np.abs(b).max() for b in ref.values())
        worst = 0.0
        for p in range(got.nblocks):
            key = (int(got.i[p]), int(got.j[p]), tuple(int(x) for x in got.shift[p]))
            worst = max(worst, np.abs(got.block(p) - ref[key]).max())
        assert worst <= 1e-12 * scale, (mm.name, worst / scale)
        assert np.abs(got.data).max() > 0.1 * scale  # not a vacuous comparison



@pytest.mark.parametrize("periodic", [False, True], ids=["cluster", "periodic"])
def test_row_chunks_equal_the_whole_prediction(rng, periodic):
    """Predicting the blocks of a few rows at a time (the unit of a distributed prediction) gives the
    whole prediction's blocks: the partners of symmetrised bonds are found within each row chunk."""
    cfg = ModelConfig.from_dict(CONFIGS["tapered-nu3"])
    template = HamiltonianModel.build(cfg, BASIS)
    model = HamiltonianModel.build(cfg, BASIS, random_coefficients(template.H, rng), random_coefficients(template.S, rng))
    atoms = random_cluster(rng, [6, 14], 10, periodic=periodic)
    for mm in (model.H, model.S):
        whole = mm.predict(atoms)
        got = np.zeros_like(whole.data)
        for rows in np.array_split(rng.permutation(len(atoms)), 3):
            part = mm.predict(atoms, rows=rows, bond_chunk=4)
            mine = np.isin(part.i, rows)
            for b in np.nonzero(mine)[0]:
                got[part.offsets[b]:part.offsets[b + 1]] = part.data[part.offsets[b]:part.offsets[b + 1]]
        assert np.abs(got - whole.data).max() <= 1e-12 * np.abs(whole.data).max()
        assert np.abs(whole.data).max() > 0

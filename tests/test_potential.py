"""Physics tests of the ACE site-energy potential: forces, stress, invariances, design rows.

Run with the real ACE basis (:mod:`acehamil.basis`).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from potential_cases import case

from acehamil.testing import assert_site_energy_invariant
from acehamil.models.potential.model import ACEPotential, design_rows, feature_degrees
from acehamil.models.potential.repulsion import RepulsionSpec

basis_mod = pytest.importorskip("acehamil.basis")
if not hasattr(basis_mod, "ACEBasis"):  # pragma: no cover - the engine not landed yet
    pytest.skip("acehamil.basis.ACEBasis not available", allow_module_level=True)
from acehamil.basis import ACEBasis, BasisSpec, RadialSpec  # noqa: E402


def _basis(species=(14,), r_cut=4.0):
    spec = BasisSpec(
        categories=tuple(species),
        radial=RadialSpec(n_max=4, r_cut=r_cut),
        max_nu=3,
        max_degree=(4, 4, 3),
        L_max=0,
    )
    return ACEBasis(spec)


def _potential(rng, species=(14,), repulsion=None, r_cut=4.0):
    basis = _basis(species, r_cut)
    nB = len(feature_degrees(basis))
    coef = rng.normal(size=(len(species), nB)) * 0.3
    e0 = rng.normal(size=len(species))
    return ACEPotential(basis, species, e0, coef, repulsion)


STRUCTURES = ["bulk", "cluster", "binary"]


def _setup(kind, rng):
    return case(kind, rng, _potential)


@pytest.mark.parametrize("kind", STRUCTURES)
def test_forces_are_minus_gradient_with_shrinking_error(kind, rng):
    pot, atoms = _setup(kind, rng)
    res = pot.compute(atoms)
    F = res["forces"]
    k, a = rng.integers(len(atoms)), rng.integers(3)
    d = rng.normal(size=(len(atoms), 3))
    d /= np.linalg.norm(d)
    errs = []
    for h in (1e-2, 1e-3):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions += h * d
        minus.positions -= h * d
        fd = (pot.compute(plus, forces=False, stress=False)["energy"] - pot.compute(minus, forces=False, stress=False)["energy"]) / (2 * h)
        errs.append(abs(fd + np.sum(F * d)))
    assert errs[1] < max(errs[0] / 20, 1e-8), errs
    assert errs[1] < 1e-5 * max(1.0, np.abs(F).max())
    del k, a


@pytest.mark.parametrize("kind", STRUCTURES)
def test_sum_of_forces_vanishes(kind, rng):
    pot, atoms = _setup(kind, rng)
    F = pot.compute(atoms)["forces"]
    assert np.abs(F.sum(axis=0)).max() < 1e-10 * max(1.0, np.abs(F).max())
    assert np.abs(F).max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("kind", ["bulk", "binary"])
def test_stress_matches_strain_finite_difference(kind, rng):
    pot, atoms = _setup(kind, rng)
    res = pot.compute(atoms)
    vol = atoms.get_volume()
    voigt = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    for v, (a, b) in enumerate(voigt):
        errs = []
        for h in (1e-3, 1e-4):
            e = []
            for sgn in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] += sgn * h / (2 if a != b else 1)
                eps[b, a] += sgn * h / 2 if a != b else 0
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
                e.append(pot.compute(strained, forces=False, stress=False)["energy"])
            errs.append(abs((e[0] - e[1]) / (2 * h) / vol - res["stress"][v]))
        assert errs[1] < max(errs[0] / 20, 1e-9), (v, errs)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("kind", STRUCTURES)
def test_energy_invariant_under_rotation_permutation_translation(kind, improper, rng):
    pot, atoms = _setup(kind, rng)
    assert_site_energy_invariant(pot.compute, atoms, rng, improper=improper)


@pytest.mark.parametrize("kind", STRUCTURES)
def test_design_rows_reproduce_model(kind, rng):
    pot, atoms = _setup(kind, rng)
    pot = ACEPotential(pot.basis, pot.species, pot.e0, pot.coef, None)
    res = pot.compute(atoms)
    rows = design_rows(pot.basis, pot.species, atoms)
    theta = pot.parameter_vector()
    assert rows.energy @ theta == pytest.approx(res["energy"], rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(rows.forces @ theta, res["forces"], atol=1e-10)
    np.testing.assert_allclose(rows.strain @ theta, res["virial_strain"], atol=1e-10)


def test_chunking_does_not_change_results(rng):
    pot, atoms = _setup("bulk", rng)
    atoms = atoms.repeat((2, 1, 1))
    a = pot.compute(atoms, chunk_atoms=3)
    b = pot.compute(atoms, chunk_atoms=1000)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12)
    np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-14)


def test_repulsion_prevents_collapse(rng):
    pot = _potential(rng, repulsion=RepulsionSpec((((14, 14), 1.9),), 10.0))
    far = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 1.95]])
    near = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 0.6]])
    bare = ACEPotential(pot.basis, pot.species, pot.e0, pot.coef, None)
    assert pot.compute(far)["energy"] == pytest.approx(bare.compute(far)["energy"], abs=1e-12)
    assert pot.compute(near)["energy"] - bare.compute(near)["energy"] > 5.0
    assert pot.compute(near)["forces"][1, 2] - bare.compute(near)["forces"][1, 2] > 0  # pushes apart


@pytest.mark.parametrize("bad", ["species", "shape"])
def test_bad_model_input(bad, rng):
    pot = _potential(rng)
    if bad == "species":
        with pytest.raises(ValueError, match="not one of the model's species"):
            pot.compute(Atoms("Ge2", positions=[[0, 0, 0], [0, 0, 2.4]]))
    else:
        with pytest.raises(ValueError, match="coef must have shape"):
            ACEPotential(pot.basis, pot.species, pot.e0, pot.coef[:, :-1])


@pytest.mark.parametrize("trailing", [(3,), (2, 3), (5, 3)])
def test_pair_scatter_equals_a_loop_over_pairs(trailing, rng):
    # the few-column path (bincounts, forces) and the sparse path (design rows) against a plain loop
    from acehamil.models.potential.model import scatter_pair_gradients

    natoms, P = 7, 40
    i, j = rng.integers(natoms, size=P), rng.integers(natoms, size=P)
    g = rng.normal(size=(P,) + trailing)
    want = np.zeros((natoms,) + trailing)
    for p in range(P):
        want[j[p]] += g[p]
        want[i[p]] -= g[p]
    np.testing.assert_allclose(scatter_pair_gradients(natoms, i, j, g), want, atol=1e-13)


def test_species_index_is_the_position_in_species(rng):
    from acehamil.models.potential.model import _species_index

    species = (42, 3, 14)  # not sorted
    numbers = rng.choice(species, size=50)
    want = np.array([species.index(int(z)) for z in numbers])
    got = _species_index(species, numbers)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert len(_species_index(species, np.zeros(0, int))) == 0
    with pytest.raises(ValueError, match="atomic number 32 is not one of the model's species \\[42, 3, 14\\]"):
        _species_index(species, np.array([3, 32, 1]))
    with pytest.raises(ValueError, match="atomic number 100 is not"):
        _species_index(species, np.array([100]))

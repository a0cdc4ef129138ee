"""The cell energy-zero laws: coordination numbers, bond ends, and the fitted law (issue 12, vacancies)."""

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.energy_zero import EnergyZero, bond_ends, coordination
from acehamil.models.hamiltonian.fit import fit_density_energy_zero


def _si(a=5.43, repeat=(1, 1, 1)):
    return bulk("Si", "diamond", a=a, cubic=True).repeat(repeat)


def _orthogonal(rng, improper: bool) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if improper else q


@pytest.mark.parametrize("improper", [False, True])
def test_coordination_is_invariant_under_rotation_and_permutation(rng, improper):
    at = _si(repeat=(2, 1, 1))
    del at[3]
    at.rattle(0.12, rng=rng)
    n = coordination(at)
    Q = _orthogonal(rng, improper)
    turned = at.copy()
    turned.set_cell(at.cell.array @ Q.T)
    turned.positions = at.positions @ Q.T
    np.testing.assert_allclose(coordination(turned), n, atol=1e-12)
    perm = rng.permutation(len(at))
    np.testing.assert_allclose(coordination(at[perm]), n[perm], atol=1e-12)


def test_coordination_counts_the_first_shell_and_a_vacancy_takes_eight_bond_ends():
    at = _si(repeat=(2, 1, 1))
    assert coordination(at).tolist() == [4.0] * 16
    near = np.delete(at.get_distances(5, range(len(at)), mic=True) < 2.5, 5)  # the removed atom's four neighbours
    del at[5]
    n = coordination(at)
    assert n[near].tolist() == [3.0] * 4 and np.all(n[~near] == 4.0)
    assert bond_ends(at, [14]) == {14: pytest.approx(15 * 4.0 - 4.0)}  # 16 * 4 less its own 4 and its neighbours' 4
    assert bond_ends(at, [6]) == {6: 0.0}  # a species not in the cell has none


def test_coordination_is_continuous_in_the_positions(rng):
    """A bond stretched through the taper changes the count smoothly: the change shrinks with the step."""
    at = _si()
    i, j = 0, int(np.argsort(at.get_distances(0, range(8), mic=True))[1])
    d = at.get_distance(i, j, mic=True, vector=True)
    u = d / np.linalg.norm(d)
    stretch = 2.8 - np.linalg.norm(d)  # into the taper (2.55-3.0 Å for Si-Si)
    steps = []
    for h in (1e-2, 1e-3, 1e-4):
        a, b = at.copy(), at.copy()
        a.positions[j] += (stretch) * u
        b.positions[j] += (stretch + h) * u
        steps.append(np.abs(coordination(b) - coordination(a)).max())
    assert steps[0] > 0 and steps[1] < 0.2 * steps[0] and steps[2] < 0.2 * steps[1]


def test_bond_law_learns_the_vacancy_shift_that_the_density_law_misses():
    """Energy zeros made by v0 + beta N / Omega + gamma B / Omega over bulk and vacancy cells of several volumes:
    the bond law recovers the three numbers and every cell's zero; the density law leaves the vacancy cells off."""
    cells = []
    for a in (5.30, 5.38, 5.43, 5.50, 5.58):
        cells.append(_si(a, (2, 1, 1)))
        vac = _si(a + 0.02, (2, 1, 1))
        del vac[int(10 * a) % 16]
        cells.append(vac)
    law = EnergyZero(v0=-1.1, beta=((14, 250.0),), gamma=((14, 6.5),))
    V = np.array([law.value(c) for c in cells])
    ez, summary = fit_density_energy_zero(cells, V, [14], bonds=True)
    assert ez.v0 == pytest.approx(-1.1, abs=1e-8) and ez.beta[0][1] == pytest.approx(250.0, abs=1e-5)
    assert ez.gamma[0][1] == pytest.approx(6.5, abs=1e-6)
    assert summary["rms_after_meV"] < 1e-6 and summary["gamma_eV_A3_per_bond_end"] == {"14": pytest.approx(6.5)}
    dens, dsum = fit_density_energy_zero(cells, V, [14])
    assert dens.gamma == () and dsum["rms_after_meV"] > 10.0  # 4 * 6.5 / 325 eV = 80 meV on the vacancy cells
    # bulk-only, unrattled training cells: bond ends = 4 N, the two columns are one; any split gives the same zeros
    bulk_only = cells[0::2]
    ez0, _ = fit_density_energy_zero(bulk_only, V[0::2], [14], bonds=True)
    assert [ez0.value(c) for c in bulk_only] == pytest.approx(list(V[0::2]), abs=1e-9)


def test_energy_zero_dict_round_trip_and_old_files():
    law = EnergyZero(v0=-1.0, beta=((14, 19.0),), gamma=((14, -5.0),), bond_range=(1.2, 1.4))
    assert EnergyZero.from_dict(law.to_dict()) == law
    old = {"v0_eV": -1.0, "beta_eV_A3": {"14": 19.0}}  # a file of the density law
    assert EnergyZero.from_dict(old) == EnergyZero(v0=-1.0, beta=((14, 19.0),))
    assert EnergyZero(v0=-1.0, beta=((14, 19.0),)).to_dict() == old
    with pytest.raises(ValueError, match="bond_range"):
        EnergyZero(bond_range=(1.4, 1.2))
    with pytest.raises(ValueError, match="finite"):
        EnergyZero(gamma=((14, float("nan")),))


def test_config_takes_the_bond_law():
    cfg = ModelConfig.from_dict({"fit": {"fit_energy_zero": True, "energy_zero_model": "bonds"}})
    assert cfg.fit.energy_zero_model == "bonds"
    with pytest.raises(ValueError, match="needs fit_energy_zero"):
        ModelConfig.from_dict({"fit": {"energy_zero_model": "bonds"}})

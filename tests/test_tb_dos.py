"""Smearing, Monkhorst-Pack grids, Fermi levels, DOS and Mulliken PDOS identities."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from acehamil.structure import OrbitalBasis, RealSpaceMatrix, StructureData
from acehamil.tb.bloch import bloch_sum
from acehamil.tb.dos import density_of_states, dos_from_levels, monkhorst_pack, orbital_groups
from acehamil.tb.eigen import solve
from acehamil.tb.smearing import SMEARINGS, delta, electron_count, fermi_level, occupation
from acehamil.tb.toy import slater_koster

SP = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)], 1: [(1, 0)], 6: [(2, 0), (2, 1)]})



@pytest.mark.parametrize("kind", SMEARINGS)
def test_delta_normalised_and_occupation_consistent(kind):
    x = np.linspace(-3, 3, 60001)
    w = 0.1
    assert np.trapezoid(delta(x, w, kind), x) == pytest.approx(1.0, abs=1e-9)
    f = occupation(x, w, kind)
    assert f[0] == pytest.approx(1.0, abs=1e-12) and f[-1] == pytest.approx(0.0, abs=1e-12)
    # f' = -delta by central differences; the error shrinks as h^2
    x0 = np.array([-0.13, 0.0, 0.07])
    errs = [np.abs((occupation(x0 + h, w, kind) - occupation(x0 - h, w, kind)) / (2 * h) + delta(x0, w, kind)).max()
            for h in (1e-2, 5e-3)]
    assert errs[1] < errs[0] / 3


@pytest.mark.parametrize("kwargs", [{"width": 0.0}, {"width": -1.0}, {"kind": "lorentzian"}, {"order": -1}])
def test_smearing_bad_input(kwargs):
    args = {"width": 0.1, "kind": "gaussian", "order": 1} | kwargs
    with pytest.raises(ValueError):
        delta(0.0, args["width"], args["kind"], args["order"])


@pytest.mark.parametrize("size, pbc", [((4, 4, 4), (1, 1, 1)), ((3, 5, 2), (1, 1, 1)), ((6, 6, 9), (1, 1, 0)),
                                       ((5, 5, 5), (0, 0, 0))])
def test_monkhorst_pack_time_reversal(size, pbc):
    full, wf = monkhorst_pack(size, pbc, time_reversal=False)
    red, wr = monkhorst_pack(size, pbc)
    n = np.where(pbc, size, 1)
    assert len(full) == np.prod(n) and wr.sum() == pytest.approx(1.0)
    # every full-grid point is a reduced point or minus one, modulo G; weights count them
    counts = np.zeros(len(red))
    for k in full:
        d1 = np.abs((red - k + 0.5) % 1 - 0.5).sum(axis=1)
        d2 = np.abs((red + k + 0.5) % 1 - 0.5).sum(axis=1)
        hit = np.nonzero((d1 < 1e-9) | (d2 < 1e-9))[0]
        assert len(hit) == 1
        counts[hit[0]] += 1
    np.testing.assert_allclose(counts / len(full), wr)


def test_chain_dos_is_analytic():
    t, e0 = -1.0, 0.3
    sh = [[0, 0, 0], [1, 0, 0], [-1, 0, 0]]
    H = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], sh, [np.full((1, 1), v) for v in (e0, t, t)])
    atoms = Atoms("H", cell=[1.0, 5.0, 5.0], pbc=(True, False, False))
    data = StructureData(atoms, SP, H=(H,), n_electrons=1.0)
    res = density_of_states(data, kmesh=(4000, 1, 1), width=0.01, energies=np.array([e0 - 1.0, e0, e0 + 0.5]))
    exact = 2.0 / (np.pi * np.sqrt(4 * t * t - (res.energies - e0) ** 2))  # spin degeneracy 2
    np.testing.assert_allclose(res.dos, exact, rtol=2e-3)
    assert res.fermi_level == pytest.approx(e0, abs=1e-6)  # half filling of a symmetric band


@pytest.mark.parametrize("smearing", SMEARINGS)
def test_dos_integrates_to_number_of_states_and_pdos_sums(si_data, smearing):
    res = density_of_states(si_data, kmesh=(4, 4, 4), width=0.2, smearing=smearing, npoints=4001, pdos="shell")
    norb = si_data.layout.norb
    assert res.spin_degeneracy == 2
    assert np.trapezoid(res.dos, res.energies) == pytest.approx(2 * norb, rel=1e-6)
    np.testing.assert_allclose(sum(res.pdos.values()), res.dos, atol=1e-10 * res.dos.max())
    assert set(res.pdos) == {"Si:3s", "Si:3p"}


@pytest.mark.parametrize("by, labels", [("species", {"C", "H"}), ("l", {"C:s", "C:p", "H:s"}),
                                        ("shell", {"C:2s", "C:2p", "H:1s"})])
def test_pdos_partitions_of_a_molecule(by, labels):
    atoms = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                                    [0.63, -0.63, -0.63]])
    H, S = slater_koster(atoms, SP, cutoff=2.5)
    data = StructureData(atoms, SP, H=(H,), S=S, n_electrons=8)
    groups = orbital_groups(data.layout, by)
    assert set(groups) == labels
    assert np.array_equal(np.sort(np.concatenate(list(groups.values()))), np.arange(H.norb))
    res = density_of_states(data, width=0.1, pdos=by)
    assert len(res.kpts) == 1  # a cluster is Gamma only
    np.testing.assert_allclose(sum(res.pdos.values()), res.dos, atol=1e-10 * res.dos.max())
    eps = solve(H, S, np.zeros((1, 3)))[0]
    assert res.fermi_level == pytest.approx(0.5 * (eps[3] + eps[4]))  # mid HOMO-LUMO


@pytest.mark.parametrize("smearing", SMEARINGS)
def test_windowed_dos_equals_dense_sum(rng, smearing):
    eps = rng.normal(size=(2, 7, 5))
    w = rng.uniform(size=7)
    w /= w.sum()
    proj = rng.uniform(size=(2, 7, 3, 5))
    E = np.linspace(-4, 4, 801)  # uniform: windowed path
    E_dense = E.copy()
    E_dense[400] += 1e-12  # not uniform: every level on every point
    d1, p1 = dos_from_levels(eps, w, E, 0.1, smearing, 1, proj)
    d2, p2 = dos_from_levels(eps, w, E_dense, 0.1, smearing, 1, proj)
    np.testing.assert_allclose(d1, d2, atol=1e-9)
    np.testing.assert_allclose(p1, p2, atol=1e-9)


def test_mulliken_weights_sum_to_one(si_data, rng):
    k = rng.uniform(-0.5, 0.5, (3, 3))
    eps, c = solve(si_data.H[0], si_data.S, k, eigenvectors=True)
    sc = np.einsum("kij,kjb->kib", bloch_sum(si_data.S, k), c)
    q = np.real(np.conj(c) * sc)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)


def test_spin_polarised_sums_channels(si_data):
    H = si_data.H[0]
    shifted = H.with_data(H.data + 0.4 * np.where(H.i == H.j, 1.0, 0.0).repeat(np.diff(H.offsets)) *
                          np.concatenate([np.eye(4).ravel() if not t.any() else np.zeros(16) for t in H.shift]))
    data = StructureData(si_data.atoms, SP, H=(H, shifted), S=si_data.S, n_electrons=8)
    res = density_of_states(data, kmesh=(3, 3, 3), width=0.2, npoints=3001)
    assert res.spin_degeneracy == 1 and res.eigenvalues.shape[0] == 2
    assert np.trapezoid(res.dos, res.energies) == pytest.approx(2 * H.norb, rel=1e-6)
    single = density_of_states(si_data, kmesh=(3, 3, 3), width=0.2, energies=res.energies)
    up_only = dos_from_levels(res.eigenvalues[:1], res.weights, res.energies, 0.2, spin_degeneracy=1)[0]
    np.testing.assert_allclose(up_only, single.dos / 2, atol=1e-12)


def test_fermi_level_metal_bisection(rng):
    eps = np.sort(rng.normal(size=(50, 6)), axis=1)
    w = np.full(50, 1 / 50)
    for n_el in (3.3, 7.0):
        mu = fermi_level(eps, w, n_el, width=0.05, kind="fermi-dirac")
        assert electron_count(eps, w, mu, 0.05, "fermi-dirac") == pytest.approx(n_el, abs=1e-8)


def test_fermi_level_insulator_mid_gap():
    eps = np.array([[-2.0, -1.0, 1.0], [-2.5, -0.5, 2.0]])
    assert fermi_level(eps, [0.5, 0.5], 4.0) == pytest.approx(0.25)  # VBM -0.5, CBM 1.0


@pytest.mark.parametrize("args", [([[0.0, 1.0]], [0.5], 2.0), ([[0.0, 1.0]], [1.0], 5.0), ([[0.0]], [1.0, 0.0], 1.0)])
def test_fermi_level_bad_input(args):
    with pytest.raises(ValueError):
        fermi_level(*args)


def test_density_of_states_bad_input(si_data):
    with pytest.raises(TypeError):
        density_of_states("si")
    with pytest.raises(ValueError, match="smearing"):
        density_of_states(si_data, smearing="box")
    with pytest.raises(ValueError, match="partition"):
        density_of_states(si_data, kmesh=(1, 1, 1), pdos="atom")
    with pytest.raises(ValueError, match="k-mesh"):
        density_of_states(si_data, kmesh=(0, 1, 1))
    with pytest.raises(ValueError, match="no Hamiltonian"):
        density_of_states(StructureData(si_data.atoms, SP, S=si_data.S))

"""Dask scale-out: predictions in atom chunks on a 2-worker LocalCluster equal the serial ones."""

import numpy as np
import pytest

pytest.importorskip("distributed", reason="dask.distributed not installed (pip install -e '.[dask]')")

from ase.build import bulk  # noqa: E402

from acehamil.distributed import atom_chunks, predict  # noqa: E402
from acehamil.models.hamiltonian.config import ModelConfig  # noqa: E402
from acehamil.models.hamiltonian.model import EnergyZero, HamiltonianModel, random_coefficients  # noqa: E402
from acehamil.structure import OrbitalBasis  # noqa: E402

CFG = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 2, "max_degree": [4, 3], "n_max": 3},
    "h_offsite": {"r_cut": 4.5, "r_env": 2.0, "max_nu": 2, "max_degree": [6, 4], "n_max": 4, "env_bond_cut": 4.0},
    "s_offsite": {"r_cut": 4.5, "max_nu": 1, "max_degree": [6], "n_max": 6},
}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


@pytest.mark.parametrize("energy_zero", [None, EnergyZero(v0=-0.7, beta=((14, 30.0), (6, -12.0)))])
def test_distributed_predict_equals_serial(client, rng, energy_zero):
    basis = OrbitalBasis.from_dict({6: [(2, 0), (2, 1)], 14: [(3, 0), (3, 1)]})
    cfg = ModelConfig.from_dict(CFG)
    t = HamiltonianModel.build(cfg, basis)
    model = HamiltonianModel.build(cfg, basis, random_coefficients(t.H, rng), random_coefficients(t.S, rng),
                                   energy_zero=energy_zero)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 1, 1)
    atoms.numbers[rng.choice(len(atoms), 5, replace=False)] = 6
    atoms.rattle(0.05, rng=rng)
    H, S = model.predict(atoms)
    Hd, Sd = predict(model, atoms, client, n_chunks=3)
    for a, b in ((H, Hd), (S, Sd)):
        assert a.same_pattern(b)
        np.testing.assert_allclose(b.data, a.data, rtol=0, atol=1e-12)
        assert np.abs(a.data).max() > 0.1


def test_atom_chunks_cover_all_atoms():
    c = atom_chunks(7, 3)
    assert np.array_equal(np.concatenate(c), np.arange(7))
    with pytest.raises(ValueError):
        atom_chunks(7, 0)


def _training(rng, n=5):
    from acehamil.structure import StructureData
    from acehamil.tb.toy import slater_koster

    basis = OrbitalBasis.from_dict({6: [(2, 0), (2, 1)], 14: [(3, 0), (3, 1)]})
    out = []
    for k in range(n):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k)) * (2, 1, 1)
        at.numbers[::3] = 6
        at.rattle(0.1, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(H,), S=S, n_electrons=4.0 * len(at)))
    return basis, out


def _reversed_mapper(fn, common, tasks):
    """Runs the tasks last to first (another completion order), yields in task order."""
    tasks = list(tasks)
    results = [fn(*common, *t) for t in reversed(tasks)][::-1]
    yield from results


FITS = [
    {"fit": {"batch_structures": 2, "max_blocks_per_type": 40, "seed": 3}},
    {"fit": {"batch_structures": 3, "max_blocks_per_type": 25, "fit_energy_zero": True, "energy_zero_model": "density"},
     "solver": {"method": "blr"}},
]


@pytest.mark.parametrize("extra", FITS)
def test_distributed_fit_equals_serial(client, rng, extra):
    """Batches of structures on 2 workers give the serial fit; so does any completion order."""
    from acehamil.distributed import dask_mapper
    from acehamil.models.hamiltonian.fit import fit

    basis, train = _training(rng)
    cfg = ModelConfig.from_dict({**CFG, **extra})
    serial = fit(train, cfg, progress=False)
    assert min(serial.report["H_sampling_rates"].values()) < 1.0  # sampling is exercised
    test = train[0].atoms.copy()
    test.rattle(0.05, rng=rng)
    H0, S0 = serial.predict(test)
    for mapper in (dask_mapper(client), dask_mapper(client, in_flight=1), _reversed_mapper):
        other = fit(train, cfg, progress=False, mapper=mapper)
        H1, S1 = other.predict(test)
        np.testing.assert_allclose(H1.data, H0.data, rtol=0, atol=1e-12)
        np.testing.assert_allclose(S1.data, S0.data, rtol=0, atol=1e-12)
        assert other.report.get("energy_zero_eV") == serial.report.get("energy_zero_eV")
    assert np.abs(H0.data).max() > 0.1


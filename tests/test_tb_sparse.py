"""Sparse spectral methods (KPM, shift-invert) against dense diagonalisation.

The big system is a rattled 512-atom Si supercell (2048 orbitals) of the s/p Slater-Koster toy
model with a non-trivial overlap; its dense Gamma spectrum is computed once per module.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb import kpm, solvers
from acehamil.tb.bloch import bloch_sum
from acehamil.tb.eigen import solve
from acehamil.tb.smearing import fermi_level
from acehamil.tb.sparse import bloch_csr, eigs_near, real_at
from acehamil.tb.toy import slater_koster

BASIS = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})


def _si(reps, rattle_seed=0, cutoff=2.8):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * reps
    atoms.rattle(0.05, rng=np.random.default_rng(rattle_seed))
    H, S = slater_koster(atoms, BASIS, cutoff=cutoff)
    return StructureData(atoms, BASIS, H=(H,), S=S, n_electrons=4 * len(atoms))


@pytest.fixture(scope="module")
def big():
    sd = _si((4, 4, 4))
    eps = solve(sd.H[0], sd.S, [[0.0, 0.0, 0.0]])
    ef = fermi_level(eps[None], np.ones(1), sd.n_electrons, 0.01, "gaussian", 2)
    return sd, eps, ef


@pytest.fixture(scope="module")
def big_kpm(big):
    sd = big[0]
    return solvers.dos(sd, "kpm", n_moments=1024, n_vectors=16, seed=3)


def test_bloch_csr_equals_dense_bloch_sum(rng):
    sd = _si((1, 1, 1), cutoff=4.0)
    for k, real in (([0, 0, 0], True), ([0.5, 0, 0], True), ([0.1, 0.2, -0.3], False)):
        Hk, Sk = bloch_csr(sd.H[0], sd.S, k)
        assert (Hk.dtype.kind == "f") == real == real_at(sd.H[0], k)
        np.testing.assert_allclose(Hk.toarray(), bloch_sum(sd.H[0], [k])[0], atol=1e-13)
        np.testing.assert_allclose(Sk.toarray(), bloch_sum(sd.S, [k])[0], atol=1e-13)


def test_kpm_dos_equals_dense_with_same_kernel(big, big_kpm):
    """Stochastic KPM DOS = exact-moment KPM DOS (dense levels, same kernel and bounds) within the error bar."""
    sd, eps, _ = big
    r = big_kpm
    exact, exact_idos = kpm.kpm_dos_from_levels(eps, np.ones(1), r.energies, r.bounds, r.n_moments)
    tiny = 1e-8 * exact.max()
    z = np.abs(r.dos - exact) / (r.dos_error + tiny)
    assert np.mean(z <= 3.0) > 0.97, np.mean(z <= 3.0)
    assert z.max() < 8.0
    zi = np.abs(r.idos - exact_idos) / (r.idos_error + 1e-8)
    assert np.mean(zi <= 3.0) > 0.97
    assert r.idos[-1] == pytest.approx(2 * sd.H[0].norb, rel=1e-9)  # every state counted (spin 2)
    # the error bar is a real spread, not zero: the estimate differs from the exact moments
    assert np.abs(r.dos - exact).max() > 1e-6 * exact.max()


def test_kpm_fermi_level_within_10_meV_of_dense(big, big_kpm):
    _, eps, ef = big
    r = big_kpm
    assert abs(r.fermi_level - ef) < 0.010, (r.fermi_level, ef)
    nv = big[0].n_electrons // 2
    lo, hi = r.fermi_window  # inside the gap
    assert eps[0, nv - 1] - 0.01 < lo < hi < eps[0, nv] + 0.01


def test_kpm_pdos_sums_to_dos():
    sd = _si((1, 1, 1), cutoff=4.0)
    r = solvers.dos(sd, "kpm", kmesh=(3, 3, 3), n_moments=256, n_vectors=4, pdos="l", seed=1)
    total = sum(r.pdos.values())
    np.testing.assert_allclose(total, r.dos, atol=1e-9 * r.dos.max())
    assert set(r.pdos) == {"Si:s", "Si:p"}


def test_kpm_general_k_matches_dense():
    """Complex H(k): KPM on a k-grid of a small cell = exact levels with the same kernel."""
    sd = _si((1, 1, 1), cutoff=4.0)
    r = solvers.dos(sd, "kpm", kmesh=(3, 3, 3), n_moments=256, n_vectors=32, seed=2)
    from acehamil.tb.dos import monkhorst_pack

    kp, w = monkhorst_pack((3, 3, 3), sd.atoms.pbc)
    assert any(not real_at(sd.H[0], k) for k in kp)
    eps = solve(sd.H[0], sd.S, kp)
    exact, _ = kpm.kpm_dos_from_levels(eps, w, r.energies, r.bounds, 256)
    z = np.abs(r.dos - exact) / (r.dos_error + 1e-8 * exact.max())
    assert np.mean(z <= 3.0) > 0.97


def test_shift_invert_equals_dense_gamma(big):
    sd, eps, ef = big
    res = solvers.eigenpairs(sd, near=ef, n=12, method="shift-invert", eigenvectors=True)
    ref = eps[0][np.sort(np.argsort(np.abs(eps[0] - ef))[:12])]
    np.testing.assert_allclose(res.energies, ref, atol=1e-8, rtol=0)
    assert res.residual < 1e-8
    assert res.vectors.dtype == np.float64  # real at Gamma
    Hk, Sk = bloch_csr(sd.H[0], sd.S)
    np.testing.assert_allclose(res.vectors.T @ (Sk @ res.vectors), np.eye(12), atol=1e-8)


def test_shift_invert_equals_dense_general_k():
    sd = _si((2, 1, 1), cutoff=4.0)
    k = [0.1, 0.2, 0.3]
    Hk, Sk = bloch_csr(sd.H[0], sd.S, k)
    assert Hk.dtype.kind == "c"
    eps = solve(sd.H[0], sd.S, [k])[0]
    sigma = 0.5 * (eps[31] + eps[32])
    res = eigs_near(Hk, Sk, sigma, n=6, kpt=k)
    ref = eps[np.sort(np.argsort(np.abs(eps - sigma))[:6])]
    np.testing.assert_allclose(res.energies, ref, atol=1e-8, rtol=0)
    dense = solvers.eigenpairs(sd, near=sigma, n=6, kpt=k, method="dense")
    np.testing.assert_allclose(dense.energies, ref, atol=1e-10)


def test_solver_seam_auto_and_forced(monkeypatch):
    sd = _si((1, 1, 1), cutoff=4.0)
    assert solvers.choose_dos_method(sd.H[0].norb) == "dense"
    assert type(solvers.dos(sd, kmesh=(2, 2, 2))).__name__ == "DOSResult"
    monkeypatch.setattr(solvers, "DENSE_MAX_NORB", 4)
    assert type(solvers.dos(sd, kmesh=(2, 2, 2), n_moments=64, n_vectors=2)).__name__ == "KPMResult"
    assert solvers.eigenpairs(sd, near=0.0, n=3).method == "shift-invert"
    with pytest.raises(ValueError, match="DOS method"):
        solvers.dos(sd, "lanczos")
    with pytest.raises(ValueError, match="eigen-solver method"):
        solvers.eigenpairs(sd, near=0.0, method="magic")


def test_s_inverse_cg_equals_lu(rng):
    sd = _si((2, 2, 2), cutoff=4.0)
    _, Sk = bloch_csr(sd.H[0], sd.S, [0.1, 0.0, 0.2])
    b = rng.normal(size=(Sk.shape[0], 3)) + 1j * rng.normal(size=(Sk.shape[0], 3))
    x_lu = kpm.SInverse(Sk, "lu")(b)
    cg = kpm.SInverse(Sk, "cg", tol=1e-12, atom_offsets=sd.S.atom_offsets)
    np.testing.assert_allclose(cg(b), x_lu, atol=1e-9)
    assert cg.iterations > 0
    np.testing.assert_allclose(Sk @ x_lu, b, atol=1e-10)


def test_kpm_bad_input():
    H = sp.identity(10, format="csr")
    with pytest.raises(ValueError, match="n_moments"):
        kpm.kernel_coefficients(1)
    with pytest.raises(ValueError, match="kernel"):
        kpm.kernel_coefficients(10, "dirichlet")
    with pytest.raises(ValueError, match="bounds"):
        kpm.kpm_moments(H, None, 8, 2, (1.0, -1.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="electron count"):
        E = np.linspace(-1, 1, 11)
        kpm.fermi_from_idos(E, np.ones(11), np.zeros(11), np.linspace(0, 4, 11), np.zeros(11), 10.0)
    with pytest.raises(ValueError, match="n must be"):
        eigs_near(H, None, 0.5, n=10)


def test_lanczos_bounds_enclose_the_spectrum_and_narrow_bounds_are_refused(big):
    sd, eps, _ = big
    Hk, Sk = bloch_csr(sd.H[0], sd.S)
    lo, hi = kpm.spectral_bounds(Hk, Sk)
    w = eps[0]
    assert lo <= w[0] + 1e-6 and hi >= w[-1] - 1e-6
    assert lo > w[0] - 0.05 * (w[-1] - w[0]) and hi < w[-1] + 0.05 * (w[-1] - w[0])
    with pytest.raises(ValueError, match="diverge"):
        kpm.kpm_moments(Hk, Sk, 256, 2, (w[0] + 1.0, w[-1]), np.random.default_rng(0))


def test_shift_invert_with_pardiso_equals_dense(big):
    """The optional PARDISO factorisation gives the dense eigenpairs (skipped without pypardiso)."""
    from acehamil.tb.pardiso import available

    if not available():
        pytest.skip("pypardiso (MKL PARDISO) not installed: optional, pip install pypardiso")
    sd, eps, ef = big
    res = solvers.eigenpairs(sd, near=ef, n=12, method="shift-invert", eigenvectors=True, factorization="pardiso")
    ref = eps[0][np.sort(np.argsort(np.abs(eps[0] - ef))[:12])]
    np.testing.assert_allclose(res.energies, ref, atol=1e-8, rtol=0)
    assert res.residual < 1e-8 and res.method == "shift-invert (pardiso)"
    small = _si((2, 1, 1), cutoff=4.0)
    Hk, Sk = bloch_csr(small.H[0], small.S, [0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="real matrices only"):
        eigs_near(Hk, Sk, 0.0, n=4, factorization="pardiso")


def test_shift_invert_factorization_name_is_checked():
    sd = _si((1, 1, 1), cutoff=4.0)
    Hk, Sk = bloch_csr(sd.H[0], sd.S)
    with pytest.raises(ValueError, match="factorization must be"):
        eigs_near(Hk, Sk, 0.0, n=4, factorization="mumps")

"""Tiled periodic cells: the FFT operator and the per-tile-wave-vector eigenpairs equal the explicitly
tiled sparse supercell (acehamil.structure.supercell), and KPM on the operator equals dense."""

import numpy as np
import pytest
import scipy.linalg as sla

from acehamil.structure import OrbitalBasis, StructureData
from acehamil.structure.supercell import tile_structure
from acehamil.tb import kpm, solvers
from acehamil.tb.eigen import solve
from acehamil.tb.sparse import bloch_csr
from acehamil.tb.tiled import TiledOperator, tile_kpoints, tiled_eigs
from acehamil.tb.toy import slater_koster

BASIS = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})


def _cell(seed=0, cutoff=4.0, species=(14,)):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, rng=np.random.default_rng(seed))
    H, S = slater_koster(atoms, BASIS, cutoff=cutoff)
    return StructureData(atoms, BASIS, H=(H,), S=S, n_electrons=4 * len(atoms))


def _big_dense(sd, reps, K):
    big = tile_structure(sd, reps)
    Hk, Sk = bloch_csr(big.H[0], big.S, K)
    return Hk.toarray(), Sk.toarray()


@pytest.mark.parametrize("K", [(0.0, 0.0, 0.0), (0.25, 0.0, 0.5), (0.1, -0.3, 0.2)])
@pytest.mark.parametrize("reps", [(2, 3, 2), (1, 1, 3)])
def test_tiled_operator_has_the_spectrum_of_the_tiled_supercell(K, reps):
    sd = _cell()
    op = TiledOperator(sd.H[0], sd.S, reps, K)
    n = op.shape[0]
    assert n == sd.H[0].norb * int(np.prod(reps))
    assert (op.dtype.kind == "f") == (not np.any(K))
    B = op @ np.eye(n)
    assert np.abs(B - B.conj().T).max() < 1e-12  # Hermitian
    Hb, Sb = _big_dense(sd, reps, K)
    np.testing.assert_allclose(np.linalg.eigvalsh(B), sla.eigh(Hb, Sb, eigvals_only=True), atol=1e-10)
    # B = L^-1 H L^-H for a factor S_big = L L^H: B is similar to S^-1 H, so equal traces of powers
    A = np.linalg.solve(Sb, Hb)
    assert np.trace(B @ B) == pytest.approx(np.trace(A @ A).real, rel=1e-10)


def test_tiled_operator_vectors_and_shapes(rng):
    sd = _cell()
    op = TiledOperator(sd.H[0], sd.S, (2, 2, 1))
    X = rng.standard_normal((op.shape[0], 3))
    Y = op @ X
    np.testing.assert_allclose(op @ X[:, 1], Y[:, 1], atol=1e-12)
    np.testing.assert_allclose(op @ (X + 2j * X), Y + 2j * Y, atol=1e-12)  # complex input to a real operator
    with pytest.raises(ValueError, match="does not match"):
        op @ np.ones(5)
    kappa, k = tile_kpoints((2, 2, 1), half=True)
    assert op.nbytes == len(k) * sd.H[0].norb ** 2 * 16


def test_tiled_operator_refuses_non_positive_overlap():
    sd = _cell()
    bad = sd.S.with_data(-sd.S.data)
    with pytest.raises(ValueError, match="not positive definite at cell k"):
        TiledOperator(sd.H[0], bad, (2, 1, 1))
    with pytest.raises(TypeError):
        TiledOperator(np.eye(3), None, (1, 1, 1))
    with pytest.raises(ValueError, match="repetitions"):
        TiledOperator(sd.H[0], sd.S, (0, 1, 1))


@pytest.mark.parametrize("K", [(0.0, 0.0, 0.0), (0.5, 0.25, 0.0)])
def test_tiled_eigs_equal_dense_eigenpairs_of_the_supercell(K):
    sd = _cell(seed=1)
    reps = (2, 2, 3)
    Hb, Sb = _big_dense(sd, reps, K)
    w = sla.eigh(Hb, Sb, eigvals_only=True)
    sigma = float(np.median(w))
    r = tiled_eigs(sd.H[0], sd.S, reps, sigma, 12, K, eigenvectors=True)
    ref = np.sort(w[np.argsort(np.abs(w - sigma), kind="stable")[:12]])
    assert np.abs(r.energies - ref).max() < 1e-8
    v = r.vectors
    assert v.shape == (Hb.shape[0], 12)
    assert np.abs(Hb @ v - (Sb @ v) * r.energies).max() < 1e-9
    assert np.abs(v.conj().T @ Sb @ v - np.eye(12)).max() < 1e-10
    assert r.residual < 1e-9 and r.method == "tiled-bloch"


def test_tiled_eigs_fermi_from_the_electron_count():
    sd = _cell(seed=2)
    reps = (2, 1, 2)
    Hb, Sb = _big_dense(sd, reps, (0, 0, 0))
    w = sla.eigh(Hb, Sb, eigvals_only=True)
    nv = sd.n_electrons * 4 // 2
    r = solvers.eigenpairs(sd, near="fermi", n=4, supercell=reps)
    assert r.sigma == pytest.approx(0.5 * (w[nv - 1] + w[nv]), abs=1e-9)
    np.testing.assert_allclose(r.energies, np.sort(w[np.argsort(np.abs(w - r.sigma), kind="stable")[:4]]), atol=1e-9)
    with pytest.raises(ValueError, match="solved exactly per tile"):
        solvers.eigenpairs(sd, n=4, method="shift-invert", supercell=reps)
    with pytest.raises(ValueError, match="n must be"):
        tiled_eigs(sd.H[0], sd.S, reps, 0.0, Hb.shape[0])


@pytest.fixture(scope="module")
def tiled_kpm():
    sd = _cell(seed=3)
    reps = (4, 4, 4)  # 2048 orbitals
    res = solvers.dos(sd, "kpm", n_moments=1024, n_vectors=16, seed=5, supercell=reps)
    kappa, k = tile_kpoints(reps)
    eps = solve(sd.H[0], sd.S, k).reshape(1, -1)  # the supercell's Gamma levels
    return sd, reps, res, np.sort(eps, axis=1)


def test_tiled_kpm_dos_equals_dense_with_the_same_kernel(tiled_kpm):
    sd, reps, r, eps = tiled_kpm
    exact, exact_idos = kpm.kpm_dos_from_levels(eps, np.ones(1), r.energies, r.bounds, r.n_moments)
    z = np.abs(r.dos - exact) / (r.dos_error + 1e-8 * exact.max())
    assert np.mean(z <= 3.0) > 0.97, np.mean(z <= 3.0)
    zi = np.abs(r.idos - exact_idos) / (r.idos_error + 1e-8)
    assert np.mean(zi <= 3.0) > 0.97
    assert r.idos[-1] == pytest.approx(2 * eps.shape[1], rel=1e-9)
    assert np.abs(r.dos - exact).max() > 1e-6 * exact.max()  # a real stochastic estimate


def test_tiled_kpm_fermi_level_within_10_meV(tiled_kpm):
    sd, reps, r, eps = tiled_kpm
    nv = sd.n_electrons * int(np.prod(reps)) // 2
    ef = 0.5 * (eps[0, nv - 1] + eps[0, nv])
    assert abs(r.fermi_level - ef) < 0.010, (r.fermi_level, ef)


def test_tiled_kpm_general_k_and_refusals():
    sd = _cell(seed=4)
    r = solvers.dos(sd, "kpm", kmesh=(2, 1, 1), n_moments=256, n_vectors=32, seed=1, supercell=(1, 2, 2))
    from acehamil.tb.dos import monkhorst_pack

    Kp, w = monkhorst_pack((2, 1, 1), sd.atoms.pbc)
    eps = np.stack([solve(sd.H[0], sd.S, tile_kpoints((1, 2, 2), K)[1]).reshape(-1) for K in Kp])
    exact, _ = kpm.kpm_dos_from_levels(eps, w, r.energies, r.bounds, 256)
    z = np.abs(r.dos - exact) / (r.dos_error + 1e-8 * exact.max())
    assert np.mean(z <= 3.0) > 0.97
    with pytest.raises(ValueError, match="PDOS"):
        solvers.dos(sd, "kpm", pdos="l", supercell=(2, 1, 1))
    with pytest.raises(ValueError, match="dense DOS of a tiled cell"):
        solvers.dos(sd, "dense", supercell=(2, 1, 1))


@pytest.mark.parametrize("M", [7, 64])
def test_moment_doubling_of_a_hermitian_operator_equals_the_plain_recursion(rng, M):
    """Two moments per product (no S, no PDOS) = the plain recursion (run here through a PDOS group)."""
    import scipy.sparse as sp

    n = 300
    A = sp.random(n, n, density=0.05, random_state=np.random.RandomState(1))
    H = sp.csr_matrix(A + A.T)
    lo, hi = kpm.spectral_bounds(H, None)
    pad = 0.05 * (hi - lo)
    b = (lo - pad, hi + pad)
    fast = kpm.kpm_moments(H, None, M, 3, b, np.random.default_rng(4))
    plain = kpm.kpm_moments(H, None, M, 3, b, np.random.default_rng(4), groups=[np.arange(n)])
    np.testing.assert_allclose(fast.mu, plain.mu, rtol=1e-9, atol=1e-9 * n)
    np.testing.assert_allclose(plain.mu_groups[0], plain.mu, rtol=1e-12, atol=1e-12 * n)


def test_single_precision_blocks_halve_memory_and_barely_move_the_moments():
    sd = _cell(seed=5)
    ops = {p: TiledOperator(sd.H[0], sd.S, (2, 2, 2), precision=p) for p in ("double", "single")}
    assert ops["single"].nbytes * 2 == ops["double"].nbytes
    n = ops["double"].shape[0]
    lo, hi = kpm.spectral_bounds(ops["double"], None)
    b = (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    m = {p: kpm.kpm_moments(op, None, 256, 4, b, np.random.default_rng(2)) for p, op in ops.items()}
    diff = np.abs(m["single"].mu - m["double"].mu).max() / n
    assert 0 < diff < 1e-5  # measured ~1e-6 at 1024 moments on the example model's 64-atom cell
    with pytest.raises(ValueError, match="precision"):
        TiledOperator(sd.H[0], sd.S, (1, 1, 1), precision="half")

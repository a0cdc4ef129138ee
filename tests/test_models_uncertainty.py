"""Uncertainty of H predictions: exact block variances against a brute-force linear map, draws
against the exact variance, first-order eigenvalue variance against sampling, the coverage
reported by evaluate against a direct count, and the calibration of the spread."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.fit import fit
from acehamil.models.hamiltonian.uncertainty import block_variance, has_posterior, sample_matrix
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

from sk_si import TINY_CFG as CFG, noisy_h


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    out = []
    for k in range(5):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k))
        at.rattle(0.1, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(noisy_h(H, rng, 0.01),), S=S, n_electrons=8))
    return out


@pytest.fixture(scope="module")
def model(data):
    return fit(data[:4], ModelConfig.from_dict(CFG), progress=False)


def _linear_map(mm, atoms):
    """Brute force: the prediction of every unit coefficient vector, per (block type, L)."""
    cols = {}
    for key, byL in mm.coefficients.items():
        for L, c in byL.items():
            J = []
            for f in range(c.size):
                e = np.zeros(c.size)
                e[f] = 1.0
                J.append(dataclasses.replace(mm, coefficients={key: {L: e}}).predict(atoms).data)
            cols[(key, L)] = np.array(J).T  # (n_entries, n_F)
    return cols


def test_model_keeps_posteriors(model):
    assert has_posterior(model.H) and has_posterior(model.S)


def test_block_variance_equals_brute_force(model, data, rng):
    atoms = data[4].atoms.copy()
    atoms.rattle(0.05, rng=rng)
    J = _linear_map(model.H, atoms)
    brute = sum(np.einsum("ef,fg,eg->e", Jk, model.H.posteriors[k][L].covariance(), Jk) for (k, L), Jk in J.items())
    exact = block_variance(model.H, atoms, noise=False)
    assert np.allclose(exact.data, brute, rtol=1e-8, atol=1e-14 * brute.max())
    assert exact.same_pattern(model.H.predict(atoms))


def test_draws_have_the_exact_variance_and_mean(model, data, rng):
    atoms = data[4].atoms
    mean, delta = sample_matrix(model.H, atoms, 3000, rng, scales=(2.0, 0.5))
    assert np.array_equal(mean.data, model.H.predict(atoms).data) or np.allclose(mean.data, model.H.predict(atoms).data,
                                                                                 rtol=1e-12, atol=1e-12)
    ve = block_variance(model.H, atoms, noise=False).data
    vt = block_variance(model.H, atoms, noise=True).data
    expect = 4.0 * ve + 0.25 * (vt - ve)
    emp = delta.var(axis=0)
    big = expect > 1e-3 * expect.max()
    # chi-square: var estimate of 3000 draws has relative sd sqrt(2/3000) = 2.6 %
    assert np.all(np.abs(emp[big] / expect[big] - 1) < 0.15)
    # draws keep the exact Hermiticity of the model: H_ji(-T) = H_ij(T)^T for every draw
    for k in range(3):
        assert mean.with_data(delta[k]).hermiticity_error() < 1e-12


def test_first_order_eigenvalue_variance_matches_sampling(model, data, rng):
    from acehamil.tb.draws import eigenvalue_draws
    from acehamil.tb.eigen import solve

    atoms = data[4].atoms
    k = np.array([[0.13, 0.27, 0.41]])  # generic k: no degenerate levels
    scale = 1e-2  # small draws: first order is accurate
    mean, delta = sample_matrix(model.H, atoms, 2000, rng, scales=(scale, 0.0))
    S = model.S.predict(atoms)
    eps, draws = eigenvalue_draws(mean, S, delta, k)
    var_sampled = draws.var(axis=0)[0]
    # first order: d eps_n = sum_e dH_e Re[conj(C_rn) C_cn exp(2 pi i k.T_e)], dH = J dc, cov(dc) = scale^2 Sigma
    eps0, C = solve(mean, S, k, eigenvectors=True)
    rows, cols, _, bidx = mean.coo()
    ph = np.exp(2j * np.pi * (mean.shift[bidx] @ k[0]))
    w = (C[0][rows].conj() * C[0][cols] * ph[:, None]).real  # (n_entries, nb)
    J = _linear_map(model.H, atoms)
    var_first = sum(np.einsum("en,ef,fg,hg,hn->n", w, Jk, model.H.posteriors[kk][L].covariance(), Jk, w)
                    for (kk, L), Jk in J.items()) * scale**2
    assert np.allclose(eps0[0], eps[0])
    assert np.all(np.abs(var_sampled / var_first - 1) < 0.15), (var_sampled, var_first)


def _with_scales(model, a, b, c, cut=0.0):
    report = {**model.report, "uncertainty": {**(model.report.get("uncertainty") or {}), "scale_epistemic": a,
                                              "scale_noise": b, "scale_shared": c, "extrapolation_sigma_eV": 0.0}}
    cfg = dataclasses.replace(model.config, uncertainty=dataclasses.replace(model.config.uncertainty,
                                                                            epistemic_bond_cut=cut))
    return dataclasses.replace(model, report=report, config=cfg)


@pytest.mark.parametrize("with_fermi", [False, True])
def test_pair_sum_noise_variances_equal_the_block_sum(model, data, rng, with_fermi):
    """The noise and shared-noise variances summed per atom pair (Bloch sums of constants) equal the
    brute-force sum over every block of linear_response.sensitivities, with and without a Fermi reference."""
    from acehamil.models.hamiltonian.linear_response import sensitivities, variances
    from acehamil.models.hamiltonian.propagation import noise_variances
    from acehamil.tb.eigen import solve

    atoms = data[4].atoms.repeat((2, 1, 1))  # two atoms of a pair type per cell, bonds to own images
    mm = model.H
    H, S = mm.predict(atoms), model.S.predict(atoms)
    kp = rng.random((3, 3))
    eps, C = solve(H, S, kp, eigenvectors=True)
    nk, nb = eps.shape
    fermi = (C[[0, 1], :, [3, 4]], kp[[0, 1]], np.array([0.3, 0.7])) if with_fermi else None
    vn, vs = noise_variances(mm, atoms, mm.pattern(atoms), C, kp, fermi)
    sens = sensitivities(mm, atoms, C.transpose(0, 2, 1).reshape(nk * nb, -1), np.repeat(kp, nb, axis=0), fermi)
    _, vn_ref, vs_ref = variances(mm, sens)
    np.testing.assert_allclose(vn.reshape(-1), vn_ref, rtol=1e-10, atol=1e-14 * vn_ref.max())
    np.testing.assert_allclose(vs.reshape(-1), vs_ref, rtol=1e-10, atol=1e-14 * vs_ref.max())
    assert vn_ref.max() > 0 and vs_ref.max() > 0


def test_epistemic_draws_inside_a_bond_cut(model, data):
    """sample_matrix(epistemic_cut): the epistemic part equals the uncut one on the on-site blocks and the
    bonds inside the cut and is 0 outside; noise parts and mean unchanged; the shifts of epistemic_shifts
    equal first_order_shifts of the Bloch sums."""
    from acehamil.models.hamiltonian.propagation import epistemic_shifts
    from acehamil.tb.draws import bloch_perturbations, first_order_shifts
    from acehamil.tb.eigen import solve

    atoms = data[4].atoms
    mean0, e0, n0, s0 = sample_matrix(model.H, atoms, 5, np.random.default_rng(3), split=True)
    mean1, e1, n1, s1 = sample_matrix(model.H, atoms, 5, np.random.default_rng(3), split=True, epistemic_cut=3.0)
    np.testing.assert_allclose(mean1.data, mean0.data, atol=1e-12 * np.abs(mean0.data).max())
    np.testing.assert_array_equal(n1, n0)
    np.testing.assert_array_equal(s1, s0)
    _, _, _, bidx = mean0.coo()
    pos = atoms.get_positions()
    length = np.linalg.norm(pos[mean0.j] - pos[mean0.i] + mean0.shift @ atoms.cell.array, axis=1)[bidx]
    inside = length < 3.0
    assert inside.any() and (~inside).any() and np.abs(e0[:, ~inside]).max() > 0
    np.testing.assert_allclose(e1[:, inside], e0[:, inside], atol=1e-12 * np.abs(e0).max())
    assert np.all(e1[:, ~inside] == 0)
    _, e_only = sample_matrix(model.H, atoms, 5, np.random.default_rng(3), scales=(1.0, 1.0, 1.0), epistemic_cut=3.0,
                              noise=False)
    np.testing.assert_allclose(e_only, e1, atol=1e-12 * np.abs(e1).max())
    # the calibrated sum of the three parts (the draws of acehamil predict): the same draws, scaled and added
    mean2, comb = sample_matrix(model.H, atoms, 5, np.random.default_rng(3), scales=(1.3, 0.7, 0.4), epistemic_cut=3.0)
    np.testing.assert_allclose(mean2.data, mean1.data, rtol=0, atol=0)
    np.testing.assert_allclose(comb, 1.3 * e1 + 0.7 * n1 + 0.4 * s1, atol=1e-12 * np.abs(comb).max())
    kp = np.array([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0], [0.5, 0.25, 0.0]])
    _, C = solve(mean1, model.S.predict(atoms), kp, eigenvectors=True)
    Cw = C[:, :, 2:6]
    np.testing.assert_allclose(epistemic_shifts(mean1, e1, Cw, kp), first_order_shifts(Cw, bloch_perturbations(mean1, e1, kp)),
                               atol=1e-12 * np.abs(e1).max())


@pytest.mark.parametrize("repeat", [(1, 1, 1), (2, 2, 2)])
@pytest.mark.parametrize("work", [None, 4096, 1])
def test_epistemic_shifts_of_both_paths_equal_the_bloch_sums(model, data, repeat, work, monkeypatch):
    """epistemic_shifts: the (cell, orbital pair) table path (small cells) and the per-slot path (larger cells,
    forced here by a small work bound) give first_order_shifts of the Bloch sums, also when the work is split
    into blocks of a few k-points and states; the draws need not be symmetric (only the Hermitian part of
    dH(k) moves an eigenvalue to first order, as the Bloch sums' eigen-shifts)."""
    from acehamil.models.hamiltonian import propagation
    from acehamil.tb.draws import bloch_perturbations, first_order_shifts
    from acehamil.tb.eigen import solve

    atoms = data[4].atoms.repeat(repeat)
    mean, e = sample_matrix(model.H, atoms, 4, np.random.default_rng(3), scales=(1.0, 0.0, 0.0), epistemic_cut=3.0,
                            noise=False)
    kp = np.array([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0], [0.5, 0.25, 0.0]])
    _, C = solve(mean, model.S.predict(atoms), kp, eigenvectors=True)
    Cw = C[:, :, 2:9]
    if work is not None:
        monkeypatch.setattr(propagation, "_WORK_BYTES", work)
    ref = first_order_shifts(Cw, bloch_perturbations(mean, e, kp))
    np.testing.assert_allclose(propagation.epistemic_shifts(mean, e, Cw, kp), ref, atol=1e-12 * np.abs(e).max())
    # a draw that breaks H_ji(-T) = H_ij(T)^T: the shifts of its Hermitian part (Re c^H dH c)
    e2 = e * np.random.default_rng(5).uniform(0.5, 1.5, e.shape)
    np.testing.assert_allclose(propagation.epistemic_shifts(mean, e2, Cw, kp),
                               np.einsum("kin,dkij,kjn->dkn", Cw.conj(), bloch_perturbations(mean, e2, kp), Cw).real,
                               atol=1e-12 * np.abs(e2).max())


def test_touched_draws_take_the_two_paths(model, data):
    """draw_shifts: the table path for a small cell, the per-slot path when its table would exceed the work bound."""
    from acehamil.models.hamiltonian import propagation

    atoms = data[4].atoms
    mean, e = sample_matrix(model.H, atoms, 4, np.random.default_rng(3), scales=(1.0, 0.0, 0.0), epistemic_cut=3.0,
                            noise=False)
    nz = np.flatnonzero(np.any(e != 0, axis=0))
    t = propagation.touched_draws(mean, nz, e[:, nz])
    assert len(t["cells"]) * len(t["qr"]) * 4 * 8 <= propagation._WORK_BYTES  # the table path by default
    assert len(t["slots"]) < len(nz)  # transpose partners share a slot
    with pytest.raises(ValueError, match="values must have shape"):
        propagation.touched_draws(mean, nz, e)
    with pytest.raises(ValueError, match="outside"):
        propagation.touched_draws(mean, np.array([mean.data.size]), np.zeros((4, 1)))


@pytest.mark.parametrize("which", ["model", "tapered_model"])
def test_predict_many_equals_one_prediction_per_coefficient_set(which, data, rng, request):
    """MatrixModel.predict_many: several coefficient sets in one mapped pass give each set's predict_data;
    with a bond cut, the same inside it (on-site blocks and shorter bonds) and zero outside."""
    from acehamil.models.hamiltonian.matrix_model import random_coefficients

    mm = request.getfixturevalue(which).H
    atoms = data[4].atoms.repeat((2, 1, 1))
    pat = mm.pattern(atoms)
    sets = [random_coefficients(mm, rng) for _ in range(3)]
    ref = np.array([dataclasses.replace(mm, coefficients=c).predict_data(atoms, pat) for c in sets])
    np.testing.assert_allclose(mm.predict_many(atoms, pat, sets), ref, atol=1e-12 * np.abs(ref).max())
    cut = mm.predict_many(atoms, pat, sets, bond_cut=3.0)
    _, _, _, bidx = mm.predict(atoms).coo()
    pos = atoms.get_positions()
    length = np.linalg.norm(pos[pat.j] - pos[pat.i] + pat.shift @ atoms.cell.array, axis=1)[bidx]
    inside = length < 3.0
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(cut[:, inside], ref[:, inside], atol=1e-12 * np.abs(ref).max())
    assert np.all(cut[:, ~inside] == 0)
    where, values = mm.predict_many(atoms, pat, sets, bond_cut=3.0, compact=True)
    assert np.all(np.diff(where) > 0)
    np.testing.assert_array_equal(np.flatnonzero(inside), where)  # every entry inside the cut, nothing else
    np.testing.assert_array_equal(values, cut[:, where])


def test_spreads_do_not_depend_on_the_memory_bounds(model, data, monkeypatch):
    """eigen_sigma and noise_variances split their work over k-points and bands to bound memory: the spreads
    are the same with every eigenvector held and with one k-point's eigenvectors at a time (solved again
    after the eigenvalues), and with blocks of one state in the noise parts."""
    from acehamil.models.hamiltonian import propagation
    from acehamil.tb.dos import monkhorst_pack

    sd = data[4]
    atoms = sd.atoms.repeat((2, 1, 1))
    kp, wk = monkhorst_pack((3, 2, 2), atoms.pbc)
    mod = _with_scales(model, 1.3, 0.7, 0.4)
    ref = propagation.eigen_sigma(mod, atoms, kp, wk, 2 * sd.n_electrons, 6, np.random.default_rng(2), window_eV=3.0,
                                  dtype=np.float64)
    monkeypatch.setattr(propagation, "_VECS_BYTES", 16 * (4 * len(atoms)) ** 2)  # one k-point's eigenvectors (s + p: 4 orbitals)
    monkeypatch.setattr(propagation, "_WORK_BYTES", 1)  # one state per block of work
    low = propagation.eigen_sigma(mod, atoms, kp, wk, 2 * sd.n_electrons, 6, np.random.default_rng(2), window_eV=3.0,
                                  dtype=np.float64)
    np.testing.assert_allclose(low["eps"], ref["eps"], rtol=0, atol=1e-10)
    assert np.array_equal(np.isnan(low["sigma"]), np.isnan(ref["sigma"])) and np.isfinite(ref["sigma"]).any()
    np.testing.assert_allclose(low["sigma"], ref["sigma"], rtol=1e-8)


def test_single_precision_spreads_equal_double_precision(model, data):
    """eigen_sigma's default float32 products (draw_shifts, noise_variances) give the float64 spreads to
    well below the draws' Monte-Carlo noise (1e-5 relative; measured ~1e-7), every part switched on."""
    from acehamil.models.hamiltonian.propagation import eigen_sigma
    from acehamil.tb.dos import monkhorst_pack

    sd = data[4]
    kp, wk = monkhorst_pack((3, 2, 2), sd.atoms.pbc)
    mod = _with_scales(model, 1.3, 0.7, 0.4)
    got = eigen_sigma(mod, sd.atoms, kp, wk, sd.n_electrons, 6, np.random.default_rng(2))
    ref = eigen_sigma(mod, sd.atoms, kp, wk, sd.n_electrons, 6, np.random.default_rng(2), dtype=np.float64)
    assert np.isfinite(ref["sigma"]).all()
    np.testing.assert_allclose(got["sigma"], ref["sigma"], rtol=1e-5)
    assert not np.array_equal(got["sigma"], ref["sigma"])  # the float32 path was taken
    with pytest.raises(ValueError, match="float32 or float64"):
        eigen_sigma(mod, sd.atoms, kp, wk, sd.n_electrons, 6, np.random.default_rng(2), dtype=np.float16)


def test_first_order_sigma_equals_the_linear_response(model, data):
    """eigen_sigma: without the epistemic part it equals the exact first-order noise and shared variances
    relative to the linear Fermi-level response (linear_response); the epistemic part from many draws
    matches J Sigma J^T; a window leaves the bands inside it unchanged."""
    from acehamil.models.hamiltonian.linear_response import fermi_weights, sensitivities, variances
    from acehamil.models.hamiltonian.propagation import eigen_sigma
    from acehamil.tb.dos import monkhorst_pack

    sd = data[4]
    kp, wk = monkhorst_pack((2, 2, 2), sd.atoms.pbc)
    noisy = _with_scales(model, 0.0, 0.7, 0.4)
    r = eigen_sigma(noisy, sd.atoms, kp, wk, sd.n_electrons, 4, np.random.default_rng(0), dtype=np.float64)
    nk, nb = r["eps"].shape
    phi = fermi_weights(r["eps"], wk, r["fermi_level"], 0.01).reshape(-1)
    from acehamil.tb.eigen import solve

    eps, C = solve(r["H"], r["S"], kp, eigenvectors=True)
    f = np.flatnonzero(phi > 1e-9)
    ref = (C[f // nb, :, f % nb], kp[f // nb], phi[f] / phi[f].sum())
    sens = sensitivities(model.H, sd.atoms, C.transpose(0, 2, 1).reshape(nk * nb, -1), np.repeat(kp, nb, axis=0), ref)
    ve, vn, vs = variances(model.H, sens)
    np.testing.assert_allclose(r["sigma"].reshape(-1), np.sqrt(0.49 * vn + 0.16 * vs), rtol=1e-8)
    epi = _with_scales(model, 1.0, 0.0, 0.0)
    r = eigen_sigma(epi, sd.atoms, kp, wk, sd.n_electrons, 3000, np.random.default_rng(1))
    big = ve > 1e-3 * ve.max()
    assert np.all(np.abs(r["sigma"].reshape(-1)[big] ** 2 / ve[big] - 1) < 0.15)
    full = eigen_sigma(epi, sd.atoms, kp, wk, sd.n_electrons, 50, np.random.default_rng(1), dtype=np.float64)
    near = np.abs(full["eps"] - full["fermi_level"]).min(axis=0)  # each band's closest approach to E_F
    window = float(np.sort(near)[nb // 2]) + 1e-6
    w = eigen_sigma(epi, sd.atoms, kp, wk, sd.n_electrons, 50, np.random.default_rng(1), window_eV=window, dtype=np.float64)
    bands = np.isfinite(w["sigma"]).all(axis=0)
    assert 0 < bands.sum() < nb and np.all(near[bands] <= window) and np.all(np.isnan(w["sigma"][:, ~bands]))
    np.testing.assert_allclose(w["sigma"][:, bands], full["sigma"][:, bands], rtol=1e-10)


def _with_extrapolation_part(model, d_eV):
    report = {**model.report, "uncertainty": {**(model.report.get("uncertainty") or {}), "extrapolation_sigma_eV": d_eV}}
    return dataclasses.replace(model, report=report)


@pytest.mark.parametrize("d_eV", [0.0, 0.05])
def test_evaluate_coverage_equals_direct_count(model, data, d_eV):
    from acehamil.models.hamiltonian.calibrate import reference_errors
    from acehamil.models.hamiltonian.intervals import Z90
    from acehamil.models.hamiltonian.evaluate import evaluate
    from acehamil.models.hamiltonian.propagation import eigen_sigma
    from acehamil.tb.dos import monkhorst_pack

    model = _with_extrapolation_part(model, d_eV)
    res = evaluate(model, data[3:], kmesh=(3, 3, 3), window_eV=3.0, n_samples=8)
    u = res["eigenvalues"]["uncertainty"]
    inside = inside68 = total = 0
    for k, sd in enumerate(data[3:]):
        kp, wk = monkhorst_pack((3, 3, 3), sd.atoms.pbc)
        # evaluate's default seed 0 and the structure's index; every band's spread
        parts = eigen_sigma(model, sd.atoms, kp, wk, sd.n_electrons, 8, np.random.default_rng((0, k)))
        err, mask = reference_errors(sd, parts["eps"], parts["fermi_level"], kp, wk, 3.0)
        x = model.extrapolation(sd.atoms)[1]  # the per-structure part, in quadrature (in eigen_sigma's sigma)
        assert (x > 0) == (d_eV > 0) and parts["sigma_extrapolation"] == pytest.approx(x)
        assert np.all(parts["sigma"] >= x)
        sig = parts["sigma"][:, :err.shape[1]]
        inside += int(np.count_nonzero(np.abs(err[mask]) <= Z90 * sig[mask]))
        inside68 += int(np.count_nonzero(np.abs(err[mask]) <= sig[mask]))
        total += int(mask.sum())
    assert u["n"] == total == res["eigenvalues"]["n"]
    assert u["coverage_90"] == inside / total
    assert u["coverage_68"] == inside68 / total
    assert len(u["per_structure"]) == 2


def test_calibration_fits_scales_on_training_structures(data):
    cfg = ModelConfig.from_dict({**CFG, "uncertainty": {"calibrate": True, "calibration_fraction": 0.25, "calibration_folds": 1, "n_samples": 8,
                                                        "kmesh": [3, 3, 3], "window_eV": 3.0}})
    m = fit(data[:4], cfg, progress=False)
    u = m.report["uncertainty"]
    assert u["scale_epistemic"] > 0 and u["scale_noise"] > 0 and u["extrapolation_sigma_eV"] >= 0
    assert set(u["calibration"]["structures"]) <= set(range(4)) and len(u["calibration"]["structures"]) == 1
    assert 0.85 <= u["calibration"]["coverage_90"] <= 0.95


def test_extrapolation_part_grows_with_the_score(model, data, rng):
    """The per-structure part d sqrt(score): larger for a structure outside the training data, the same
    for every eigenvalue, in predictions (info), bands and evaluate; 0 for uncalibrated models."""
    from acehamil.models.hamiltonian.calibrate import extrapolation_sigma
    from acehamil.tb.draws import band_uncertainty, extrapolation_sigma_of

    assert model.extrapolation(data[4].atoms)[1] == 0.0  # no calibrated d: no extra spread
    m = _with_extrapolation_part(model, 0.05)
    inside = data[1].atoms
    squeezed = bulk("Si", "diamond", a=5.43 * 0.93)
    squeezed.rattle(0.05, rng=rng)
    (s_in, x_in), (s_out, x_out) = m.extrapolation(inside), m.extrapolation(squeezed)
    assert np.nanmax(s_in) < np.nanmax(s_out)
    assert 0 < x_in < x_out
    assert np.isclose(x_out, 0.05 * np.sqrt(np.nanmax(s_out)))
    assert extrapolation_sigma(m, s_out) == x_out
    p_in, p_out = (m.predict_structure(at, n_samples=4, rng=np.random.default_rng(0)) for at in (inside, squeezed))
    assert extrapolation_sigma_of(p_in) == x_in and extrapolation_sigma_of(p_out) == x_out
    kp = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0]])
    plain = dataclasses.replace(p_out, info={k: v for k, v in p_out.info.items() if k != "uncertainty"})
    _, sig = band_uncertainty(p_out, kp, kmesh=(2, 2, 2))
    _, sig0 = band_uncertainty(plain, kp, kmesh=(2, 2, 2))
    np.testing.assert_allclose(sig**2, sig0**2 + x_out**2, rtol=1e-10)
    bad = dataclasses.replace(p_out, info={**p_out.info, "uncertainty": {"sigma_extrapolation_eV": -1.0}})
    with pytest.raises(ValueError, match="sigma_extrapolation_eV"):
        band_uncertainty(bad, kp, kmesh=(2, 2, 2))


def test_fit_scales_finds_a_per_structure_part():
    """Errors with a per-structure spread d sqrt(score) on top of a per-eigenvalue part: the likelihood
    gives the score part its size (and none to a part that is absent)."""
    from acehamil.models.hamiltonian.intervals import fit_scales

    r = np.random.default_rng(3)
    score = np.repeat(r.uniform(0, 4, 300), 20)  # 300 structures of 20 eigenvalues
    se = r.uniform(0.002, 0.02, score.size)
    sn = np.full(score.size, 0.01)
    err = r.normal(size=score.size) * np.sqrt((2 * se) ** 2 + (0.03 * np.sqrt(score)) ** 2)
    a, b, d = fit_scales(err, se, sn, 0.01 * np.sqrt(score))
    assert 1.6 < a < 2.4 and b < 0.5 and 2.4 < d < 3.6


def test_ridge_models_carry_the_ridge_posterior(data):
    m = fit(data[:4], ModelConfig.from_dict({**CFG, "solver": {"method": "ridge", "lam": 1e-6}}), progress=False)
    assert has_posterior(m.H)
    for byL in m.H.posteriors.values():
        for L, post in byL.items():
            assert post.beta > 0 and np.isclose(post.alpha / post.beta, post.alpha / post.beta)


def test_bad_arguments(model, data, rng):
    with pytest.raises(ValueError, match="n_samples"):
        sample_matrix(model.H, data[0].atoms, 0, rng)
    with pytest.raises(ValueError, match="scales"):
        sample_matrix(model.H, data[0].atoms, 2, rng, scales=(-1.0, 1.0))


def test_combined_draws_match_the_split_parts(model, data):
    """sigma of the calibrated sum of draws ~ sqrt((a s_epi)^2 + (b s_noise)^2) of the split parts."""
    from acehamil.models.hamiltonian.calibrate import combine, eigen_parts
    from acehamil.tb.dos import monkhorst_pack

    sd = data[4]
    kp, wk = monkhorst_pack((2, 2, 2), sd.atoms.pbc)
    split = eigen_parts(model, sd.atoms, kp, wk, sd.n_electrons, 400, np.random.default_rng(1))
    joint = eigen_parts(model, sd.atoms, kp, wk, sd.n_electrons, 400, np.random.default_rng(2), split=False)
    expect = combine(model, split["sigma_epi"], split["sigma_noise"], split["sigma_shared"])
    big = expect > 0.2 * expect.max()
    assert np.all(np.abs(joint["sigma"][big] / expect[big] - 1) < 0.25)


def test_fold_model_from_sums_equals_a_fresh_fit(data):
    """A calibration fold refitted from the per-structure sums (no features) is the fit without the fold."""
    from acehamil.models.hamiltonian.calibrate import fold_ends, fold_model
    from acehamil.models.hamiltonian.sums import structure_sums

    cfg = ModelConfig.from_dict({**CFG, "fit": {"fit_energy_zero": True, "energy_zero_model": "density"}})
    full = fit(data[:4], cfg, progress=False)
    parts = [structure_sums(full.H, sd, lambda s: s.H[0], {}, 1.0, np.random.default_rng(0), index=k, gauge=True)
             for k, sd in enumerate(data[:4])]
    keep = [0, 2, 3]
    sub = fold_model(full, parts, keep, [sd.atoms for sd in data[:4]])
    fresh = fit([data[k] for k in keep], cfg, progress=False)
    for key, byL in fresh.H.coefficients.items():
        for L, c in byL.items():
            np.testing.assert_allclose(sub.H.coefficients[key][L], c, rtol=1e-6, atol=1e-9 * np.abs(c).max())
            p, q = sub.H.posteriors[key][L], fresh.H.posteriors[key][L]
            assert np.isclose(p.alpha, q.alpha, rtol=1e-6) and np.isclose(p.beta, q.beta, rtol=1e-6)
    assert np.isclose(sub.energy_zero.v0, fresh.energy_zero.v0, rtol=1e-6, atol=1e-9)
    # the bond ends of every cell computed once for all folds give the same fold model
    bonds = dataclasses.replace(full, config=dataclasses.replace(
        cfg, fit=dataclasses.replace(cfg.fit, energy_zero_model="bonds")))
    cells = [sd.atoms for sd in data[:4]]
    a, b = fold_model(bonds, parts, keep, cells), fold_model(bonds, parts, keep, cells, fold_ends(bonds, cells))
    assert a.energy_zero.gamma and a.energy_zero == b.energy_zero
    assert fold_ends(full, cells) is None  # the density law needs none
    # and it differs from the full model: the left-out structure mattered
    key, L = next((k, L) for k, b in full.H.coefficients.items() for L in b)
    assert not np.allclose(sub.H.coefficients[key][L], full.H.coefficients[key][L])


def test_calibration_folds_cover_every_training_structure(data):
    cfg = ModelConfig.from_dict({**CFG, "uncertainty": {"calibrate": True, "calibration_folds": 2, "n_samples": 8,
                                                        "kmesh": [2, 2, 2], "window_eV": 3.0}})
    m = fit(data[:4], cfg, progress=False)
    cal = m.report["uncertainty"]["calibration"]
    assert cal["structures"] == [0, 1, 2, 3] and cal["folds"] == 2
    assert 0.85 <= cal["coverage_90"] <= 0.95


def test_calibration_folds_give_the_same_rows_on_any_engine(data):
    """The held-out structures are independent tasks with their own seeded state choice: two threads give
    the serial rows bit for bit."""
    from acehamil.models.hamiltonian.calibrate import cross_validated_errors
    from acehamil.models.hamiltonian.sums import structure_sums
    from acehamil.threads import thread_mapper

    cfg = ModelConfig.from_dict({**CFG, "uncertainty": {"calibration_folds": 2, "kmesh": [2, 2, 2], "window_eV": 3.0,
                                                        "calibration_states": 5}})
    full = fit(data[:4], cfg, progress=False)
    parts = [structure_sums(full.H, sd, lambda s: s.H[0], {}, 1.0, np.random.default_rng(0), index=k)
             for k, sd in enumerate(data[:4])]
    serial = cross_validated_errors(data[:4], full, parts)
    threaded = cross_validated_errors(data[:4], full, parts, mapper=thread_mapper(2))
    assert sorted(set(serial["structure"].tolist())) == [0, 1, 2, 3]
    assert np.bincount(serial["structure"]).max() <= 5
    for key in ("err", "sigma_epi", "sigma_noise", "sigma_shared", "structure", "score"):
        np.testing.assert_array_equal(serial[key], threaded[key])


def test_shared_noise_moves_every_block_of_a_type_together(model, data, rng):
    atoms = data[4].atoms
    mean, delta = sample_matrix(model.H, atoms, 2000, rng, scales=(0.0, 0.0, 1.5))
    noise = block_variance(model.H, atoms, noise=True).data - block_variance(model.H, atoms, noise=False).data
    emp = delta.var(axis=0)
    onsite = np.arange(mean.data.size) < mean.offsets[len(atoms)]  # on-site blocks: the independent part's variance
    big = onsite & (noise > 1e-3 * noise.max())
    assert np.all(np.abs(emp[big] / (2.25 * noise[big]) - 1) < 0.2)
    # the s-s on-site level of every atom (first entry of the on-site blocks, which come first) in one draw
    first = delta[:, mean.offsets[:len(atoms)]]
    assert np.ptp(first, axis=1).max() < 1e-12 * np.abs(first).max() and np.abs(first).max() > 0
    for k in range(3):
        assert mean.with_data(delta[k]).hermiticity_error() < 1e-12


def test_information_gain_is_the_log_det_of_the_posterior_update(model, data):
    """Greedy batch selection: each gain is 1/2 log det(P + beta G) - 1/2 log det(P), P the precision after the picks."""
    from acehamil.models.hamiltonian.select import gram, information_select

    grams = [gram(model, sd.atoms) for sd in (data[4], data[4], data[0], data[2])]

    def gain(added, G):
        total = 0.0
        for key, byL in model.H.posteriors.items():
            for L, post in byL.items():
                Q = post.eigvecs * np.sqrt(post.prior_diag)[:, None]
                P = (Q * (post.beta * post.eigvals + post.alpha)) @ Q.T + sum(post.beta * g[(key, L)] for g in added)
                total += 0.5 * (np.linalg.slogdet(P + post.beta * G[(key, L)])[1] - np.linalg.slogdet(P)[1])
        return total

    picked, gains = information_select(model.H, grams, 2)
    np.testing.assert_allclose(gains, [gain([], g) for g in grams], rtol=1e-5)
    assert picked[0] == int(np.argmax(gains))
    second = [gain([grams[picked[0]]], g) if j != picked[0] else -np.inf for j, g in enumerate(grams)]
    assert picked[1] == int(np.argmax(second))
    assert gains[1] == pytest.approx(gains[0], rel=1e-9)  # two copies of one structure: equal gain alone ...
    if picked[0] in (0, 1):  # ... but the copy of a picked structure gains less afterwards
        other = 1 - picked[0]
        assert second[other] < gains[other]


def test_select_weighs_candidates_by_the_models_kind_weights(model, data):
    """select(information / variance): a candidate whose kind the model fits at weight 0 gains nothing and
    is picked last; at weight 1 the same structure is picked first (the one with the largest gain)."""
    from acehamil.models.hamiltonian.select import select

    cands = [(sd.atoms.copy(), sd.n_electrons) for sd in (data[4], data[0], data[2])]
    for crit in ("information", "variance"):
        picked, gains = select(model, cands, 3, crit)
        best = picked[0]
        cands[best][0].info["kind"] = "never-fitted"
        cfg = dataclasses.replace(model.config, fit=dataclasses.replace(model.config.fit,
                                                                        kind_weights=(("never-fitted", 0.0),)))
        picked0, gains0 = select(dataclasses.replace(model, config=cfg), cands, 3, crit)
        assert gains0[best] == 0.0 and picked0[-1] == best and gains[best] > 0
        del cands[best][0].info["kind"]


def test_variance_selection_is_the_trace_reduction_over_the_target(model, data):
    """V-optimal batch: each gain is tr(T Sigma) - tr(T (P + beta w G)^-1), brute force, with the posterior
    updated after each pick; weight 0 gains nothing; a target unlike a candidate makes it worthless."""
    from acehamil.models.hamiltonian.select import gram, pool_target, variance_select

    cands = [data[4], data[4], data[0], data[2]]
    grams = [gram(model, sd.atoms) for sd in cands]
    target = pool_target(grams, [len(sd.atoms) for sd in cands])
    weights = np.array([1.0, 0.5, 1.0, 0.0])

    def reduction(added, G, w):
        total = 0.0
        for key, byL in model.H.posteriors.items():
            for L, post in byL.items():
                Q = post.eigvecs * np.sqrt(post.prior_diag)[:, None]
                P = (Q * (post.beta * post.eigvals + post.alpha)) @ Q.T + sum(post.beta * wa * g[(key, L)]
                                                                              for g, wa in added)
                T = target[(key, L)]
                total += np.trace(T @ np.linalg.inv(P)) - np.trace(T @ np.linalg.inv(P + post.beta * w * G[(key, L)]))
        return total

    picked, gains = variance_select(model.H, grams, 2, target, weights=weights)
    expect = [reduction([], g, w) for g, w in zip(grams, weights)]
    np.testing.assert_allclose(gains, expect, rtol=1e-4, atol=1e-12 * max(expect))
    assert gains[3] == 0.0 and gains[0] > gains[1] > 0  # weight 0: nothing; half the weight: less
    assert picked[0] == int(np.argmax(gains))
    after = [reduction([(grams[picked[0]], weights[picked[0]])], g, w) if j != picked[0] else -np.inf
             for j, (g, w) in enumerate(zip(grams, weights))]
    assert picked[1] == int(np.argmax(after))
    # only the target's directions count: a target without on-site parts makes the gains smaller
    offsite = {k: v for k, v in target.items() if k[0].startswith("offsite")}
    _, part = variance_select(model.H, grams, 1, offsite, weights=weights)
    assert np.all(part[:3] < gains[:3]) and np.all(part[:3] > 0)
    with pytest.raises(ValueError, match="weights"):
        variance_select(model.H, grams, 1, target, weights=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="k must"):
        variance_select(model.H, grams, 5, target)


def _states(model, atoms, kpts):
    """Eigenvectors and k of every state of the local prediction (no energy zero) at ``kpts``."""
    from acehamil.tb.eigen import solve

    H, S = model.H.predict(atoms), model.S.predict(atoms)
    eps, C = solve(H, S, kpts, eigenvectors=True)
    nk, nb = eps.shape
    vecs = C.transpose(0, 2, 1).reshape(nk * nb, -1)
    return H, S, eps.reshape(-1), vecs, np.repeat(np.asarray(kpts, float), nb, axis=0)


@pytest.fixture(scope="module")
def tapered_model(data):
    """Bonds beyond env_bond_cut = 3 Å are two-centre (their own, compact feature path)."""
    cfg = {**CFG, "h_offsite": {**CFG["h_offsite"], "env_bond_cut": 3.0}}
    return fit(data[:4], ModelConfig.from_dict(cfg), progress=False)


@pytest.mark.parametrize("which", ["model", "tapered_model"])
def test_linear_response_sensitivity_is_the_brute_force_gradient(which, data, rng, request):
    """J = dw.H/dc by the brute-force linear map; J.c and the prediction reproduce the eigenvalues."""
    from acehamil.models.hamiltonian.linear_response import sensitivities

    model = request.getfixturevalue(which)
    atoms = data[4].atoms.copy()
    atoms.rattle(0.05, rng=rng)
    k = np.array([[0.13, 0.27, 0.41], [0.5, 0.0, 0.25]])
    H, S, eps, vecs, ks = _states(model, atoms, k)
    ref = (vecs[[3, 9]], ks[[3, 9]], np.array([0.3, 0.7]))  # subtracted from every state
    A = np.eye(len(eps))
    A[:, [3, 9]] -= ref[2]
    sens = sensitivities(model.H, atoms, vecs, ks, ref)
    np.testing.assert_allclose(sens["data"], H.data, rtol=1e-12, atol=1e-12)
    rows, cols, _, bidx = H.coo()
    ph = np.exp(2j * np.pi * (H.shift[bidx] @ ks.T))  # (n_entries, ns)
    w = (vecs[:, rows].conj().T * vecs[:, cols].T * ph).real @ A.T  # (n_entries, nr)
    total = np.zeros(len(A))
    for (key, L), Jb in _linear_map(model.H, atoms).items():
        np.testing.assert_allclose(sens["J"][(key, L)], w.T @ Jb, rtol=1e-9, atol=1e-10 * np.abs(w.T @ Jb).max())
        total += sens["J"][(key, L)] @ model.H.coefficients[key][L]
    np.testing.assert_allclose(total, A @ eps, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cut", [3.0, 3.9])
def test_linear_response_epistemic_cut_sums_over_the_short_bonds_only(cut, model, data, rng):
    """epistemic_cut: J is the brute-force gradient restricted to the on-site blocks and the bonds
    shorter than the cut; the prediction and the noise parts are those of every block."""
    from acehamil.models.hamiltonian.linear_response import sensitivities

    atoms = data[4].atoms.copy()
    atoms.rattle(0.05, rng=rng)
    k = np.array([[0.13, 0.27, 0.41], [0.5, 0.0, 0.25]])
    H, S, eps, vecs, ks = _states(model, atoms, k)
    ref = (vecs[[3, 9]], ks[[3, 9]], np.array([0.3, 0.7]))
    A = np.eye(len(eps))
    A[:, [3, 9]] -= ref[2]
    full = sensitivities(model.H, atoms, vecs, ks, ref)
    short = sensitivities(model.H, atoms, vecs, ks, ref, epistemic_cut=cut)
    np.testing.assert_allclose(short["data"], H.data, rtol=1e-12, atol=1e-12)
    for part in ("noise", "shared"):
        for key, v in full[part].items():
            np.testing.assert_allclose(short[part][key], v, rtol=1e-12, atol=1e-14 * max(np.abs(v).max(), 1e-300))
    rows, cols, _, bidx = H.coo()
    pos, cell = atoms.get_positions(), atoms.cell.array
    length = np.linalg.norm(pos[H.j[bidx]] - pos[H.i[bidx]] + H.shift[bidx] @ cell, axis=1)
    inside = length < cut  # on-site entries have length 0
    assert inside.any() and not inside.all()
    ph = np.exp(2j * np.pi * (H.shift[bidx] @ ks.T))
    w = (vecs[:, rows].conj().T * vecs[:, cols].T * ph).real @ A.T
    differs = False
    for (key, L), Jb in _linear_map(model.H, atoms).items():
        want = w[inside].T @ Jb[inside]
        np.testing.assert_allclose(short["J"][(key, L)], want, rtol=1e-9, atol=1e-10 * max(np.abs(want).max(), 1e-300))
        differs |= not np.allclose(full["J"][(key, L)], want)
    assert differs  # the longer bonds did contribute to the full J
    with pytest.raises(ValueError, match="epistemic_cut"):
        sensitivities(model.H, atoms, vecs, ks, ref, epistemic_cut=-1.0)


def test_held_out_subset_weights_estimate_the_total(rng):
    from acehamil.models.hamiltonian.calibrate import held_out_subset

    kinds = ["a"] * 7 + [None] * 5 + ["b"] * 2
    w = held_out_subset(kinds, 3, 11)
    np.testing.assert_array_equal(w, held_out_subset(kinds, 3, 11))  # seeded
    for lo, hi in ((0, 7), (7, 12), (12, 14)):
        assert w[lo:hi].sum() == pytest.approx(hi - lo)  # each kind weighs its number of structures
        assert np.count_nonzero(w[lo:hi]) == min(3, hi - lo)
    assert np.all(held_out_subset(kinds, 0, 11) == 1.0)
    # a weighted mean over the chosen structures estimates the mean over all without bias
    x = rng.normal(size=14) + np.array([3.0] * 7 + [0.0] * 5 + [-2.0] * 2)
    est = np.mean([np.sum(held_out_subset(kinds, 3, s) * x) / 14 for s in range(3000)])
    assert est == pytest.approx(x.mean(), abs=0.03)


def test_weighted_fit_scales_equals_repeated_values(rng):
    """Integer weights = the values repeated that many times (likelihood and 90 % quantile)."""
    from acehamil.models.hamiltonian.intervals import fit_scales

    se, sn = rng.uniform(0.1, 2, 300), rng.uniform(0.2, 0.6, 300)
    err = rng.normal(size=300) * np.sqrt((2 * se) ** 2 + (0.5 * sn) ** 2)
    reps = rng.integers(1, 4, 300)
    weighted = fit_scales(err, se, sn, weights=reps.astype(float))
    repeated = fit_scales(np.repeat(err, reps), np.repeat(se, reps), np.repeat(sn, reps))
    np.testing.assert_allclose(weighted, repeated, rtol=2e-3)
    with pytest.raises(ValueError, match="weights"):
        fit_scales(err, se, sn, weights=np.zeros(300))


def test_calibration_per_kind_predicts_a_subset_with_weights(data):
    from acehamil.models.hamiltonian.calibrate import cross_validated_errors
    from acehamil.models.hamiltonian.sums import structure_sums

    kinded = [dataclasses.replace(sd, info={**sd.info, "kind": "x"}) for sd in data[:4]]
    cfg = ModelConfig.from_dict({**CFG, "uncertainty": {"calibration_folds": 2, "kmesh": [2, 2, 2], "window_eV": 3.0,
                                                        "calibration_states": 5, "calibration_per_kind": 2,
                                                        "epistemic_bond_cut": 3.0}})
    full = fit(kinded, cfg, progress=False)
    parts = [structure_sums(full.H, sd, lambda s: s.H[0], {}, 1.0, np.random.default_rng(0), index=k)
             for k, sd in enumerate(kinded)]
    cv = cross_validated_errors(kinded, full, parts)
    assert len(set(cv["structure"].tolist())) == 2
    assert np.all(cv["weight"] == 2.0)
    with pytest.raises(ValueError, match="calibration_per_kind"):
        ModelConfig.from_dict({**CFG, "uncertainty": {"calibration_per_kind": -1}})
    with pytest.raises(ValueError, match="epistemic_bond_cut"):
        ModelConfig.from_dict({**CFG, "uncertainty": {"epistemic_bond_cut": -0.5}})


def test_linear_response_variances_match_draws(model, data, rng):
    """First-order variances of the three parts = the variance of the first-order shifts of many draws."""
    from acehamil.models.hamiltonian.linear_response import sensitivities, variances

    atoms = data[4].atoms
    k = np.array([[0.13, 0.27, 0.41], [0.0, 0.0, 0.0]])
    H, S, eps, vecs, ks = _states(model, atoms, k)
    phi = np.zeros(len(eps))
    phi[[3, 12]] = 0.5  # a Fermi-level-like combination (band 3 at k0, band 4 at k1)
    A = np.eye(len(eps)) - phi
    sens = sensitivities(model.H, atoms, vecs, ks, (vecs[[3, 12]], ks[[3, 12]], phi[[3, 12]]))
    exact = variances(model.H, sens)
    rows, cols, _, bidx = H.coo()
    ph = np.exp(2j * np.pi * (H.shift[bidx] @ ks.T))
    w = (vecs[:, rows].conj().T * vecs[:, cols].T * ph).real @ A.T
    K = 4000
    _, *parts = sample_matrix(model.H, atoms, K, rng, split=True)
    for p, (delta, v) in enumerate(zip(parts, exact)):
        emp = (delta @ w).var(axis=0)
        big = v > 1e-3 * v.max()
        assert big.sum() >= 3
        # K draws: relative sd of a variance sqrt(2/K) = 2.2 %
        assert np.all(np.abs(emp[big] / v[big] - 1) < 0.12), (p, emp[big] / v[big])
    # the epistemic part exactly: w^T J Sigma J^T w with the brute-force linear map
    ve = sum(np.einsum("er,ef,fg,hg,hr->r", w, Jb, model.H.posteriors[kk][L].covariance(), Jb, w, optimize=True)
             for (kk, L), Jb in _linear_map(model.H, atoms).items())
    np.testing.assert_allclose(exact[0], ve, rtol=1e-8, atol=1e-12 * ve.max())


def test_fermi_weights_are_the_response_of_the_fermi_level():
    from acehamil.models.hamiltonian.linear_response import fermi_weights
    from acehamil.tb.smearing import fermi_level

    rng = np.random.default_rng(3)
    eps = np.sort(rng.uniform(-3, 3, size=(4, 12)), axis=1)
    wk = np.full(4, 0.25)
    n_el, width = 10.0, 0.3
    ef = fermi_level(eps[None], wk, n_el, width, "fermi-dirac", 2)
    phi = fermi_weights(eps, wk, ef, width)
    d = rng.normal(size=eps.shape)
    h = 1e-5
    fd = (fermi_level((eps + h * d)[None], wk, n_el, width, "fermi-dirac", 2)
          - fermi_level((eps - h * d)[None], wk, n_el, width, "fermi-dirac", 2)) / (2 * h)
    assert np.isclose(np.sum(phi * d), fd, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("improper", [False, True])
def test_extrapolation_score_is_invariant_under_rotation_permutation_translation(model, data, rng, improper):
    """The per-atom score is a function of each atom's environment: unchanged (permuted with the atoms) by a
    random proper or improper rotation of positions and cell, a permutation and a translation."""
    from ase import Atoms

    from acehamil.models.hamiltonian.uncertainty import extrapolation_score
    from acehamil.so3 import random_rotation

    atoms = data[4].atoms
    ref = extrapolation_score(model, atoms)
    Q = random_rotation(rng, improper=improper)
    perm = rng.permutation(len(atoms))
    moved = Atoms(numbers=atoms.numbers[perm], positions=atoms.positions[perm] @ Q.T + rng.normal(size=3) * 3.0,
                  cell=atoms.cell.array @ Q.T, pbc=atoms.pbc)
    got = extrapolation_score(model, moved)
    assert np.all(np.isfinite(ref)) and np.all(ref > 0)
    np.testing.assert_allclose(got, ref[perm], rtol=1e-8)


def test_extrapolation_score_grows_for_a_vacancy_at_its_neighbours(model, data):
    """Removing an atom from a rattled cell like the training ones raises the score, most at the atoms whose
    environment lost the neighbour (the four first neighbours of the empty site), and more than at the rest."""
    from acehamil.models.hamiltonian.uncertainty import extrapolation_score

    atoms = data[4].atoms.repeat((2, 2, 2))  # 16 atoms (the training cells are 2-atom primitive cells)
    bulk_score = extrapolation_score(model, atoms)
    vac = atoms.copy()
    del vac[0]
    score = extrapolation_score(model, vac)
    d = np.linalg.norm(_mic(vac, atoms.positions[0]), axis=1)
    near = np.zeros(len(vac), bool)
    near[np.argsort(d)[:4]] = True  # the four first neighbours of the removed atom
    assert d[near].max() < 2.9 < d[~near].min()
    assert score.max() > 1.5 * bulk_score.max()
    assert score[near].min() > score[~near].max()


def _mic(atoms, point):
    """Minimum-image vectors from ``point`` to every atom of ``atoms`` (Å)."""
    from ase.geometry import find_mic

    return find_mic(atoms.positions - point, atoms.cell, atoms.pbc)[0]


@pytest.mark.parametrize("n_y", [60, 70, 624])
def test_column_groups_of_wide_maps_equal_a_brute_force_grouping(n_y):
    """basis.mapped._column_groups on maps wider than one 64-bit key (the posterior draws' maps of
    predict_many: 24 sets x 13 outputs, mirrored): the rows grouped by their exact pattern of non-zero
    columns, groups in the byte order of the packed patterns, and the grouped product equals x @ CW."""
    from acehamil.basis.mapped import _column_groups

    rng = np.random.default_rng(1)
    pats = rng.random((9, n_y)) < 0.2
    CW = pats[rng.integers(0, 9, 300)] * rng.standard_normal((300, n_y))
    CW[::7] = 0
    rows, groups = _column_groups(CW)
    nz = CW != 0
    want = {}
    for r in np.flatnonzero(nz.any(axis=1)):
        want.setdefault(np.packbits(nz[r], bitorder="little").tobytes(), []).append(int(r))
    assert [rows[g0:g1].tolist() for g0, g1, _, _ in groups] == [want[k] for k in sorted(want)]
    for g0, g1, cols, W in groups:
        np.testing.assert_array_equal(cols, np.flatnonzero(nz[rows[g0]]))
        np.testing.assert_array_equal(W, CW[rows[g0:g1]][:, cols])
    x = rng.standard_normal((5, 300))
    y = np.zeros((5, n_y))
    for g0, g1, cols, W in groups:
        y[:, cols] += x[:, rows[g0:g1]] @ W
    np.testing.assert_allclose(y, x @ CW, atol=1e-12 * np.abs(x @ CW).max())

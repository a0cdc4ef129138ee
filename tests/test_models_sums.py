"""The block-family seam and the fit's partial sums: every family implements the protocol;
per-structure sums form a monoid (any grouping gives the same normal equations) and the
per-structure sampling streams equal one shared serial stream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase.build import bulk

from acehamil.models.hamiltonian.config import ModelConfig
from acehamil.models.hamiltonian.family import BlockFamily
from acehamil.models.hamiltonian.model import HamiltonianModel
from acehamil.models.hamiltonian import sums as sums_module
from acehamil.models.hamiltonian.sums import FitSums, Sampling, centre_counts, feature_groups, structure_sums
from acehamil.structure import OrbitalBasis, StructureData
from acehamil.tb.toy import slater_koster

CFG = {
    "h_onsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [4], "n_max": 3},
    "h_offsite": {"r_cut": 4.0, "r_env": 1.5, "max_nu": 2, "max_degree": [6, 3], "n_max": 5},
    "s_offsite": {"r_cut": 4.0, "max_nu": 1, "max_degree": [6], "n_max": 6},
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)], 6: [(2, 0), (2, 1)]})
    out = []
    for k in range(4):
        at = bulk("Si", "diamond", a=5.43 * (1 + 0.01 * k)) * (2, 1, 1)
        at.numbers[::3] = 6
        at.rattle(0.1, rng=rng)
        H, S = slater_koster(at, basis, cutoff=4.0)
        out.append(StructureData(at, basis, H=(H,), S=S))
    return out


@pytest.fixture(scope="module")
def model(data):
    return HamiltonianModel.build(ModelConfig.from_dict(CFG), data[0].basis).H


def _sums(model, data, sampling, rngs, gauge=False):
    return [structure_sums(model, sd, lambda s: s.H[0], sampling.rates, 1.0 + k, rngs(k), index=k, gauge=gauge)
            for k, sd in enumerate(data)]


def _plan(model, data, cap=30, seed=3):
    return Sampling.plan([centre_counts(model, sd.atoms) for sd in data], cap, np.random.default_rng(seed))


def test_every_family_implements_the_protocol(model):
    assert model.families
    for fam in model.families:
        assert isinstance(fam, BlockFamily), fam.name
        for bt in fam.block_types(model.orbital_basis):
            n = fam.n_coefficients(bt)
            assert set(n) == set(bt.L_values())
            for L, k in n.items():
                assert fam.prior_mask(bt, L, k).shape == (k,)


def test_partial_sums_form_a_monoid(model, data):
    sampling = _plan(model, data)
    assert min(sampling.rates.values()) < 1.0  # the test exercises sampling
    parts = _sums(model, data, sampling, sampling.rng, gauge=True)
    serial = FitSums.total(parts)
    tree = (parts[0] + parts[1]) + (FitSums.empty() + (parts[3] + parts[2]))
    assert serial.counts == tree.counts
    assert serial.normal.keys() == tree.normal.keys()
    for key, ne in serial.normal.items():
        other = tree.normal[key]
        np.testing.assert_allclose(other.AtA, ne.AtA, rtol=1e-12, atol=1e-12 * np.abs(ne.AtA).max())
        np.testing.assert_allclose(other.Aty, ne.Aty, rtol=1e-12, atol=1e-12 * np.abs(ne.Aty).max())
        assert other.count == ne.count
    assert serial.gauge.keys() == tree.gauge.keys()
    assert all(set(g) == set(range(len(data))) for g in serial.gauge.values())
    # adding never changes an operand
    key = next(iter(parts[0].normal))
    before = parts[0].normal[key].AtA.copy()
    _ = parts[0] + parts[1]
    np.testing.assert_array_equal(parts[0].normal[key].AtA, before)
    with pytest.raises(ValueError, match="both sums"):
        _ = parts[0] + parts[0]


def test_fold_sums_built_as_parts_arrive_equal_the_subsets_exactly(model, data):
    """FoldSums keeps only one sum per fold (the calibration's fold models, not every structure's sums):
    each equals FitSums.subset of the kept parts bit for bit (the same additions in the same order),
    energy-zero terms re-keyed; parts out of order, unknown subsets and an early read are refused."""
    sampling = _plan(model, data)
    parts = _sums(model, data, sampling, sampling.rng, gauge=True)
    from acehamil.models.hamiltonian.folds import FoldSums

    keeps = [[0, 2, 3], [1, 2], [0, 1, 2, 3]]
    folds = FoldSums(len(parts), keeps)
    with pytest.raises(ValueError, match="in order"):
        folds.add(1, parts[1])
    for k, part in enumerate(parts):
        folds.add(k, part)
    assert len(folds) == len(parts)
    for keep in keeps:
        got, expect = folds.subset(keep), FitSums.subset(parts, keep)
        assert got.counts == expect.counts and got.normal.keys() == expect.normal.keys()
        for key, ne in expect.normal.items():
            np.testing.assert_array_equal(got.normal[key].AtA, ne.AtA)
            np.testing.assert_array_equal(got.normal[key].Aty, ne.Aty)
            assert (got.normal[key].yty, got.normal[key].count) == (ne.yty, ne.count)
        assert {k: sorted(g) for k, g in got.gauge.items()} == {k: sorted(g) for k, g in expect.gauge.items()}
    with pytest.raises(ValueError, match="no sums kept"):
        folds.subset([0, 1])
    with pytest.raises(ValueError, match="of 4 parts added"):
        FoldSums(4, keeps).subset([1, 2])


def test_per_structure_streams_equal_one_shared_stream(model, data):
    """Structure k's generator is the shared serial stream advanced past structures 0..k-1, so
    visiting the structures in any order (as a map-reduce does) gives the serial loop's sample."""
    sampling = _plan(model, data)
    shared = np.random.default_rng()
    shared.bit_generator.state = sampling.state
    serial = _sums(model, data, sampling, lambda k: shared)  # one generator, structures in order
    order = [3, 1, 0, 2]
    mapped = {k: structure_sums(model, data[k], lambda s: s.H[0], sampling.rates, 1.0 + k, sampling.rng(k), index=k)
              for k in order}
    for k, part in enumerate(serial):
        assert part.counts == mapped[k].counts
        for key, ne in part.normal.items():
            np.testing.assert_array_equal(ne.AtA, mapped[k].normal[key].AtA)
            np.testing.assert_array_equal(ne.Aty, mapped[k].normal[key].Aty)


def test_sampling_keeps_bond_pairs_together(model, data):
    """Same-species bonds are kept with their reverse (the symmetrised blocks need both)."""
    from acehamil.models.hamiltonian.sums import family_centres
    from acehamil.structure.neighbours import neighbour_pairs

    sampling = _plan(model, data, cap=10)
    sd = data[0]
    nl = neighbour_pairs(sd.atoms, model.reach)
    for fam in model.families:
        env, rev = family_centres(fam, sd.atoms, nl, sampling.rates[fam.name], sampling.rng(0))
        if env is None or not any(fam.symmetrised(bt) for bt in fam.block_types(model.orbital_basis)):
            continue
        assert np.all(rev >= 0) and np.array_equal(rev[rev], np.arange(len(rev)))


def _reversed_engine(fn, common, tasks):
    """Another engine: runs the batches last to first, yields the results in task order."""
    tasks = list(tasks)
    yield from [fn(*common, *t) for t in reversed(tasks)][::-1]


def test_fit_does_not_depend_on_the_engine_and_refuses_lost_batches(data):
    from acehamil.models.hamiltonian.fit import fit

    data = [StructureData(sd.atoms, sd.basis, H=sd.H, S=sd.S, n_electrons=4.0 * len(sd.atoms)) for sd in data]
    cfg = ModelConfig.from_dict({**CFG, "fit": {"batch_structures": 3, "max_blocks_per_type": 30}})
    serial = fit(data, cfg, progress=False)
    other = fit(data, cfg, progress=False, mapper=_reversed_engine)
    H0, _ = serial.predict(data[1].atoms)
    H1, _ = other.predict(data[1].atoms)
    assert np.array_equal(H0.data, H1.data)  # same batches, same order of addition: bit for bit
    with pytest.raises(RuntimeError, match="one result per task"):
        fit(data, cfg, progress=False, mapper=lambda fn, common, tasks: iter([fn(*common, *next(iter(tasks)))]))


def _one_too_many(fn, common, tasks):
    results = [fn(*common, *t) for t in tasks]
    yield from results + results[:1]


@pytest.mark.parametrize("calibrate", [False, True])
def test_fit_on_threads_equals_the_serial_fit_and_releases_blas(data, calibrate):
    """thread_mapper: the same model bit for bit (with and without the calibration's per-structure
    parts), and the BLAS limit it sets while mapping is lifted when the fit goes on."""
    from acehamil.models.hamiltonian.fit import fit
    from threadpoolctl import threadpool_limits

    from acehamil.threads import blas_threads, limit_threads, thread_mapper

    data = [StructureData(sd.atoms, sd.basis, H=sd.H, S=sd.S, n_electrons=4.0 * len(sd.atoms)) for sd in data]
    cfg = ModelConfig.from_dict({**CFG, "fit": {"batch_structures": 2, "max_blocks_per_type": 30}})
    if calibrate:
        cfg = dataclasses.replace(cfg, uncertainty=dataclasses.replace(
            cfg.uncertainty, calibrate=True, calibration_folds=2, n_samples=4, kmesh=(2, 2, 2), window_eV=50.0))
    serial = fit(data, cfg, progress=False)
    seen = []

    def spy(fn, common, tasks):  # records the BLAS threads the fit goes on with after the last result
        yield from thread_mapper(2)(fn, common, tasks)
        seen.append(blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        threaded = fit(data, cfg, progress=False, mapper=spy)
        # the fit works at its own one-thread BLAS limit (inner_threads), lifted when it returns; after the
        # counting (H and S), the sums of H and S and the calibration's held-out structures (a fourth run)
        assert seen == [[1] * len(before)] * len(seen) and len(seen) == (4 if calibrate else 3)
        assert blas_threads() == before
        seen.clear()
        with limit_threads(2):  # the fit's own limit then 2, not 1, so that a limit left behind by the mapper shows
            inner = blas_threads()
            fit(data, cfg, progress=False, mapper=spy)
        assert seen[:3] == [inner] * 3 and inner != [1] * len(inner)
    if calibrate:
        for key in ("scale_epistemic", "scale_noise", "scale_shared", "extrapolation_sigma_eV"):
            assert serial.report["uncertainty"][key] == threaded.report["uncertainty"][key], key
    for name in ("H", "S"):
        a, b = getattr(serial, name).coefficients, getattr(threaded, name).coefficients
        assert a.keys() == b.keys()
        for key in a:
            for L in a[key]:
                assert np.array_equal(a[key][L], b[key][L]), (name, key, L)
    with pytest.raises(RuntimeError, match="more results than tasks"):
        fit(data, cfg, progress=False, mapper=_one_too_many)



def test_extrapolation_reference_runs_at_one_blas_thread_unless_threads_were_requested(data, monkeypatch):
    """Per-structure on-site features and small products: the fit computes the extrapolation
    reference at one BLAS thread, or at the number chosen with limit_threads."""
    import acehamil.models.hamiltonian.uncertainty as uncertainty_module
    from threadpoolctl import threadpool_limits

    from acehamil.models.hamiltonian.fit import fit
    from acehamil.threads import blas_threads, limit_threads

    seen = []

    def spy(model, structures, designs=None):
        seen.append(blas_threads())
        return {}

    monkeypatch.setattr(uncertainty_module, "extrapolation_reference", spy)
    cfg = ModelConfig.from_dict({**CFG, "fit": {"max_blocks_per_type": 30}, "solver": {"method": "blr"}})
    with threadpool_limits(limits=2, user_api="blas"):
        outer = blas_threads()
        fit(data, cfg, progress=False)
        with limit_threads(2):
            fit(data, cfg, progress=False)
    assert seen == [[1] * len(outer), outer]


def test_counts_and_pairs_builds_one_list_that_counts_as_each_models_own(data):
    """The fit's counting pass: one neighbour list at the longest reach gives every model's own centre
    counts; a reach shorter than a model's is refused."""
    from acehamil.models.hamiltonian.sums import counts_and_pairs
    from acehamil.structure.neighbours import neighbour_pairs

    full = HamiltonianModel.build(ModelConfig.from_dict({**CFG, "h_offsite": {**CFG["h_offsite"], "r_cut": 5.0}}),
                                  data[0].basis)
    assert full.H.reach > full.S.reach  # so that S's counts come from a longer list than its own
    for sd in data:
        (ch, cs), nl = counts_and_pairs((full.H, full.S), full.reach, sd.atoms)
        assert ch == centre_counts(full.H, sd.atoms) and cs == centre_counts(full.S, sd.atoms)
        ref = neighbour_pairs(sd.atoms, full.reach)
        assert np.array_equal(nl.i, ref.i) and np.array_equal(nl.shift, ref.shift)
    with pytest.raises(ValueError, match="shorter than a model"):
        counts_and_pairs((full.H, full.S), full.S.reach, data[0].atoms)


@pytest.mark.parametrize("cap", [10_000, 5])
def test_sums_hand_over_the_onsite_designs_of_every_atom(model, data, cap):
    """structure_sums_and_designs: the same sums as structure_sums and, when no on-site centre was
    sampled away, on-site designs equal (bit for bit) to uncertainty.onsite_designs; None when sampled."""
    from acehamil.models.hamiltonian.sums import structure_sums_and_designs
    from acehamil.models.hamiltonian.uncertainty import onsite_designs

    sampling = _plan(model, data, cap=cap)
    sampled = any(sampling.rates.get(f.name, 1.0) < 1.0 for f in model.onsite)
    assert sampled == (cap == 5)
    for k, sd in enumerate(data):
        sums, got = structure_sums_and_designs(model, sd, lambda s: s.H[0], sampling.rates, 1.0, sampling.rng(k), index=k)
        plain = structure_sums(model, sd, lambda s: s.H[0], sampling.rates, 1.0, sampling.rng(k), index=k)
        assert sums.normal.keys() == plain.normal.keys()
        for key in sums.normal:
            assert np.array_equal(sums.normal[key].AtA, plain.normal[key].AtA)
        if sampled:
            assert got is None
            continue
        ref = onsite_designs(model, sd.atoms)
        assert got.keys() == ref.keys() and ref
        for key in ref:
            assert np.array_equal(got[key][0], ref[key][0]) and np.array_equal(got[key][1], ref[key][1]), key


def test_fit_hands_its_designs_to_the_extrapolation_reference_and_the_calibration(data, monkeypatch):
    """The fit builds one neighbour list per structure and no on-site design after the sums: the
    extrapolation reference and the calibration get them (StructureDesigns) and give the same numbers
    as computing them afresh."""
    import acehamil.models.hamiltonian.calibrate as calibrate_module
    import acehamil.structure.neighbours as neighbours_module
    import acehamil.models.hamiltonian.sums as sums_module
    import acehamil.models.hamiltonian.uncertainty as uncertainty_module
    from acehamil.models.hamiltonian.fit import fit
    from acehamil.models.hamiltonian.uncertainty import extrapolation_reference

    data = [StructureData(sd.atoms, sd.basis, H=sd.H, S=sd.S, n_electrons=4.0 * len(sd.atoms)) for sd in data]
    cfg = ModelConfig.from_dict({**CFG, "fit": {"batch_structures": 2}, "solver": {"method": "blr"}})
    cfg = dataclasses.replace(cfg, uncertainty=dataclasses.replace(
        cfg.uncertainty, calibrate=True, calibration_folds=2, n_samples=4, kmesh=(2, 2, 2), window_eV=50.0))
    calls = {"pairs": 0, "onsite": 0}
    real_pairs, real_onsite = neighbours_module.neighbour_pairs, uncertainty_module.onsite_designs
    real_calibrate, handed = calibrate_module.calibrate, []

    def count_pairs(*a, **k):
        calls["pairs"] += 1
        return real_pairs(*a, **k)

    def count_onsite(*a, **k):
        calls["onsite"] += 1
        return real_onsite(*a, **k)

    def keep_calibrate(structures, model, parts, **kw):
        handed.append((structures, model, parts, kw))
        return real_calibrate(structures, model, parts, **kw)

    monkeypatch.setattr(sums_module, "neighbour_pairs", count_pairs)
    monkeypatch.setattr(uncertainty_module, "onsite_designs", count_onsite)
    monkeypatch.setattr(calibrate_module, "calibrate", keep_calibrate)
    got = fit(data, cfg, progress=False)
    assert calls == {"pairs": len(data), "onsite": 0}
    monkeypatch.undo()
    # the same numbers from designs computed afresh
    assert got.report["extrapolation_reference"] == extrapolation_reference(got, data)
    (structures, model, parts, kw), = handed
    assert len(kw["designs"]) == len(data)
    afresh = real_calibrate(structures, model, parts)
    for key in ("scale_epistemic", "scale_noise", "scale_shared"):
        assert got.report["uncertainty"][key] == afresh[key], key


def test_centre_weights_multiply_the_row_weights_per_centre(model, data):
    """A per-centre weight c is the structure weight times c for its rows: a constant c equals weight * c
    (normal equations and energy-zero terms), and c = 0 on the off-site families empties their sums."""
    sampling = _plan(model, data)
    sd = data[0]
    plain = structure_sums(model, sd, lambda s: s.H[0], sampling.rates, 2.5, sampling.rng(0), gauge=True)
    const = structure_sums(model, sd, lambda s: s.H[0], sampling.rates, 1.0, sampling.rng(0), gauge=True,
                           centre_weights=lambda fam, env: np.full(env.n_centres, 2.5))
    assert plain.counts == const.counts
    for key, ne in plain.normal.items():
        np.testing.assert_allclose(const.normal[key].AtA, ne.AtA, rtol=1e-13, atol=1e-13 * np.abs(ne.AtA).max())
        np.testing.assert_allclose(const.normal[key].Aty, ne.Aty, rtol=1e-13, atol=1e-13 * np.abs(ne.Aty).max())
    for key, g in plain.gauge.items():
        for a, b in zip(g[0], const.gauge[key][0]):
            np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13 * np.abs(a).max())
    onsite_only = structure_sums(model, sd, lambda s: s.H[0], sampling.rates, 1.0, sampling.rng(0),
                                 centre_weights=lambda fam, env: np.zeros(env.n_centres)
                                 if fam.name.startswith("offsite") else np.ones(env.n_centres))
    ref = structure_sums(model, sd, lambda s: s.H[0], sampling.rates, 1.0, sampling.rng(0))
    offsite_keys = [k for k in ref.normal if str(k[0]).startswith("offsite") or "offsite" in repr(k[0])]
    for key, ne in onsite_only.normal.items():
        if key in offsite_keys:
            assert not ne.AtA.any() and not ne.Aty.any()
        else:
            np.testing.assert_array_equal(ne.AtA, ref.normal[key].AtA)
    assert offsite_keys


def _full_rows(fam, env, rev=None):
    """feature_groups with every centre's full feature row (the zeros of two-centre bonds included)."""
    return [(np.arange(env.n_centres), fam.features(env), None)]


@pytest.mark.parametrize("cap", [10_000, 30])
def test_two_centre_bonds_by_their_nonzero_columns_give_the_full_design_sums(data, cap, monkeypatch):
    """Bonds beyond env_bond_cut add their few nonzero feature columns only: the normal equations,
    counts and energy-zero terms equal those of the full design rows (up to rounding), with sampling
    and per-centre weights; the features of both groups are the family's own."""
    cfg = {**CFG, "h_offsite": {**CFG["h_offsite"], "env_bond_cut": 3.0}}
    mm = HamiltonianModel.build(ModelConfig.from_dict(cfg), data[0].basis).H
    sampling = _plan(mm, data, cap=cap)
    from acehamil.structure.neighbours import neighbour_pairs
    from acehamil.structure.pair_index import reverse_index

    fam = next(f for f in mm.families if f.name.startswith("offsite") and f.has_environment)
    nl = neighbour_pairs(data[1].atoms, mm.reach)
    sel = fam.select(data[1].atoms, nl)
    env = fam.environments(data[1].atoms, nl, sel)
    groups = feature_groups(fam, env, reverse_index(*fam.centre_blocks(data[1].atoms, nl, sel)))
    assert len(groups) == 2 and groups[1][2] is not None  # the test exercises the split
    whole = fam.features(env)
    for pos, feats, cols in groups:
        for key, x in feats.items():
            np.testing.assert_array_equal(x, whole[key][pos] if cols is None else whole[key][pos][:, cols[key]])
        if cols is not None:
            for key, c in cols.items():
                rest = np.setdiff1d(np.arange(whole[key].shape[1]), c)
                assert not whole[key][pos][:, rest].any()

    def sums(k):
        return structure_sums(mm, data[k], lambda s: s.H[0], sampling.rates, 1.5, sampling.rng(k), index=k, gauge=True,
                              centre_weights=lambda f, e: 1.0 + np.arange(e.n_centres) % 3)

    grouped = [sums(k) for k in range(len(data))]
    monkeypatch.setattr(sums_module, "feature_groups", _full_rows)
    full = [sums(k) for k in range(len(data))]
    for a, b in zip(grouped, full):
        assert a.counts == b.counts and a.normal.keys() == b.normal.keys()
        for key, ne in b.normal.items():
            np.testing.assert_allclose(a.normal[key].AtA, ne.AtA, rtol=1e-12, atol=1e-12 * np.abs(ne.AtA).max())
            np.testing.assert_allclose(a.normal[key].Aty, ne.Aty, rtol=1e-12, atol=1e-12 * np.abs(ne.Aty).max())
            assert a.normal[key].yty == pytest.approx(ne.yty, rel=1e-12)
            assert a.normal[key].count == ne.count
        for key, g in b.gauge.items():
            for u, v in zip(a.gauge[key][next(iter(g))], next(iter(g.values()))):
                np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12 * max(np.abs(v).max(), 1e-300))


def test_feature_groups_keep_a_bond_and_its_reverse_together(data):
    """A centre whose partner is on the other side (two-centre vs with environment) puts every centre
    back into one group of full rows, equal to the family's features."""
    cfg = {**CFG, "h_offsite": {**CFG["h_offsite"], "env_bond_cut": 3.0}}
    mm = HamiltonianModel.build(ModelConfig.from_dict(cfg), data[0].basis).H
    from acehamil.structure.neighbours import neighbour_pairs

    fam = next(f for f in mm.families if f.name.startswith("offsite") and f.has_environment)
    nl = neighbour_pairs(data[0].atoms, mm.reach)
    env = fam.environments(data[0].atoms, nl, fam.select(data[0].atoms, nl))
    short, long = (np.flatnonzero(np.linalg.norm(env.vec, axis=1) < 3.0), np.flatnonzero(np.linalg.norm(env.vec, axis=1) >= 3.0))
    rev = np.arange(env.n_centres)
    rev[short[0]], rev[long[0]] = long[0], short[0]  # a made-up partner across the sides
    (one,) = feature_groups(fam, env, rev)
    assert one[2] is None
    np.testing.assert_array_equal(one[0], np.arange(env.n_centres))
    whole = fam.features(env)
    for key, x in whole.items():
        np.testing.assert_array_equal(one[1][key], x)


def test_the_fit_solves_at_one_blas_thread_unless_threads_were_requested(data, monkeypatch):
    """The per-block solves of the fit (many small dense problems) run at one BLAS thread, or at the
    number chosen with limit_threads: the default all-core BLAS spun idle threads on the 2-core machine
    (README job fit 11.5 -> 24.0 s CPU at load 6) and made the coefficients depend on the core count."""
    import acehamil.models.hamiltonian.fit as fit_module
    from threadpoolctl import threadpool_limits

    from acehamil.threads import blas_threads, limit_threads

    seen = []
    real = fit_module.solve_sums

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "solve_sums", spy)
    cfg = ModelConfig.from_dict({**CFG, "fit": {"max_blocks_per_type": 30}, "solver": {"method": "blr"}})
    with threadpool_limits(limits=2, user_api="blas"):
        outer = blas_threads()
        fit_module.fit(data, cfg, progress=False)
        n = len(seen)
        with limit_threads(2):
            fit_module.fit(data, cfg, progress=False)
    assert n == 2 and len(seen) == 4  # H and S
    assert seen[:2] == [[1] * len(outer)] * 2 and seen[2:] == [outer] * 2


def test_stratified_sampling_keeps_every_short_bond_with_the_same_draws(model, data):
    """keep_within R: every off-site bond shorter than R is kept, its rows weighted by the family's rate; the
    longer bonds kept are the plain plan's at that rate (the same draws), and the long-bond rate keeps the
    expected total at the cap."""
    import pickle

    from acehamil.models.hamiltonian.sums import SHORT, Rates, sampled_centres
    from acehamil.structure.neighbours import neighbour_pairs

    R, cap = 2.6, 30
    counts = [centre_counts(model, sd.atoms, keep_within=R) for sd in data]
    plain = _plan(model, data, cap=cap)
    strat = Sampling.plan(counts, cap, np.random.default_rng(3), keep_within=R)
    np.testing.assert_array_equal(strat.offsets, plain.offsets)  # one draw per centre either way
    assert strat.state == plain.state and isinstance(strat.rates, Rates) and strat.rates.keep_within == R
    assert not any(k.endswith(SHORT) for k in strat.rates)
    n_checked = 0
    for fam in model.offsite:
        n_short = sum(c[fam.name + SHORT] for c in counts)
        n_all = sum(c[fam.name] for c in counts)
        assert 0 < n_short < n_all
        rate = strat.rates[fam.name]
        assert rate == pytest.approx(min(1.0, max(cap - n_short, cap / 2) / (n_all - n_short)))
        for k, sd in enumerate(data):
            nl = neighbour_pairs(sd.atoms, model.reach)
            short = nl.dist[fam.select(sd.atoms, nl)] < R
            sel, factors = sampled_centres(fam, sd.atoms, nl, rate, strat.rng(k), keep_within=R)
            ref, no_factors = sampled_centres(fam, sd.atoms, nl, rate, strat.rng(k))
            assert no_factors is None
            is_short = nl.dist[sel] < R
            assert is_short.sum() == short.sum()  # every short bond
            np.testing.assert_array_equal(sel[~is_short], ref[nl.dist[ref] >= R])  # the plain draw's long bonds
            np.testing.assert_allclose(factors, np.where(is_short, rate, 1.0))
            n_checked += 1
    assert n_checked
    r = pickle.loads(pickle.dumps(strat.rates))
    assert r == strat.rates and r.keep_within == R
    with pytest.raises(ValueError, match="keep_within"):
        Rates({}, keep_within=float("nan"))


def test_stratified_sums_weight_the_short_bonds_by_the_rate(model, data, monkeypatch):
    """The sums of a stratified plan equal those of the same kept centres with the short bonds' rows weighted
    by the family's rate through centre_weights, and differ from unweighted ones; keep_within 0 is the plain
    plan bit for bit."""
    from acehamil.models.hamiltonian.sums import Rates, sampled_centres
    from acehamil.structure.neighbours import neighbour_pairs

    R = 2.6
    plan = Sampling.plan([centre_counts(model, sd.atoms, keep_within=R) for sd in data], 30, np.random.default_rng(3),
                         keep_within=R)
    sd = data[1]
    nl = neighbour_pairs(sd.atoms, model.reach)
    got = structure_sums(model, sd, lambda s: s.H[0], plan.rates, 1.5, plan.rng(1), index=1, pairs=nl)
    factors = {}

    def unweighted(fam, atoms, pairs, rate, rng, keep_within=0.0):
        sel, f = sampled_centres(fam, atoms, pairs, rate, rng, keep_within)
        factors[fam.name] = f
        return sel, None

    monkeypatch.setattr(sums_module, "sampled_centres", unweighted)
    flat = structure_sums(model, sd, lambda s: s.H[0], plan.rates, 1.5, plan.rng(1), index=1, pairs=nl)
    assert any(f is not None and np.any(f < 1) for f in factors.values())
    ref = structure_sums(model, sd, lambda s: s.H[0], plan.rates, 1.5, plan.rng(1), index=1, pairs=nl,
                         centre_weights=lambda fam, env: np.ones(env.n_centres) if factors[fam.name] is None
                         else factors[fam.name])
    monkeypatch.undo()
    assert set(got.normal) == set(ref.normal)
    differs = False
    for key in got.normal:
        np.testing.assert_allclose(got.normal[key].AtA, ref.normal[key].AtA, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.normal[key].Aty, ref.normal[key].Aty, rtol=1e-12, atol=1e-14)
        differs |= not np.allclose(got.normal[key].AtA, flat.normal[key].AtA)
    assert differs
    plain = _plan(model, data)
    a = structure_sums(model, sd, lambda s: s.H[0], plain.rates, 1.0, plain.rng(1), index=1, pairs=nl)
    b = structure_sums(model, sd, lambda s: s.H[0], Rates(plain.rates, 0.0), 1.0, plain.rng(1), index=1, pairs=nl)
    for key in a.normal:
        np.testing.assert_array_equal(a.normal[key].AtA, b.normal[key].AtA)


def test_fit_with_keep_bonds_within_fits_every_short_bond(data):
    """[fit] keep_bonds_within reaches the fit: its off-site H sums hold at least every bond shorter than it
    (each bond gives one block of every off-site block type of its species pair), the long bonds' rates
    change, the S plan does not, and the report says so."""
    from acehamil.models.hamiltonian.fit import fit
    from acehamil.structure.neighbours import neighbour_pairs

    data = [StructureData(sd.atoms, sd.basis, H=sd.H, S=sd.S, n_electrons=4.0 * len(sd.atoms)) for sd in data]
    R, cap = 2.6, 30
    plain = fit(data, ModelConfig.from_dict({**CFG, "fit": {"max_blocks_per_type": cap}}), progress=False)
    strat = fit(data, ModelConfig.from_dict({**CFG, "fit": {"max_blocks_per_type": cap, "keep_bonds_within": R}}),
                progress=False)
    assert strat.report["H_keep_bonds_within"] == R and "H_keep_bonds_within" not in plain.report
    assert strat.report["S_sampling_rates"] == plain.report["S_sampling_rates"]
    model = HamiltonianModel.build(ModelConfig.from_dict(CFG), data[0].basis).H
    for fam in model.offsite:
        n_short = 0
        for sd in data:
            nl = neighbour_pairs(sd.atoms, model.reach)
            n_short += int(np.sum(nl.dist[fam.select(sd.atoms, nl)] < R))
        assert n_short > plain.report["H_sampling_rates"][fam.name] * n_short + 3  # the plain plan drops many
        for bt in fam.block_types(model.orbital_basis):
            assert strat.report["H"][bt.key]["n_blocks"] >= n_short
    assert strat.report["H_sampling_rates"] != plain.report["H_sampling_rates"]
    with pytest.raises(ValueError, match="keep_bonds_within"):
        ModelConfig.from_dict({"fit": {"keep_bonds_within": -1.0}})

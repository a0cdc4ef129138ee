"""The ACE basis evaluated through a linear map of its flat features (:class:`~.mapped.ProductMap`), without
forming the features: :meth:`ACEBasis.evaluate_mapped <acehamil.basis.ACEBasis.evaluate_mapped>` and
:meth:`ACEBasis.evaluate_mapped_one_particle <acehamil.basis.ACEBasis.evaluate_mapped_one_particle>` (documented
there) are these functions of their basis."""

from __future__ import annotations

import numpy as np

from .centres import MIN_LENGTH, Centres
from .mapped import OneParticleMap, ProductMap


def evaluate_mapped(basis, centres: Centres, W, mirror=None):
    """:meth:`ACEBasis.evaluate_mapped <acehamil.basis.ACEBasis.evaluate_mapped>` of ``basis`` (see there), batch
    by batch as :meth:`ACEBasis.evaluate`."""
    if not isinstance(centres, Centres):
        raise TypeError(f"centres must be a Centres, got {type(centres).__name__}")
    pm = W if isinstance(W, ProductMap) else basis.mapping(W)
    if pm.n_AA != basis.tables.n_AA or pm.n_rows_low != min(pm.n_low, basis.tables.n_AA):
        raise ValueError("the ProductMap was built for a different basis")
    if mirror is not None:  # both at once: every product formed once (ProductMap.with_mirror)
        pm = pm.with_mirror(mirror)
    out = np.empty((centres.n_centres, pm.n_y))
    prep = basis._prepare(centres)
    # only the lower products the map reads are formed (ProductMap.evaluate_atomic): batches sized by those
    for c0, c1, p0, p1, A, *_ in basis._batches(prep, max(pm.n_formed, pm.n_top), False):
        out[c0:c1] = pm.evaluate_atomic(A)
    if mirror is None:
        return out
    h = pm.n_y // 2
    return out[:, :h], out[:, h:]


def evaluate_mapped_one_particle(basis, vec, centre_species, category, W, mirror: bool, budget: int):
    """:meth:`ACEBasis.evaluate_mapped_one_particle <acehamil.basis.ACEBasis.evaluate_mapped_one_particle>` of
    ``basis`` (see there); ``budget``: float64 entries of one batch's products."""
    pm = W if isinstance(W, ProductMap) else basis.mapping(W)
    if pm.n_AA != basis.tables.n_AA or pm.n_rows_low != min(pm.n_low, basis.tables.n_AA):
        raise ValueError("the ProductMap was built for a different basis")
    spec, t = basis.spec, basis.tables
    if category not in spec.categories:
        raise ValueError(f"unknown particle category {category}; the basis has {list(spec.categories)}")
    vec = np.ascontiguousarray(vec, dtype=float).reshape(-1, 3)
    species = np.asarray(centre_species, dtype=np.int64).reshape(-1)
    if len(species) != len(vec):
        raise ValueError(f"{len(vec)} particle vectors but {len(species)} centre species")
    if not np.all(np.isfinite(vec)):
        raise ValueError("particle_vec contains NaN or inf")
    r = np.linalg.norm(vec, axis=1)
    if len(r) and r.min() < MIN_LENGTH:
        raise ValueError(f"particle {int(np.argmin(r))} has a zero-length vector (|x| = {r.min():.3g} Å)")
    one = pm.__dict__.setdefault("_one_particle", {})
    if category not in one:
        one[category] = OneParticleMap.build(pm, category)
    fact = one[category]
    rc = np.full(len(vec), spec.radial.r_cut)
    for z, c, cut in spec.radial.cutoffs:
        if c == category:
            rc[species == z] = cut
    decay = spec.radial.decay_lengths(species, np.full(len(vec), category))
    cat_index = np.full(len(vec), spec.categories.index(category))
    if fact is not None:  # factorised: one radial product and one harmonic per output
        Y = basis._smooth_harmonics(vec, r, cat_index, basis.angular.evaluate(vec))[0]
        out = fact.evaluate(basis.radial.evaluate(r, rc, decay=decay), Y, mirror=mirror)
        return (out[:, :fact.n_y], out[:, fact.n_y:]) if mirror else out
    if mirror:
        pm = pm.with_mirror((-1.0) ** np.floor(np.sqrt(t.a_lm)))
    out = np.empty((len(vec), pm.n_y))
    if len(vec):
        # only this category's one-particle sums are non-zero (the others have no particle)
        mine = np.nonzero(t.a_cat == category)[0]
        a_n, a_lm = t.a_n[mine], t.a_lm[mine]
        R = basis.radial.evaluate(r, rc, decay=decay)
        Y = basis._smooth_harmonics(vec, r, cat_index, basis.angular.evaluate(vec))[0]
        nb = max(1, int(budget // max(pm.n_formed, pm.n_top, 1)))
        A = np.zeros((min(nb, len(vec)), t.n_A))
        for c0 in range(0, len(vec), nb):
            c1 = min(len(vec), c0 + nb)
            a = A[: c1 - c0]
            a[:, mine] = R[c0:c1, a_n] * Y[c0:c1, a_lm]
            out[c0:c1] = pm.evaluate_atomic(a)
    if not mirror:
        return out
    h = pm.n_y // 2
    return out[:, :h], out[:, h:]

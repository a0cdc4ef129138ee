"""Frozen, JSON-able specifications of an ACE basis.

A basis is a pure function of its :class:`BasisSpec`; ``spec.to_dict()`` /
``BasisSpec.from_dict()`` round-trip exactly, so a basis can be stored with a
model and rebuilt bit for bit.

Examples
--------
>>> spec = BasisSpec(categories=(14,), radial=RadialSpec(n_max=4, r_cut=5.0), max_nu=2, max_degree=(6, 6), L_max=2)
>>> BasisSpec.from_dict(spec.to_dict()) == spec
True
>>> spec.degree_limit(2)
6.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Category of the bond particle of a bond centre (atomic numbers are >= 1).
BOND = -1


def _as_int_tuple(values, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of integers, got {values!r}") from err
    for v, w in zip(out, values):
        if v != w:
            raise ValueError(f"{name} must contain integers, got {values!r}")
    return out


@dataclass(frozen=True)
class RadialSpec:
    """Radial basis: ``n_max`` orthonormal polynomials in ``r / r_cut`` times an envelope.

    Parameters
    ----------
    n_max : int
        Number of radial functions, ``n = 0 .. n_max-1``.
    r_cut : float
        Default cutoff, Å.
    cutoffs : tuple of (centre_species, category, r_cut)
        Cutoff (Å) overriding ``r_cut`` for particles of ``category`` around a
        centre of ``centre_species``.
    envelope_power : int
        The envelope is ``(1 - r/r_cut)**envelope_power``; ``>= 2`` so value and
        first derivative vanish at the cutoff.
    decays : tuple of (centre_species, category, length)
        Decay length (Å, > 0) of particles of ``category`` around a centre of
        ``centre_species``: their radial functions are multiplied by ``exp(-r/length)``
        (e.g. the bond particle of an off-site H model, whose blocks fall off
        exponentially with the bond length: the polynomials then fit the slowly
        varying prefactor, with the same relative accuracy at every length).  Pairs
        not listed have no decay.
    """

    n_max: int
    r_cut: float
    cutoffs: tuple = ()
    envelope_power: int = 2
    decays: tuple = ()

    def __post_init__(self):
        if int(self.n_max) != self.n_max or self.n_max < 1:
            raise ValueError(f"n_max must be a positive integer, got {self.n_max}")
        if not (float(self.r_cut) > 0):
            raise ValueError(f"r_cut must be > 0 Å, got {self.r_cut}")
        if int(self.envelope_power) != self.envelope_power or self.envelope_power < 2:
            raise ValueError(f"envelope_power must be an integer >= 2, got {self.envelope_power}")
        cut = []
        for entry in self.cutoffs:
            if len(entry) != 3:
                raise ValueError(f"cutoffs entries are (centre_species, category, r_cut), got {entry!r}")
            s, c, r = int(entry[0]), int(entry[1]), float(entry[2])
            if not r > 0:
                raise ValueError(f"cutoff must be > 0 Å, got {entry!r}")
            cut.append((s, c, r))
        keys = [(s, c) for s, c, _ in cut]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate (centre_species, category) in cutoffs: {self.cutoffs!r}")
        object.__setattr__(self, "n_max", int(self.n_max))
        object.__setattr__(self, "r_cut", float(self.r_cut))
        object.__setattr__(self, "envelope_power", int(self.envelope_power))
        object.__setattr__(self, "cutoffs", tuple(sorted(cut)))
        dec = []
        for entry in self.decays:
            if len(entry) != 3:
                raise ValueError(f"decays entries are (centre_species, category, length), got {entry!r}")
            s, c, r = int(entry[0]), int(entry[1]), float(entry[2])
            if not (np.isfinite(r) and r > 0):
                raise ValueError(f"decay length must be finite and > 0 Å, got {entry!r}")
            dec.append((s, c, r))
        keys = [(s, c) for s, c, _ in dec]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate (centre_species, category) in decays: {self.decays!r}")
        object.__setattr__(self, "decays", tuple(sorted(dec)))

    def cutoff(self, centre_species: int, category: int) -> float:
        """Cutoff in Å for ``category`` particles around a ``centre_species`` centre."""
        for s, c, r in self.cutoffs:
            if s == centre_species and c == category:
                return r
        return self.r_cut

    def decay_lengths(self, centre_species, category) -> np.ndarray | None:
        """Decay length (Å) of each particle, 0 where none; None when the spec has no decays.

        Parameters
        ----------
        centre_species, category : array_like of int, shape (P,)
        """
        if not self.decays:
            return None
        species, cat = np.asarray(centre_species), np.asarray(category)
        out = np.zeros(np.broadcast(species, cat).shape)
        for s, c, r in self.decays:
            out[(species == s) & (cat == c)] = r
        return out

    @property
    def max_cutoff(self) -> float:
        """Largest cutoff of any pair, Å."""
        return max([self.r_cut] + [r for _, _, r in self.cutoffs])

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return {
            "n_max": self.n_max,
            "r_cut": self.r_cut,
            "cutoffs": [list(c) for c in self.cutoffs],
            "envelope_power": self.envelope_power,
            **({"decays": [list(d) for d in self.decays]} if self.decays else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RadialSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(
            n_max=d["n_max"],
            r_cut=d["r_cut"],
            cutoffs=tuple(tuple(c) for c in d.get("cutoffs", ())),
            envelope_power=d.get("envelope_power", 2),
            decays=tuple(tuple(c) for c in d.get("decays", ())),
        )


@dataclass(frozen=True)
class BasisSpec:
    """Specification of an O(3)-equivariant ACE basis.

    Parameters
    ----------
    categories : tuple of int
        Particle categories (atomic numbers, and :data:`BOND` for bond particles).
    radial : RadialSpec
    max_nu : int
        Maximal correlation order (number of one-particle factors), 1..4.
    max_degree : float or tuple of float
        Total-degree limit per order ``nu = 1..max_nu`` (one number = same for all).
        A factor ``(n, l)`` has degree ``weight_n * n + weight_l * l``.
    weight_n, weight_l : float
        Degree weights (> 0).
    L_max : int
        Features are produced for every ``(L, parity)``, ``L = 0..L_max``.
    singleton_categories : tuple of int
        If non-empty, every product contains exactly one particle whose category
        is in this tuple (e.g. ``(BOND,)`` for bond centres).
    l_max : int or None
        Optional cap on the one-particle ``l`` (default: implied by the degrees).
    parities : tuple of int
        Which inversion parities to produce, a subset of ``(-1, 1)`` (default both).
        A site-energy potential needs only ``(1,)``: leaving out the pseudo-scalars
        also leaves out the products only they use.
    origin_smoothing : float
        Å, ``r0 >= 0``.  A one-particle function ``R_n(r) Y_lm(x/r)`` has no limit at ``r -> 0``
        for ``l > 0`` (its direction is undefined there, while ``R_n(0) != 0``), so a particle
        passing near the centre changes the features by a jump, however small its move.  With
        ``r0 > 0`` the harmonics of every particle of a non-singleton category are multiplied by
        ``t(r/r0)^l`` (:func:`origin_factor`: ``t(x) = x (15 - 10 x^2 + 3 x^4) / 8`` below 1, 1
        beyond, C^2 at ``r0``), so near the centre they behave as the solid harmonics
        ``r^l Y_lm`` (smooth) and particles farther than ``r0`` are untouched.  Matters for
        bond-centred environments, where an atom can sit at the bond midpoint (e.g. an
        interstitial between two host atoms, or the atom between the ends of a bond twice a
        lattice vector long); atom-centred environments never have a particle near the centre.
        0 = off (the basis of earlier model files).
    """

    categories: tuple
    radial: RadialSpec
    max_nu: int = 3
    max_degree: tuple = (12.0,)
    weight_n: float = 1.0
    weight_l: float = 1.0
    L_max: int = 4
    singleton_categories: tuple = ()
    l_max: int | None = None
    parities: tuple = (-1, 1)
    origin_smoothing: float = 0.0

    def __post_init__(self):
        cats = _as_int_tuple(self.categories, "categories")
        if not cats:
            raise ValueError("categories must not be empty")
        if len(set(cats)) != len(cats):
            raise ValueError(f"duplicate categories: {cats}")
        object.__setattr__(self, "categories", tuple(sorted(cats)))
        if not isinstance(self.radial, RadialSpec):
            raise TypeError(f"radial must be a RadialSpec, got {type(self.radial).__name__}")
        if int(self.max_nu) != self.max_nu or not 1 <= self.max_nu <= 4:
            raise ValueError(f"max_nu must be an integer in 1..4, got {self.max_nu}")
        object.__setattr__(self, "max_nu", int(self.max_nu))
        md = self.max_degree
        md = (float(md),) * self.max_nu if isinstance(md, (int, float)) else tuple(float(x) for x in md)
        if len(md) == 1:
            md = md * self.max_nu
        if len(md) != self.max_nu:
            raise ValueError(f"max_degree needs 1 or max_nu={self.max_nu} entries, got {self.max_degree!r}")
        if min(md) < 0:
            raise ValueError(f"max_degree must be >= 0, got {md}")
        object.__setattr__(self, "max_degree", md)
        for name in ("weight_n", "weight_l"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
            object.__setattr__(self, name, float(getattr(self, name)))
        if int(self.L_max) != self.L_max or self.L_max < 0:
            raise ValueError(f"L_max must be a non-negative integer, got {self.L_max}")
        object.__setattr__(self, "L_max", int(self.L_max))
        single = tuple(sorted(_as_int_tuple(self.singleton_categories, "singleton_categories")))
        for c in single:
            if c not in cats:
                raise ValueError(f"singleton category {c} is not in categories {cats}")
        object.__setattr__(self, "singleton_categories", single)
        if self.l_max is not None:
            if int(self.l_max) != self.l_max or self.l_max < 0:
                raise ValueError(f"l_max must be a non-negative integer or None, got {self.l_max}")
            object.__setattr__(self, "l_max", int(self.l_max))
        par = tuple(sorted(set(_as_int_tuple(self.parities, "parities"))))
        if not par or any(p not in (-1, 1) for p in par):
            raise ValueError(f"parities must be a non-empty subset of (-1, 1), got {self.parities!r}")
        object.__setattr__(self, "parities", par)
        r0 = float(self.origin_smoothing)
        if not (np.isfinite(r0) and r0 >= 0):
            raise ValueError(f"origin_smoothing must be finite and >= 0 Å, got {self.origin_smoothing}")
        object.__setattr__(self, "origin_smoothing", r0)

    def degree_limit(self, nu: int) -> float:
        """Total-degree limit for products of ``nu`` factors."""
        return self.max_degree[nu - 1]

    def to_dict(self) -> dict:
        """JSON-able dict (round-trips through :meth:`from_dict`)."""
        return {
            "categories": list(self.categories),
            "radial": self.radial.to_dict(),
            "max_nu": self.max_nu,
            "max_degree": list(self.max_degree),
            "weight_n": self.weight_n,
            "weight_l": self.weight_l,
            "L_max": self.L_max,
            "singleton_categories": list(self.singleton_categories),
            "l_max": self.l_max,
            "parities": list(self.parities),
            **({"origin_smoothing": self.origin_smoothing} if self.origin_smoothing > 0 else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BasisSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(
            categories=tuple(d["categories"]),
            radial=RadialSpec.from_dict(d["radial"]),
            max_nu=d["max_nu"],
            max_degree=tuple(d["max_degree"]),
            weight_n=d.get("weight_n", 1.0),
            weight_l=d.get("weight_l", 1.0),
            L_max=d.get("L_max", 4),
            singleton_categories=tuple(d.get("singleton_categories", ())),
            l_max=d.get("l_max"),
            parities=tuple(d.get("parities", (-1, 1))),
            origin_smoothing=d.get("origin_smoothing", 0.0),
        )


def origin_factor(r: np.ndarray, r0: float, l_of: np.ndarray, gradients: bool = False):
    """Factor ``t(r/r0)^l`` of :attr:`BasisSpec.origin_smoothing` (and its ``r`` derivative).

    Parameters
    ----------
    r : ndarray, shape (P,), Å
    r0 : float
        Å, > 0.
    l_of : ndarray of int, shape (n_lm,)
        ``l`` of each harmonic column.
    gradients : bool

    Returns
    -------
    g : ndarray, shape (P, n_lm)
        ``t(r/r0)^l``, ``t(x) = x (15 - 10 x^2 + 3 x^4) / 8`` for ``x < 1``, else 1: ``t(x)/x`` is
        an even polynomial, so ``g Y_lm`` is a polynomial times ``r^l Y_lm`` near 0 (smooth); ``t``
        rises monotonically to 1 with zero first and second derivatives at ``x = 1``.
    dg : ndarray, shape (P, n_lm), 1/Å
        ``dg/dr``; only when ``gradients``.

    Examples
    --------
    >>> origin_factor(np.array([0.5, 2.0]), 1.0, np.array([0, 1, 1, 1, 2])).round(4).tolist()
    [[1.0, 0.793, 0.793, 0.793, 0.6288], [1.0, 1.0, 1.0, 1.0, 1.0]]
    """
    x = np.minimum(np.asarray(r, dtype=float) / r0, 1.0)
    x2 = x * x
    t = x * (15.0 - 10.0 * x2 + 3.0 * x2 * x2) / 8.0
    l_of = np.asarray(l_of)
    g = t[:, None] ** l_of[None, :]
    if not gradients:
        return g
    dt = 15.0 * (1.0 - x2) ** 2 / 8.0 / r0  # dt/dr (0 beyond r0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dg = np.where(l_of[None, :] > 0, l_of[None, :] * t[:, None] ** np.maximum(l_of[None, :] - 1, 0) * dt[:, None], 0.0)
    return g, dg


#: Largest number of one-particle functions (category, n, l) a basis may have.
MAX_ONE_PARTICLE = 20_000
#: Largest number of products (multisets of one-particle functions, summed over nu) a basis may have;
#: building takes about 3 ms per product (measured for nu <= 4), so this is minutes, not hours.
MAX_PRODUCTS = 100_000
#: Above this many products the build announces itself on stderr (about half a minute and more).
ANNOUNCE_PRODUCTS = 10_000


def count_products(spec: BasisSpec, limit: float = float("inf")) -> tuple:
    """Number of one-particle functions and of products per correlation order, counted without
    building them (the same degree and singleton rules as :mod:`acehamil.basis.product`;
    parity and coupling reachability not applied, so an upper bound).

    Counting stops early (returning ``inf``) once ``limit`` is passed.

    Returns
    -------
    (float, list of float)
        One-particle count, products for ``nu = 1..max_nu``.

    Examples
    --------
    >>> spec = BasisSpec(categories=(14,), radial=RadialSpec(n_max=4, r_cut=5.0), max_nu=2, max_degree=(6, 6), L_max=2)
    >>> count_products(spec)
    (22.0, [22.0, 95.0])
    """
    lim = max(spec.max_degree)
    degs, single = [], []
    n_one = 0.0
    for c in spec.categories:
        for n in range(spec.radial.n_max):
            rest = lim - spec.weight_n * n
            if rest < -1e-9:
                continue
            nl = int(rest / spec.weight_l + 1e-9) + 1
            if spec.l_max is not None:
                nl = min(nl, spec.l_max + 1)
            n_one += nl
            if n_one > MAX_ONE_PARTICLE or n_one > limit:
                return float("inf"), [float("inf")] * spec.max_nu
            for l in range(nl):
                degs.append(spec.weight_n * n + spec.weight_l * l)
                single.append(c in spec.singleton_categories)
    need_single = bool(spec.singleton_categories)
    # multisets of size nu with total degree <= limit(nu): DP over items on a degree grid
    scale = 1.0
    for w in (spec.weight_n, spec.weight_l):
        if abs(w * 4 - round(w * 4)) > 1e-9:
            scale = 0.0
    counts = []
    grid = 4 if scale else 0
    for nu in range(1, spec.max_nu + 1):
        dlim = spec.degree_limit(nu)
        if grid:
            D = int(dlim * grid + 1e-6)
            cnt = np.zeros((nu + 1, 2, D + 1))
            cnt[0, 0, 0] = 1.0
            for g, s in zip(degs, single):
                gi = int(round(g * grid))
                if gi > D:
                    continue
                for k in range(1, nu + 1):
                    if s:
                        cnt[k, 1, gi:] += cnt[k - 1, 0, : D + 1 - gi]
                        # a second singleton is never allowed when singletons are required
                        if not need_single:
                            cnt[k, 1, gi:] += cnt[k - 1, 1, : D + 1 - gi]
                    else:
                        cnt[k, :, gi:] += cnt[k - 1, :, : D + 1 - gi]
            total = float(cnt[nu, 1].sum()) if need_single else float(cnt[nu].sum())
        else:  # irrational weights: crude bound
            total = float(len(degs)) ** nu
        counts.append(total)
        if total > limit:
            return n_one, counts + [float("inf")] * (spec.max_nu - nu)
    return n_one, counts


def check_size(spec: BasisSpec, what: str = "basis", stream=None) -> float:
    """Refuse (ValueError naming the estimate) a basis too large to build, before building it.

    A build above :data:`ANNOUNCE_PRODUCTS` products is announced on ``stream`` (default
    stderr) with its estimated time.  Returns the estimated number of products.
    """
    n_one, counts = count_products(spec, limit=MAX_PRODUCTS * 10)
    total = sum(counts)
    if n_one > MAX_ONE_PARTICLE or total > MAX_PRODUCTS:
        settings = f"max_degree {[float(d) for d in spec.max_degree]}, max_nu {spec.max_nu}, n_max {spec.radial.n_max}"
        if n_one > MAX_ONE_PARTICLE:
            raise ValueError(f"{what} is too large to build: {settings} give more than {MAX_ONE_PARTICLE} one-particle "
                             f"functions (memory and time without bound); lower max_degree or n_max")
        shown = ", ".join(f"nu={k + 1}: {c:.3g}" for k, c in enumerate(counts))
        raise ValueError(
            f"{what} is too large to build: {settings} give about {total:.3g} products ({shown}; limit "
            f"{MAX_PRODUCTS}, ~{MAX_PRODUCTS * 3e-3 / 60:.0f} min to build); lower max_degree, max_nu or n_max"
        )
    if total > ANNOUNCE_PRODUCTS:
        import sys

        print(f"building a {what} of about {total:.3g} products (max_degree {list(spec.max_degree)}, max_nu "
              f"{spec.max_nu}); estimated {total * 3e-3:.0f} s", file=stream or sys.stderr, flush=True)
    return total

"""Configuration of Hamiltonian/overlap models and their fit (frozen dataclasses).

Every knob has a documented default; a TOML file (read by
:func:`acehamil.io.config.read_model_config`) only lists what differs.
A complete file with every default is ``examples/si_hamiltonian.toml``.

TOML layout (all tables optional)::

    [data]
    train = "data/si8_szv.h5"        # dataset file, or a list of files read as one (indices run over them in order)
    structures = []                   # indices of structures to fit on ([] = all)
    test = []                         # indices never used in fitting ([] = none; negative = from the end)

    [h_onsite]                        # on-site H blocks, from the atom's environment
    r_cut = 5.0                       # Å, environment cutoff r_on
    max_nu = 2                        # correlation order (0 = constant only)
    max_degree = [8, 6]               # total degree per nu
    n_max = 6                         # radial functions n = 0..n_max-1
    weight_l = 1.0                    # degree = n + weight_l * l

    [h_offsite]                       # off-site H blocks, from the bond environment
    r_cut = 6.0                       # Å, bond cutoff (longest bond predicted)
    r_env = 2.5                       # Å, ellipsoid transverse semi-axis (0 = two-centre)
    max_nu = 2                        # counts the bond particle (1 = two-centre)
    max_degree = [10, 6]
    n_max = 8
    weight_l = 1.0
    env_bond_cut = 0.0                # Å; > 0: environment fades with bond length, longer bonds two-centre
    bond_decay = 0.0                  # Å; > 0: the bond particle's radial functions carry exp(-|r|/bond_decay)
    origin_smoothing = 0.0            # Å; > 0: atoms nearer the bond midpoint than this enter smoothly ((r/r0)^l harmonics)

    [s_onsite]                        # on-site S: fitted (default: constant, max_nu = 0)
    [s_offsite]                       # off-site S: two-centre model of the bond vector
    r_cut = 6.0; r_env = 0.0; max_nu = 1; max_degree = [14]; n_max = 14

    [solver]
    method = "ridge"                  # "ridge" (Tikhonov + smoothness prior) or "blr"
    lam = 1e-9                        # ridge strength, dimensionless: lam * mean(diag A^T W A) * prior
    smoothness = 2.0                  # prior precision of a feature ~ (1 + degree)^smoothness

    [fit]
    validation_fraction = 0.0         # share of training structures held out for validation
    max_blocks_per_type = 50000       # cap on sampled centres (atoms or bonds) per block type
    keep_bonds_within = 0.0           # Å; > 0: every off-site H bond shorter than this is fitted (weighted by the rate), the
                                      # longer ones sampled so the expected total stays max_blocks_per_type; 0 = plain
    batch_structures = 8              # structures per normal-equation batch
    seed = 0                          # sampling and split
    structure_weights = []            # one weight per training structure ([] = all 1)
    kind_weights = {}                 # weight per structure kind (info["kind"]), e.g. { "si15-vacancy" = 0.5 }; others 1; 0 = not fitted
    fit_energy_zero = false           # fit H modulo one V_s * S per structure (periodic DFT energy zero)
    energy_zero_model = "none"        # "density": predictions carry V = v0 + sum_Z beta_Z N_Z / volume, fitted to the V_s;
                                      # "bonds": + sum_Z gamma_Z (bond ends on atoms of Z) / volume
    eigenvalue_update = {}            # {} = off; a Bayesian update of the H coefficients from the training eigenvalues
                                      # (models/hamiltonian/eigen_update.py): { noise_meV = 2.0, states = 24, kmesh = [4, 4, 4],
                                      # window_eV = 2.0, iterations = 1, per_kind = 0, bond_cut = 0.0 } (keys left out take these)

    [uncertainty]                     # error bars (docs/uncertainty.md)
    calibrate = false                 # calibrate the posterior spread by cross-validation over the training set
    calibration_folds = 5             # k folds, each held out once (refits from the summed normal equations)
    calibration_fraction = 0.25       # with calibration_folds = 1: one held-out share (>= 1 structure)
    n_samples = 24                    # posterior draws for eigenvalue/band/DOS uncertainties
    kmesh = [4, 4, 4]                 # k-grid of the calibration (eigenvalues within E_F +- window_eV)
    window_eV = 2.0
    calibration_states = 48           # at most this many window eigenvalues per held-out structure (0 = all)
    calibration_per_kind = 0          # > 0: at most this many held-out structures per kind (weighted n_kind / this)
    epistemic_bond_cut = 0.0          # > 0: the calibration's epistemic sensitivities from bonds shorter than this (Å)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ...errors import UserError, check_type
from .feature_config import (  # noqa: F401 - FeatureConfig and MAX_N_MAX are read from here too
    MAX_N_MAX,
    FeatureConfig,
    _default_h_offsite,
    _default_h_onsite,
    _default_s_offsite,
    _default_s_onsite,
)

#: Most posterior draws of the eigenvalue spreads (``[uncertainty] n_samples``, ``evaluate``/``select --samples``):
#: the spreads' relative sampling error is ~1/sqrt(2K), 15 % at the default 24 and 0.7 % at this; 1e8 ran out of
#: memory (~55 kB and 1.4 ms per draw for four 4-atom cells).
MAX_SAMPLES = 10_000
#: Most k-points of a configured k-mesh (``[uncertainty] kmesh``, ``eigenvalue_update kmesh``): 100^3.
MAX_MESH_POINTS = 1_000_000

#: the cell energy-zero laws of ``fit.energy_zero_model`` (:mod:`acehamil.models.hamiltonian.energy_zero`)
ENERGY_ZERO_MODELS = ("none", "density", "bonds")


def check_written_degrees(config: "ModelConfig", written: dict, source: str = "") -> None:
    """Refuse ``max_degree`` entries a user wrote (``written``: the TOML tables) that the basis would ignore.

    Only explicit entries count: the defaults (``max_degree = (8, 6)``) stay valid with any ``max_nu``.

    Raises
    ------
    UserError
        Naming the table, the entries and why they are unused.

    Examples
    --------
    >>> check_written_degrees(ModelConfig(), {"h_onsite": {"max_nu": 1}})
    >>> cfg = ModelConfig.from_dict({"h_onsite": {"max_nu": 1, "max_degree": [8, 6]}})
    >>> check_written_degrees(cfg, {"h_onsite": {"max_nu": 1, "max_degree": [8, 6]}})
    Traceback (most recent call last):
    ...
    acehamil.errors.UserError: [h_onsite] max_degree = [8, 6] has 2 entries, but only the first 1 is used (max_nu = 1, one entry per correlation order nu = 1..max_nu): remove the unused ones
    """
    for family in ("h_onsite", "h_offsite", "s_onsite", "s_offsite"):
        table = written.get(family)
        if not isinstance(table, dict) or "max_degree" not in table:
            continue
        c = getattr(config, family)
        offsite = family.endswith("offsite")
        used = c.degrees_used(offsite)
        if len(c.max_degree) <= used:
            continue
        if offsite and not c.bond_environment:
            why = (f"max_nu = {c.max_nu}, r_env = {c.r_env:g}: a two-centre model of the bond alone, one entry; "
                   "a bond environment needs max_nu >= 2 and r_env > 0")
        else:
            why = f"max_nu = {c.max_nu}, one entry per correlation order nu = 1..max_nu"
        raise UserError(f"{source + ': ' if source else ''}[{family}] max_degree = {list(c.max_degree)} has "
                        f"{len(c.max_degree)} entries, but only the first {used} {'is' if used == 1 else 'are'} used "
                        f"({why}): remove the unused ones")


@dataclass(frozen=True)
class SolverConfig:
    """Linear solver for each (block type, L) problem.

    Attributes
    ----------
    method : {"ridge", "blr"}
        Tikhonov least squares, or Bayesian linear regression with
        evidence-maximised prior and noise precisions.
    lam : float
        Ridge strength, dimensionless: the penalty is ``lam * mean(diag A^T W A)``
        times the prior (:mod:`acehamil.fitting.conditioning`, one meaning for both fits).
    smoothness : float
        Prior precision of feature ``f`` is ``lam * (1 + degree_f)^smoothness``
        (ridge) or ``alpha * (1 + degree_f)^smoothness`` (BLR).
    """

    method: str = "ridge"
    lam: float = 1e-9
    smoothness: float = 2.0

    def __post_init__(self):
        if self.method not in ("ridge", "blr"):
            raise ValueError(f"solver method must be 'ridge' or 'blr', got {self.method!r}")
        if not (self.lam >= 0):
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not (0 <= self.smoothness < float("inf")):  # the solver's 'power': it named that, not this key
            raise ValueError(f"smoothness must be a finite number >= 0, got {self.smoothness}")


@dataclass(frozen=True)
class FitConfig:
    """Sampling and batching of the fit.

    Attributes
    ----------
    validation_fraction : float
        Share of training structures held out (at least one when > 0 and there are >= 2).
    max_blocks_per_type : int
        Cap on the number of centres (atoms for on-site, directed bonds for
        off-site) sampled per block family over the whole training set.
    keep_bonds_within : float
        Å.  > 0: stratified sampling of the off-site H bonds: every bond shorter than this is
        kept (its rows weighted by its family's rate, so the sums estimate the full data set's),
        the longer ones sampled at the rate that keeps the expected total at
        ``max_blocks_per_type`` (at least half of it) (:class:`acehamil.models.hamiltonian.sums.Rates`);
        0 = every centre at one rate.
    batch_structures : int
        Structures whose design rows are accumulated per batch.
    seed : int
    structure_weights : tuple of float
        Per training structure; empty = all 1.
    kind_weights : tuple of (str, float)
        Weight of every training structure whose ``info["kind"]`` is the given kind
        (multiplies ``structure_weights``); kinds not listed and unlabelled
        structures keep 1.  Given as a dict (TOML inline table) or pairs; stored as
        sorted pairs.  Rows of a weighted structure count ``weight`` times in the
        least squares (and in the BLR likelihood).
    fit_energy_zero : bool
        Fit H modulo one constant ``V_s S`` per structure (the arbitrary,
        volume-dependent energy zero of periodic DFT), jointly with the model.
    energy_zero_model : {"none", "density", "bonds"}
        What predictions carry as energy zero: ``"none"``, the training average;
        ``"density"``, ``V = v0 + sum_Z beta_Z N_Z / Omega`` fitted to the ``V_s``
        (:class:`acehamil.models.hamiltonian.energy_zero.EnergyZero`; needs ``fit_energy_zero``);
        ``"bonds"``, that plus ``sum_Z gamma_Z B_Z / Omega``, ``B_Z`` the bond ends on atoms of species
        ``Z`` (:func:`acehamil.models.hamiltonian.energy_zero.bond_ends`: vacancies, interstitials).
    eigenvalue_update : tuple of (str, value)
        Empty: off.  Otherwise the settings of the Bayesian update of the H coefficients from the
        window eigenvalues of the training structures (:mod:`acehamil.models.hamiltonian.eigen_update`),
        given as a dict (TOML inline table) or pairs, stored as sorted pairs with every key:
        ``noise_meV`` (eigenvalue noise ``r`` at structure weight 1, > 0), ``states`` (window states
        per structure, >= 1), ``kmesh`` (3 ints), ``window_eV`` (> 0), ``iterations`` (>= 1; > 1
        relinearises), ``per_kind`` (at most this many structures per kind observed, seeded; 0 = all),
        ``bond_cut`` (Å; > 0: the sensitivities from the on-site blocks and the bonds shorter than this only),
        ``source`` (``"fit"``: observations from eigen-solves of the fitted structures under the full model;
        ``"calibration"``: the calibration's held-out structures, their errors linearised from their fold models
        to the full model, no eigen-solve of their own, and the updated posterior kept; needs
        ``[uncertainty] calibrate``; ``kmesh``, ``window_eV``, ``bond_cut`` and ``per_kind`` are then the
        calibration's ``kmesh``, ``window_eV``, ``epistemic_bond_cut`` and ``calibration_per_kind``).
    """

    validation_fraction: float = 0.0
    max_blocks_per_type: int = 50_000
    keep_bonds_within: float = 0.0
    batch_structures: int = 8
    seed: int = 0
    structure_weights: tuple = ()
    kind_weights: tuple = ()
    fit_energy_zero: bool = False
    energy_zero_model: str = "none"
    eigenvalue_update: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "structure_weights", tuple(float(w) for w in self.structure_weights))
        object.__setattr__(self, "eigenvalue_update", _eigenvalue_update_spec(self.eigenvalue_update))
        kw = self.kind_weights
        pairs = list(kw.items()) if isinstance(kw, dict) else [tuple(p) for p in kw]
        if not all(len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], (int, float)) and not isinstance(p[1], bool)
                   for p in pairs):
            raise TypeError(f"kind_weights must map structure kinds (strings) to numbers, got {kw!r}")
        if any(not (float(w) >= 0 and float(w) < float("inf")) for _, w in pairs):
            raise ValueError(f"kind_weights must be finite and >= 0, got {kw!r}")
        object.__setattr__(self, "kind_weights", tuple(sorted((k, float(w)) for k, w in pairs)))
        if self.energy_zero_model not in ENERGY_ZERO_MODELS:
            raise ValueError(f"energy_zero_model must be one of {', '.join(map(repr, ENERGY_ZERO_MODELS))}, "
                             f"got {self.energy_zero_model!r}")
        if self.energy_zero_model != "none" and not self.fit_energy_zero:
            raise ValueError(f"energy_zero_model = {self.energy_zero_model!r} needs fit_energy_zero = true")
        if not (0.0 <= self.validation_fraction < 1.0):
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.max_blocks_per_type < 1 or self.batch_structures < 1:
            raise ValueError("max_blocks_per_type and batch_structures must be >= 1")
        if isinstance(self.keep_bonds_within, bool) or not (0.0 <= float(self.keep_bonds_within) < float("inf")):
            raise ValueError(f"keep_bonds_within must be finite and >= 0 Å, got {self.keep_bonds_within!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not all(w >= 0 and w < float("inf") for w in self.structure_weights):
            raise ValueError(f"structure_weights must be finite and >= 0, got {list(self.structure_weights)}")
        if self.structure_weights and not sum(self.structure_weights) > 0:
            raise ValueError(f"structure_weights are all zero: nothing to fit, got {list(self.structure_weights)}")


#: Keys and defaults of ``[fit] eigenvalue_update`` (docs/models.md, "Transfer").
EIGENVALUE_UPDATE_DEFAULTS = {"noise_meV": 2.0, "states": 24, "kmesh": (4, 4, 4), "window_eV": 2.0, "iterations": 1,
                              "per_kind": 0, "bond_cut": 0.0, "source": "fit", "onsite_prior": 1.0}

#: Where the update's observations come from: its own eigen-solves of the fitted structures under the full
#: model ("fit"), or the calibration's held-out structures, linearised to the full model ("calibration").
EIGENVALUE_UPDATE_SOURCES = ("fit", "calibration")


def _eigenvalue_update_spec(value) -> tuple:
    """``[fit] eigenvalue_update`` (a dict or pairs) checked and completed with the defaults, as sorted pairs;
    ``()`` when empty (off).

    Examples
    --------
    >>> dict(_eigenvalue_update_spec({"noise_meV": 5}))["states"]
    24
    >>> _eigenvalue_update_spec({})
    ()
    """
    pairs = list(value.items()) if isinstance(value, dict) else [tuple(p) for p in value]
    if not pairs:
        return ()
    if not all(len(p) == 2 and isinstance(p[0], str) for p in pairs):
        raise TypeError(f"eigenvalue_update must be a table of settings, got {value!r}")
    given = dict(pairs)
    bad = sorted(set(given) - set(EIGENVALUE_UPDATE_DEFAULTS))
    if bad:
        raise ValueError(f"unknown eigenvalue_update keys {bad}; known: {sorted(EIGENVALUE_UPDATE_DEFAULTS)}")
    spec = {**EIGENVALUE_UPDATE_DEFAULTS, **given}

    def number(k, integer=False):
        v = spec[k]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral if integer else numbers.Real):
            raise TypeError(f"eigenvalue_update {k} must be {'an integer' if integer else 'a number'}, got {v!r}")
        return int(v) if integer else float(v)

    for k in ("noise_meV", "window_eV"):
        spec[k] = number(k)
        if not (0 < spec[k] < float("inf")):
            raise ValueError(f"eigenvalue_update {k} must be finite and > 0, got {spec[k]!r}")
    spec["onsite_prior"] = number("onsite_prior")
    if not (0 < spec["onsite_prior"] < float("inf")):
        raise ValueError(f"eigenvalue_update onsite_prior must be finite and > 0, got {spec['onsite_prior']!r}")
    if spec["source"] != "calibration" and spec["onsite_prior"] != 1.0:
        raise ValueError("eigenvalue_update onsite_prior (the update's prior scale of the on-site blocks) needs "
                         f"source = 'calibration', got source {spec['source']!r}")
    spec["bond_cut"] = number("bond_cut")
    if not (0 <= spec["bond_cut"] < float("inf")):
        raise ValueError(f"eigenvalue_update bond_cut must be finite and >= 0 Å, got {spec['bond_cut']!r}")
    for k, low in (("states", 1), ("iterations", 1), ("per_kind", 0)):
        spec[k] = number(k, integer=True)
        if spec[k] < low:
            raise ValueError(f"eigenvalue_update {k} must be >= {low}, got {spec[k]!r}")
    km = spec["kmesh"]
    if (not isinstance(km, (list, tuple)) or len(km) != 3
            or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 1 for x in km)):
        raise ValueError(f"eigenvalue_update kmesh must be 3 integers >= 1, got {km!r}")
    spec["kmesh"] = tuple(int(x) for x in km)
    if math.prod(spec["kmesh"]) > MAX_MESH_POINTS:
        raise ValueError(f"eigenvalue_update kmesh {list(spec['kmesh'])} has {math.prod(spec['kmesh']):.3g} k-points, more "
                         f"than {MAX_MESH_POINTS:.0e}")
    if spec["source"] not in EIGENVALUE_UPDATE_SOURCES:
        raise ValueError(f"eigenvalue_update source must be one of {list(EIGENVALUE_UPDATE_SOURCES)}, got {spec['source']!r}")
    if spec["source"] == "calibration" and spec["iterations"] != 1:
        raise ValueError("eigenvalue_update source 'calibration' takes one update (iterations = 1): its observations "
                         f"are the calibration's, taken once; got iterations = {spec['iterations']}")
    return tuple(sorted(spec.items()))


@dataclass(frozen=True)
class UncertaintyConfig:
    """Calibration of the posterior predictive spread (see ``docs/uncertainty.md``).

    Attributes
    ----------
    calibrate : bool
        After the fit, cross-validate over the training structures: each fold's model is the
        fit without it (from the per-structure normal-equation sums: a subtraction and a
        solve), the first-order spreads of the held-out structures' eigenvalues are computed
        (:mod:`acehamil.models.hamiltonian.linear_response`), and the factors of the
        epistemic, noise and shared-noise parts of the spread are fitted by maximum
        likelihood of the held-out errors (stored in ``model.report["uncertainty"]``).  Never
        uses test structures.
    calibration_fraction : float
        With ``calibration_folds = 1``: share of the training structures held out, in (0, 1).
    calibration_folds : int
        ``k > 1``: k folds, every training structure held out once (default 5);
        1: one split (``calibration_fraction`` held out).
    n_samples : int
        Posterior draws used for eigenvalue/band/DOS uncertainties (>= 2).
    kmesh : tuple of int
        Monkhorst-Pack grid of the calibration.
    window_eV : float
        Eigenvalues within ``E_F +- window_eV`` enter the calibration.
    calibration_states : int
        At most this many of those eigenvalues per held-out structure (a seeded random choice
        among the window eigenvalues of the ``kmesh`` grid; 0 = all): every structure weighs
        about the same in the fit of the factors, whatever its size, and the cost of the
        first-order spreads is bounded.
    calibration_per_kind : int
        > 0: at most this many held-out structures per structure kind (``info["kind"]``) are
        predicted, a seeded random choice, each weighing ``n_kind / calibration_per_kind`` in the
        fit of the factors (an unbiased estimate of the objective over all of them; every
        structure is still in the folds' fits); 0: all.
    epistemic_bond_cut : float, Å
        > 0: the calibration's epistemic sensitivities sum over the on-site blocks and the bonds
        shorter than this (the features of longer bonds, most of the calibration's cost, are not
        evaluated; errors and noise parts still use every block); 0: every bond
        (:func:`acehamil.models.hamiltonian.linear_response.sensitivities`).
    """

    calibrate: bool = False
    calibration_fraction: float = 0.25
    calibration_folds: int = 5
    n_samples: int = 24
    kmesh: tuple = (4, 4, 4)
    window_eV: float = 2.0
    calibration_states: int = 48
    calibration_per_kind: int = 0
    epistemic_bond_cut: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "kmesh", tuple(int(k) for k in self.kmesh))
        if not (0.0 < self.calibration_fraction < 1.0):
            raise ValueError(f"calibration_fraction must be in (0, 1), got {self.calibration_fraction}")
        if int(self.calibration_folds) != self.calibration_folds or self.calibration_folds < 1:
            raise ValueError(f"calibration_folds must be a positive integer, got {self.calibration_folds}")
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2, got {self.n_samples}")
        if self.n_samples > MAX_SAMPLES:  # 1e8 ran until killed
            raise ValueError(f"n_samples must be <= {MAX_SAMPLES} (the spreads' sampling error is ~1/sqrt(2 n_samples): "
                             f"0.7 % at {MAX_SAMPLES}), got {self.n_samples}")
        if len(self.kmesh) != 3 or min(self.kmesh) < 1:
            raise ValueError(f"kmesh must be 3 positive integers, got {self.kmesh}")
        if math.prod(self.kmesh) > MAX_MESH_POINTS:  # [1000, 1000, 1000] ran until killed
            raise ValueError(f"kmesh {list(self.kmesh)} has {math.prod(self.kmesh):.3g} k-points, more than "
                             f"{MAX_MESH_POINTS:.0e} (the calibration solves every one for every held-out structure)")
        if not self.window_eV > 0:
            raise ValueError(f"window_eV must be > 0, got {self.window_eV}")
        if int(self.calibration_states) != self.calibration_states or self.calibration_states < 0:
            raise ValueError(f"calibration_states must be an integer >= 0, got {self.calibration_states}")
        if int(self.calibration_per_kind) != self.calibration_per_kind or self.calibration_per_kind < 0:
            raise ValueError(f"calibration_per_kind must be an integer >= 0, got {self.calibration_per_kind}")
        if isinstance(self.epistemic_bond_cut, bool) or not self.epistemic_bond_cut >= 0:
            raise ValueError(f"epistemic_bond_cut must be >= 0 Å, got {self.epistemic_bond_cut!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which structures to fit on.

    Attributes
    ----------
    train : str or tuple of str
        Dataset path, or several read as one (indices run over the files in order);
        relative paths are resolved against the TOML file.
    structures : tuple of int
        Indices to fit on (empty = all not in ``test``).
    test : tuple of int
        Held-out indices, never used in fitting.
    """

    train: str | tuple = ""
    structures: tuple = ()
    test: tuple = ()

    def __post_init__(self):
        if isinstance(self.train, (list, tuple)):
            if not all(isinstance(t, str) and t for t in self.train):
                raise TypeError(f"[data] train must be a path or a list of paths, got {self.train!r}")
            object.__setattr__(self, "train", tuple(self.train) if len(self.train) != 1 else self.train[0])
        elif not isinstance(self.train, str):
            raise TypeError(f"[data] train must be a path or a list of paths, got {self.train!r}")
        for key in ("structures", "test"):
            vals = tuple(getattr(self, key))
            bad = [i for i in vals if isinstance(i, bool) or not float(i).is_integer()]
            if bad:
                raise TypeError(f"{key} must be a list of integer structure indices, got {list(vals)!r}")
            object.__setattr__(self, key, tuple(int(i) for i in vals))
        if set(self.structures) & set(self.test):
            raise ValueError(f"structures {sorted(set(self.structures) & set(self.test))} are in both train and test")

    def test_indices(self, n: int) -> list:
        """Held-out dataset indices in ``[0, n)`` (negative entries of ``test`` count from the end).

        Examples
        --------
        >>> DataConfig(test=(-1,)).test_indices(5)
        [4]
        """
        return resolve_indices(self.test, n, "[data] test")

    def training_indices(self, n: int) -> list:
        """Dataset indices to fit on: ``structures``, or every index not in ``test``.

        Raises
        ------
        ValueError
            An index is out of range, in both lists, or no training structure is left.

        Examples
        --------
        >>> DataConfig(test=(-1,)).training_indices(4)
        [0, 1, 2]
        """
        test = set(self.test_indices(n))
        idx = resolve_indices(self.structures, n, "[data] structures") or [i for i in range(n) if i not in test]
        if set(idx) & test:
            raise ValueError(f"structures {sorted(set(idx) & test)} are in both train and test")
        if not idx:
            raise ValueError("no training structures left after removing [data] test")
        return idx


def resolve_indices(indices, n: int, name: str = "structure indices") -> list:
    """Dataset indices, negative ones counted from the end (Python style).

    Raises
    ------
    ValueError
        An index is outside ``[-n, n)``, or two entries name the same structure (a repeated
        training structure was fitted twice, silently doubling its weight).
    """
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ValueError(f"structure indices {bad} out of range for a dataset of {n}")
    out = [i % n for i in indices]
    twice = sorted({i for i in out if out.count(i) > 1})
    if twice:
        raise ValueError(f"{name} name structure(s) {twice} more than once (negative indices count from the "
                         f"end of the {n}); list each once ([fit] structure_weights weighs one more)")
    return out


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a Hamiltonian + overlap model and its fit."""

    h_onsite: FeatureConfig = field(default_factory=_default_h_onsite)
    h_offsite: FeatureConfig = field(default_factory=_default_h_offsite)
    s_onsite: FeatureConfig = field(default_factory=_default_s_onsite)
    s_offsite: FeatureConfig = field(default_factory=_default_s_offsite)
    solver: SolverConfig = field(default_factory=SolverConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, base_dir=None, source: str = "") -> "ModelConfig":
        """Build from a (TOML-shaped) dict; unknown keys are errors.

        Examples
        --------
        >>> ModelConfig.from_dict({"h_offsite": {"r_env": 0.0, "max_nu": 1, "max_degree": [12]}}).h_offsite.max_nu
        1
        """
        defaults = cls()
        kw = {}
        types = {"h_onsite": FeatureConfig, "h_offsite": FeatureConfig, "s_onsite": FeatureConfig,
                 "s_offsite": FeatureConfig, "solver": SolverConfig, "fit": FitConfig, "data": DataConfig,
                 "uncertainty": UncertaintyConfig}
        for key, value in d.items():
            if key not in types:
                raise ValueError(f"unknown config table [{key}]; known: {sorted(types)}")
            if not isinstance(value, dict):
                raise UserError(f"{source + ': ' if source else ''}[{key}] must be a table, got {type(value).__name__}")
            known = {f.name for f in fields(types[key])}
            bad = set(value) - known
            if bad:
                raise ValueError(f"unknown keys in [{key}]: {sorted(bad)}; known: {sorted(known)}")
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            default = getattr(defaults, key)
            for k, v in value.items():
                if (key, k) == ("data", "train") and isinstance(v, (list, tuple)):
                    for n, item in enumerate(v):  # a list of dataset files
                        check_type(f"[data] train[{n}]", item, "", source)
                    continue
                if (key, k) in (("fit", "kind_weights"), ("fit", "eigenvalue_update")):  # tables (or pairs, from a model file): checked by FitConfig
                    continue
                check_type(f"[{key}] {k}", v, getattr(default, k), source)
            try:
                kw[key] = replace(default, **value)
            except (TypeError, ValueError) as err:
                raise UserError(f"{source + ': ' if source else ''}[{key}]: {err}") from None
        cfg = cls(**kw)
        if base_dir is not None and cfg.data.train:
            paths = [cfg.data.train] if isinstance(cfg.data.train, str) else list(cfg.data.train)
            paths = [p if Path(p).is_absolute() else str(Path(base_dir) / p) for p in paths]
            cfg = replace(cfg, data=replace(cfg.data, train=paths[0] if isinstance(cfg.data.train, str) else tuple(paths)))
        return cfg


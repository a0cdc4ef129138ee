"""Potential-fit configuration (the TOML file of ``acehamil fit-potential``).

The file and the structures it names are read by
:func:`acehamil.io.config.read_potential_job`; this module resolves the parsed
tables.  Every key is optional except ``data.train``; defaults are listed here
and in ``docs/potentials.md``::

    [data]
    train = "Si_training.xyz"        # extended XYZ (anything ASE reads), index ":"
    test = ["Si_test.xyz"]           # evaluated after the fit, never used for fitting or tuning

    [basis]
    species = [14]                   # default: every element in the training set
    r_cut = 5.0                      # Å
    n_max = 8                        # radial functions
    max_nu = 3                       # correlation order (1..4)
    max_degree = [16, 12, 8]         # total degree per nu (one value = all nu)
    weight_n = 1.0
    weight_l = 1.0
    envelope_power = 2

    [repulsion]
    enabled = true
    fraction = 0.8                   # core radius = min(fraction * median nearest-neighbour
    strength = 10.0                  #   distance, 0.95 * shortest training distance), eV/Å^2

    [fit]                            # see FitSettings
    solver = "ridge"                 # or "blr"
    lam = [1e-9, ..., 1e-3]
    power = [0.0, 2.0]
    degree_shifts = [0]
    energy_factors = [1.0]
    layer_prior_factors = [1.0]      # multilayer only: CV multipliers of the second layer's prior
    energy_sigma = 0.001             # eV/atom
    force_sigma = 0.05               # eV/Å
    stress_sigma = 0.001             # eV/Å^3
    n_folds = 5
    seed = 0
    cv_energy_scale = 0.001
    cv_force_scale = 0.05
    cv_criterion = "combined"        # or "energy_mae": held-out energy MAE, forces within
    cv_force_tolerance = 0.005       #   this many eV/Å of the best held-out force RMSE
    [fit.config_type_weights]
    Elastic = 1.0

    [model]                          # optional; default the linear model
    kind = "linear"                  # or "embedded" (see EmbeddingSettings) or "multilayer" (MessageSpec)
    embeddings = ["fs", "fs"]        # embedded only: one embedding per density
    density_max_degree = [9, 6, 4]   # one per nu up to max_nu (default [9, 6, 4, 3]; more are refused)
    lam = [1e-3, 1e-1]               # density ridge strengths tried by CV
    maxiter = 300
    init_scale = 1.0
    seed = 0

    [model]                          # the multilayer (message-passing) model instead
    kind = "multilayer"
    n_message = 6                    # radial functions of the first-layer messages
    r_message = 5.0                  # Å (default: basis.r_cut)
    n_pass = 6                       # radial functions of the second layer
    r_pass = 5.0                     # Å (default: basis.r_cut)
    embeddings = ["identity", "fs"]  # embeddings of the invariant messages
    envelope_power = 2

    [model]                          # the multilayer model with embedded densities in its first layer
    kind = "embedded_multilayer"     # the [model] keys of "multilayer", and:
    [model.densities]                # EmbeddingSettings keys, as for kind = "embedded"
    embeddings = ["fs", "fs"]
    lam = [1e-3]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .data import Config
from .embedded_fit import EmbeddingSettings
from .fit import FitSettings
from .multilayer import MessageSpec
from .repulsion import RepulsionSpec

BASIS_DEFAULTS = {"r_cut": 5.0, "n_max": 8, "max_nu": 3, "max_degree": [16, 12, 8], "weight_n": 1.0, "weight_l": 1.0,
                  "envelope_power": 2}
REPULSION_DEFAULTS = {"enabled": True, "fraction": 0.8, "strength": 10.0}
#: ``[model] kind`` -> whether the model has embeddings (an ``EmbeddingSettings``).
MODEL_KINDS = {"linear": False, "embedded": True, "multilayer": False, "embedded_multilayer": True}
_FIT_KEYS = set(FitSettings.__dataclass_fields__)
_MODEL_KEYS = {"kind"} | set(EmbeddingSettings.__dataclass_fields__)
_MULTILAYER_KEYS = {"kind"} | set(MessageSpec.__dataclass_fields__)


@dataclass(frozen=True, eq=False)
class PotentialJob:
    """Everything a fit needs, resolved from a config dict."""

    train: list
    test: dict
    species: tuple
    basis: object
    settings: FitSettings
    repulsion: RepulsionSpec | None
    embedding: EmbeddingSettings | None = None
    multilayer: MessageSpec | None = None


def _check_keys(section: dict, allowed, name: str) -> None:
    unknown = set(section) - set(allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in [{name}]: {sorted(unknown)}; allowed: {sorted(allowed)}")


def make_basis(species, r_cut=5.0, n_max=8, max_nu=3, max_degree=(16, 12, 8), weight_n=1.0, weight_l=1.0,
               envelope_power=2):
    """An invariant-only (``L_max = 0``) ACE basis for site energies.

    Raises
    ------
    ValueError
        ``n_max`` above :data:`~acehamil.models.hamiltonian.feature_config.MAX_N_MAX` (checked before the basis
        is built: through the API, ``n_max = 100000`` asked the radial quadrature for 74.5 GiB, a MemoryError).
    """
    from ...basis import ACEBasis, BasisSpec, RadialSpec
    from ..hamiltonian.feature_config import MAX_N_MAX

    md_all = np.ravel(np.asarray(max_degree, dtype=float))
    if not (np.isfinite(md_all).all() and math.isfinite(float(weight_l)) and math.isfinite(float(weight_n))):
        raise ValueError(f"max_degree, weight_n and weight_l must be finite numbers, got {md_all.tolist()}, {weight_n}, "
                         f"{weight_l} (NaN said 'cannot convert float NaN to integer')")
    if not (isinstance(n_max, (int, np.integer)) or float(n_max).is_integer()) or not 1 <= n_max <= MAX_N_MAX:
        raise ValueError(f"n_max must be an integer from 1 to {MAX_N_MAX} radial functions (potentials use ~4-12), "
                         f"got {n_max}")

    md = list(max_degree) if np.ndim(max_degree) else [max_degree]
    md = md[:max_nu] if len(md) >= max_nu else md + [md[-1]] * (max_nu - len(md))
    spec = BasisSpec(
        categories=tuple(int(z) for z in species),
        radial=RadialSpec(n_max=int(n_max), r_cut=float(r_cut), envelope_power=int(envelope_power)),
        max_nu=int(max_nu),
        max_degree=tuple(float(x) for x in md),
        weight_n=float(weight_n),
        weight_l=float(weight_l),
        L_max=0,
        l_max=invariant_l_max(md[:max_nu], max_nu, weight_l),
        parities=(1,),
    )
    return ACEBasis(spec)


def invariant_l_max(max_degree, max_nu, weight_l=1.0) -> int:
    """Largest one-particle ``l`` an invariant (L = 0) product can contain.

    An invariant of order ``nu >= 2`` needs every ``l_k <= sum of the others``, so
    ``2 l_k weight_l <= degree``; order 1 only uses ``l = 0``.  Capping ``l`` here
    removes harmonics no invariant uses (the basis would otherwise compute
    ``l`` up to the largest degree).

    Examples
    --------
    >>> invariant_l_max([16, 12, 8], 3)
    6
    """
    if max_nu < 2:
        return 0
    return int(max(float(d) for d in list(max_degree)[1:max_nu]) / (2.0 * float(weight_l)) + 1e-9)


def core_repulsion(configs, species, fraction=0.8, strength=10.0) -> RepulsionSpec:
    """Core radii per species pair from the training structures (see module docstring)."""
    from ...structure.neighbours import neighbour_pairs

    nn = {}
    shortest = {}
    for c in configs:
        pairs = neighbour_pairs(c.atoms, 4.0 if len(c.atoms) else 1.0)
        if not len(pairs):
            continue
        z = np.asarray(c.atoms.numbers)
        zi, zj = z[pairs.i], z[pairs.j]
        for a in species:
            for b in species:
                if a > b:
                    continue
                m = ((zi == a) & (zj == b)) | ((zi == b) & (zj == a))
                if not m.any():
                    continue
                key = (a, b)
                shortest[key] = min(shortest.get(key, np.inf), float(pairs.dist[m].min()))
                per_atom = np.full(len(z), np.inf)
                np.minimum.at(per_atom, pairs.i[m], pairs.dist[m])
                nn.setdefault(key, []).extend(per_atom[np.isfinite(per_atom)].tolist())
    radii = []
    for key, r_min in shortest.items():
        radii.append((key, float(min(fraction * np.median(nn[key]), 0.95 * r_min))))
    return RepulsionSpec(r_core=tuple(radii), strength=float(strength))


def _check_written_degrees(name: str, written, max_nu) -> None:
    """Refuse degree entries a user wrote beyond ``max_nu`` (one per correlation order; they were ignored without
    a word).  The defaults are exempt: ``density_max_degree`` (9, 6, 4, 3) serves max_nu up to 4."""
    if written is not None and np.ndim(written) and len(written) > int(max_nu):
        raise ValueError(f"{name} = {list(written)} has {len(written)} entries, but max_nu = {max_nu} uses only the "
                         f"first {int(max_nu)} (one per correlation order; one value = all): remove the unused ones")


def _atomic_number(z) -> int:
    """An atomic number 1..118 from an int or a chemical symbol ('Si'); ValueError naming a bad entry."""
    from ase.data import atomic_numbers

    if isinstance(z, str) and z in atomic_numbers and atomic_numbers[z] > 0:
        return int(atomic_numbers[z])
    if isinstance(z, (int, np.integer)) and not isinstance(z, bool) and 1 <= int(z) <= 118:
        return int(z)
    raise ValueError(f"[basis] species entries must be atomic numbers (1..118) or chemical symbols, got {z!r}")


def check_tables(cfg: dict) -> None:
    """Refuse unknown tables and a ``[data]`` table without ``train``."""
    _check_keys(cfg, {"data", "basis", "repulsion", "fit", "model"}, "top level")
    data = dict(cfg.get("data", {}))
    _check_keys(data, {"train", "test"}, "data")
    if "train" not in data:
        raise ValueError("the config needs data.train (a training-set file)")
    if not isinstance(data["train"], str):  # a list was looked up as one file named "['a.xyz', 'b.xyz']"
        raise ValueError(f"[data] train must be one structure file name (a string), got {data['train']!r}")
    tests = data.get("test", [])
    if not (isinstance(tests, str) or isinstance(tests, list) and all(isinstance(t, str) for t in tests)):
        raise ValueError(f"[data] test must be a structure file name or a list of them, got {tests!r}")


def data_files(cfg: dict) -> tuple[str, list[str]]:
    """The training file and the test files a config names, as written (relative paths unresolved)."""
    check_tables(cfg)
    data = cfg["data"]
    tests = data.get("test", [])
    tests = [tests] if isinstance(tests, str) else list(tests)
    return str(data["train"]), [str(t) for t in tests]


def job_from_config(cfg: dict, train: list[Config], test: dict | None = None) -> PotentialJob:
    """Resolve a parsed TOML dict and its (already read) data into basis, settings and repulsion.

    Parameters
    ----------
    cfg : dict
        Sections ``data``, ``basis``, ``repulsion``, ``fit`` (module docstring).
    train : list of Config
        The structures ``data.train`` names.
    test : dict of str -> list of Config, optional
        The structures of each ``data.test`` file, keyed by its name in the config.
    """
    check_tables(cfg)
    test = {} if test is None else dict(test)
    bcfg = {**BASIS_DEFAULTS, **cfg.get("basis", {})}
    _check_keys(bcfg, set(BASIS_DEFAULTS) | {"species"}, "basis")
    from ...errors import check_type

    for k, v in bcfg.items():
        check_type(f"[basis] {k}", v, BASIS_DEFAULTS.get(k), cfg.get("_source", ""))
    _check_written_degrees("[basis] max_degree", cfg.get("basis", {}).get("max_degree"), bcfg["max_nu"])
    model = cfg.get("model", {})
    _check_written_degrees("[model] density_max_degree", model.get("density_max_degree"), bcfg["max_nu"])
    _check_written_degrees("[model.densities] density_max_degree",
                           dict(model.get("densities", {})).get("density_max_degree"), bcfg["max_nu"])
    present = sorted({int(z) for c in train for z in c.atoms.numbers})
    species = tuple(sorted(_atomic_number(z) for z in bcfg.pop("species", present)))
    missing = set(present) - set(species)
    if missing:
        raise ValueError(f"training data contain elements {sorted(missing)} not in basis.species {list(species)}")
    basis = make_basis(species, **bcfg)
    rcfg = {**REPULSION_DEFAULTS, **cfg.get("repulsion", {})}
    _check_keys(rcfg, set(REPULSION_DEFAULTS), "repulsion")
    repulsion = core_repulsion(train, species, rcfg["fraction"], rcfg["strength"]) if rcfg["enabled"] else None
    fcfg = dict(cfg.get("fit", {}))
    _check_keys(fcfg, _FIT_KEYS, "fit")
    for k in ("lam", "power", "degree_shifts", "energy_factors", "layer_prior_factors"):
        if k in fcfg:
            fcfg[k] = tuple(fcfg[k]) if np.ndim(fcfg[k]) else (fcfg[k],)
    settings = FitSettings(**fcfg)
    if "n_folds" in fcfg and settings.n_folds > max(len(train), 1):  # CV was skipped without a word
        raise ValueError(f"[fit] n_folds = {settings.n_folds} but the training data hold {len(train)} configurations: "
                         f"cross-validation needs n_folds <= {len(train)} (n_folds = 1: no CV, the first grid values)")
    mcfg = dict(cfg.get("model", {}))
    kind = mcfg.get("kind", "linear")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model.kind must be 'linear', 'embedded', 'multilayer' or 'embedded_multilayer', got {kind!r}")
    if kind in ("multilayer", "embedded_multilayer"):
        embedding = None
        if kind == "embedded_multilayer":  # density settings in [model.densities] (EmbeddingSettings keys)
            dcfg = dict(mcfg.pop("densities", {}))
            _check_keys(dcfg, set(EmbeddingSettings.__dataclass_fields__), "model.densities")
            for k in ("embeddings", "density_max_degree", "lam"):
                if k in dcfg:
                    dcfg[k] = tuple(dcfg[k]) if np.ndim(dcfg[k]) else (dcfg[k],)
            embedding = EmbeddingSettings(**dcfg)
        _check_keys(mcfg, _MULTILAYER_KEYS, "model")
        mcfg.pop("kind")
        mcfg.setdefault("r_message", float(bcfg["r_cut"]))
        mcfg.setdefault("r_pass", float(bcfg["r_cut"]))
        if "embeddings" in mcfg:
            mcfg["embeddings"] = tuple(mcfg["embeddings"]) if np.ndim(mcfg["embeddings"]) else (mcfg["embeddings"],)
        return PotentialJob(train, test, species, basis, settings, repulsion, embedding, MessageSpec(**mcfg))
    _check_keys(mcfg, _MODEL_KEYS, "model")
    mcfg.pop("kind", None)
    embedded = MODEL_KINDS[kind]
    if not embedded and mcfg:
        raise ValueError(f"[model] keys {sorted(mcfg)} need kind = 'embedded'")
    for k in ("embeddings", "density_max_degree", "lam"):
        if k in mcfg:
            mcfg[k] = tuple(mcfg[k]) if np.ndim(mcfg[k]) else (mcfg[k],)
    embedding = EmbeddingSettings(**mcfg) if embedded else None
    return PotentialJob(train, test, species, basis, settings, repulsion, embedding)


def summarise(configs: list[Config]) -> dict:
    """Counts per config_type."""
    out = {}
    for c in configs:
        out[c.config_type] = out.get(c.config_type, 0) + 1
    return out

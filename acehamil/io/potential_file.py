"""HDF5 files of ACE site-energy potentials.

Layout (kind ``"ace_potential"``, format version 1)::

    /  attrs: acehamil header (kind, format_version, acehamil_version, conventions),
              basis_spec (JSON), repulsion (JSON or ""), metadata (JSON),
              energy_unit "eV", length_unit "Angstrom", checksum (sha256 of the arrays)
    /species          (n_species,) int64, atomic numbers
    /e0               (n_species,) float64, eV
    /coef             (n_species, n_B) float64
    /feature_degrees  (n_B,) float64, fingerprint of the basis the coefficients belong to
    /canary_features  (n_species, n_B) float64, invariant features of a fixed reference
                      environment per centre species (detects a basis engine that changed numerically)

Embedded potentials (:class:`~acehamil.models.potential.embedded.EmbeddedACEPotential`)
are written as format version 2: the same layout plus the attribute ``model =
"embedded"``, ``embeddings`` (JSON list of names) and the dataset

    /densities        (n_species, n_densities, n_B) float64

all covered by the checksum.  Multilayer potentials
(:class:`~acehamil.models.potential.multilayer.MultilayerACEPotential`) are format
version 3: the linear layout plus the attributes ``model = "multilayer"`` and
``message_spec`` (JSON of :class:`~acehamil.models.potential.multilayer.MessageSpec`)
and the datasets

    /message_shift    (n_species * n_message,) float64, message normalisation
    /message_scale    (n_species * n_message,) float64
    /layer_weights    (n_species, n_layer_features) float64, eV per feature unit

all covered by the checksum.  A multilayer potential whose first layer has embedded
densities is format version 4 (``model = "embedded_multilayer"``): version 3 plus
``embeddings`` and ``/densities`` as for embedded potentials, under the checksum (a
new version, so readers of version 3 refuse it instead of dropping the densities).
Linear potentials are still written as version 1,
and version-1 files load as before.

A linear or multilayer potential fitted with BLR may carry its calibrated posterior
(:class:`~acehamil.models.potential.uncertainty.PotentialPosterior`, optional, any
version) in the group ``/posterior``: datasets ``cols`` (k,) int64 and ``factor``
(k, k) float64, attributes ``force_noise`` (eV/Å), ``energy_noise`` (eV/atom),
``scale`` and ``checksum`` (sha256 of these and of the model's checksum, so a
posterior cannot be moved to another model).  :func:`load_posterior` reads it.

Arrays are stored as float64, so a reload reproduces predictions bit for bit.
On load the basis is rebuilt from its spec and checked against the stored
fingerprint; a mismatch (e.g. a different basis-engine version ordering its
features differently), a wrong kind/version, or a checksum failure raise a clear
``ValueError``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .hdf5 import atomic_h5, check_header, open_h5, write_header

KIND = "ace_potential"
FORMAT_VERSION = 1
#: Format of embedded potentials (version 1 plus densities).
EMBEDDED_FORMAT_VERSION = 2
#: Format of multilayer potentials (version 1 plus the second layer).
MULTILAYER_FORMAT_VERSION = 3
#: Format of multilayer potentials whose first layer has embedded densities (version 3 plus densities;
#: a new number so that readers of version 3, which would ignore the densities, refuse these files).
EMBEDDED_MULTILAYER_FORMAT_VERSION = 4
SUPPORTED_VERSIONS = (1, 2, 3, 4)


def _checksum(species, e0, coef, degrees, densities=None, embeddings=None, layer=None) -> str:
    """sha256 of the arrays; ``layer`` = (message_spec JSON, shift, scale, weights) of a multilayer model."""
    h = hashlib.sha256()
    arrays = [np.asarray(species, np.int64), np.asarray(e0, np.float64), np.asarray(coef, np.float64), np.asarray(degrees, np.float64)]
    if densities is not None:
        arrays.append(np.asarray(densities, np.float64))
    if layer is not None:
        arrays += [np.asarray(a, np.float64) for a in layer[1:]]
    for arr in arrays:
        h.update(np.ascontiguousarray(arr).tobytes())
    if embeddings is not None:
        h.update(json.dumps(list(embeddings)).encode())
    if layer is not None:
        h.update(str(layer[0]).encode())
    return h.hexdigest()


def canary_features(basis, species) -> np.ndarray:
    """Invariant features of one fixed, deterministic environment per centre species.

    Returns
    -------
    ndarray, float64, shape (n_species, n_B)
    """
    from ..models.potential.model import INVARIANT, basis_cutoff, make_centres

    rc = basis_cutoff(basis)
    species = [int(z) for z in species]
    dirs = np.array([[1.0, 0.2, -0.3], [-0.4, 1.0, 0.5], [0.3, -0.6, 1.0], [-0.8, -0.5, -0.7], [0.9, 0.9, 0.1]])
    dirs /= np.linalg.norm(dirs, axis=1)[:, None]
    radii = rc * np.array([0.35, 0.5, 0.62, 0.75, 0.9])
    vec = dirs * radii[:, None]
    n = len(vec)
    cats = [species[k % len(species)] for k in range(n)]
    centres = make_centres(
        np.array(species), np.repeat(np.arange(len(species)), n), np.tile(vec, (len(species), 1)), np.tile(cats, len(species))
    )
    return np.asarray(basis.evaluate(centres)[INVARIANT])[:, :, 0]


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _posterior_checksum(model_checksum: str, cols, factor, force_noise, energy_noise, scale) -> str:
    h = hashlib.sha256(str(model_checksum).encode())
    for arr in (np.asarray(cols, np.int64), np.asarray(factor, np.float64),
                np.asarray([force_noise, energy_noise, scale], np.float64)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _check_posterior(potential, posterior) -> None:
    from ..models.potential.model import ACEPotential
    from ..models.potential.multilayer import MultilayerACEPotential
    from ..models.potential.uncertainty import PotentialPosterior

    if not isinstance(posterior, PotentialPosterior):
        raise TypeError(f"posterior must be a PotentialPosterior, got {type(posterior).__name__}")
    if not isinstance(potential, (ACEPotential, MultilayerACEPotential)):
        raise TypeError(f"only linear and multilayer potentials carry a posterior, got {type(potential).__name__}")
    if getattr(potential, "n_densities", 0):
        raise TypeError("an embedded multilayer potential is nonlinear in its densities and carries no posterior")
    n = potential.parameter_vector().size
    cols = np.asarray(posterior.cols)
    factor = np.asarray(posterior.factor)
    if cols.ndim != 1 or factor.ndim != 2 or factor.shape[0] != cols.size or (cols.size and (cols.min() < 0 or cols.max() >= n)):
        raise ValueError(f"the posterior (columns {cols.shape}, factor {factor.shape}) does not fit this potential's {n} parameters")


def save_potential(path, potential, posterior=None) -> None:
    """Write an :class:`~acehamil.models.potential.ACEPotential`, an
    :class:`~acehamil.models.potential.embedded.EmbeddedACEPotential` or a
    :class:`~acehamil.models.potential.multilayer.MultilayerACEPotential` atomically.

    Parameters
    ----------
    path : str or Path
    potential : ACEPotential, EmbeddedACEPotential or MultilayerACEPotential
    posterior : PotentialPosterior, optional
        Its (calibrated) BLR posterior, stored in ``/posterior`` (linear and multilayer only).
    """
    from ..models.potential.embedded import EmbeddedACEPotential
    from ..models.potential.model import ACEPotential, feature_degrees
    from ..models.potential.multilayer import MultilayerACEPotential

    if not isinstance(potential, (ACEPotential, EmbeddedACEPotential, MultilayerACEPotential)):
        raise TypeError(f"expected an ACEPotential, EmbeddedACEPotential or MultilayerACEPotential, got {type(potential).__name__}")
    embedded = isinstance(potential, EmbeddedACEPotential)
    multilayer = isinstance(potential, MultilayerACEPotential)
    if posterior is not None:
        _check_posterior(potential, posterior)

    spec = potential.basis.spec
    if not hasattr(spec, "to_dict"):
        raise TypeError("the potential's basis spec cannot be serialised (no to_dict)")
    degrees = feature_degrees(potential.basis)
    species = np.asarray(potential.species, dtype=np.int64)
    with atomic_h5(path) as f:
        emb_ml = multilayer and potential.n_densities > 0
        write_header(f, KIND, EMBEDDED_FORMAT_VERSION if embedded else EMBEDDED_MULTILAYER_FORMAT_VERSION if emb_ml
                     else MULTILAYER_FORMAT_VERSION if multilayer else FORMAT_VERSION)
        f.attrs["basis_spec"] = json.dumps(spec.to_dict(), sort_keys=True)
        f.attrs["repulsion"] = json.dumps(potential.repulsion.to_dict()) if potential.repulsion is not None else ""
        f.attrs["metadata"] = json.dumps(potential.metadata, default=_json_default, sort_keys=True)
        f.attrs["energy_unit"] = "eV"
        f.attrs["length_unit"] = "Angstrom"
        if embedded:
            f.attrs["model"] = "embedded"
            f.attrs["embeddings"] = json.dumps(list(potential.embeddings))
            f.attrs["checksum"] = _checksum(species, potential.e0, potential.coef, degrees, potential.densities, potential.embeddings)
            f.create_dataset("densities", data=np.asarray(potential.densities, dtype=np.float64))
        elif multilayer:
            lay = potential.layer
            mjson = json.dumps(lay.spec.to_dict(), sort_keys=True)
            f.attrs["model"] = "embedded_multilayer" if emb_ml else "multilayer"
            f.attrs["message_spec"] = mjson
            dens, embs = (potential.densities, potential.embeddings) if emb_ml else (None, None)
            f.attrs["checksum"] = _checksum(species, potential.e0, potential.coef, degrees, dens, embs,
                                            layer=(mjson, lay.shift, lay.scale, potential.weights))
            if emb_ml:
                f.attrs["embeddings"] = json.dumps(list(embs))
                f.create_dataset("densities", data=np.asarray(dens, dtype=np.float64))
            f.create_dataset("message_shift", data=np.asarray(lay.shift, dtype=np.float64))
            f.create_dataset("message_scale", data=np.asarray(lay.scale, dtype=np.float64))
            f.create_dataset("layer_weights", data=np.asarray(potential.weights, dtype=np.float64))
        else:
            f.attrs["checksum"] = _checksum(species, potential.e0, potential.coef, degrees)
        f.create_dataset("species", data=species)
        f.create_dataset("e0", data=np.asarray(potential.e0, dtype=np.float64))
        f.create_dataset("coef", data=np.asarray(potential.coef, dtype=np.float64))
        f.create_dataset("feature_degrees", data=np.asarray(degrees, dtype=np.float64))
        f.create_dataset("canary_features", data=canary_features(potential.basis, species))
        if posterior is not None:
            g = f.create_group("posterior")
            cols = np.asarray(posterior.cols, dtype=np.int64)
            factor = np.asarray(posterior.factor, dtype=np.float64)
            g.create_dataset("cols", data=cols)
            g.create_dataset("factor", data=factor)
            noise = (float(posterior.force_noise), float(posterior.energy_noise), float(posterior.scale))
            g.attrs["force_noise"], g.attrs["energy_noise"], g.attrs["scale"] = noise
            g.attrs["checksum"] = _posterior_checksum(f.attrs["checksum"], cols, factor, *noise)


def load_posterior(path):
    """The posterior stored with a potential by ``save_potential(..., posterior=...)``, or None.

    Returns
    -------
    PotentialPosterior or None

    Raises
    ------
    ValueError
        A damaged posterior, or one whose checksum does not belong to this file's model.
    """
    from ..models.potential.uncertainty import PotentialPosterior

    with open_h5(path) as f:
        check_header(f, KIND, SUPPORTED_VERSIONS)
        if "posterior" not in f:
            return None
        try:
            g = f["posterior"]
            cols = np.asarray(g["cols"][()], dtype=np.int64)
            factor = np.asarray(g["factor"][()], dtype=np.float64)
            noise = tuple(float(g.attrs[k]) for k in ("force_noise", "energy_noise", "scale"))
            stored = g.attrs["checksum"]
            model_checksum = f.attrs["checksum"]
        except (KeyError, OSError) as err:
            raise ValueError(f"{path}: incomplete or corrupted posterior ({err})") from None
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    model_checksum = model_checksum.decode() if isinstance(model_checksum, bytes) else str(model_checksum)
    if _posterior_checksum(model_checksum, cols, factor, *noise) != stored:
        raise ValueError(f"{path}: posterior checksum mismatch - damaged, or written for another model")
    return PotentialPosterior(cols, factor, noise[0], noise[1], noise[2])


def _default_basis_factory(spec_dict: dict):
    from ..basis import ACEBasis, BasisSpec

    return ACEBasis(BasisSpec.from_dict(spec_dict))


def _json_attr(f, key: str, path) -> dict:
    """Root attribute ``key`` of ``f`` parsed as a JSON object; a number, array or other text is named (it was a
    TypeError or KeyError traceback)."""
    raw = f.attrs[key]
    raw = raw.decode() if isinstance(raw, bytes) else raw
    if not isinstance(raw, str):
        raise ValueError(f"{path}: attribute {key!r} is {str(raw)[:60]!r}, not JSON text (file edited or damaged)")
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: attribute {key!r} is not a JSON object (file edited or damaged)")
    return value


def _array(f, key: str, path, kinds: str = "f") -> np.ndarray:
    """Dataset ``key`` as float64 (``kinds`` "f") or as stored (integers, "iu"); another dtype is named: a complex
    ``coef`` was cast to real with a ComplexWarning, species 14.5 truncated to 14, a string ``e0`` said only
    "could not convert string to float"."""
    d = f[key]
    if d.dtype.kind not in kinds:
        raise ValueError(f"{path}: dataset {key!r} must hold {'integers' if kinds == 'iu' else 'real floats'}, got dtype "
                         f"{d.dtype} (file edited or damaged)")
    return np.asarray(d[()], dtype=np.float64) if kinds == "f" else np.asarray(d[()])


def load_potential(path, basis_factory=None):
    """Read a potential written by :func:`save_potential`.

    Parameters
    ----------
    path : str or Path
    basis_factory : callable, optional
        ``spec_dict -> basis``; default rebuilds :class:`acehamil.basis.ACEBasis`.

    Returns
    -------
    ACEPotential or EmbeddedACEPotential

    Raises
    ------
    ValueError
        Not an acehamil potential file, unsupported version, corrupted arrays, or a
        basis whose features no longer match the stored fingerprint.
    FileNotFoundError
    """
    from ..models.potential.embedded import EmbeddedACEPotential
    from ..models.potential.model import ACEPotential, feature_degrees
    from ..models.potential.repulsion import RepulsionSpec

    densities = embeddings = layer = None
    with open_h5(path) as f:
        check_header(f, KIND, SUPPORTED_VERSIONS)
        try:
            model = f.attrs.get("model", "linear")
            model = model.decode() if isinstance(model, bytes) else str(model)
            if model == "embedded":
                embeddings = json.loads(f.attrs["embeddings"])
                densities = _array(f, "densities", path)
            elif model in ("multilayer", "embedded_multilayer"):
                if model == "embedded_multilayer":
                    embeddings = json.loads(f.attrs["embeddings"])
                    densities = _array(f, "densities", path)
                mjson = f.attrs["message_spec"]
                mjson = mjson.decode() if isinstance(mjson, bytes) else str(mjson)
                layer = (mjson, np.asarray(f["message_shift"][()], dtype=np.float64),
                         np.asarray(f["message_scale"][()], dtype=np.float64), np.asarray(f["layer_weights"][()], dtype=np.float64))
            elif model != "linear":
                raise ValueError(f"{path}: unknown potential model {model!r} (this acehamil reads 'linear', 'embedded', 'multilayer' and "
                                 "'embedded_multilayer')")
            spec_dict = _json_attr(f, "basis_spec", path)
            rep_json = f.attrs["repulsion"]
            metadata = _json_attr(f, "metadata", path)
            checksum = f.attrs["checksum"]
            species = _array(f, "species", path, "iu").astype(np.int64)
            e0 = _array(f, "e0", path)
            coef = _array(f, "coef", path)
            degrees = _array(f, "feature_degrees", path)
            canary = _array(f, "canary_features", path)
        except (KeyError, json.JSONDecodeError, OSError) as err:
            raise ValueError(f"{path}: incomplete or corrupted potential file ({err})") from None
    checksum = checksum.decode() if isinstance(checksum, bytes) else str(checksum)
    if _checksum(species, e0, coef, degrees, densities, embeddings, layer) != checksum:
        raise ValueError(f"{path}: checksum mismatch - the stored coefficients are corrupted")
    try:
        basis = (basis_factory or _default_basis_factory)(spec_dict)
    except (KeyError, TypeError, ValueError) as err:  # an edited spec: {} was a KeyError traceback
        raise ValueError(f"{path}: unreadable basis_spec ({type(err).__name__}: {err}; file edited or damaged)") from None
    rebuilt = feature_degrees(basis)
    if rebuilt.shape != degrees.shape or not np.array_equal(rebuilt, degrees):
        raise ValueError(
            f"{path}: the basis rebuilt from the stored spec has {rebuilt.size} features, the file was written for "
            f"{degrees.size} (or a different order); incompatible basis-engine version"
        )
    now = canary_features(basis, species)
    if not np.allclose(now, canary, rtol=1e-9, atol=1e-12 * max(1.0, float(np.abs(canary).max()))):
        raise ValueError(
            f"{path}: the basis engine computes different features for the stored spec (max change "
            f"{float(np.abs(now - canary).max()):.3g}); the coefficients belong to another basis-engine version"
        )
    rep_json = rep_json.decode() if isinstance(rep_json, bytes) else str(rep_json)
    try:
        repulsion = RepulsionSpec.from_dict(json.loads(rep_json)) if rep_json else None
    except (KeyError, TypeError, ValueError) as err:  # ValueError includes JSONDecodeError
        raise ValueError(f"{path}: unreadable repulsion attribute {rep_json[:60]!r} ({type(err).__name__}: {err}; "
                         "file edited or damaged)") from None
    if layer is not None:
        from ..models.potential.multilayer import MessageLayer, MessageSpec, MultilayerACEPotential

        try:
            spec = MessageSpec.from_dict(json.loads(layer[0]))
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise ValueError(f"{path}: unreadable message_spec ({err})") from None
        species_t = tuple(int(z) for z in species)
        lay = MessageLayer(spec, species_t, layer[1], layer[2])
        return MultilayerACEPotential(basis, species_t, e0, coef, lay, layer[3], repulsion, metadata, densities,
                                      tuple(embeddings) if embeddings is not None else ())
    if densities is not None:
        return EmbeddedACEPotential(basis, tuple(int(z) for z in species), e0, coef, densities, tuple(embeddings), repulsion, metadata)
    return ACEPotential(basis, tuple(int(z) for z in species), e0, coef, repulsion, metadata)

"""HDF5 files of fitted Hamiltonian/overlap models.

Layout (format version 1, ``acehamil_kind = "hamiltonian_model"``)::

    /  attrs: header (acehamil.io.hdf5.write_header), config (JSON of ModelConfig),
              orbital_basis (JSON), basis_specs (JSON {"H"|"S": {family: BasisSpec dict}}),
              report (JSON), checksum (sha256 of every coefficient array, in order, and of the energy zero),
              valence_electrons (JSON {Z: electrons per atom}; optional, absent in older files),
              checksum_extra (sha256 of report, valence_electrons and posteriors; absent in older files),
              energy_zero (JSON of EnergyZero, optional: the cell's energy zero V S added to H)
    /H/coefficients/<kind>/<zi>-<zj>/<a>-<b>/L<L>   float64 (n_F,)
    /S/coefficients/...
    /H/posteriors/<block key>/L<L>/{mean, eigvals, eigvecs, prior_diag, proj}  (BLR only)
              attrs alpha, beta, gamma, log_evidence, yty, count, n_iter, converged

Loading rebuilds every ACE basis from the stored configuration, checks that
the rebuilt basis specs and feature counts equal the stored ones and that the
checksum matches, and predicts bit for bit as the model that was saved.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .hdf5 import atomic_h5, check_header, open_h5, write_header

KIND = "hamiltonian_model"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)


def _basis_specs(mm) -> dict:
    out = {}
    for fam in mm.families:
        spec = fam.basis_spec()
        out[fam.name] = None if spec is None else spec.to_dict()
    return out


def _checksum(model) -> str:
    h = hashlib.sha256()
    if getattr(model, "energy_zero", None) is not None:
        h.update(json.dumps(model.energy_zero.to_dict(), sort_keys=True).encode())
    for name, mm in (("H", model.H), ("S", model.S)):
        for key in sorted(mm.coefficients):
            for L in sorted(mm.coefficients[key]):
                h.update(f"{name}/{key}/L{L}".encode())
                h.update(np.ascontiguousarray(mm.coefficients[key][L], dtype="<f8").tobytes())
    return h.hexdigest()


_POST_ARRAYS = ("mean", "eigvals", "eigvecs", "prior_diag", "proj")
_POST_ATTRS = ("alpha", "beta", "gamma", "log_evidence", "yty", "count", "n_iter", "converged")


def _extra_checksum(report: str, valence: str | None, posteriors: dict) -> str:
    """sha256 of what ``checksum`` leaves out: the report (calibration factors, energy-zero model, ...) and the
    valence counts as stored (text), and every BLR posterior ({"H"|"S": {key: {L: BLRPosterior}}}).  A changed byte
    there gave other error bars, electron counts or calibrated spreads without a word."""
    h = hashlib.sha256()
    h.update(report.encode())
    h.update(b"\0" + (valence or "").encode() + b"\0")
    for name in ("H", "S"):
        for key in sorted(posteriors[name]):
            for L in sorted(posteriors[name][key]):
                post = posteriors[name][key][L]
                h.update(f"{name}/{key}/L{L}".encode())
                for arr in _POST_ARRAYS:
                    h.update(np.ascontiguousarray(getattr(post, arr), dtype="<f8").tobytes())
                h.update(repr([float(getattr(post, at)) for at in _POST_ATTRS]).encode())
    return h.hexdigest()


def _check_finite(model, where: str) -> None:
    """ValueError naming the first block type whose coefficients are NaN or inf (they predict NaN H or S)."""
    for name, mm in (("H", model.H), ("S", model.S)):
        for key in sorted(mm.coefficients):
            for L in sorted(mm.coefficients[key]):
                if not np.isfinite(np.asarray(mm.coefficients[key][L], dtype=float)).all():
                    raise ValueError(f"{where}: the {name} coefficients of {key} (L={L}) contain NaN or inf")


def save_model(model, path) -> None:
    """Write ``model`` (a :class:`~acehamil.models.hamiltonian.HamiltonianModel`) to ``path`` atomically
    (refused, with no file written, when a coefficient is NaN or inf)."""
    _check_finite(model, f"model for {path}")
    with atomic_h5(path) as f:
        write_header(f, KIND, FORMAT_VERSION)
        f.attrs["config"] = json.dumps(model.config.to_dict())
        f.attrs["orbital_basis"] = json.dumps({str(z): v for z, v in model.orbital_basis.to_dict().items()})
        f.attrs["basis_specs"] = json.dumps({"H": _basis_specs(model.H), "S": _basis_specs(model.S)})
        report = json.dumps(model.report, default=float)
        f.attrs["report"] = report
        f.attrs["checksum"] = _checksum(model)
        valence = None
        if model.valence_electrons is not None:
            valence = json.dumps({str(z): float(v) for z, v in model.valence_electrons.items()})
            f.attrs["valence_electrons"] = valence
        f.attrs["checksum_extra"] = _extra_checksum(report, valence, {"H": model.H.posteriors, "S": model.S.posteriors})
        if model.energy_zero is not None:
            f.attrs["energy_zero"] = json.dumps(model.energy_zero.to_dict())
        for name, mm in (("H", model.H), ("S", model.S)):
            g = f.create_group(name)
            gc = g.create_group("coefficients")
            for key, byL in mm.coefficients.items():
                for L, c in byL.items():
                    gc.create_dataset(f"{key}/L{L}", data=np.asarray(c, dtype=np.float64))
            gp = g.create_group("posteriors")
            for key, byL in mm.posteriors.items():
                for L, post in byL.items():
                    q = gp.create_group(f"{key}/L{L}")
                    for arr in _POST_ARRAYS:
                        q.create_dataset(arr, data=np.asarray(getattr(post, arr)))
                    for at in _POST_ATTRS:
                        q.attrs[at] = getattr(post, at)


def _read_coefficients(g) -> dict:
    out = {}

    def visit(name, obj):
        if hasattr(obj, "shape"):
            key, Lpart = name.rsplit("/", 1)
            if not Lpart.startswith("L"):
                raise ValueError(f"unexpected dataset {name!r} in coefficients")
            if obj.dtype.kind != "f":  # a complex set was cast to real with a ComplexWarning
                raise ValueError(f"coefficients {name!r} must be real floats, got dtype {obj.dtype}")
            out.setdefault(key, {})[int(Lpart[1:])] = np.array(obj[()], dtype=np.float64)

    g.visititems(visit)
    return out


def _read_posteriors(g) -> dict:
    from ..fitting import BLRPosterior

    out = {}

    def visit(name, obj):
        if hasattr(obj, "shape") or "mean" not in obj:
            return
        key, Lpart = name.rsplit("/", 1)
        a = obj.attrs
        out.setdefault(key, {})[int(Lpart[1:])] = BLRPosterior(
            np.array(obj["mean"]), float(a["alpha"]), float(a["beta"]), float(a["gamma"]), float(a["log_evidence"]),
            np.array(obj["eigvals"]), np.array(obj["eigvecs"]), np.array(obj["prior_diag"]), np.array(obj["proj"]),
            float(a["yty"]), int(a["count"]), int(a["n_iter"]), bool(a["converged"]),
        )

    g.visititems(visit)
    return out


def load_model(path):
    """Read a model written by :func:`save_model`.

    Raises
    ------
    ValueError
        Not an acehamil model file, unsupported format version, a changed ACE
        basis (specs or feature counts differ), a checksum mismatch or a
        truncated/corrupt file; the message says which.
    """
    from ..models.hamiltonian.config import ModelConfig
    from ..models.hamiltonian.model import EnergyZero, HamiltonianModel
    from ..structure import OrbitalBasis

    with open_h5(path) as f:
        check_header(f, KIND, SUPPORTED_VERSIONS)
        try:
            config = ModelConfig.from_dict(_json_object(f, "config"))
            ob = OrbitalBasis.from_dict({int(z): [tuple(s) for s in v] for z, v in _json_object(f, "orbital_basis").items()})
            stored_specs = _json_object(f, "basis_specs")
            report_text = _text(f.attrs["report"])
            report = _json_object(f, "report")
            checksum = str(f.attrs["checksum"])
            extra = f.attrs.get("checksum_extra")  # absent in files written before it existed
            valence_text = f.attrs.get("valence_electrons")  # absent in files written before it was recorded
            valence_text = None if valence_text is None else _text(valence_text)
            valence = None if valence_text is None else {int(z): float(v) for z, v in _json_object(f, "valence_electrons").items()}
            coefs = {n: _read_coefficients(f[n]["coefficients"]) for n in ("H", "S")}
            posts = {n: _read_posteriors(f[n]["posteriors"]) for n in ("H", "S")}
            energy_zero = EnergyZero.from_dict(_json_object(f, "energy_zero")) if "energy_zero" in f.attrs else None
        except (KeyError, OSError, TypeError, ValueError) as err:  # ValueError includes JSONDecodeError
            raise ValueError(f"{path}: corrupt or incomplete model file ({type(err).__name__}: {err})") from None
    model = HamiltonianModel.build(config, ob, coefs["H"], coefs["S"], report, posts["H"], posts["S"], energy_zero)
    if valence is not None:
        import dataclasses

        model = dataclasses.replace(model, valence_electrons=valence)
    if _checksum(model) != checksum:
        raise ValueError(f"{path}: coefficient checksum mismatch (file corrupted or edited)")
    _check_finite(model, str(path))
    if valence is not None:
        bad = {z: v for z, v in valence.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"{path}: valence_electrons must be finite counts >= 0 per species, got {bad} (file edited?)")
    rebuilt = {"H": _basis_specs(model.H), "S": _basis_specs(model.S)}
    if json.loads(json.dumps(rebuilt)) != stored_specs:
        raise ValueError(f"{path}: the ACE basis specs rebuilt by this acehamil differ from those stored in the file "
                         "(model written by an incompatible version)")
    _check_feature_counts(model, path)
    _check_posteriors(model, path)
    if extra is not None and _extra_checksum(report_text, valence_text, posts) != _text(extra):
        raise ValueError(f"{path}: checksum mismatch of the report, valence counts or posteriors (file corrupted or "
                         "edited after it was written): its error bars and electron counts cannot be trusted")
    return model


def _json_object(f, key: str) -> dict:
    """The root attribute ``key`` parsed as a JSON object (a list or number there was an AttributeError traceback)."""
    value = json.loads(f.attrs[key])
    if not isinstance(value, dict):
        raise ValueError(f"attribute {key!r} must be a JSON object, got {type(value).__name__}")
    return value


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _check_posteriors(model, path) -> None:
    """ValueError unless every stored BLR posterior belongs to a coefficient set of the same length ``n`` and
    holds finite arrays of the shapes of :class:`~acehamil.fitting.BLRPosterior` (eigvecs (n, n), the others (n,)),
    ``prior_diag > 0``, ``eigvals >= 0`` and finite ``alpha, beta > 0``: posteriors are outside the checksum, and a
    damaged one gave NaN error bars or draws far from the fitted model's."""
    for mm in (model.H, model.S):
        for key in sorted(mm.posteriors):
            for L in sorted(mm.posteriors[key]):
                post = mm.posteriors[key][L]
                where = f"{path}: the {mm.name} posterior of {key} (L={L})"
                coef = mm.coefficients.get(key, {}).get(L)
                if coef is None:
                    raise ValueError(f"{where} has no coefficients beside it (file edited or damaged)")
                n = len(coef)
                shapes = {"mean": (n,), "eigvals": (n,), "eigvecs": (n, n), "prior_diag": (n,), "proj": (n,)}
                for arr, shape in shapes.items():
                    a = np.asarray(getattr(post, arr))
                    if a.shape != shape:
                        raise ValueError(f"{where}: {arr} has shape {a.shape}, expected {shape} for {n} coefficients "
                                         "(file edited or damaged)")
                    if not np.isfinite(a).all():
                        raise ValueError(f"{where}: {arr} contains NaN or inf (file edited or damaged)")
                ok = (np.all(post.prior_diag > 0) and np.all(post.eigvals >= 0) and np.isfinite(post.alpha)
                      and np.isfinite(post.beta) and post.alpha > 0 and post.beta > 0)
                if not ok:
                    raise ValueError(f"{where}: needs prior_diag > 0, eigvals >= 0 and finite alpha, beta > 0 "
                                     f"(got alpha={post.alpha:g}, beta={post.beta:g}; file edited or damaged)")


def _check_feature_counts(model, path) -> None:
    for mm in (model.H, model.S):
        for fam, bt in mm.block_types():
            n_coef = fam.n_coefficients(bt)
            for L, c in mm.coefficients.get(bt.key, {}).items():
                expect = n_coef.get(L, 0)
                if c.ndim != 1:
                    raise ValueError(f"{path}: {mm.name} {bt.key} L={L} stores coefficients of shape {c.shape}, expected "
                                     f"({expect},) (file edited or damaged)")
                if c.shape != (expect,):
                    raise ValueError(f"{path}: {mm.name} {bt.key} L={L} stores {c.size} coefficients, the rebuilt basis "
                                     f"has {expect} features (incompatible acehamil/basis version)")

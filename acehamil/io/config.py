"""Configuration files: TOML parsing for the model and potential configurations.

The configurations themselves are frozen objects of the model layer
(:class:`acehamil.models.hamiltonian.config.ModelConfig`,
:class:`acehamil.models.potential.config.PotentialJob`); this module only reads
files and resolves the paths they name, relative to the config file's folder.
"""

from __future__ import annotations

import sys
from pathlib import Path


def read_toml(path) -> dict:
    """Parse a TOML configuration file (stdlib ``tomllib``; ``tomli`` on Python 3.10).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not valid TOML (message names the file).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    with open(path, "rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: invalid TOML: {err}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a TOML text file (not UTF-8; a binary or HDF5 file given as the "
                             f"configuration?)") from None


def read_model_config(path):
    """Read the TOML configuration of a Hamiltonian/overlap model and its fit.

    Parameters
    ----------
    path : str or Path
        TOML file; a relative ``[data] train`` is resolved against its folder.

    Returns
    -------
    acehamil.models.hamiltonian.config.ModelConfig
    """
    from ..models.hamiltonian.config import ModelConfig, check_written_degrees

    path = Path(path)
    written = read_toml(path)
    config = ModelConfig.from_dict(written, base_dir=path.parent, source=str(path))
    check_written_degrees(config, written, str(path))
    return config


def read_potential_job(path):
    """Read the TOML configuration of a potential fit and the structures it names.

    Parameters
    ----------
    path : str or Path
        TOML file (layout in :mod:`acehamil.models.potential.config`); relative
        data paths are resolved against its folder.

    Returns
    -------
    acehamil.models.potential.config.PotentialJob
    """
    from ..models.potential.config import data_files, job_from_config
    from .labelled import read_configs

    path = Path(path)
    cfg = read_toml(path)
    _check_n_max(cfg.get("basis"), path)
    train, tests = data_files(cfg)
    base = path.parent
    return job_from_config(cfg, read_configs(base / train), {t: read_configs(base / t) for t in tests})


def _check_n_max(basis, path) -> None:
    """Refuse a potential's ``[basis] n_max`` beyond :data:`~acehamil.models.hamiltonian.config.MAX_N_MAX` before
    the basis is built (n_max = 100000 asked the radial quadrature for 74.5 GiB: a MemoryError traceback)."""
    from ..errors import UserError
    from ..models.hamiltonian.config import MAX_N_MAX

    n = basis.get("n_max") if isinstance(basis, dict) else None
    if isinstance(n, (int, float)) and not isinstance(n, bool) and n > MAX_N_MAX:
        raise UserError(f"{path}: [basis] n_max = {n} radial functions is more than {MAX_N_MAX} (potentials use ~4-12)")

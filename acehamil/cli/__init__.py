"""Command line: ``acehamil <command> ...``.

Each command lives in its own module ``acehamil/cli/<name>.py`` exposing
``register(subparsers)`` (adds the sub-parser and sets ``func``), imported
lazily so ``acehamil --help`` stays fast and no command's dependencies load
for another.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from .._version import __version__

#: command name -> module under acehamil.cli (module names use underscores)
COMMANDS = {
    "demo": "demo",
    "info": "info",
    "convert": "convert",
    "generate": "generate",
    "bands": "bands",
    "dos": "dos",
    "eigs": "eigs",
    "fit": "fit",
    "predict": "predict",
    "evaluate": "evaluate",
    "export": "export",
    "select": "select",
    "fit-potential": "fit_potential",
    "evaluate-potential": "evaluate_potential",
}


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, as every other refusal: argparse printed the whole usage
    block (5-14 lines for most commands) before ``acehamil predict: error: argument --threads: ...``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="acehamil", description="ACE models of Hamiltonians, overlaps and site energies.")
    parser.add_argument("--version", action="version", version=f"acehamil {__version__}")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="BLAS/LAPACK/OpenMP threads for the whole command (default: $ACEHAMIL_THREADS, else "
                             "the libraries' own setting, with one BLAS thread in acehamil's loops over many small "
                             "matrices: per-k solves, per-block fits, predictions)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f".{module}", __name__)
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{module}":
                continue  # command not built yet
            raise
        mod.register(sub)
    for cmd in sub.choices.values():  # also accepted after the command: acehamil fit --threads 1 ...
        cmd.add_argument("--threads", type=_positive_int, default=argparse.SUPPRESS, metavar="N",
                         help="BLAS/LAPACK/OpenMP threads (same as acehamil --threads N)")
    return parser


#: OSError numbers that describe the user's files or machine, not a bug in acehamil.
_USER_ERRNOS = {"ENOENT", "EACCES", "EPERM", "ENOSPC", "EISDIR", "ENOTDIR", "EROFS", "EDQUOT", "EFBIG", "EEXIST",
                "ENAMETOOLONG", "ELOOP", "EBUSY", "ETXTBSY"}


def is_user_error(err: BaseException) -> bool:
    """True for a user's mistake (bad input, option, file, full disk), False for a bug.

    User errors: :class:`acehamil.errors.UserError`; an OSError about a file or the disk;
    a ValueError that acehamil's own code raised on purpose (the innermost frame of its
    traceback is in the acehamil package: the project raises these for bad input).  A
    ValueError from inside numpy, h5py, ... or any other exception (TypeError, IndexError,
    KeyError, AttributeError, ...) is a bug and is shown with its traceback.
    """
    import errno
    import os

    from ..errors import UserError

    if isinstance(err, UserError):
        return True
    if isinstance(err, OSError) and not isinstance(err, (BrokenPipeError,)):
        code = errno.errorcode.get(err.errno or -1, "")
        if code in _USER_ERRNOS or (err.errno is None and isinstance(err, FileNotFoundError)):
            return True
    if isinstance(err, (ValueError, FileNotFoundError)):
        tb = err.__traceback__
        last = None
        while tb is not None:
            last = tb
            tb = tb.tb_next
        if last is not None:
            pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            return os.path.abspath(last.tb_frame.f_code.co_filename).startswith(pkg + os.sep)
    return False


def _user_message(err: BaseException, args) -> str:
    msg = str(err) if str(err) else type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in msg:
        msg = f"{err.strerror or msg}: {err.filename}"
    from ..tb.eigen import OverlapError

    if isinstance(err, OverlapError) and hasattr(args, "remedy"):
        msg = msg.replace("solve(..., remedy='project', s_threshold=...)", "rerun with --remedy project [--s-threshold T]")
        msg = msg.replace("or raise max_condition", "or raise --max-condition")
    elif isinstance(err, OverlapError) and " Remedy: solve(" in msg:  # no such options here: no Python call either
        msg = msg.split(" Remedy: solve(")[0] + " (`acehamil bands`/`dos` can project it out: --remedy project)"
    return msg.splitlines()[0] if msg else msg


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


_NEGATIVE_SLICE = re.compile(r"^-\d*:[-\d:]*$")
#: negative numbers argparse does not take for values: with an exponent ("--charge -1e9") or inf/nan
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)[eE][-+]?\d+$|^-(inf|nan)$", re.IGNORECASE)


def _join_negative_values(argv: list) -> list:
    """``--index -6:`` -> ``--index=-6:``, ``--charge -1e9`` -> ``--charge=-1e9``: argparse takes a negative
    slice or a negative number with an exponent for an option (only plain negative numbers such as ``-6`` or
    ``-0.5`` are recognised as values)."""
    out = []
    for tok in argv:
        if out and (_NEGATIVE_SLICE.match(tok) or _NEGATIVE_NUMBER.match(tok)) and out[-1].startswith("--") \
                and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def main(argv=None) -> int:
    """Run one command.  Exit codes: 0 success, 2 user error (one line on stderr), 1 a bug
    (traceback on stderr with a request to report it), 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..threads import limit_threads, threads_from_env

    try:
        with limit_threads(args.threads if args.threads is not None else threads_from_env()):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"acehamil {args.command}: interrupted (no output file was changed half-way)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - classified below, bugs keep their traceback
        if is_user_error(err):
            print(f"acehamil {args.command}: error: {_user_message(err, args)}", file=sys.stderr)
            return 2
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"acehamil {args.command}: internal error ({type(err).__name__}): this is a bug in acehamil "
              f"{__version__}; please report it with the command line and the traceback above.", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

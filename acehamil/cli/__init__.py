"""Command line: ``acehamil <command> ...``.

Each command lives in its own module ``acehamil/cli/<name>.py`` exposing
``register(subparsers)`` (adds the sub-parser and sets ``func``), imported
lazily so ``acehamil --help`` stays fast and no command's dependencies load
for another.
"""

from __future__ import annotations

import argparse
import importlib
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
    "fit": "fit",
    "predict": "predict",
    "evaluate": "evaluate",
    "fit-potential": "fit_potential",
    "evaluate-potential": "evaluate_potential",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acehamil", description="ACE models of Hamiltonians, overlaps and site energies.")
    parser.add_argument("--version", action="version", version=f"acehamil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f".{module}", __name__)
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{module}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        sys.stderr.close()
        return 0
    except (ValueError, FileNotFoundError, KeyError, OSError) as err:
        print(f"acehamil {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

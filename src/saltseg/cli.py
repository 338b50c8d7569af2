"""The ``saltseg`` command line: one console script with a subcommand per pipeline stage.

Every subcommand module registers itself in :data:`saltseg.commands.registry.COMMANDS` with a parser
builder and a handler; heavy libraries (torch, Lightning) are imported inside handlers so that
``saltseg --help`` is instant.
User errors (:class:`~saltseg.errors.SaltsegError`) print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from saltseg import __version__
from saltseg.commands.registry import COMMANDS
from saltseg.errors import SaltsegError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    import saltseg.commands  # noqa: F401  (importing the package registers the subcommands)

    parser = argparse.ArgumentParser(
        prog="saltseg",
        description="Salt-body segmentation of seismic images, from data checks to Kaggle submissions.\n\n"
        "example:\n  saltseg data check ../shared/data/tgs-salt\n"
        "  saltseg train configs/cpu_fast.yaml --data DATA --fold 0 --out runs/r1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--version", action="version", version=f"saltseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for make, _ in COMMANDS.values():
        make(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``saltseg`` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._handler(args) or 0)
    except SaltsegError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(f"error: interrupted{detail}", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: one line unless --debug
        if args.debug:
            raise
        full = disk_full_message(exc, args)
        if full is not None:  # a full disk is not a bug: say which file and how much space is left
            print(f"error: {full}", file=sys.stderr)
            return 2
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


OUTPUT_ARGS = ("out", "out_dir", "csv")
"""Argument names of the commands' outputs: where a full disk struck when the error names no file."""


def disk_full_message(exc: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message for a full disk anywhere in ``exc``'s chain, or None if it is not one.

    The file is the one the OS error names, else the command's output (``--out``, ``--csv``...).
    """
    from saltseg.errors import DiskFullError
    from saltseg.utils.io import find_disk_full, free_bytes

    found = find_disk_full(exc)
    if found is None:
        return None
    path = getattr(found, "filename", None)
    output = next((getattr(args, a) for a in OUTPUT_ARGS if getattr(args, a, None) is not None), None)
    where = path if path is not None else output if output is not None else os.getcwd()
    return DiskFullError(path, free_bytes(where), where=output).message


if __name__ == "__main__":  # ``python -m saltseg.cli``
    sys.exit(main())

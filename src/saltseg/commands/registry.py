"""The registry of ``saltseg`` subcommands and the arguments several of them share.

Every subcommand module registers itself in :data:`COMMANDS` with :func:`command` (a parser builder that
returns its handler); :mod:`saltseg.cli` builds the parser from it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], argparse.ArgumentParser], Handler]] = {}


def command(name: str, help_text: str, example: str) -> Callable:
    """Register ``build(parser)`` as the argument builder and handler factory of subcommand ``name``."""

    def deco(build: Callable[[argparse.ArgumentParser], Handler]) -> Callable:
        def make(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
            p = sub.add_parser(
                name,
                help=help_text,
                description=f"{help_text}\n\nexample:\n  {example}",
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            p.set_defaults(_handler=build(p))
            return p

        COMMANDS[name] = (make, build)  # type: ignore[assignment]
        return build

    return deco


def comma_floats(text: str) -> list[float]:
    """``"0.3,0.7"`` -> ``[0.3, 0.7]`` (``ValueError`` for anything else): the CLI's weight lists."""
    return [float(w) for w in text.split(",")]


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--precision`` of the commands that run models (checked by
    :func:`saltseg.backends.candidates` and :func:`saltseg.backends.check_precision`)."""
    p.add_argument(
        "--backend",
        default="auto",
        help="inference backend: auto (the fastest installed one that passes its accuracy check on the "
        "first tiles; torch on a GPU), torch, onnxruntime or openvino",
    )
    p.add_argument(
        "--precision",
        default="auto",
        help="of the onnxruntime / openvino backends: auto (the backend's default: bf16 in OpenVINO where "
        "the CPU has it), fp32, or int8 (the graph quantised, calibrated on the first tiles)",
    )

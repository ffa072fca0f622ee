"""The `layerprune` command line: one subcommand per step of the method, over the package's functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import LayerpruneError
from . import assets_commands, book_commands, course_commands, eval_commands, heal_commands, method_commands

COMMAND_GROUPS = (assets_commands, method_commands, heal_commands, eval_commands, book_commands, course_commands)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="layerprune",
        description="Prune the deeper layers of a language model, heal it with QLoRA, and evaluate it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a LayerpruneError becomes one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LayerpruneError as error:
        print(f"layerprune {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"layerprune {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0

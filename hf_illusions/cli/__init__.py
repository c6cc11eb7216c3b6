"""`hf-illusions`: data, train, simplify, evaluate, reproduce, card, push.

Errors on bad input print one readable line and exit with status 2 (``--debug``, anywhere on
the line, shows the traceback); results are always written to files, and the paths are printed.
Outputs that exist are only replaced with ``--overwrite``, and are checked before any work.
A flag means the same in every command: ``--model`` the original model, ``--data`` its dataset
folder, ``--out`` what is written, ``--overwrite`` permission to replace it. Every ``--help``
shows each option's default; flags are spelled with underscores, and the hyphenated spelling
(``--dry-run``) is accepted too, as transformers' ``HfArgumentParser`` does.

One module per group of commands (``data`` and ``train``, ``simplify``, ``evaluate``,
``reproduce`` and ``findings``, ``card`` and ``push``), each with its ``cmd_*`` functions and an
``add_commands`` that declares their flags; this module assembles the parser and runs a command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from hf_illusions.argparsing import ArgumentParser
from hf_illusions.cli import cards, data, evaluate, reproduce, simplify
from hf_illusions.errors import IllusionsError
from hf_illusions.version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command group adds its subcommands."""
    parser = ArgumentParser(prog="hf-illusions", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors (anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, simplify, evaluate, reproduce, cards):
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["train"]:  # every flag after `train` belongs to the training script
        return run(lambda: data.cmd_train(argparse.Namespace(), argv[1:]), debug)

    def dispatch() -> None:
        args = build_parser().parse_args(argv)
        args.func(args)

    return run(dispatch, debug)


def run(action: Callable[[], object], debug: bool) -> int:
    """Run a command; bad input (and I/O failures such as a full disk) become one line and status 2."""
    try:
        action()
    except (IllusionsError, OSError) as err:
        if debug:
            raise
        print(f"hf-illusions: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("hf-illusions: interrupted", file=sys.stderr)
        return 130
    return 0


__all__ = ["build_parser", "main", "run"]

"""The command line's argument parsing, shared by ``hf-illusions`` (:mod:`hf_illusions.cli`) and
``hf-illusions train`` (:meth:`hf_illusions.train.TrainArgs.parser`).

Kept below both (it imports nothing of the package but :mod:`hf_illusions.errors`), so the training
module builds its parser without importing the CLI that runs it. Flag errors raise
:class:`~hf_illusions.errors.SettingsError`: one line, reported like every other bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from hf_illusions.errors import SettingsError


class HelpFormatter(argparse.HelpFormatter):
    """Ends each option's help with its default, unless the help already says what the default is.

    Like ``ArgumentDefaultsHelpFormatter``, minus its ``(default: None)``: an option whose default is
    ``None`` must say in words what leaving it out does (tests/test_cli_help.py checks each one).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default in (None, argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps a multi-line description (a module docstring) as written."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are :class:`SettingsError`: one line, no usage dump, one exit path.

    Plain argparse prints the whole usage block and exits from deep inside ``parse_args``;
    raising instead lets :func:`run` report flag errors exactly like every other bad input.
    Subparsers are of this class too, so every command gets the same help and errors.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise SettingsError(f"{message} (see `{self.prog} --help`)")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        args = sys.argv[1:] if args is None else args
        return super().parse_known_args([underscored(a) for a in args], namespace)


def underscored(arg: str) -> str:
    """``--dry-run`` → ``--dry_run`` (also ``--repo-id=x``): both spellings of a flag work, one is listed."""
    if not arg.startswith("--") or arg == "--":
        return arg
    flag, eq, value = arg.partition("=")
    return "--" + flag[2:].replace("-", "_") + eq + value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2,4, got {text!r}"
        ) from None

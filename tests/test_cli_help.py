"""The CLI explains itself: every option has help and shows its default; one meaning per flag name."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_illusions
from hf_illusions.cli import build_parser, main
from hf_illusions.train import TrainArgs

#: actions that are not options a user sets
NOT_OPTIONS = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    """``prog`` → parser for the top level, every (nested) subcommand, and `train`'s own parser."""
    found: dict[str, argparse.ArgumentParser] = {}
    todo = [build_parser()]
    while todo:
        parser = todo.pop()
        found[parser.prog] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    found["hf-illusions train"] = TrainArgs.parser()  # `train` passes its flags through to this one
    return found


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, NOT_OPTIONS) and a.help != argparse.SUPPRESS]


def test_the_walk_reaches_every_command():
    progs = set(all_parsers())
    for command in ("data build", "data verify", "simplify", "evaluate", "reproduce", "card proxy", "push"):
        assert f"hf-illusions {command}" in progs
    assert len(progs) >= 15


@pytest.mark.parametrize("prog", sorted(all_parsers()))
def test_every_option_has_help_and_its_help_shows_the_default(prog):
    parser = all_parsers()[prog]
    shown = "".join(parser.format_help().split())  # argparse wraps lines, also at hyphens
    for action in options(parser):
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"{prog} {name} has no help"
        text = parser._get_formatter()._get_help_string(action) % {"default": action.default}
        if action.option_strings and not action.required:
            # a None default cannot be printed usefully, so its help says what leaving it out does
            assert "default" in text or "required" in text, f"{prog} {name}: {text!r}"
        if action.default not in (None, argparse.SUPPRESS) and "default" not in action.help:
            assert f"(default:{action.default})".replace(" ", "") in shown, f"{prog} {name}"


def test_hidden_aliases_share_a_visible_option():
    """``data build --config`` (the old spelling) is hidden, and sets what ``--data_config`` sets."""
    for prog, parser in all_parsers().items():
        visible = {a.dest for a in options(parser)}
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                assert action.dest in visible, f"{prog} {action.option_strings}"
    args = build_parser().parse_args(["data", "build", "dyck", "--config", "tiny"])
    assert args.data_config == "tiny"


def test_a_flag_name_takes_the_same_kind_of_value_everywhere():
    kinds: dict[str, set[tuple[str, str]]] = {}
    for parser in all_parsers().values():
        for action in options(parser):
            for flag in action.option_strings:
                kind = getattr(action.type, "__name__", "str") if action.type else "str"
                kinds.setdefault(flag, set()).add((type(action).__name__, kind))
    differing = {flag: kind for flag, kind in kinds.items() if len(kind) > 1}
    assert differing == {}
    for flag in ("--model", "--data", "--out", "--overwrite", "--layers", "--heads", "--fit_split"):
        assert len([p for p in all_parsers().values() if flag in p._option_string_actions]) >= 2, flag


def test_hyphenated_spellings_are_accepted():
    args = build_parser().parse_args(["push", "model", "m", "--repo-id", "a/b", "--dry-run"])
    assert (args.repo_id, args.dry_run) == ("a/b", True)
    args = build_parser().parse_args(["card", "model", "m", "--wall-time=3 min", "--max-sentences", "4"])
    assert (args.wall_time, args.max_sentences) == ("3 min", 4)
    train = TrainArgs.parser().parse_args(["--data", "d", "--out", "o", "--overwrite", "--max-steps", "5"])
    assert (train.dataset_dir, train.output_dir, train.overwrite_output_dir, train.max_steps) == (
        "d",
        "o",
        True,
        5,
    )


def test_version_prints_the_package_version():
    done = subprocess.run(
        [sys.executable, "-m", "hf_illusions.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hf-illusions {hf_illusions.__version__}"


def test_simplify_heads_simplifies_only_those_heads(tiny_model, tiny_dyck_dir, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "svd1-head1"
    common = ["--model", str(tmp_path / "model"), "--data", str(tiny_dyck_dir), "--n_sequences", "20"]
    argv = ["simplify", "svd", *common, "--rank", "1", "--layers", "1", "--heads", "1", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["simplified_heads"] == {"1": [1]}
    proxy = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    ids = torch.tensor([[1, 3, 5, 4, 2, 7, 6, 2]])
    with torch.no_grad():
        before = tiny_model(ids, output_attentions=True).attentions
        after = proxy(ids, output_attentions=True).attentions
    assert torch.allclose(before[0], after[0])  # layer 0 untouched
    assert torch.allclose(before[1][:, 0], after[1][:, 0])  # head 0 of layer 1 untouched
    assert not torch.allclose(before[1][:, 1], after[1][:, 1])  # rank-1 head 1 attends differently


def test_simplify_heads_does_not_apply_to_circuits(tiny_model, tiny_dyck_dir, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "model")
    argv = ["simplify", "sparse_circuit", "--model", str(tmp_path / "model"), "--data", str(tiny_dyck_dir)]
    assert main([*argv, "--target_loss", "3", "--heads", "0", "--out", str(tmp_path / "c")]) == 2
    assert "--heads does not apply to sparse_circuit" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()

"""`hf-illusions reproduce` (one :class:`~hf_illusions.config.ReproductionConfig`, run) and `findings`."""

from __future__ import annotations

import argparse
import json

from hf_illusions.config import ReproductionConfig
from hf_illusions.errors import SettingsError
from hf_illusions.paths import check_output_path
from hf_illusions.presets import FAMILIES, TASKS


def reproduce_config(args: argparse.Namespace) -> ReproductionConfig:
    """The run the flags describe: a task's preset (:meth:`ReproductionConfig.for_task`), or the
    config a report recorded (``--config``), with the flags given on top."""
    from hf_illusions.train import task_presets

    overrides: dict = {name: getattr(args, name) for name in ("model", "data", "data_config", "out")}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if args.simplifiers:
        overrides["families"] = args.simplifiers
    if args.max_eval_sentences is not None:  # 0 = every sentence of every split
        if args.max_eval_sentences < 0:
            raise SettingsError(f"--max_eval_sentences must be >= 0 (0 = all), got {args.max_eval_sentences}")
        overrides["max_eval_sentences"] = args.max_eval_sentences or None
    if args.allow_other_training_data:
        overrides["allow_other_training_data"] = True
    if args.config is not None:
        given = [
            flag for flag, on in (("TASK", args.task), ("--quick", args.quick), ("--sweep", args.sweep)) if on
        ]
        if given:
            raise SettingsError(f"{', '.join(given)}: --config already says the task and the sweep")
        config = ReproductionConfig.from_results(args.config).replace(**overrides)
    elif args.task is None:
        raise SettingsError("give the TASK (dyck or code), or --config with a report's results.json")
    else:
        config = ReproductionConfig.for_task(
            args.task, sweep=args.sweep or "full", quick=args.quick, **overrides
        )
    presets = task_presets(config.task)
    if config.data_config not in presets:
        raise SettingsError(
            f"--data_config must be one of {sorted(presets)} for {config.task}, got {config.data_config!r}"
        )
    return config


def cmd_reproduce(args: argparse.Namespace) -> None:
    from hf_illusions.reproduction import reproduce

    config = reproduce_config(args)
    if args.show_config:
        print(json.dumps(config.to_dict(relative_to="."), indent=2))  # paths from here
        return
    check_output_path(config.out, arg="--out", reuse=True)  # an existing report folder is resumed
    readme = reproduce(config)
    print(f"report: {readme}")


def cmd_findings(args: argparse.Namespace) -> None:
    from hf_illusions.seeds import README_PROXIES, write_summary

    groups = {}
    for name, *dirs in args.group:
        if not dirs:
            raise SettingsError(f"--group {name}: give at least one report folder after the group name")
        groups[name] = dirs
    path = write_summary(groups, args.summary, args.out, README_PROXIES, args.readme)
    print(f"findings: {path}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``reproduce`` and ``findings`` commands."""
    reproduce = sub.add_parser(
        "reproduce",
        help="data -> model -> simplifiers -> faithfulness report",
        description="Run a reproduction: TASK's preset (the flags change it), or the config a report "
        "recorded in its results.json (--config; flags given change it). --show_config prints the "
        "config without running it. The presets are in hf_illusions/presets.py.",
    )
    reproduce.add_argument(
        "task", nargs="?", choices=sorted(TASKS), help="which study (required without --config)"
    )
    reproduce.add_argument(
        "--config",
        default=None,
        help="a report's results.json (or its folder): run the config it recorded again "
        "(default: TASK's preset)",
    )
    reproduce.add_argument("--model", default=None, help="the original model (default: checkpoints/<task>)")
    reproduce.add_argument(
        "--data",
        default=None,
        help="dataset folder, built when missing (default: dyck-illusions / code-illusions)",
    )
    reproduce.add_argument(
        "--data_config",
        default=None,
        help="preset built when --data is missing (default: dyck-20-10 / code-py)",
    )
    reproduce.add_argument(
        "--out", default=None, help="report folder; an existing one is resumed (default: reports/<task>)"
    )
    reproduce.add_argument(
        "--simplifiers",
        type=lambda text: text.split(","),
        default=None,
        help=f"comma-separated families: {','.join(FAMILIES)} "
        "(default: all for dyck; svd,kmeans,onehot for code)",
    )
    reproduce.add_argument("--quick", action="store_true", help="fewer settings and sentences (a smoke run)")
    reproduce.add_argument(
        "--sweep",
        choices=("full", "seed"),
        default=None,
        help="full: every setting (the default; attention metrics for the representative settings, "
        "ATTENTION_PROXIES); seed: each family's representative settings, no attention metrics, for "
        "extra training seeds (SEED_SWEEPS in hf_illusions/presets.py)",
    )
    reproduce.add_argument(
        "--max_eval_sentences",
        type=int,
        default=None,
        help="sentences (code: windows) scored per test split, a seeded sample; 0 = all (default: "
        "EVAL_SENTENCES in hf_illusions/presets.py, 1000 for dyck and 400 for code)",
    )
    reproduce.add_argument(
        "--allow_other_training_data",
        action="store_true",
        help="evaluate even if the data's train split differs from the one the model was trained on",
    )
    reproduce.add_argument(
        "--show_config", action="store_true", help="print the config as JSON and stop (nothing is run)"
    )
    reproduce.set_defaults(func=cmd_reproduce)

    findings = sub.add_parser(
        "findings",
        help="the paper's findings across seeds: reports/findings + reports/summary (+ the README block)",
    )
    findings.add_argument(
        "--group",
        action="append",
        nargs="+",
        required=True,
        metavar=("NAME", "REPORT"),
        help="a group of seeds: its name, then its report folders, main seed first "
        "(e.g. --group dyck reports/dyck reports/dyck-seed1); repeatable",
    )
    findings.add_argument("--summary", default="reports/summary", help="compact summaries (committed)")
    findings.add_argument("--out", default="reports/findings", help="the across-seed report")
    findings.add_argument(
        "--readme", default=None, help="rewrite this README's generated results block (default: none)"
    )
    findings.set_defaults(func=cmd_findings)

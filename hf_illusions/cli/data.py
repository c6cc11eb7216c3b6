"""`hf-illusions data build | verify | sources`, and `hf-illusions train` (the training script's flags)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_illusions.errors import SettingsError
from hf_illusions.jsonio import write_json
from hf_illusions.paths import check_output_path
from hf_illusions.presets import TASK_DEFAULTS, TASKS


def cmd_data_build(args: argparse.Namespace) -> None:
    if args.task == "code":
        from hf_illusions.data.code_folder import write_code_folder as write_folder
    else:
        from hf_illusions.data.hub_folder import write_dyck_folder as write_folder
    from hf_illusions.train import task_presets

    defaults = TASK_DEFAULTS[args.task]
    config, out = args.data_config or defaults["data_config"], args.out or defaults["data"]
    presets = task_presets(args.task)
    if config not in presets:
        raise SettingsError(f"--data_config must be one of {sorted(presets)}, got {config!r}")
    check_output_path(out, args.overwrite, arg="--out")
    out = write_folder(out, config_name=config, overwrite=args.overwrite)
    print(f"wrote {out}/ (load it with datasets.load_dataset({str(out)!r}))")


def cmd_data_sources(args: argparse.Namespace) -> None:
    from hf_illusions.data.code_corpus import PINNED_SOURCES, SOURCES_ENV, install_pinned_sources

    folder = install_pinned_sources(args.out)
    pins = " ".join(f"{n}=={v}" for n, v in PINNED_SOURCES.items())
    print(f"{folder}: {pins}\nbuild with {SOURCES_ENV}={folder} hf-illusions data build code …")


def cmd_data_verify(args: argparse.Namespace) -> None:
    from hf_illusions.data.code_folder import SETTINGS_FILE as CODE_SETTINGS
    from hf_illusions.data.code_folder import verify_code_folder
    from hf_illusions.data.verify import verify_dyck_folder

    if args.out:
        check_output_path(args.out, args.overwrite, arg="--out", kind="file")
    is_code = (Path(args.path) / CODE_SETTINGS).is_file()
    report = (verify_code_folder if is_code else verify_dyck_folder)(args.path)
    if args.out:
        write_json(args.out, report)
    for line in report["violations"]:
        print(f"violation: {line}")
    print(f"{args.path}: {'OK' if report['ok'] else 'FAILED'} {json.dumps(report['checks'])}")
    if not report["ok"]:
        raise SystemExit(1)


def cmd_train(args: argparse.Namespace, rest: list[str]) -> None:
    from hf_illusions.train import main as train_main

    print(f"trained model in {train_main(rest)}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``data`` and ``train`` commands."""
    data = sub.add_parser("data", help="build or verify datasets").add_subparsers(
        dest="data_command", required=True
    )
    build = data.add_parser("build", help="build a Hub-style dataset folder")
    build.add_argument("task", choices=sorted(TASKS), help="which dataset")
    build.add_argument(
        "--data_config",
        default=None,
        help="preset: dyck-20-10 (the paper's) or tiny; code-py or tiny for code "
        "(default: dyck-20-10 / code-py)",
    )
    build.add_argument("--config", dest="data_config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    build.add_argument(
        "--out", default=None, help="folder to write (default: dyck-illusions / code-illusions)"
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    build.set_defaults(func=cmd_data_build)
    verify = data.add_parser("verify", help="re-derive every split property from the stored tokens")
    verify.add_argument("path", help="a dataset folder written by `data build` (Dyck or code)")
    verify.add_argument("--out", help="also write the report as JSON here (default: print only)")
    verify.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    verify.set_defaults(func=cmd_data_verify)
    sources = data.add_parser(
        "sources",
        help="install the pinned package versions the code corpus is read from (a folder for "
        "$HF_ILLUSIONS_CODE_SOURCES), so `data build code` gives the shipped models' exact splits",
    )
    sources.add_argument("--out", required=True, help="folder to install them into (pip --target)")
    sources.set_defaults(func=cmd_data_sources)

    train = sub.add_parser(
        "train", help="train a model (`hf-illusions train --help` lists its flags)", add_help=False
    )
    train.set_defaults(func=cmd_train, passthrough=True)

"""`hf-illusions card model | dataset | proxy | metric | space` and `hf-illusions push`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_illusions.argparsing import positive_int
from hf_illusions.cli.common import DEFAULT_DYCK_CHECKPOINT
from hf_illusions.errors import PathError, SettingsError
from hf_illusions.paths import check_output_path


def cmd_card(args: argparse.Namespace) -> None:
    """Model card for a Dyck or code checkpoint; the task comes from --data (or from --results)."""
    from hf_illusions.cards import (
        data_task,
        evaluate_checkpoint,
        read_results,
        results_task,
        write_model_card,
    )
    from hf_illusions.checkpoints import load_checkpoint

    run = Path(args.run) if args.run else None
    step = None
    state = Path(args.path).parent / "trainer_state.json"
    if state.is_file():  # a <run>/checkpoint-N/model folder: describe step N, not the run's latest
        try:
            step = int(json.loads(state.read_text())["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise PathError(f"{str(state)!r} is not a valid trainer_state.json: {err!r}") from None
    train_args, final_loss = {}, None
    if run is not None:
        missing = [f for f in ("train_args.json", "metrics.jsonl") if not (run / f).is_file()]
        if missing:
            raise PathError(f"--run {str(run)!r} is not a training output_dir: {missing} missing")
        try:
            train_args = json.loads((run / "train_args.json").read_text())
            lines = (run / "metrics.jsonl").read_text().splitlines()
            losses = [json.loads(x) for x in lines if '"loss"' in x]
        except json.JSONDecodeError as err:
            raise PathError(
                f"--run {str(run)!r} holds a corrupt train_args.json or metrics.jsonl: {err}"
            ) from None
        if step is not None:  # the run may have trained on since the checkpoint was saved
            losses = [x for x in losses if x.get("step", 0) <= step]
        final_loss = losses[-1]["loss"] if losses else None
    if args.results:  # re-render from saved numbers (e.g. the folder's eval_results.json)
        accuracy = read_results(args.results)
        task = results_task(accuracy)
    else:
        task = data_task(args.data)
        model = load_checkpoint(args.path)
        accuracy = evaluate_checkpoint(model, args.data, progress=True, max_sentences=args.max_sentences)
    command = args.command or f"accelerate launch scripts/train.py --task {task}"
    readme = write_model_card(args.path, accuracy, train_args, command, final_loss, args.wall_time, step=step)
    print(f"wrote {readme} ({task} model card)")


def cmd_card_dataset(args: argparse.Namespace) -> None:
    from hf_illusions.cards import write_dataset_card

    print(f"wrote {write_dataset_card(args.path)}")


def cmd_card_proxy(args: argparse.Namespace) -> None:
    from hf_illusions.cards import evaluate_proxy, proxy_results, read_results, write_proxy_card
    from hf_illusions.checkpoints import load_checkpoint

    if args.results:
        results = proxy_results(read_results(args.results), args.name or Path(args.path).name)
        source = args.results
    elif (Path(args.path) / "simplification_config.json").is_file():  # a stock model's adapter
        from hf_illusions.cards.proxy import write_adapter_card

        print(f"wrote {write_adapter_card(args.path)} (no results: pass --results to add them)")
        return
    else:
        proxy, original = load_checkpoint(args.path), load_checkpoint(args.model)
        results = evaluate_proxy(proxy, original, args.data, max_sentences=args.max_sentences, progress=True)
        source = f"`hf-illusions card proxy` against {args.model} on {args.data}"
    base = {"base_model": args.base_model} if args.base_model else {}
    print(f"wrote {write_proxy_card(args.path, results, results_source=source, **base)}")


def cmd_card_metric(args: argparse.Namespace) -> None:
    from hf_illusions.cards import write_metric_folder

    check_output_path(args.out, args.overwrite, arg="--out")
    print(f"wrote {write_metric_folder(args.out)} (push it with `hf-illusions push metric {args.out}`)")


def cmd_card_space(args: argparse.Namespace) -> None:
    from hf_illusions.cards import write_space_card

    print(f"wrote {write_space_card(args.path, args.report)}")


def _is_code_folder(path: str | Path) -> bool:
    """A code model (character vocabulary) or a `code-illusions` dataset folder, judged from its files."""
    from hf_illusions.data import code
    from hf_illusions.data.code_folder import SETTINGS_FILE

    path = Path(path)
    if (path / SETTINGS_FILE).is_file():
        return True
    try:
        return json.loads((path / "config.json").read_text()).get("vocab_size") == code.VOCAB_SIZE
    except (OSError, ValueError, AttributeError):
        return False


def cmd_push(args: argparse.Namespace) -> None:
    from hf_illusions.hub import HUB_REPO_IDS, push_folder

    default = args.kind
    if args.kind in ("model", "dataset") and _is_code_folder(args.path):
        default = f"code_{args.kind}"  # a code model or dataset has its own Hub repository
    repo_id = args.repo_id or HUB_REPO_IDS.get(default)
    if repo_id is None:
        raise SettingsError(f"--repo_id is required for `push {args.kind}` (e.g. you/{Path(args.path).name})")
    plan = push_folder(
        args.kind,
        args.path,
        repo_id,
        dry_run=args.dry_run,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(plan.describe())
    print("dry run: nothing was uploaded" if args.dry_run else f"uploaded: {plan.url} (commit {plan.commit})")


def add_max_sentences(card: argparse.ArgumentParser, how: str = "") -> None:
    """``--max_sentences`` of the cards that measure a model on its data."""
    card.add_argument(
        "--max_sentences",
        type=positive_int,
        default=None,
        help=f"measure on a seeded sample of N per split ({how}default: all)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``card`` and ``push`` commands."""
    cards = sub.add_parser("card", help="render a card (README.md with Hub metadata) from results")
    kinds = cards.add_subparsers(dest="card_kind", required=True)
    card = kinds.add_parser("model", help="measure a checkpoint and render its model card")
    card.add_argument("path", help="the model folder the card is written into")
    card.add_argument(
        "--data", default="dyck-illusions", help="dyck-illusions or code-illusions folder (picks the card)"
    )
    card.add_argument(
        "--results", help="render from this eval_results.json instead of measuring (default: measure)"
    )
    card.add_argument(
        "--run",
        help="the training output_dir (train_args.json, metrics.jsonl) (default: no training details)",
    )
    card.add_argument(
        "--command", default=None, help="the training command (default: scripts/train.py --task <task>)"
    )
    card.add_argument("--wall_time", default="unknown", help="how long training took, as written on the card")
    add_max_sentences(card, "by package for code; ")
    card.set_defaults(func=cmd_card)
    card = kinds.add_parser("dataset", help="re-render a dataset folder's card from its files")
    card.add_argument("path", nargs="?", default="dyck-illusions", help="the dataset folder")
    card.set_defaults(func=cmd_card_dataset)
    card = kinds.add_parser("proxy", help="render a proxy's card from evaluate/reproduce results")
    card.add_argument("path", help="the proxy folder the card is written into")
    card.add_argument(
        "--results",
        help="`hf-illusions evaluate` JSON or a report's results.json "
        "(default: measure with --model on --data)",
    )
    card.add_argument("--name", help="the proxy's name in --results (default: the folder name)")
    card.add_argument(
        "--model", default=str(DEFAULT_DYCK_CHECKPOINT), help="the original model, when measuring"
    )
    card.add_argument("--data", default="dyck-illusions", help="dataset folder, when measuring")
    add_max_sentences(card)
    card.add_argument("--base_model", help="Hub id of the original (default: the project's model)")
    card.set_defaults(func=cmd_card_proxy)
    card = kinds.add_parser("metric", help="write the faithfulness metric's Space folder around its card")
    card.add_argument("--out", default="faithfulness-metric", help="folder to write")
    card.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    card.set_defaults(func=cmd_card_metric)
    card = kinds.add_parser("space", help="render the Space's card and copy the report's plot into it")
    card.add_argument(
        "path",
        nargs="?",
        default=str(Path(__file__).resolve().parents[2] / "spaces_app"),
        help="the Space folder",
    )
    card.add_argument(
        "--report", help="a `reproduce` output folder (results.json, gap.png) (default: the card only)"
    )
    card.set_defaults(func=cmd_card_space)

    push = sub.add_parser("push", help="upload a checked folder to the Hub (upload_folder)")
    push.add_argument(
        "kind", choices=["model", "proxy", "dataset", "space", "metric"], help="what the folder holds"
    )
    push.add_argument("path", help="the folder to upload")
    push.add_argument("--repo_id", help="namespace/name (default: the project's repository of that kind)")
    push.add_argument("--dry_run", action="store_true", help="only check and list the files")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    push.add_argument("--revision", help="branch to commit to (default: main)")
    push.add_argument(
        "--commit_message", help="the commit's message (default: Upload <kind> with hf-illusions)"
    )
    push.set_defaults(func=cmd_push)

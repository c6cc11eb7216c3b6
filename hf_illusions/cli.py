"""`hf-illusions`: data, train, simplify, evaluate, reproduce.

Errors on bad input print one readable line and exit with status 2 (``--debug`` shows the
traceback); results are always written to files, and the paths are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_illusions.errors import IllusionsError

DEFAULT_DYCK_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dyck"


def positive_int(text: str) -> int:
    value = int(text)
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


def cmd_data_build(args: argparse.Namespace) -> None:
    from hf_illusions.data.dyck import PRESETS
    from hf_illusions.data.hub_folder import write_dyck_folder

    if args.config not in PRESETS:
        raise IllusionsError(f"--config must be one of {sorted(PRESETS)}, got {args.config!r}")
    out = write_dyck_folder(args.out, config_name=args.config, overwrite=args.overwrite)
    print(f"wrote {out}/ (load it with datasets.load_dataset({str(out)!r}))")


def cmd_data_verify(args: argparse.Namespace) -> None:
    from hf_illusions.data.verify import verify_dyck_folder

    report = verify_dyck_folder(args.path)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for line in report["violations"]:
        print(f"violation: {line}")
    print(f"{args.path}: {'OK' if report['ok'] else 'FAILED'} {json.dumps(report['checks'])}")
    if not report["ok"]:
        raise SystemExit(1)


def cmd_train(args: argparse.Namespace, rest: list[str]) -> None:
    from hf_illusions.train import main as train_main

    print(f"trained model in {train_main(rest)}")


def load_model(path: str | Path):
    """`AutoModelForCausalLM.from_pretrained` with a clear error for missing or foreign folders."""
    from transformers import AutoModelForCausalLM

    import hf_illusions.modeling
    import hf_illusions.simplify  # noqa: F401

    path = Path(path)
    if not (path / "config.json").is_file():
        raise IllusionsError(
            f"model folder {str(path)!r} has no config.json (expected a save_pretrained folder)"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(path).eval()
    except (OSError, ValueError, KeyError) as err:
        raise IllusionsError(f"could not load the model in {str(path)!r}: {err}") from err


def cmd_simplify(args: argparse.Namespace) -> None:
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.simplify import make_simplifier

    settings = (
        {"rank": args.rank} if args.method == "svd" else {"k": args.k} if args.method == "kmeans" else {}
    )
    simplifier = make_simplifier(args.method, layers=args.layers, n_sequences=args.n_sequences, **settings)
    model = load_model(args.model)
    train = load_folder(args.data)["train"]
    proxy = simplifier.fit(model, train)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise IllusionsError(f"--out {str(out)!r} already exists; pass --overwrite to replace it")
    proxy.save_pretrained(out)
    print(f"wrote proxy to {out}/ (AutoModelForCausalLM.from_pretrained({str(out)!r}))")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hf_illusions.data.dyck import TEST_SPLITS
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.evaluation import evaluate_models
    from hf_illusions.tasks.dyck import DyckTask

    ds = load_folder(args.data)
    splits = args.splits or list(TEST_SPLITS)
    unknown = [s for s in splits if s not in ds]
    if unknown:
        raise IllusionsError(f"--splits {unknown} not in {args.data!r}; available: {list(ds)}")
    original = load_model(args.model)
    proxies = {Path(p).name: load_model(p) for p in args.proxy}
    task = DyckTask(n_types=(original.config.vocab_size - 3) // 2)
    results = {}
    for split in splits:
        seqs = ds[split].data.column("input_ids").to_pylist()[: args.max_sentences]
        results[split] = evaluate_models(original, seqs, task, proxies, progress=True, desc=split)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from hf_illusions.reproduce import reproduce_dyck

    if args.task != "dyck":
        raise IllusionsError(f"task must be 'dyck', got {args.task!r}")
    kwargs = {}
    if args.quick:
        kwargs = {
            "svd_ranks": (1, 4, 16),
            "kmeans_ks": (4, 16),
            "max_eval_sentences": 200,
            "n_fit_sequences": 200,
        }
    readme = reproduce_dyck(
        model_dir=args.model,
        dataset_dir=args.data,
        out_dir=args.out,
        data_config=args.data_config,
        **kwargs,
    )
    print(f"report: {readme}")


def cmd_card(args: argparse.Namespace) -> None:
    from hf_illusions.cards import evaluate_checkpoint, write_model_card

    model = load_model(args.path)
    accuracy = evaluate_checkpoint(model, args.data, progress=True)
    run = Path(args.run) if args.run else None
    train_args, final_loss = {}, None
    if run is not None:
        train_args = json.loads((run / "train_args.json").read_text())
        losses = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
        final_loss = losses[-1]["loss"] if losses else None
    readme = write_model_card(args.path, accuracy, train_args, args.command, final_loss, args.wall_time)
    print(f"wrote {readme}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-illusions", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or verify datasets").add_subparsers(
        dest="data_command", required=True
    )
    build = data.add_parser("build", help="build a Hub-style dataset folder")
    build.add_argument("task", choices=["dyck"])
    build.add_argument("--config", default="dyck-20-10", help="preset: dyck-20-10 (paper) or tiny")
    build.add_argument("--out", default="dyck-illusions")
    build.add_argument("--overwrite", action="store_true")
    build.set_defaults(func=cmd_data_build)
    verify = data.add_parser("verify", help="re-derive every split property from the stored tokens")
    verify.add_argument("path")
    verify.add_argument("--out", help="also write the report as JSON here")
    verify.set_defaults(func=cmd_data_verify)

    train = sub.add_parser("train", help="train a model (flags as scripts/train.py --help)", add_help=False)
    train.set_defaults(func=cmd_train, passthrough=True)

    simplify = sub.add_parser("simplify", help="fit a simplifier and save the proxy model")
    simplify.add_argument("method", choices=["svd", "kmeans", "onehot"])
    simplify.add_argument("--model", default=str(DEFAULT_DYCK_CHECKPOINT))
    simplify.add_argument("--data", default="dyck-illusions")
    simplify.add_argument("--rank", type=positive_int, default=8)
    simplify.add_argument("--k", type=positive_int, default=16)
    simplify.add_argument("--layers", type=int_list, default=None, help="e.g. 0,1 (default: all)")
    simplify.add_argument("--n_sequences", type=positive_int, default=1000)
    simplify.add_argument("--out", required=True)
    simplify.add_argument("--overwrite", action="store_true")
    simplify.set_defaults(func=cmd_simplify)

    evaluate = sub.add_parser("evaluate", help="faithfulness of saved proxies on dataset splits")
    evaluate.add_argument("--model", default=str(DEFAULT_DYCK_CHECKPOINT))
    evaluate.add_argument("--proxy", action="append", default=[], help="proxy folder (repeatable)")
    evaluate.add_argument("--data", default="dyck-illusions")
    evaluate.add_argument("--splits", type=lambda s: s.split(","), default=None)
    evaluate.add_argument("--max_sentences", type=positive_int, default=None)
    evaluate.add_argument("--out", default="reports/evaluate.json")
    evaluate.set_defaults(func=cmd_evaluate)

    reproduce = sub.add_parser("reproduce", help="data -> model -> simplifiers -> faithfulness report")
    reproduce.add_argument("task", choices=["dyck"])
    reproduce.add_argument("--model", default=str(DEFAULT_DYCK_CHECKPOINT))
    reproduce.add_argument("--data", default="dyck-illusions")
    reproduce.add_argument("--data_config", default="dyck-20-10")
    reproduce.add_argument("--out", default="reports/dyck")
    reproduce.add_argument("--quick", action="store_true", help="fewer settings and sentences (a smoke run)")
    reproduce.set_defaults(func=cmd_reproduce)

    card = sub.add_parser("card", help="measure a checkpoint and render its model card (README.md)")
    card.add_argument("kind", choices=["model"])
    card.add_argument("path")
    card.add_argument("--data", default="dyck-illusions")
    card.add_argument("--run", help="the training output_dir (train_args.json, metrics.jsonl)")
    card.add_argument("--command", default="accelerate launch scripts/train.py --task dyck")
    card.add_argument("--wall_time", default="unknown")
    card.set_defaults(func=cmd_card)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if (argv and argv[0] == "train") or argv[:2] == ["--debug", "train"]:
        debug = argv[0] == "--debug"
        rest = argv[2:] if debug else argv[1:]
        return run(lambda: cmd_train(argparse.Namespace(), rest), debug)
    args = parser.parse_args(argv)
    return run(lambda: args.func(args), args.debug)


def run(action, debug: bool) -> int:
    try:
        action()
    except IllusionsError as err:
        if debug:
            raise
        print(f"hf-illusions: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

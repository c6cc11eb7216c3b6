"""`hf-illusions evaluate`: saved proxies on dataset splits, or a simplifier fitted on your own text."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hf_illusions.argparsing import positive_int
from hf_illusions.cli.common import (
    DEFAULT_DATA,
    DEFAULT_DYCK_CHECKPOINT,
    add_layers_and_heads,
    add_model_and_data,
    load_data_and_model,
)
from hf_illusions.errors import SettingsError
from hf_illusions.jsonio import write_json
from hf_illusions.own_config import SAMPLE_ARGUMENTS, OwnDataConfig
from hf_illusions.paths import check_output_path, portable_path


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.simplifier is not None or args.config is not None:
        cmd_evaluate_own(args)
        return
    given = [f"--{k}" for k, v in vars(args).items() if k in OWN_DATA_DEFAULTS and v != OWN_DATA_DEFAULTS[k]]
    if given:
        raise SettingsError(
            f"{', '.join(given)} apply only with --simplifier (fit and evaluate on your own text)"
        )
    from hf_illusions.data.hub_folder import select_splits
    from hf_illusions.evaluation import evaluate_models

    args.out = args.out or "reports/evaluate.json"
    check_output_path(args.out, args.overwrite, arg="--out", kind="file")
    names = [Path(p).name for p in args.proxy]
    if len(set(names)) < len(names):
        raise SettingsError(f"--proxy folders must have distinct names (they label the results), got {names}")
    ds, task, original, proxies = load_data_and_model(args.data, args.model, args.proxy)
    splits = select_splits(ds, args.splits or [s for s in ds if s.startswith("test_")], arg="--splits")
    results, scored = {}, {}
    for split in splits:
        seqs = ds[split].data.column("input_ids").to_pylist()[: args.max_sentences]
        scored[split] = len(seqs)
        results[split] = evaluate_models(original, seqs, task, proxies, progress=True, desc=split)
    # what the numbers rest on, beside them (`card proxy --results` reads "splits")
    start = Path(args.out).parent
    inputs = {
        "model": portable_path(args.model, start),
        "data": portable_path(args.data, start),
        "proxies": {name: portable_path(p, start) for name, p in zip(names, args.proxy, strict=True)},
        "sentences": {"scored": scored, "which": "the first of each split" if args.max_sentences else "all"},
    }
    write_json(args.out, {**inputs, "splits": results})
    print(f"wrote {args.out}")


#: `evaluate` flags of the own-data mode (``--simplifier``) and their defaults
OWN_DATA_DEFAULTS: dict[str, Any] = {
    "rank": None,
    "k": None,
    "layers": None,
    "heads": None,
    "text_column": "text",
    "fit_split": "train",
    "reference": None,
    "window": 128,
    "max_windows": None,
    "n_fit": 1000,
    "seed": 0,
    "no_bos": False,
    "save_proxy": None,
    "device": None,
    "dtype": None,
    "device_map": None,
}


def own_data_config(args: argparse.Namespace) -> OwnDataConfig:
    """The evaluation the flags describe; with ``--config``, the one a report recorded, changed by
    the flags given (those not at their defaults)."""
    names = [name for name in OWN_DATA_DEFAULTS if name not in ("no_bos", "save_proxy")]
    flags = {SAMPLE_ARGUMENTS.get(name, name): getattr(args, name) for name in names}
    flags |= {"model": args.model, "data": args.data, "out": args.out, "simplifier": args.simplifier}
    flags |= {"splits": args.splits, "add_bos": False if args.no_bos else None}
    if args.config is None:
        return OwnDataConfig.create(**{k: v for k, v in flags.items() if v is not None})
    defaults = {SAMPLE_ARGUMENTS.get(k, k): v for k, v in OWN_DATA_DEFAULTS.items()}
    defaults |= {"model": str(DEFAULT_DYCK_CHECKPOINT), "data": DEFAULT_DATA}
    changed = {k: v for k, v in flags.items() if v is not None and v != defaults.get(k)}
    return OwnDataConfig.from_results(args.config).replace(**changed)


def cmd_evaluate_own(args: argparse.Namespace) -> None:
    """``evaluate --simplifier …`` (or ``--config``): fit on the user's own text, write the report."""
    from hf_illusions.own_data import evaluate_own

    if args.proxy or args.max_sentences is not None:
        flag = "--proxy" if args.proxy else "--max_sentences"
        raise SettingsError(
            f"{flag} does not apply with --simplifier (it fits its own proxy; use --max_windows)"
        )
    config = own_data_config(args)
    check_output_path(config.out, args.overwrite, arg="--out")
    if args.save_proxy:
        check_output_path(args.save_proxy, args.overwrite, arg="--save_proxy")
    ev = evaluate_own(config, overwrite=args.overwrite)
    if not ev.is_main_process:  # a data-parallel run: the main process writes and reports
        return
    print(f"wrote {config.out}/results.json and {ev.report}")
    if args.save_proxy:
        if hasattr(ev.proxy, "simplification_config"):  # a stock model's proxy: a small adapter
            ev.proxy.save_pretrained(args.save_proxy, base_model_name_or_path=config.model)
        else:  # our own model's proxy: a full checkpoint (AutoModelForCausalLM)
            ev.proxy.save_pretrained(args.save_proxy)
        print(f"wrote the proxy to {args.save_proxy}/ (hf_illusions.load_proxy({args.save_proxy!r}))")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` command."""
    evaluate = sub.add_parser(
        "evaluate",
        help="faithfulness of saved proxies on dataset splits, or of a fitted proxy on your own text",
        description=(
            "Two modes. Without --simplifier: evaluate saved --proxy folders on a token dataset "
            "(Dyck/code folders; --out is a JSON file). With --simplifier: load --model (a folder "
            "or Hub id, any transformers causal LM, with its tokenizer), tokenize the --text_column "
            "of --data (a dataset folder or Hub id) into windows, fit the simplifier on --fit_split "
            "and write results.json, README.md and plots to the folder --out."
        ),
    )
    add_model_and_data(evaluate, "the original model (with --simplifier: any causal LM, folder or Hub id)")
    evaluate.add_argument(
        "--proxy", action="append", default=[], help="a saved proxy folder (repeatable; default: none)"
    )
    evaluate.add_argument(
        "--splits",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated (default: test_* splits; with --simplifier every split but --fit_split)",
    )
    evaluate.add_argument(
        "--max_sentences",
        type=positive_int,
        default=None,
        help="score only the first N sentences of each split (default: all)",
    )
    evaluate.add_argument(
        "--out",
        default=None,
        help="default reports/evaluate.json; with --simplifier a folder, reports/own_model",
    )
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    own = evaluate.add_argument_group("your own model and text (with --simplifier, or --config)")
    own.add_argument(
        "--config",
        default=None,
        help="a results.json of `evaluate --simplifier` (or its folder): run the evaluation it recorded "
        "again, changed by the flags given (default: the flags alone)",
    )
    own.add_argument(
        "--simplifier",
        choices=["svd", "kmeans", "onehot"],
        default=None,
        help="fit this simplifier on --data's text (default: none, evaluate saved --proxy folders)",
    )
    own.add_argument(
        "--rank", type=positive_int, default=None, help="svd: kept query/key directions (required there)"
    )
    own.add_argument("--k", type=positive_int, default=None, help="kmeans: clusters (required there)")
    add_layers_and_heads(own)
    own.add_argument("--text_column", default="text", help="column holding the text")
    own.add_argument("--fit_split", default="train", help="split the simplifier is fitted on")
    own.add_argument(
        "--reference", default=None, help="split gaps are taken against (default: first of --splits)"
    )
    own.add_argument("--window", type=positive_int, default=128, help="tokens per window, BOS included")
    own.add_argument(
        "--max_windows", type=positive_int, default=None, help="seeded sample per split (default: all)"
    )
    own.add_argument("--n_fit", type=positive_int, default=1000, help="most --fit_split windows to fit on")
    own.add_argument("--seed", type=int, default=0, help="seed of the window samples and the fit")
    own.add_argument("--no_bos", action="store_true", help="do not start windows with the BOS token")
    own.add_argument(
        "--save_proxy", default=None, help="also save the fitted proxy (an adapter) here (default: don't)"
    )
    own.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, mps")
    own.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default float32; bfloat16/float16 only where the device has them. Data-parallel: "
        "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m hf_illusions.cli evaluate …",
    )
    own.add_argument(
        "--device_map",
        default=None,
        help="for a model larger than one device: auto (or balanced, sequential, a device) spreads its "
        "layers over the GPUs as it loads (accelerate); not with --device (default: one device)",
    )
    evaluate.set_defaults(func=cmd_evaluate)

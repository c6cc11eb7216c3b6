"""`hf-illusions`: data, train, simplify, evaluate, reproduce, card, push.

Errors on bad input print one readable line and exit with status 2 (``--debug``, anywhere on
the line, shows the traceback); results are always written to files, and the paths are printed.
Outputs that exist are only replaced with ``--overwrite``, and are checked before any work.
A flag means the same in every command: ``--model`` the original model, ``--data`` its dataset
folder, ``--out`` what is written, ``--overwrite`` permission to replace it. Every ``--help``
shows each option's default; flags are spelled with underscores, and the hyphenated spelling
(``--dry-run``) is accepted too, as transformers' ``HfArgumentParser`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hf_illusions.argparsing import ArgumentParser, int_list, positive_int
from hf_illusions.errors import (
    CheckpointError,
    DatasetError,
    IllusionsError,
    PathError,
    SettingsError,
    SplitError,
)
from hf_illusions.paths import check_output_path

DEFAULT_DYCK_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dyck"
DEFAULT_CODE_CHECKPOINT = DEFAULT_DYCK_CHECKPOINT.with_name("code")


def cmd_data_build(args: argparse.Namespace) -> None:
    if args.task == "code":
        from hf_illusions.data.code_folder import write_code_folder as write_folder
    else:
        from hf_illusions.data.hub_folder import write_dyck_folder as write_folder
    from hf_illusions.train import task_presets

    _, data, data_config, _ = REPRODUCE_DEFAULTS[args.task]
    config, out = args.data_config or data_config, args.out or data
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


def write_json(path: str | Path, payload: dict) -> None:
    """Write then rename: an interrupted run never leaves a truncated report that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def load_data_and_model(data: str, model: str, proxies: Sequence[str] = ()) -> tuple:
    """(DatasetDict, task of the data, model, {name: proxy}), every model checked against the data.

    The task follows the folder: a `code-illusions` folder (``code_settings.json``) is scored per
    prediction type, a Dyck folder at closing brackets.
    """
    import pyarrow.compute as pc

    from hf_illusions.checkpoints import check_model_fits, load_checkpoint
    from hf_illusions.data import code
    from hf_illusions.data.code_folder import SETTINGS_FILE as CODE_SETTINGS
    from hf_illusions.data.hub_folder import load_folder, read_settings
    from hf_illusions.tasks.code import CodeTask
    from hf_illusions.tasks.dyck import DyckTask

    ds = load_folder(data)
    if (Path(data) / CODE_SETTINGS).is_file():
        task, vocab_size = (
            CodeTask.from_dataset({s: d for s, d in ds.items() if s != "train"}),
            code.VOCAB_SIZE,
        )
    else:
        task = DyckTask(n_types=read_settings(data).n_types)
        vocab_size = task.vocab.size
    longest = max(pc.max(pc.list_value_length(ds[s].data.column("input_ids"))).as_py() or 0 for s in ds)
    loaded = []
    for flag, path in [("--model", model), *(("--proxy", p) for p in proxies)]:
        loaded.append(load_checkpoint(path))
        try:
            check_model_fits(loaded[-1], vocab_size, longest, f"the data in {data!r}")
        except IllusionsError as err:
            raise type(err)(f"{flag} {path!r}: {err}") from None
    return ds, task, loaded[0], {Path(p).name: m for p, m in zip(proxies, loaded[1:], strict=True)}


def cmd_simplify(args: argparse.Namespace) -> None:
    from hf_illusions.simplify import SIMPLIFIERS, make_simplifier

    check_output_path(args.out, args.overwrite, arg="--out")
    # each simplifier's one swept setting: SVD's rank, the number of clusters / kept directions
    swept = {
        "svd": {"rank": args.rank},
        "kmeans": {"k": args.k},
        "interaction_basis": {"k": args.k},
        "sparse_circuit": {"target_loss": args.target_loss},
    }
    settings = dict(swept.get(args.method, {}))
    if SIMPLIFIERS[args.method].needs_data:  # one-hot attention is fitted on nothing
        settings["n_sequences"] = args.n_sequences
    if args.method == "sparse_circuit":
        if args.target_loss is None:
            raise SettingsError("--target_loss is required for sparse_circuit (nats per token, e.g. 2.15)")
        for flag in ("--layers", "--heads"):
            if getattr(args, flag[2:]) is not None:
                raise SettingsError(
                    f"{flag} does not apply to sparse_circuit: it prunes nodes in every layer and head"
                )
    else:
        settings |= {"layers": args.layers, "heads": args.heads}
    simplifier = make_simplifier(args.method, **settings)
    stock = _stock_model(args.model)
    if stock is not None:  # GPT-2, Llama, …: fitted on pre-tokenized rows, saved as an adapter
        proxy = simplifier.fit(stock, _token_rows(args.data, args.fit_split))
        proxy.save_pretrained(args.out, base_model_name_or_path=args.base_model or args.model)
        print(f"wrote the proxy adapter to {args.out}/ (hf_illusions.load_proxy({args.out!r}))")
        return
    ds, _, model, _ = load_data_and_model(args.data, args.model)
    proxy = simplifier.fit(model, ds[args.fit_split])
    proxy.save_pretrained(args.out)
    print(f"wrote proxy to {args.out}/ (AutoModelForCausalLM.from_pretrained({args.out!r}))")


def _stock_model(path: str) -> Any:
    """A transformers model that is not one of ours (folder or Hub id; safetensors only), or None."""
    from hf_illusions.checkpoints import model_classes, resolve

    folder = resolve(path)
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None  # load_checkpoint explains what is wrong with the folder
    if model_type in model_classes():
        return None
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"--model {path!r}: could not load it with AutoModelForCausalLM: {err}"
        ) from None


def _token_rows(data: str, split: str) -> Any:
    """The ``split`` of a dataset folder (``save_to_disk`` or parquet/Hub layout) with ``input_ids``."""
    import datasets

    try:
        loaded = datasets.load_from_disk(data) if (Path(data) / "dataset_dict.json").is_file() else None
        loaded = loaded if loaded is not None else datasets.load_dataset(data)
    except (OSError, ValueError, FileNotFoundError) as err:
        raise DatasetError(f"--data {data!r} could not be loaded as a dataset: {err}") from None
    if split not in loaded:
        raise SplitError(f"--fit_split {split!r} is not a split of {data!r} (splits: {sorted(loaded)})")
    if "input_ids" not in loaded[split].column_names:
        raise DatasetError(
            f"--data {data!r} split {split!r} has no 'input_ids' column (columns: "
            f"{loaded[split].column_names}); tokenize it with the model's tokenizer first"
        )
    return loaded[split]


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.simplifier is not None:
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
    results = {}
    for split in splits:
        seqs = ds[split].data.column("input_ids").to_pylist()[: args.max_sentences]
        results[split] = evaluate_models(original, seqs, task, proxies, progress=True, desc=split)
    write_json(args.out, results)
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


def cmd_evaluate_own(args: argparse.Namespace) -> None:
    """``evaluate --simplifier …``: fit on the user's own text and write the full report to --out."""
    from hf_illusions.own_data import evaluate_own_model

    if args.proxy or args.max_sentences is not None:
        flag = "--proxy" if args.proxy else "--max_sentences"
        raise SettingsError(
            f"{flag} does not apply with --simplifier (it fits its own proxy; use --max_windows)"
        )
    out = args.out or "reports/own_model"
    check_output_path(out, args.overwrite, arg="--out")
    if args.save_proxy:
        check_output_path(args.save_proxy, args.overwrite, arg="--save_proxy")
    ev = evaluate_own_model(
        args.model,
        args.data,
        simplifier=args.simplifier,
        rank=args.rank,
        k=args.k,
        layers=args.layers,
        heads=args.heads,
        text_column=args.text_column,
        fit_split=args.fit_split,
        splits=args.splits,
        reference=args.reference,
        window=args.window,
        max_windows=args.max_windows,
        n_fit=args.n_fit,
        seed=args.seed,
        add_bos=False if args.no_bos else None,
        out=out,
        overwrite=args.overwrite,
        progress=True,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
    )
    if not ev.is_main_process:  # a data-parallel run: the main process writes and reports
        return
    print(f"wrote {out}/results.json and {ev.report}")
    if args.save_proxy:
        if hasattr(ev.proxy, "simplification_config"):  # a stock model's proxy: a small adapter
            ev.proxy.save_pretrained(args.save_proxy, base_model_name_or_path=args.model)
        else:  # our own model's proxy: a full checkpoint (AutoModelForCausalLM)
            ev.proxy.save_pretrained(args.save_proxy)
        print(f"wrote the proxy to {args.save_proxy}/ (hf_illusions.load_proxy({args.save_proxy!r}))")


REPRODUCE_DEFAULTS = {  # task -> (model, data folder, data preset, report folder)
    "dyck": (str(DEFAULT_DYCK_CHECKPOINT), "dyck-illusions", "dyck-20-10", "reports/dyck"),
    "code": (str(DEFAULT_CODE_CHECKPOINT), "code-illusions", "code-py", "reports/code"),
}


def cmd_reproduce(args: argparse.Namespace) -> None:
    from hf_illusions.reproduce import (
        DEFAULT_CIRCUIT_SLACKS,
        DEFAULT_IB_KS,
        check_families,
        reproduce_code,
        reproduce_dyck,
    )
    from hf_illusions.train import task_presets

    model, data, data_config, out = (
        given or default
        for given, default in zip(
            (args.model, args.data, args.data_config, args.out), REPRODUCE_DEFAULTS[args.task], strict=True
        )
    )
    presets = task_presets(args.task)
    if data_config not in presets:
        raise SettingsError(
            f"--data_config must be one of {sorted(presets)} for {args.task}, got {data_config!r}"
        )
    check_output_path(out, arg="--out", reuse=True)  # an existing report folder is resumed
    kwargs: dict = {"simplifiers": check_families(args.simplifiers) if args.simplifiers else None}
    if args.task == "dyck":
        kwargs |= {"interaction_basis_ks": DEFAULT_IB_KS, "circuit_slacks": DEFAULT_CIRCUIT_SLACKS}
    from hf_illusions.reproduce import EVAL_SENTENCES

    kwargs["max_eval_sentences"] = EVAL_SENTENCES[args.task]
    if args.sweep == "seed":
        from hf_illusions.reproduce import SEED_SWEEPS

        kwargs |= SEED_SWEEPS[args.task]
    else:
        from hf_illusions.reproduce import ATTENTION_PROXIES

        kwargs["attention_metrics"] = ATTENTION_PROXIES[args.task]
    if args.quick:
        kwargs |= {"svd_ranks": (1, 4, 16), "kmeans_ks": (4, 16), "max_eval_sentences": 200}
        kwargs |= {"n_fit_sequences": 200 if args.task == "dyck" else 50}
        if args.task == "dyck":
            kwargs |= {"interaction_basis_ks": (16,), "circuit_slacks": (0.1,)}
    if args.max_eval_sentences is not None and args.max_eval_sentences < 0:
        raise SettingsError(f"--max_eval_sentences must be >= 0 (0 = all), got {args.max_eval_sentences}")
    if args.max_eval_sentences is not None:  # 0 = every sentence of every split
        kwargs["max_eval_sentences"] = args.max_eval_sentences or None
    kwargs["allow_other_training_data"] = args.allow_other_training_data
    run = reproduce_dyck if args.task == "dyck" else reproduce_code
    readme = run(model_dir=model, dataset_dir=data, out_dir=out, data_config=data_config, **kwargs)
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


def build_parser() -> argparse.ArgumentParser:
    from hf_illusions.simplify import SIMPLIFIERS  # imported with the package anyway (registration)
    from hf_illusions.version import __version__

    parser = ArgumentParser(prog="hf-illusions", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors (anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or verify datasets").add_subparsers(
        dest="data_command", required=True
    )
    build = data.add_parser("build", help="build a Hub-style dataset folder")
    build.add_argument("task", choices=sorted(REPRODUCE_DEFAULTS), help="which dataset")
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

    simplify = sub.add_parser("simplify", help="fit a simplifier and save the proxy model")
    simplify.add_argument("method", choices=list(SIMPLIFIERS), help="which simplifier")
    add_model_and_data(simplify, "the original model: ours, or any transformers causal LM (folder or Hub id)")
    simplify.add_argument("--rank", type=positive_int, default=8, help="svd: kept query/key directions")
    simplify.add_argument(
        "--k", type=positive_int, default=16, help="kmeans: clusters; interaction_basis: kept directions"
    )
    add_layers_and_heads(simplify)
    simplify.add_argument(
        "--target_loss",
        type=float,
        default=None,
        help="sparse_circuit (required there): largest next-token loss allowed, nats per token",
    )
    simplify.add_argument(
        "--n_sequences", type=positive_int, default=1000, help="sequences of --fit_split to fit on"
    )
    simplify.add_argument("--fit_split", default="train", help="split of --data the simplifier is fitted on")
    simplify.add_argument(
        "--base_model", help="stock models: Hub id recorded in the adapter (default: --model as given)"
    )
    simplify.add_argument("--out", required=True, help="folder the proxy is saved to")
    simplify.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    simplify.set_defaults(func=cmd_simplify)

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
    own = evaluate.add_argument_group("your own model and text (with --simplifier)")
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

    reproduce = sub.add_parser("reproduce", help="data -> model -> simplifiers -> faithfulness report")
    reproduce.add_argument("task", choices=sorted(REPRODUCE_DEFAULTS), help="which study")
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
        help="comma-separated families: svd,kmeans,onehot,interaction_basis,sparse_circuit "
        "(default: all for dyck; svd,kmeans,onehot for code)",
    )
    reproduce.add_argument("--quick", action="store_true", help="fewer settings and sentences (a smoke run)")
    reproduce.add_argument(
        "--sweep",
        choices=("full", "seed"),
        default="full",
        help="full: every setting (default; attention metrics for the representative settings, "
        "ATTENTION_PROXIES); seed: each family's representative settings on half the sentences, no "
        "attention metrics, for extra training seeds (see SEED_SWEEPS in hf_illusions/reproduce.py)",
    )
    reproduce.add_argument(
        "--max_eval_sentences",
        type=int,
        default=None,
        help="sentences (code: windows) scored per test split, a seeded sample; 0 = all (default: "
        "EVAL_SENTENCES in hf_illusions/reproduce.py, 1000 for dyck and 400 for code)",
    )
    reproduce.add_argument(
        "--allow_other_training_data",
        action="store_true",
        help="evaluate even if the data's train split differs from the one the model was trained on",
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
    card.add_argument(
        "--max_sentences",
        type=positive_int,
        default=None,
        help="measure on a seeded sample of N per split (by package for code; default: all)",
    )
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
    card.add_argument(
        "--max_sentences",
        type=positive_int,
        default=None,
        help="measure on a seeded sample of N per split (default: all)",
    )
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
        default=str(Path(__file__).resolve().parents[1] / "spaces_app"),
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
    return parser


def add_model_and_data(parser: argparse.ArgumentParser, model_help: str) -> None:
    """``--model`` and ``--data``, with the same defaults wherever a command fits or scores a model."""
    parser.add_argument("--model", default=str(DEFAULT_DYCK_CHECKPOINT), help=model_help)
    parser.add_argument(
        "--data", default="dyck-illusions", help="dataset folder (or Hub id) the model is fitted / scored on"
    )


def add_layers_and_heads(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--layers`` and ``--heads``, passed as ``layers=`` / ``heads=`` to the simplifier."""
    parser.add_argument(
        "--layers",
        type=int_list,
        default=None,
        help="comma-separated layers to simplify, e.g. 0,1 (default: all)",
    )
    parser.add_argument(
        "--heads",
        type=int_list,
        default=None,
        help="comma-separated heads to simplify in each of --layers, e.g. 0,2 (default: all)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["train"]:  # every flag after `train` belongs to the training script
        return run(lambda: cmd_train(argparse.Namespace(), argv[1:]), debug)

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


if __name__ == "__main__":
    sys.exit(main())

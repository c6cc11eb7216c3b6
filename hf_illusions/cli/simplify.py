"""`hf-illusions simplify`: fit one simplifier on a model (ours or any causal LM) and save the proxy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hf_illusions.argparsing import positive_int
from hf_illusions.cli.common import add_layers_and_heads, add_model_and_data, load_data_and_model
from hf_illusions.errors import CheckpointError, DatasetError, SettingsError, SplitError
from hf_illusions.paths import check_output_path


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``simplify`` command."""
    from hf_illusions.simplify import SIMPLIFIERS  # imported with the package anyway (registration)

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

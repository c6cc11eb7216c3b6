"""What several commands share: the default model, ``--model`` / ``--data`` / ``--layers`` /
``--heads`` flags, and loading a dataset folder with the models checked against it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hf_illusions.argparsing import int_list
from hf_illusions.errors import IllusionsError
from hf_illusions.presets import TASK_DEFAULTS

DEFAULT_DYCK_CHECKPOINT = Path(TASK_DEFAULTS["dyck"]["model"])
DEFAULT_DATA = TASK_DEFAULTS["dyck"]["data"]


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


def add_model_and_data(parser: argparse.ArgumentParser, model_help: str) -> None:
    """``--model`` and ``--data``, with the same defaults wherever a command fits or scores a model."""
    parser.add_argument("--model", default=str(DEFAULT_DYCK_CHECKPOINT), help=model_help)
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help="dataset folder (or Hub id) the model is fitted / scored on"
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

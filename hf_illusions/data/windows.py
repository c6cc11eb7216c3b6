"""Fixed-length token windows from a user's text dataset, per split, seeded and deterministic.

Packing (the usual causal-LM evaluation layout): each split's texts, in dataset order, are
tokenized with the model's tokenizer *without* special tokens and joined into one token stream,
each text followed by the tokenizer's EOS token when it has one (so a window that spans two texts
sees the boundary the model was trained with). The stream is cut into consecutive,
non-overlapping windows; a leftover shorter than a window is dropped. BOS: when the tokenizer
has a BOS token (and ``add_bos`` is not False) every window starts with it and holds
``window - 1`` text tokens, so the first text token is predicted from BOS rather than from
nothing and no position ever predicts BOS; ``add_bos=False`` (or no BOS token) packs ``window``
text tokens. Each window yields ``window - 1`` scored next-token positions either way.
``max_windows`` keeps a uniform sample of the windows (seeded per split with
:func:`~hf_illusions.statistics.split_seed`), in stream order; :class:`Windows` records where each
one starts in the stream, so a result says exactly which tokens it rests on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_illusions.errors import DatasetError, SettingsError, SplitError


@dataclass
class Windows:
    """The windows of one split and how they were cut (see the module docstring)."""

    split: str
    input_ids: list[list[int]]
    #: offset in the split's token stream of each window's first text token
    starts: list[int]
    n_texts: int
    n_tokens: int
    n_available: int
    window: int
    seed: int
    bos_token_id: int | None
    separator_token_id: int | None

    def settings(self) -> dict[str, Any]:
        """How windows are cut (the same for every split of one run)."""
        return {
            "window": self.window,
            "seed": self.seed,
            "bos_token_id": self.bos_token_id,
            "separator_token_id": self.separator_token_id,
        }

    def summary(self) -> dict[str, Any]:
        """What ``results.json`` records of the split: sizes, and every window's start."""
        return {
            "split": self.split,
            "n_texts": self.n_texts,
            "n_tokens": self.n_tokens,
            "n_available": self.n_available,
            "n_windows": len(self.input_ids),
            "starts": self.starts,
        }


def load_text_splits(data: Any, text_column: str, splits: Sequence[str], arg: str = "splits") -> Any:
    """The ``DatasetDict`` of ``data`` (folder, Hub id or DatasetDict), checked for ``splits`` and the column.

    A folder written by ``save_to_disk`` loads with ``load_from_disk``; anything else (a folder of
    parquet/json/csv/text files, a Hub id) with ``load_dataset``.
    """
    import datasets

    ds = data
    if isinstance(data, (str, Path)):
        try:
            if (Path(data) / "dataset_dict.json").is_file():
                ds = datasets.load_from_disk(str(data))
            else:
                ds = datasets.load_dataset(str(data))
        except (OSError, ValueError, FileNotFoundError) as err:
            raise DatasetError(f"data {str(data)!r} could not be loaded as a dataset: {err}") from None
    if not isinstance(ds, datasets.DatasetDict):
        raise DatasetError(
            f"data must be a dataset with named splits (a DatasetDict), got {type(ds).__name__}"
        )
    unknown = [s for s in splits if s not in ds]
    if unknown:
        raise SplitError(f"{arg} {unknown} not in the dataset; available splits: {list(ds)}")
    for split in splits:
        columns = ds[split].column_names
        if text_column not in columns:
            raise DatasetError(
                f"split {split!r} has no text column {text_column!r} (columns: {columns}); "
                "name the column holding the text with text_column / --text_column"
            )
    return ds


def pack_windows(
    token_lists: Sequence[Sequence[int]],
    window: int,
    bos_token_id: int | None,
    separator_token_id: int | None,
    max_windows: int | None = None,
    seed: int = 0,
    split: str = "",
) -> Windows:
    """Join ``token_lists`` into one stream and cut it into windows (see the module docstring)."""
    from hf_illusions.statistics import split_seed

    if window < 2:
        raise SettingsError(f"window must be >= 2 tokens (one prediction needs two), got {window}")
    if max_windows is not None and max_windows < 1:
        raise SettingsError(f"max_windows must be >= 1 (or None for all), got {max_windows}")
    body = window - (bos_token_id is not None)
    stream: list[int] = []
    for tokens in token_lists:
        stream.extend(int(t) for t in tokens)
        if separator_token_id is not None:
            stream.append(int(separator_token_id))
    n_available = len(stream) // body
    if n_available == 0:
        bos = " after BOS" if bos_token_id is not None else ""
        raise DatasetError(
            f"split {split!r} holds {len(stream)} tokens, fewer than one window of {body} text tokens{bos} "
            f"(window={window}); use a shorter window or more text"
        )
    chosen = np.arange(n_available)
    if max_windows is not None and max_windows < n_available:
        rng = np.random.default_rng(split_seed(split, seed))
        chosen = np.sort(rng.choice(n_available, size=max_windows, replace=False))
    prefix = [] if bos_token_id is None else [int(bos_token_id)]
    starts = [int(i) * body for i in chosen]
    return Windows(
        split=split,
        input_ids=[prefix + stream[s : s + body] for s in starts],
        starts=starts,
        n_texts=len(token_lists),
        n_tokens=len(stream),
        n_available=n_available,
        window=window,
        seed=seed,
        bos_token_id=bos_token_id,
        separator_token_id=separator_token_id,
    )


def split_windows(
    ds: Any,
    split: str,
    tokenizer: Any,
    text_column: str,
    window: int,
    max_windows: int | None = None,
    seed: int = 0,
    add_bos: bool | None = None,
) -> Windows:
    """Tokenize one split's texts with ``tokenizer`` and pack them (``add_bos=None``: if it has BOS)."""
    texts = ds[split][text_column]
    bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)), None)
    if bad is not None:
        raise DatasetError(
            f"split {split!r} column {text_column!r} must hold text; row {bad} is {type(texts[bad]).__name__}"
        )
    texts = [t for t in texts if t]
    bos = tokenizer.bos_token_id if add_bos is not False else None
    if add_bos and bos is None:
        raise SettingsError("add_bos=True but the tokenizer has no BOS token")
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    return pack_windows(ids, window, bos, tokenizer.eos_token_id, max_windows, seed, split)


__all__ = ["Windows", "load_text_splits", "pack_windows", "split_windows"]

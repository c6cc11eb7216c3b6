"""The model card of a character-level code checkpoint (Friedman et al. 2024, §5).

Scored as :class:`~hf_illusions.tasks.code.CodeTask` scores it everywhere else: the full-vocabulary
argmax must be the next character, and positions are grouped by the prediction type of the character
they predict. The card shows accuracy per split and per split × type, because the paper's illusions
sit in single types (repeated identifiers, the copy / induction case) that the overall number hides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard

from hf_illusions.cards.common import (
    HUB_REPO_IDS,
    IID_SPLIT,
    TEMPLATES,
    _checkpoint_card_data,
    _count_parameters,
    _hardware,
    _model_name,
    _portable_run,
    _save_checkpoint_card,
)
from hf_illusions.data.code_folder import SPLIT_DEFINITIONS
from hf_illusions.data.code_labels import PREDICTION_TYPES
from hf_illusions.data.sampling import sample_split_ids

#: Every split the card reports, in reading order (those absent from the folder are skipped).
CODE_ACCURACY_SPLITS = ("validation", "test_iid", "test_unseen_package", "test_other_language")
CODE_TAGS = ["hf-illusions", "interpretability", "code", "character-level", "illusion-transformer"]
#: The groups whose accuracy goes into ``model-index`` (one entry per split each).
INDEX_GROUPS = ("all", "identifier_repeat")
TYPE_DEFINITIONS = {
    "whitespace": "spaces, tabs and newlines (indentation, line ends)",
    "punctuation": "operators, brackets, delimiters",
    "keyword": "a language keyword (`def`, `return`; C11 keywords in C files)",
    "identifier_first": "a name's first occurrence in the window: not predictable by copying",
    "identifier_repeat": "a name that already occurred in the window: predictable by copying it",
    "number": "numeric literals",
    "string_or_comment": "string literals and comments",
}


def evaluate_code_checkpoint(
    model: Any,
    dataset_dir: str | Path,
    splits: Sequence[str] | None = None,
    progress: bool = False,
    max_sentences: int | None = None,
) -> dict:
    """Next-character accuracy of ``model`` per split and prediction type of a `code-illusions` folder.

    Returns ``{split: {"sentences": windows, "all": {"n", "accuracy", …}, <type>: {…}, …}}`` with
    ``accuracy`` ``None`` for a type with no positions (strict JSON, unlike NaN). ``splits``
    defaults to those of :data:`CODE_ACCURACY_SPLITS` the folder has; the model must have the code
    vocabulary and enough positions for the longest window (:class:`CheckpointError` otherwise).
    """
    import pyarrow.compute as pc

    from hf_illusions.checkpoints import check_model_fits
    from hf_illusions.data import code
    from hf_illusions.data.hub_folder import load_folder, select_splits
    from hf_illusions.evaluation import ORIGINAL, evaluate_models
    from hf_illusions.tasks.code import CodeTask

    ds = load_folder(dataset_dir)
    if splits is None:
        splits = [s for s in CODE_ACCURACY_SPLITS if s in ds]
    splits = select_splits(ds, list(splits), arg="splits")
    longest = max(pc.max(pc.list_value_length(ds[s].data.column("input_ids"))).as_py() or 0 for s in splits)
    check_model_fits(model, code.VOCAB_SIZE, longest, f"the code data in {str(dataset_dir)!r}")
    task = CodeTask.from_dataset({s: ds[s] for s in splits})
    out = {}
    for split in splits:
        seqs = sample_split_ids(ds[split], max_sentences, split)  # seeded, stratified by package
        res = evaluate_models(model, seqs, task, progress=progress, desc=split)[ORIGINAL]
        out[split] = {"sentences": len(seqs)}
        for group in ("all", *PREDICTION_TYPES):
            scores = dict(res[group])
            out[split][group] = {
                k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()
            }
    return out


def _accuracy(res: dict, group: str) -> float | None:
    return (res.get(group) or {}).get("accuracy")


def _cell(value: float | None, n: int | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if n is None else f"{value:.4f} ({n:,})"


def write_code_model_card(
    model_dir: str | Path,
    accuracy: dict,
    train_args: dict,
    command: str,
    final_loss: float | None = None,
    wall_time: str = "unknown",
    data_config: str | None = None,
    *,
    repo_id: str | None = None,
    dataset_id: str | None = None,
    step: int | None = None,
    model_name: str | None = None,
) -> Path:
    """Render ``model_dir/README.md`` (and ``eval_results.json``) for a code checkpoint.

    ``accuracy`` is :func:`evaluate_code_checkpoint`'s output. ``model-index`` holds, per split,
    the overall accuracy and the ``identifier_repeat`` accuracy (the type the paper's largest
    gaps are on); the prose has every type. ``data_config`` defaults to the run's ``data_config``
    (``train_args``), else ``code-py``.
    """
    from transformers import AutoConfig

    import hf_illusions.modeling  # noqa: F401  (registers the config class)

    model_dir = Path(model_dir)
    command, train_args = _portable_run(command, train_args, model_dir)
    name = model_name or _model_name(model_dir)
    repo_id = repo_id or HUB_REPO_IDS["code_model"]
    dataset_id = dataset_id or HUB_REPO_IDS["code_dataset"]
    data_config = data_config or train_args.get("data_config") or "code-py"
    cfg = AutoConfig.from_pretrained(model_dir)
    labels = {
        "all": "next-character accuracy (all)",
        "identifier_repeat": "next-character accuracy (identifier-repeat)",
    }
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Next-character prediction on source code",
            dataset_type=dataset_id,
            dataset_name="code-illusions",
            dataset_config=data_config,
            dataset_split=split,
            metric_type="accuracy",
            metric_name=labels[group],
            metric_value=round(_accuracy(res, group), 6),
        )
        for split, res in accuracy.items()
        for group in INDEX_GROUPS
        if _accuracy(res, group) is not None
    ]
    card_data = _checkpoint_card_data(name, dataset_id, CODE_TAGS, eval_results)
    iid = _accuracy(accuracy.get(IID_SPLIT, {}), "all")
    rows = [
        {
            "split": split,
            "windows": f"{res['sentences']:,}",
            "n": f"{res['all']['n']:,}",
            "accuracy": _cell(_accuracy(res, "all")),
            "repeat": _cell(_accuracy(res, "identifier_repeat")),
            "delta": "–"
            if iid is None or split == IID_SPLIT or _accuracy(res, "all") is None
            else f"{_accuracy(res, 'all') - iid:+.4f}",
            "definition": SPLIT_DEFINITIONS.get(split, ""),
        }
        for split, res in accuracy.items()
    ]
    type_rows = [
        {
            "type": t,
            "definition": TYPE_DEFINITIONS.get(t, ""),
            "cells": [_cell(_accuracy(res, t), (res.get(t) or {}).get("n", 0)) for res in accuracy.values()],
        }
        for t in PREDICTION_TYPES
    ]
    max_steps = train_args.get("max_steps")
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "code_model_card.md"),
        model_name=name,
        cfg=cfg,
        window=cfg.n_positions - 1,
        n_params=f"{_count_parameters(model_dir):,}",
        repo_path=repo_id,
        dataset_id=dataset_id,
        rows=rows,
        splits=list(accuracy),
        type_rows=type_rows,
        iid_split=IID_SPLIT,
        data_config=data_config,
        command=command,
        train_args=train_args,
        step=step,
        max_steps=max_steps,
        intermediate=step is not None and max_steps is not None and step < max_steps,
        final_loss=f"{final_loss:.4f}" if final_loss is not None else "unknown",
        wall_time=wall_time,
        hardware=_hardware(),
    )
    return _save_checkpoint_card(card, model_dir, accuracy)

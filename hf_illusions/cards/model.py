"""The model card of a trained checkpoint, for whichever task its data folder holds.

:func:`evaluate_checkpoint` measures and :func:`write_model_card` renders; ``eval_results.json``
keeps the numbers next to the card, so it can be re-rendered without re-measuring. The task is read
from the data folder when measuring (a ``code-illusions`` folder has ``code_settings.json``) and
from the shape of the numbers when re-rendering (code results have an ``all`` group per split,
Dyck results ``close``/``long_distance``), so one command serves both. The Dyck card lives here;
the code card in :mod:`hf_illusions.cards.code_model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard

from hf_illusions.cards.code_model import evaluate_code_checkpoint, write_code_model_card
from hf_illusions.cards.common import (
    HUB_REPO_IDS,
    TAGS,
    TEMPLATES,
    _checkpoint_card_data,
    _count_parameters,
    _evaluate_splits,
    _hardware,
    _model_name,
    _portable_run,
    _save_checkpoint_card,
)
from hf_illusions.data import dyck
from hf_illusions.errors import IllusionsError
from hf_illusions.tasks.dyck import LONG_THRESHOLD

ACCURACY_SPLITS = ("validation", *dyck.TEST_SPLITS)
TASKS = ("dyck", "code")


def data_task(dataset_dir: str | Path) -> str:
    """``"code"`` for a `code-illusions` folder (it has ``code_settings.json``), else ``"dyck"``.

    Anything else is treated as Dyck, as before code support existed, so a Dyck folder keeps
    working whether or not it carries ``dyck_settings.json``.
    """
    from hf_illusions.data.code_folder import SETTINGS_FILE

    return "code" if (Path(dataset_dir) / SETTINGS_FILE).is_file() else "dyck"


def results_task(accuracy: Mapping[str, Any]) -> str:
    """The task of saved model results (``eval_results.json``), from the groups each split holds."""
    splits = [res for res in accuracy.values() if isinstance(res, Mapping)]
    if splits and all("all" in res for res in splits):
        return "code"
    if splits and all("close" in res and "long_distance" in res for res in splits):
        return "dyck"
    raise IllusionsError(
        "accuracy holds no model results: expected {split: {'close': …, 'long_distance': …}} (Dyck) or "
        "{split: {'all': …, <prediction type>: …}} (code), as evaluate_checkpoint / eval_results.json"
    )


def evaluate_checkpoint(
    model: Any,
    dataset_dir: str | Path,
    splits: Sequence[str] | None = None,
    progress: bool = False,
    max_sentences: int | None = None,
) -> dict:
    """Accuracy of ``model`` on each split of ``dataset_dir``, scored as that folder's task.

    Dyck: closing-bracket accuracy, ``{split: {"sentences": …, "close": …, "long_distance": …}}``
    over :data:`ACCURACY_SPLITS`. Code: next-character accuracy per prediction type,
    ``{split: {"sentences": …, "all": …, "whitespace": …, …}}`` (see
    :func:`~hf_illusions.cards.code_model.evaluate_code_checkpoint`). ``max_sentences`` caps each
    split (default: all of it).
    """
    if data_task(dataset_dir) == "code":
        return evaluate_code_checkpoint(
            model, dataset_dir, splits, progress=progress, max_sentences=max_sentences
        )
    if (Path(dataset_dir) / "dyck_settings.json").is_file():  # a code model would score garbage here
        from hf_illusions.checkpoints import check_model_fits
        from hf_illusions.data.dyck_language import DyckVocab
        from hf_illusions.data.hub_folder import read_settings

        vocab_size = DyckVocab(read_settings(dataset_dir).n_types).size
        check_model_fits(model, vocab_size, 0, f"the Dyck data in {str(dataset_dir)!r}")
    splits = ACCURACY_SPLITS if splits is None else splits
    results = _evaluate_splits(model, dataset_dir, splits, progress=progress, max_sentences=max_sentences)
    return {
        split: {
            "sentences": res["sentences"],
            "close": res["original"]["close"],
            "long_distance": res["original"]["long_distance"],
        }
        for split, res in results.items()
    }


def write_model_card(
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
    """Render ``model_dir/README.md`` (and ``eval_results.json``) for a Dyck or code checkpoint.

    ``accuracy`` is :func:`evaluate_checkpoint`'s output (or a saved ``eval_results.json``); its
    shape picks the card (:func:`results_task`). Defaults follow the task: ``data_config``
    ``dyck-20-10`` / the run's (else ``code-py``), and the project's Hub ids for model and data.
    ``step`` is the training step of a ``checkpoint-N`` (the card then says it is intermediate).
    """
    if results_task(accuracy) == "code":
        return write_code_model_card(
            model_dir, accuracy, train_args, command, final_loss, wall_time, data_config,
            repo_id=repo_id, dataset_id=dataset_id, step=step, model_name=model_name,
        )  # fmt: skip
    return write_dyck_model_card(
        model_dir, accuracy, train_args, command, final_loss, wall_time, data_config or "dyck-20-10",
        repo_id=repo_id or HUB_REPO_IDS["model"], dataset_id=dataset_id or HUB_REPO_IDS["dataset"],
        step=step, model_name=model_name,
    )  # fmt: skip


#: how each architecture ``train --architecture`` builds differs, in the card's words
BLOCKS = {
    "illusion-transformer": "learned absolute positions, pre-LayerNorm, GELU MLP",
    "llama": "rotary position embeddings, pre-RMSNorm, SwiGLU MLP",
    "gpt2": "learned absolute positions, pre-LayerNorm, GELU MLP",
}


def describe_architecture(cfg: Any) -> dict[str, Any]:
    """Sizes and block layout of a Dyck model's config, under one set of names for every family."""
    from hf_illusions.simplify.geometry import config_head_dim

    model_type = cfg.model_type
    return {
        "n_layer": cfg.num_hidden_layers,
        "n_head": cfg.num_attention_heads,
        "d_model": cfg.hidden_size,
        "d_head": config_head_dim(cfg),
        "d_mlp": getattr(cfg, "d_mlp", None)
        or getattr(cfg, "intermediate_size", None)
        or getattr(cfg, "n_inner", None)
        or 4 * cfg.hidden_size,
        "blocks": BLOCKS.get(model_type, f"the `{model_type}` architecture"),
        "class_name": None if model_type == "illusion-transformer" else (cfg.architectures or [None])[0],
    }


def write_dyck_model_card(
    model_dir: str | Path,
    accuracy: dict,
    train_args: dict,
    command: str,
    final_loss: float | None = None,
    wall_time: str = "unknown",
    data_config: str = "dyck-20-10",
    *,
    repo_id: str = HUB_REPO_IDS["model"],
    dataset_id: str = HUB_REPO_IDS["dataset"],
    step: int | None = None,
    model_name: str | None = None,
) -> Path:
    """The Dyck card: each split × group (``close``, ``long_distance``) is one ``model-index`` entry,
    which the Hub shows as the model's results.
    """
    from transformers import AutoConfig

    import hf_illusions.modeling  # noqa: F401  (registers the config class)

    model_dir = Path(model_dir)
    command, train_args = _portable_run(command, train_args, model_dir)
    name = model_name or _model_name(model_dir)
    cfg = AutoConfig.from_pretrained(model_dir)
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Dyck closing-bracket prediction",
            dataset_type=dataset_id,
            dataset_name="dyck-illusions",
            dataset_config=data_config,
            dataset_split=split,
            metric_type="accuracy",
            metric_name=f"closing-bracket accuracy ({group.replace('_', '-')})",
            metric_value=round(res[group]["accuracy"], 6),
        )
        for split, res in accuracy.items()
        for group in ("close", "long_distance")
    ]
    arch = describe_architecture(cfg)
    card_data = _checkpoint_card_data(name, dataset_id, [*TAGS, cfg.model_type], eval_results)
    rows = [
        {
            "split": split,
            "sentences": res["sentences"],
            "accuracy": res["close"]["accuracy"],
            "long_accuracy": res["long_distance"]["accuracy"],
            "n": res["close"]["n"],
            "n_long": res["long_distance"]["n"],
        }
        for split, res in accuracy.items()
    ]
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "dyck_model_card.md"),
        model_name=name,
        arch=arch,
        n_params=f"{_count_parameters(model_dir):,}",
        repo_path=repo_id,
        long_threshold=LONG_THRESHOLD,
        rows=rows,
        data_config=data_config,
        command=command,
        train_args=train_args,
        final_loss=f"{final_loss:.4f}" if final_loss is not None else "unknown",
        wall_time=wall_time,
        hardware=_hardware(),
        step=step,
    )
    return _save_checkpoint_card(card, model_dir, accuracy)

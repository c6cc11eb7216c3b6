"""What every card shares: Hub ids and tags, the templates folder, results files, number formatting.

Kept apart from the per-card modules so that each of them imports only what it renders, and so the
ids cards use to link to each other (``HUB_REPO_IDS``) have a single source: :mod:`hf_illusions.hub_ids`.
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_illusions.data.hub_folder import TEMPLATES, load_folder
from hf_illusions.data.sampling import sample_split_ids
from hf_illusions.errors import IllusionsError
from hf_illusions.hub_ids import HUB_REPO_IDS, TAGS
from hf_illusions.paths import portable_text

IID_SPLIT = "test_iid"
_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")


def read_results(path: str | Path) -> dict:
    """A results JSON (``eval_results.json``, ``evaluate`` or ``reproduce`` output), or a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise IllusionsError(f"results file {str(path)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise IllusionsError(f"results file {str(path)!r} is not readable JSON: {err}") from None


def _evaluate_splits(
    model: Any,
    dataset_dir: str | Path,
    splits: Sequence[str],
    proxies: Mapping[str, Any] | None = None,
    progress: bool = False,
    max_sentences: int | None = None,
) -> dict[str, dict]:
    """``{split: evaluate_models(...)}`` on Dyck data over a seeded sample of ``max_sentences`` per split.

    Shared by the Dyck model card (the original alone) and the proxy card (original + proxy).
    """
    from hf_illusions.evaluation import evaluate_models
    from hf_illusions.tasks.dyck import DyckTask

    ds = load_folder(dataset_dir)
    task = DyckTask(n_types=(model.config.vocab_size - 3) // 2)
    out = {}
    for split in splits:
        seqs = sample_split_ids(ds[split], max_sentences, split)  # seeded, stratified by package
        out[split] = evaluate_models(model, seqs, task, proxies, progress=progress, desc=split)
        out[split]["sentences"] = len(seqs)
    return out


def _count_parameters(model_dir: Path) -> int:
    """Parameters stored in ``model.safetensors``, read from the tensor headers (no weights loaded)."""
    from safetensors import safe_open

    with safe_open(model_dir / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def _hardware() -> str:
    """The machine the card was rendered on (the project trains on CPU; cards say so)."""
    return f"{platform.machine()} CPU ({platform.system()}), no GPU"


def _checkpoint_card_data(name: str, dataset_id: str, tags: list[str], eval_results: list) -> Any:
    """The ``ModelCardData`` every trained checkpoint's card shares (task-specific tags and results)."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        model_name=name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="text-generation",
        datasets=[dataset_id],
        tags=tags,
        eval_results=eval_results,
    )


def _save_checkpoint_card(card: Any, model_dir: Path, accuracy: Mapping) -> Path:
    """Write the card as ``README.md`` and the numbers it was rendered from as ``eval_results.json``."""
    card.save(model_dir / "README.md")
    (model_dir / "eval_results.json").write_text(json.dumps(accuracy, indent=2) + "\n")
    return model_dir / "README.md"


def _portable_run(command: str, train_args: Mapping[str, Any], folder: Path) -> tuple[str, dict]:
    """The training command and arguments as a card prints them: no absolute path of this machine."""
    args = {k: portable_text(v, folder) if isinstance(v, str) else v for k, v in train_args.items()}
    return portable_text(command, folder), args


def _model_name(model_dir: Path) -> str:
    """The card's title and ``model-index`` name: the folder name, or ``<run>-checkpoint-N``.

    A training checkpoint is saved as ``<run>/checkpoint-N/model``; "model" would name nothing.
    """
    parent = model_dir.resolve().parent
    if model_dir.name == "model" and _CHECKPOINT_DIR.fullmatch(parent.name):
        return f"{parent.parent.name}-{parent.name}"
    return model_dir.name


__all__ = ["HUB_REPO_IDS", "IID_SPLIT", "TAGS", "TEMPLATES", "read_results"]

"""Model cards rendered with `huggingface_hub.ModelCard.from_template` from measured results.

The numbers in a card's ``model-index`` and tables come from an evaluation run (never typed
in): :func:`evaluate_checkpoint` measures them, :func:`write_model_card` renders them.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_illusions.data.dyck import TEST_SPLITS
from hf_illusions.data.hub_folder import TEMPLATES, load_folder
from hf_illusions.evaluation import evaluate_models
from hf_illusions.tasks.dyck import LONG_THRESHOLD, DyckTask

ACCURACY_SPLITS = ("validation", *TEST_SPLITS)


def evaluate_checkpoint(
    model, dataset_dir: str | Path, splits=ACCURACY_SPLITS, progress: bool = False
) -> dict:
    """Closing-bracket accuracy of ``model`` on each split: ``{split: {"close": …, "long_distance": …}}``."""
    ds = load_folder(dataset_dir)
    task = DyckTask(n_types=(model.config.vocab_size - 3) // 2)
    out = {}
    for split in splits:
        seqs = ds[split].data.column("input_ids").to_pylist()
        res = evaluate_models(model, seqs, task, progress=progress, desc=split)["original"]
        out[split] = {"sentences": len(seqs), "close": res["close"], "long_distance": res["long_distance"]}
    return out


def write_model_card(
    model_dir: str | Path,
    accuracy: dict,
    train_args: dict,
    command: str,
    final_loss: float | None = None,
    wall_time: str = "unknown",
    data_config: str = "dyck-20-10",
) -> Path:
    """Render ``model_dir/README.md`` (and ``eval_results.json``) for a Dyck checkpoint."""
    from transformers import AutoConfig

    import hf_illusions.modeling  # noqa: F401  (registers the config class)

    model_dir = Path(model_dir)
    cfg = AutoConfig.from_pretrained(model_dir)
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Dyck closing-bracket prediction",
            dataset_type="dyck-illusions",
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
    card_data = ModelCardData(
        model_name=model_dir.name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="text-generation",
        datasets=["dyck-illusions"],
        tags=["hf-illusions", "interpretability", "dyck", "illusion-transformer"],
        eval_results=eval_results,
    )
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
    from safetensors import safe_open

    with safe_open(model_dir / "model.safetensors", "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "dyck_model_card.md"),
        model_name=model_dir.name,
        cfg=cfg,
        n_params=f"{n_params:,}",
        repo_path=str(model_dir),
        long_threshold=LONG_THRESHOLD,
        rows=rows,
        data_config=data_config,
        command=command,
        train_args=train_args,
        final_loss=f"{final_loss:.4f}" if final_loss is not None else "unknown",
        wall_time=wall_time,
        hardware=f"{platform.machine()} CPU ({platform.system()}), no GPU",
    )
    card.save(model_dir / "README.md")
    (model_dir / "eval_results.json").write_text(json.dumps(accuracy, indent=2) + "\n")
    return model_dir / "README.md"

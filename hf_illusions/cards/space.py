"""The Space's card: YAML Space settings, and the report's gap plot and numbers copied into ``assets/``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import SpaceCard, SpaceCardData

from hf_illusions.cards.common import HUB_REPO_IDS, IID_SPLIT, TAGS, TEMPLATES
from hf_illusions.errors import IllusionsError
from hf_illusions.paths import portable_path

SPACE_PLOT = "gap.png"
SPACE_SUMMARY = "report.json"


def report_summary(results: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The per-split numbers the Space shows next to a sentence's, from a reproduction's results.json."""
    groups = ("close", "long_distance")
    return {
        "source": source,
        "created": results.get("created"),
        "model_dir": portable_path(results["model_dir"]) if results.get("model_dir") else None,
        "weights_sha256_16": (results.get("model") or {}).get("weights_sha256_16"),
        "iid_split": (results.get("evaluation") or {}).get("iid_split", IID_SPLIT),
        "n_fit_sequences": (results.get("dataset") or {}).get("n_fit_sequences"),
        "faithfulness": {
            name: {
                split: {
                    g: {m: res[name][g].get(m) for m in ("jsd", "agreement", "accuracy", "n")}
                    for g in groups
                    if g in res[name]
                }
                for split, res in results["splits"].items()
            }
            for name in results["proxies"]
        },
    }


def write_space_card(
    space_dir: str | Path,
    report_dir: str | Path | None = None,
    model_id: str = HUB_REPO_IDS["model"],
    dataset_id: str = HUB_REPO_IDS["dataset"],
    n_fit_sequences: int = 1000,
) -> Path:
    """Render the Space's README.md (YAML header + card) and copy the report's gap plot into ``assets/``.

    With ``report_dir`` (a ``reproduce`` output folder) the plot and the per-split numbers are
    refreshed; without it, whatever ``assets/`` already holds is described as it is.
    """
    from importlib.metadata import version

    space_dir = Path(space_dir)
    assets = space_dir / "assets"
    if report_dir is not None:
        report_dir = Path(report_dir)
        if not (report_dir / "results.json").is_file() or not (report_dir / SPACE_PLOT).is_file():
            raise IllusionsError(
                f"{str(report_dir)!r} is not a report folder (needs results.json and {SPACE_PLOT}); "
                "run `hf-illusions reproduce dyck` first"
            )
        assets.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report_dir / SPACE_PLOT, assets / SPACE_PLOT)
        summary = report_summary(
            json.loads((report_dir / "results.json").read_text()), portable_path(report_dir, space_dir)
        )
        (assets / SPACE_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    summary_file = assets / SPACE_SUMMARY
    if (assets / SPACE_PLOT).is_file() and summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        report_text = (
            f"![generalization gap](assets/{SPACE_PLOT})\n\n"
            f"`assets/{SPACE_PLOT}` is the report's generalization-gap plot (OOD minus IID faithfulness), "
            f"made by `hf-illusions reproduce dyck` for `{summary['model_dir']}` on {summary['created']} "
            f"(weights `{summary['weights_sha256_16']}`); the app warns if the loaded model differs."
        )
    else:
        report_text = (
            "No report has been copied here yet: run `hf-illusions reproduce dyck`, then "
            "`hf-illusions card space --report reports/dyck`. The app says so instead of showing the plot."
        )
    card_data = SpaceCardData(
        title="Interpretability Illusions",
        sdk="gradio",
        sdk_version=version("gradio"),
        python_version="3.11",
        app_file="app.py",
        license="apache-2.0",
        models=[model_id],
        datasets=[dataset_id],
        tags=[*TAGS, "simplified-models", "attention"],
        emoji="🔍",
        colorFrom="indigo",
        colorTo="red",
        pinned=False,
        short_description="Proxies faithful in distribution, unfaithful out of it",
    )
    card = SpaceCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "space_card.md"),
        model_id=model_id,
        dataset_id=dataset_id,
        n_fit_sequences=n_fit_sequences,
        report_text=report_text,
    )
    card.save(space_dir / "README.md")
    return space_dir / "README.md"

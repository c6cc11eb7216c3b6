"""The faithfulness metric's Space: the ``evaluate`` module, its card (the module's README), an app.

The card is written by hand next to the module (its examples are doctested), so here it is only
checked and copied, never rendered.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from huggingface_hub import RepoCard

from hf_illusions.cards.common import HUB_REPO_IDS
from hf_illusions.errors import IllusionsError

METRIC_APP = '''"""The faithfulness metric's Space: evaluate's standard widget around the module."""

import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load("{repo_id}")
launch_gradio_widget(module)
'''


def write_metric_folder(out: str | Path, repo_id: str = HUB_REPO_IDS["metric"]) -> Path:
    """The ``evaluate`` module as a push-ready Space: module file, card (its README), app, requirements.

    The card is the module's own ``README.md`` (its examples are doctested); it is parsed and
    checked here so a broken YAML header never reaches the Hub.
    """
    from hf_illusions.metrics import FAITHFULNESS_METRIC_DIR

    source, out = Path(FAITHFULNESS_METRIC_DIR), Path(out)
    card = RepoCard.load(source / "README.md")
    meta = card.data.to_dict()
    missing = [key for key in ("title", "sdk", "app_file", "tags") if not meta.get(key)]
    if missing or "metric" not in meta["tags"]:
        raise IllusionsError(
            f"the metric card {source / 'README.md'} lacks metadata {missing or ['tags: metric']}"
        )
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "faithfulness.py", out / f"{Path(repo_id).name}.py")
    card.save(out / "README.md")
    (out / meta["app_file"]).write_text(METRIC_APP.format(repo_id=repo_id))
    (out / "requirements.txt").write_text(
        "evaluate>=0.4.3\nhf-illusions @ git+https://github.com/hf-illusions/hf-illusions\n"
    )
    return out / "README.md"

"""The dataset card of `dyck-illusions`: YAML ``configs:`` and ``dataset_info`` from the files, then prose.

The card is rendered at build time by the data layer that writes the folder
(:func:`hf_illusions.data.hub_folder.render_dyck_dataset_card`, re-exported here);
:func:`write_dataset_card` re-renders a built folder from its own parquet files and settings. The
`code-illusions` card is rendered at build time by
:func:`hf_illusions.data.code_folder.render_code_dataset_card`, which needs the build's corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

from hf_illusions.data import dyck
from hf_illusions.data.hub_folder import load_folder, render_dyck_dataset_card
from hf_illusions.errors import IllusionsError
from hf_illusions.hub_ids import HUB_REPO_IDS


def write_dataset_card(folder: str | Path, repo_id: str = HUB_REPO_IDS["dataset"]) -> Path:
    """Re-render ``folder/README.md`` from the folder's own parquet files and ``*_settings.json``."""
    folder = Path(folder)
    settings_file = folder / "dyck_settings.json"
    if not settings_file.is_file():
        raise IllusionsError(
            f"{str(folder)!r} has no dyck_settings.json: only dyck-illusions folders written by "
            "`hf-illusions data build dyck` have a dataset card template yet"
        )
    raw = json.loads(settings_file.read_text())
    settings = dyck.DyckSettings(**raw)
    preset = next((name for name, p in dyck.PRESETS.items() if dyck.settings_dict(p) == raw), "custom")
    card = render_dyck_dataset_card(
        load_folder(folder), settings, preset, folder.name, folder / "data", repo_id
    )
    card.save(folder / "README.md")
    return folder / "README.md"


__all__ = ["render_dyck_dataset_card", "write_dataset_card"]

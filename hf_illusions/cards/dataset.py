"""The dataset card of `dyck-illusions`: YAML ``configs:`` and ``dataset_info`` from the files, then prose.

:func:`render_dyck_dataset_card` runs at build time (:mod:`hf_illusions.data.hub_folder`);
:func:`write_dataset_card` re-renders a built folder from its own parquet files and settings. The
`code-illusions` card is rendered at build time by
:func:`hf_illusions.data.code_folder.render_code_dataset_card`, which needs the build's corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from hf_illusions import __version__
from hf_illusions.cards.common import HUB_REPO_IDS, TAGS, TEMPLATES
from hf_illusions.data import dyck
from hf_illusions.data.dyck_language import structure
from hf_illusions.data.hub_folder import SPLIT_DEFINITIONS, load_folder, size_category
from hf_illusions.errors import IllusionsError


def _parquet_sizes(path: Path) -> tuple[int, int]:
    """(file bytes, uncompressed data bytes) of a parquet file, both read from the file itself."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return path.stat().st_size, sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.2f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.1f} kB"


def render_dyck_dataset_card(
    ds: Any,
    settings: dyck.DyckSettings,
    config_name: str,
    folder_name: str,
    data_dir: str | Path | None = None,
    repo_id: str = HUB_REPO_IDS["dataset"],
) -> DatasetCard:
    """The dataset card: YAML ``configs:`` (split → parquet file) and ``dataset_info`` sizes, then prose.

    ``data_dir`` holds the written parquet files, whose sizes the card reports (the Hub shows
    ``dataset_info.download_size``); without it sizes are left out.
    """
    n = settings.n_types
    seen = {s for row in ds[dyck.TRAIN_SPLIT]["input_ids"] for s in structure([i - 3 for i in row[1:-1]], n)}
    files = {s: Path(data_dir) / f"{s}.parquet" for s in dyck.SPLITS} if data_dir else {}
    stored = {s: _parquet_sizes(f) for s, f in files.items() if f.is_file()}  # (file, uncompressed) bytes
    splits = []
    for s in dyck.SPLITS:
        lengths = ds[s].data.column("length").to_numpy()
        splits.append(
            {
                "name": s,
                "rows": len(ds[s]),
                "mean_length": float(lengths.mean()),
                "max_length": int(lengths.max()),
                "max_depth": int(ds[s].data.column("max_depth").to_numpy().max()),
                "tokens": int(lengths.sum()) + 2 * len(ds[s]),
                "size": _megabytes(stored[s][0]) if s in stored else "–",
                "definition": SPLIT_DEFINITIONS[s].format(**dyck.settings_dict(settings)),
            }
        )
    dataset_info: dict[str, Any] = {"features": ds[dyck.TRAIN_SPLIT].features._to_yaml_list()}
    if len(stored) == len(splits):  # sizes as the Hub shows them, read from the files themselves
        dataset_info["splits"] = [
            {"name": r["name"], "num_bytes": stored[r["name"]][1], "num_examples": r["rows"]} for r in splits
        ]
        dataset_info["download_size"] = sum(file_bytes for file_bytes, _ in stored.values())
        dataset_info["dataset_size"] = sum(data_bytes for _, data_bytes in stored.values())
    card_data = DatasetCardData(
        pretty_name="dyck-illusions",
        license="apache-2.0",
        task_categories=["text-generation"],
        tags=[*TAGS, "systematic-generalization", "synthetic"],
        size_categories=size_category(len(ds[dyck.TRAIN_SPLIT])),
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}.parquet"} for s in dyck.SPLITS],
            }
        ],
        dataset_info=dataset_info,
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "dyck_dataset_card.md"),
        config_name=config_name,
        folder_name=folder_name,
        repo_id=repo_id,
        version=__version__,
        s=settings,
        splits=splits,
        total_rows=sum(r["rows"] for r in splits),
        total_tokens=sum(r["tokens"] for r in splits),
        total_size=_megabytes(dataset_info["download_size"]) if "download_size" in dataset_info else "–",
        n_seen_skeletons=len(seen),
        settings_json=json.dumps(dyck.settings_dict(settings), indent=2),
        citation=dyck._CITATION,
    )


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

"""Write a built dataset as a Hub-style folder: ``data/<split>.parquet`` + README.md (YAML + card).

`datasets` 5 no longer runs loading scripts, so this folder *is* the published form:
``load_dataset("<folder>")`` resolves it locally through the README's ``configs:`` block, and
``push_to_hub``/``upload_folder`` uploads it unchanged.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from hf_illusions.data import dyck
from hf_illusions.data.dyck_language import structure
from hf_illusions.errors import DatasetError, SettingsError, SplitError
from hf_illusions.hub_ids import HUB_REPO_IDS, TAGS
from hf_illusions.paths import check_output_path
from hf_illusions.version import __version__

TEMPLATES = Path(__file__).resolve().parents[2] / "model_cards"

SPLIT_DEFINITIONS = {
    "train": "draws from the process (depth ≤ {train_depth}), duplicates allowed",
    "validation": "fresh draws not in train (model selection)",
    "test_iid": "fresh draws from the same process, not in train",
    "test_seen_struct": "fresh draws not in train whose every skeleton occurs in train",
    "test_unseen_struct_short": "fresh draws with ≥ 1 skeleton absent from train, "
    "≤ {short_threshold} brackets",
    "test_unseen_struct_long": "fresh draws with ≥ 1 skeleton absent from train, "
    "> {short_threshold} brackets",
    "test_unseen_depth": "draws with depth bound {depth_test_bound} whose max depth exceeds {train_depth}",
}


def write_dyck_folder(
    out: str | Path,
    settings: dyck.DyckSettings | None = None,
    config_name: str = "dyck-20-10",
    overwrite: bool = False,
) -> Path:
    """Build the Dyck data and write the Hub folder; returns its path.

    ``config_name`` is a preset name (its settings are used unless ``settings`` is given). The
    folder is written under a temporary name and renamed at the end, so an interrupted build
    never leaves a folder that looks complete, and ``overwrite`` replaces an old folder only
    once the new one is finished.
    """
    out = check_output_path(out, overwrite, arg="out")
    if config_name not in dyck.PRESETS:
        raise SettingsError(f"config_name must be one of {sorted(dyck.PRESETS)}, got {config_name!r}")
    settings = settings or dyck.PRESETS[config_name]
    tmp = prepare_out_dir(out)
    with tempfile.TemporaryDirectory(prefix="dyck-build-") as cache:
        builder = dyck.DyckIllusions(cache_dir=cache, config_name=config_name, settings=settings)
        builder.download_and_prepare()
        ds = builder.as_dataset()
        for split in dyck.SPLITS:
            ds[split].to_parquet(tmp / "data" / f"{split}.parquet")
        card = render_dyck_dataset_card(ds, settings, config_name, out.name, tmp / "data")
    card.save(tmp / "README.md")
    (tmp / "dyck_settings.json").write_text(json.dumps(dyck.settings_dict(settings), indent=2) + "\n")
    return finish_out_dir(tmp, out)


def prepare_out_dir(out: Path) -> Path:
    """A fresh ``<out>.partial/data/`` to build into; :func:`finish_out_dir` moves it into place."""
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "data").mkdir(parents=True)
    return tmp


def finish_out_dir(tmp: Path, out: Path) -> Path:
    """Rename a finished build to ``out``; an old ``out`` is swapped out first, so some complete
    folder always exists, and deleted only after the rename."""
    old = out.with_name(out.name + ".old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    return out


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


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    for bound, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < bound:
            return label
    return "n>1M"


def load_folder(path: str | Path) -> datasets.DatasetDict:
    """Load a folder written here into memory, bypassing the `datasets` cache.

    ``load_dataset(folder)`` works too (it is what users call), but its cache key for local
    parquet files can collide between two folders of the same name built with different
    settings, silently returning the older data. Internal code therefore reads the parquet
    files directly; it is also faster (no Arrow conversion to disk).
    """
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    path = Path(path)
    if not path.is_dir():
        raise DatasetError(
            f"dataset folder {str(path)!r} does not exist (build it with `hf-illusions data build dyck`)"
        )
    files = sorted((path / "data").glob("*.parquet"))
    if not files:
        raise DatasetError(
            f"{str(path)!r} is not a dataset folder: no data/*.parquet files "
            "(build it with `hf-illusions data build`)"
        )
    splits = {}
    for f in files:
        try:
            table = pq.read_table(f)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DatasetError(
                f"{str(f)!r} is not a readable parquet file ({err}); rebuild the folder"
            ) from None
        if "input_ids" not in table.column_names:
            raise DatasetError(f"{str(f)!r} has no 'input_ids' column (columns: {table.column_names})")
        splits[f.stem] = datasets.Dataset(InMemoryTable(table))
    order = [s for s in dyck.SPLITS if s in splits] + sorted(set(splits) - set(dyck.SPLITS))
    return datasets.DatasetDict({s: splits[s] for s in order})


def read_settings(path: str | Path) -> dyck.DyckSettings:
    """The :class:`~hf_illusions.data.dyck.DyckSettings` a folder was built with (``dyck_settings.json``).

    Code that needs the vocabulary of the data (``n_types``) reads it here rather than guessing it
    from a model or a preset name, so a mismatch is caught instead of mis-scoring every bracket.
    """
    file = Path(path) / "dyck_settings.json"
    if not file.is_file():
        raise DatasetError(f"{str(path)!r} is not a dyck-illusions folder: {file.name} is missing")
    try:
        raw = json.loads(file.read_text())
        return dyck.DyckSettings(**raw)
    except (json.JSONDecodeError, TypeError) as err:
        raise DatasetError(f"{str(file)!r} is not a valid settings file: {err}") from None


def select_splits(
    ds: datasets.DatasetDict, splits: list[str] | tuple[str, ...], arg: str = "splits"
) -> list[str]:
    """``splits`` if every name is in ``ds``, else :class:`SplitError` naming the unknown ones."""
    unknown = [s for s in splits if s not in ds]
    if unknown:
        raise SplitError(f"{arg} {unknown} not in the dataset; available: {list(ds)}")
    return list(splits)

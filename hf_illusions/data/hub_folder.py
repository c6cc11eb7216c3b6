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

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from hf_illusions import __version__
from hf_illusions.data import dyck
from hf_illusions.data.dyck_language import structure
from hf_illusions.errors import IllusionsError

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


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing folder unless asked; never leave a half-written one behind."""
    if out.exists():
        if not overwrite:
            raise IllusionsError(
                f"output folder {str(out)!r} already exists; pass overwrite=True (--overwrite)"
            )
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)


def write_dyck_folder(
    out: str | Path,
    settings: dyck.DyckSettings | None = None,
    config_name: str = "dyck-20-10",
    overwrite: bool = False,
) -> Path:
    """Build the Dyck data and write the Hub folder; returns its path.

    The folder is written under a temporary name and renamed at the end, so an interrupted build
    never leaves a folder that looks complete.
    """
    out = Path(out)
    settings = settings or dyck.PRESETS[config_name]
    prepare_out_dir(out, overwrite)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "data").mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="dyck-build-") as cache:
        builder = dyck.DyckIllusions(cache_dir=cache, config_name=config_name, settings=settings)
        builder.download_and_prepare()
        ds = builder.as_dataset()
        for split in dyck.SPLITS:
            ds[split].to_parquet(tmp / "data" / f"{split}.parquet")
        card = render_dyck_card(ds, settings, config_name, out.name)
    card.save(tmp / "README.md")
    (tmp / "dyck_settings.json").write_text(json.dumps(dyck.settings_dict(settings), indent=2) + "\n")
    tmp.rename(out)
    return out


def render_dyck_card(
    ds: datasets.DatasetDict, settings: dyck.DyckSettings, config_name: str, folder_name: str
) -> DatasetCard:
    """The dataset card: YAML ``configs:`` mapping each split to its parquet file, then the prose."""
    seen = {
        s for row in ds["train"]["input_ids"] for s in structure([i - 3 for i in row[1:-1]], settings.n_types)
    }
    card_data = DatasetCardData(
        pretty_name="dyck-illusions",
        license="apache-2.0",
        task_categories=["text-generation"],
        tags=["dyck", "interpretability", "systematic-generalization", "synthetic", "hf-illusions"],
        size_categories=size_category(len(ds["train"])),
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}.parquet"} for s in dyck.SPLITS],
            }
        ],
    )
    splits = [
        {
            "name": s,
            "rows": len(ds[s]),
            "definition": SPLIT_DEFINITIONS[s].format(**dyck.settings_dict(settings)),
        }
        for s in dyck.SPLITS
    ]
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "dyck_dataset_card.md"),
        config_name=config_name,
        folder_name=folder_name,
        version=__version__,
        s=settings,
        splits=splits,
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
    files = sorted((path / "data").glob("*.parquet"))
    if not files:
        raise IllusionsError(
            f"{str(path)!r} is not a dataset folder: no data/*.parquet files "
            "(build it with `hf-illusions data build`)"
        )
    splits = {f.stem: datasets.Dataset(InMemoryTable(pq.read_table(f))) for f in files}
    order = [s for s in dyck.SPLITS if s in splits] + sorted(set(splits) - set(dyck.SPLITS))
    return datasets.DatasetDict({s: splits[s] for s in order})

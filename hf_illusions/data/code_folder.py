"""Write `code-illusions` as a Hub-style folder: parquet per split, ``manifest.json``, README card.

Same layout as the Dyck folder (:mod:`hf_illusions.data.hub_folder`): ``load_dataset(folder)``
resolves the splits from the README's ``configs:`` block, and ``load_folder`` reads it directly.
``manifest.json`` lists every file the corpus was cut from (path, package, licence, SHA-256,
size, split, windows, lexer status), so two builds can be compared file by file.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from hf_illusions.data import code
from hf_illusions.data import code_corpus as cc
from hf_illusions.data.code_labels import PREDICTION_TYPES
from hf_illusions.data.hub_folder import TEMPLATES, finish_out_dir, prepare_out_dir, size_category
from hf_illusions.errors import DatasetError, SettingsError
from hf_illusions.paths import check_output_path
from hf_illusions.version import __version__

SETTINGS_FILE = "code_settings.json"
MANIFEST_FILE = "manifest.json"
SPLIT_DEFINITIONS = {
    "train": "files of the training packages not held out below",
    "validation": "held-out files of the training packages (seeded hash of the path), for model selection",
    "test_iid": "held-out files of the training packages (seeded hash of the path)",
    "test_unseen_package": "every file of packages never seen in training: new names, conventions and APIs",
    "test_other_language": "C headers (or non-training languages): same characters, different syntax",
}


def write_code_folder(
    out: str | Path,
    settings: code.CodeSettings | None = None,
    config_name: str = "code-py",
    overwrite: bool = False,
) -> Path:
    """Build the code data and write the Hub folder; returns its path (atomic, like the Dyck folder)."""
    out = check_output_path(out, overwrite, arg="out")
    if config_name not in code.PRESETS:
        raise SettingsError(f"config_name must be one of {sorted(code.PRESETS)}, got {config_name!r}")
    settings = settings or code.PRESETS[config_name]
    tmp = prepare_out_dir(out)
    with tempfile.TemporaryDirectory(prefix="code-build-") as cache:
        builder = code.CodeIllusions(cache_dir=cache, config_name=config_name, settings=settings)
        builder.download_and_prepare()
        ds = builder.as_dataset()
        splits = code.present_splits(builder.corpus)
        for split in splits:
            ds[split].to_parquet(tmp / "data" / f"{split}.parquet")
        card = render_code_dataset_card(ds, splits, settings, builder.corpus, config_name, out.name)
    card.save(tmp / "README.md")
    (tmp / SETTINGS_FILE).write_text(json.dumps(code.settings_dict(settings), indent=2) + "\n")
    sources = [] if settings.codesearchnet else [
        *settings.train_packages, *settings.unseen_packages, *settings.other_language
    ]  # fmt: skip
    manifest = {
        "counts": builder.corpus.counts,
        "unseen_packages": list(builder.corpus.unseen_packages),
        "source_versions": {name: cc.source_version(name) for name in sources},
        "files": builder.corpus.manifest,
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return finish_out_dir(tmp, out)


def read_manifest(path: str | Path) -> dict:
    """The ``manifest.json`` of a folder written by :func:`write_code_folder`."""
    file = Path(path) / MANIFEST_FILE
    if not file.is_file():
        raise DatasetError(f"{str(path)!r} is not a code-illusions folder: {MANIFEST_FILE} is missing")
    return json.loads(file.read_text())


def render_code_dataset_card(
    ds: Any,
    splits: list[str],
    settings: code.CodeSettings,
    corpus: code.CodeCorpus,
    config_name: str,
    folder_name: str,
    repo_id: str = "hf-illusions/code-illusions",
) -> DatasetCard:
    """The card: YAML ``configs:`` (split → parquet) then how the corpus was made, from ``corpus`` counts."""
    files = Counter(r["split"] for r in corpus.manifest)
    rows = []
    for s in splits:
        types = Counter(t for row in ds[s]["prediction_types"] for t in row)
        total = sum(types.values()) or 1
        rows.append(
            {
                "name": s,
                "files": files[s],
                "windows": len(ds[s]),
                "packages": ", ".join(sorted(set(ds[s]["package"])))[:120],
                "repeat_share": types[PREDICTION_TYPES.index("identifier_repeat")] / total,
                "definition": SPLIT_DEFINITIONS[s],
            }
        )
    packages = Counter(r["package"] for r in corpus.manifest)
    package_rows = [
        {
            "name": p,
            "files": n,
            "bytes": sum(r["size"] for r in corpus.manifest if r["package"] == p),
            "license": next(r["license"] for r in corpus.manifest if r["package"] == p),
            "version": "–" if settings.codesearchnet else cc.source_version(p),
        }
        for p, n in sorted(packages.items())
    ]
    card_data = DatasetCardData(
        pretty_name="code-illusions",
        license="other",
        task_categories=["text-generation"],
        tags=["hf-illusions", "interpretability", "code", "systematic-generalization"],
        size_categories=size_category(len(ds[code.TRAIN_SPLIT])),
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}.parquet"} for s in splits],
            }
        ],
        dataset_info={"features": ds[code.TRAIN_SPLIT].features._to_yaml_list()},
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "code_dataset_card.md"),
        config_name=config_name,
        folder_name=folder_name,
        repo_id=repo_id,
        version=__version__,
        s=settings,
        splits=rows,
        packages=package_rows,
        counts=corpus.counts,
        prediction_types=PREDICTION_TYPES,
        chars=len(code.CHARS),
        vocab_size=code.VOCAB_SIZE,
        settings_json=json.dumps(code.settings_dict(settings), indent=2),
        citation=code._CITATION,
    )


def verify_code_folder(path: str | Path, max_reports: int = 20) -> dict:
    """Re-check a `code-illusions` folder from its stored columns; returns a JSON-ready report.

    Checked: every window's ``input_ids`` are ``encode(text)`` and it has one prediction type
    per character; no window occurs twice (within or across splits); no source file feeds two
    splits; the packages of ``test_unseen_package`` never occur in train/validation/test_iid;
    and each window's file is listed in ``manifest.json`` under the split it sits in.
    """
    from hf_illusions.data.hub_folder import load_folder

    path = Path(path)
    ds = load_folder(path)
    manifest = read_manifest(path)
    split_of_file = {r["path"]: r.get("split") for r in manifest["files"]}
    violations: list[str] = []
    checks: dict[str, int] = {"violations": 0}

    def flag(message: str) -> None:
        if len(violations) < max_reports:
            violations.append(message)
        checks["violations"] += 1

    for split in (code.TRAIN_SPLIT, "test_iid"):
        if split not in ds:
            flag(f"split {split!r} is missing (splits: {list(ds)})")
    window_owner: dict[tuple[int, ...], str] = {}
    file_owner: dict[str, str] = {}
    packages: dict[str, set[str]] = {}
    for split in ds:
        table = ds[split].data
        columns = [
            table.column(c).to_pylist()
            for c in ("text", "input_ids", "prediction_types", "source", "package")
        ]
        for i, (text, ids, types, source, package) in enumerate(zip(*columns, strict=True)):
            where = f"{split}[{i}]"
            if list(ids) != code.encode(text):
                flag(f"{where}: input_ids are not encode(text)")
            if len(types) != len(text):
                flag(f"{where}: {len(types)} prediction types for {len(text)} characters")
            key = tuple(ids)
            if key in window_owner:
                flag(f"{where}: the same window also occurs in {window_owner[key]}")
            window_owner.setdefault(key, where)
            if file_owner.setdefault(source, split) != split:
                flag(f"{where}: file {source!r} also feeds split {file_owner[source]!r}")
            if split_of_file.get(source, split) != split:
                flag(f"{where}: manifest puts {source!r} in {split_of_file[source]!r}")
            packages.setdefault(split, set()).add(package)
        checks[f"{split}_windows"] = len(table)
    seen = set().union(*(packages.get(s, set()) for s in (code.TRAIN_SPLIT, *code.IID_SPLITS)))
    if leaked := sorted(packages.get("test_unseen_package", set()) & seen):
        flag(f"test_unseen_package shares packages {leaked} with the training packages")
    checks["files"] = len(file_owner)
    return {"path": str(path), "ok": checks["violations"] == 0, "checks": checks, "violations": violations}

"""Every card of the project, rendered with ``huggingface_hub`` from measured results.

Cards are what makes a folder a first-class Hub repo: YAML metadata the Hub indexes (library,
tags, datasets, ``model-index`` results, Space settings) and the prose a reader needs. Templates
live in ``model_cards/`` and are rendered with ``ModelCard`` / ``DatasetCard`` / ``SpaceCard``
``.from_template``; every number comes from a results file or a fresh evaluation, never typed in.

* model: :func:`evaluate_checkpoint` measures, :func:`write_model_card` renders (``eval_results.json``
  keeps the numbers, so the card can be re-rendered without re-measuring);
* dataset: :func:`render_dyck_dataset_card` (at build time) / :func:`write_dataset_card` (re-render);
* proxy: :func:`write_proxy_card` from ``hf-illusions evaluate`` or ``reproduce`` results;
* metric: :func:`write_metric_folder` assembles the ``evaluate`` module's Space around its card;
* Space: :func:`write_space_card` renders ``spaces_app/README.md`` and copies the report's plot.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import (
    DatasetCard,
    DatasetCardData,
    EvalResult,
    ModelCard,
    ModelCardData,
    RepoCard,
    SpaceCard,
    SpaceCardData,
)

from hf_illusions import __version__
from hf_illusions.data import dyck
from hf_illusions.data.dyck_language import structure
from hf_illusions.data.hub_folder import SPLIT_DEFINITIONS, TEMPLATES, load_folder, size_category
from hf_illusions.errors import IllusionsError
from hf_illusions.hub import HUB_REPO_IDS
from hf_illusions.tasks.dyck import LONG_THRESHOLD

ACCURACY_SPLITS = ("validation", *dyck.TEST_SPLITS)
IID_SPLIT = "test_iid"
TAGS = ["hf-illusions", "interpretability", "dyck"]
SPACE_PLOT = "gap.png"
SPACE_SUMMARY = "report.json"
FAMILY_TITLES = {
    "svd": "low-rank (SVD) keys and queries",
    "kmeans": "k-means clustered keys and queries",
    "onehot": "one-hot attention",
}
FITTED_STATE = {
    "svd": "per-head projection bases and means",
    "kmeans": "per-head query and key centroids",
    "onehot": "none: one-hot attention is data-independent",
}


def _evaluate_splits(
    model: Any,
    dataset_dir: str | Path,
    splits: Sequence[str],
    proxies: Mapping[str, Any] | None = None,
    progress: bool = False,
    max_sentences: int | None = None,
) -> dict[str, dict]:
    """``{split: evaluate_models(...)}`` over the first ``max_sentences`` of each split."""
    from hf_illusions.evaluation import evaluate_models
    from hf_illusions.tasks.dyck import DyckTask

    ds = load_folder(dataset_dir)
    task = DyckTask(n_types=(model.config.vocab_size - 3) // 2)
    out = {}
    for split in splits:
        seqs = ds[split].data.column("input_ids").to_pylist()[:max_sentences]
        out[split] = evaluate_models(model, seqs, task, proxies, progress=progress, desc=split)
        out[split]["sentences"] = len(seqs)
    return out


def read_results(path: str | Path) -> dict:
    """A results JSON (``eval_results.json``, ``evaluate`` or ``reproduce`` output), or a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise IllusionsError(f"results file {str(path)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise IllusionsError(f"results file {str(path)!r} is not readable JSON: {err}") from None


# --------------------------------------------------------------------------- model


def evaluate_checkpoint(
    model: Any, dataset_dir: str | Path, splits: Sequence[str] = ACCURACY_SPLITS, progress: bool = False
) -> dict:
    """Closing-bracket accuracy of ``model`` on each split: ``{split: {"close": …, "long_distance": …}}``."""
    results = _evaluate_splits(model, dataset_dir, splits, progress=progress)
    return {
        split: {
            "sentences": res["sentences"],
            "close": res["original"]["close"],
            "long_distance": res["original"]["long_distance"],
        }
        for split, res in results.items()
    }


def _count_parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(model_dir / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def write_model_card(
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
) -> Path:
    """Render ``model_dir/README.md`` (and ``eval_results.json``) for a Dyck checkpoint.

    ``accuracy`` is :func:`evaluate_checkpoint`'s output (or a saved ``eval_results.json``); each
    split × group becomes one ``model-index`` entry, which the Hub shows as the model's results.
    """
    from transformers import AutoConfig

    import hf_illusions.modeling  # noqa: F401  (registers the config class)

    model_dir = Path(model_dir)
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
    card_data = ModelCardData(
        model_name=model_dir.name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="text-generation",
        datasets=[dataset_id],
        tags=[*TAGS, "illusion-transformer"],
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
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "dyck_model_card.md"),
        model_name=model_dir.name,
        cfg=cfg,
        n_params=f"{_count_parameters(model_dir):,}",
        repo_path=repo_id,
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


# --------------------------------------------------------------------------- dataset


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


# --------------------------------------------------------------------------- proxy


def proxy_results(results: Mapping[str, Any], name: str) -> dict[str, dict]:
    """``{split: {"original": …, "proxy": …}}`` from ``evaluate`` output or a ``reproduce`` results.json."""
    splits = results.get("splits", results)
    out = {}
    for split, res in splits.items():
        if not isinstance(res, Mapping) or "original" not in res:
            continue
        if name not in res:
            available = sorted(k for k in res if k not in ("original", "sentences"))
            raise IllusionsError(
                f"results have no proxy named {name!r} (pass --name; available: {available})"
            )
        out[split] = {"original": res["original"], "proxy": res[name]}
    if not out:
        raise IllusionsError(
            "results hold no split with an 'original' entry; expected evaluate/reproduce output"
        )
    return out


def evaluate_proxy(
    proxy: Any, original: Any, dataset_dir: str | Path, splits: Sequence[str] = dyck.TEST_SPLITS, **kw: Any
) -> dict[str, dict]:
    """Measure ``proxy`` against ``original`` on each split (the input :func:`write_proxy_card` takes)."""
    results = _evaluate_splits(original, dataset_dir, splits, {"proxy": proxy}, **kw)
    return proxy_results(results, "proxy")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def write_proxy_card(
    proxy_dir: str | Path,
    results: Mapping[str, Mapping[str, Any]],
    base_model: str = HUB_REPO_IDS["model"],
    dataset_id: str = HUB_REPO_IDS["dataset"],
    results_source: str = "a fresh evaluation",
    repo_id: str | None = None,
) -> Path:
    """Render ``proxy_dir/README.md`` from ``{split: {"original": …, "proxy": …}}`` (:func:`proxy_results`).

    The ``model-index`` holds, per split, the proxy's JSD and agreement with the original and its
    accuracy (closing-bracket positions): the numbers that show an illusion if there is one.
    ``repo_id`` is the Hub id the usage snippet names (default: ``base_model``'s namespace/folder name).
    """
    from hf_illusions.report import generalization_gap

    proxy_dir = Path(proxy_dir)
    config = json.loads((proxy_dir / "config.json").read_text())
    if config.get("model_type") != "illusion-proxy":
        raise IllusionsError(
            f"{str(proxy_dir)!r} is not a proxy folder (model_type {config.get('model_type')!r})"
        )
    simplifier, settings = config["simplifier"], config.get("simplifier_settings") or {}
    name = proxy_dir.name
    metrics = (
        ("jsd", "output JSD vs original"),
        ("agreement", "agreement with original"),
        ("accuracy", "accuracy"),
    )
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Faithfulness to the original model",
            dataset_type=dataset_id,
            dataset_name="dyck-illusions",
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{label} (closing brackets)",
            metric_value=round(float(res["proxy"]["close"][metric]), 6),
        )
        for split, res in results.items()
        for metric, label in metrics
        if res["proxy"]["close"].get(metric) is not None
    ]
    card_data = ModelCardData(
        model_name=name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="text-generation",
        base_model=base_model,
        datasets=[dataset_id],
        tags=[*TAGS, "illusion-proxy", f"simplifier-{simplifier}"],
        eval_results=eval_results,
    )

    def cell(res: Mapping, group: str, metric: str) -> str:
        return _fmt((res.get(group) or {}).get(metric))

    rows = [
        {
            "split": split,
            "n": res["original"]["close"]["n"],
            "jsd": cell(res["proxy"], "close", "jsd"),
            "agreement": cell(res["proxy"], "close", "agreement"),
            "acc_proxy": cell(res["proxy"], "close", "accuracy"),
            "acc_original": cell(res["original"], "close", "accuracy"),
            "jsd_long": cell(res["proxy"], "long_distance", "jsd"),
            "agreement_long": cell(res["proxy"], "long_distance", "agreement"),
        }
        for split, res in results.items()
    ]
    gaps = []
    if IID_SPLIT in results and len(results) > 1:
        as_report = {"splits": {s: {name: r["proxy"]} for s, r in results.items()}, "proxies": {name: {}}}
        gap = generalization_gap(as_report)[name]
        gaps = [
            {"split": s, "jsd": f"{g['jsd']:+.4f}", "agreement": f"{g['agreement']:+.4f}"}
            for s, g in gap.items()
        ]
    heads = config.get("simplified_heads") or {}
    setting_key = {"svd": "rank", "kmeans": "k"}.get(simplifier)
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "proxy_model_card.md"),
        proxy_name=name,
        title=FAMILY_TITLES.get(simplifier, simplifier),
        simplifier=simplifier,
        base_model=base_model,
        repo_path=repo_id or f"{base_model.split('/')[0]}/{name}",  # where `push proxy` would put it
        heads_text=" and ".join(
            f"layer {layer} ({'head' if len(hs) == 1 else 'heads'} {', '.join(map(str, hs))})"
            for layer, hs in heads.items()
        ),
        settings_text=", ".join(f"{k}={v}" for k, v in settings.items()) or "no settings",
        fitted_text=FITTED_STATE.get(simplifier, "see config.json"),
        cli_settings=f" --{setting_key} {settings[setting_key]}" if setting_key else "",
        n_sequences=settings.get("n_sequences", "–"),
        seed=settings.get("seed", "–"),
        long_threshold=LONG_THRESHOLD,
        rows=rows,
        gaps=gaps,
        iid_split=IID_SPLIT,
        results_source=results_source,
    )
    card.save(proxy_dir / "README.md")
    return proxy_dir / "README.md"


# --------------------------------------------------------------------------- metric

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


# --------------------------------------------------------------------------- Space


def _in_repo(path: str | None) -> str | None:
    """``path`` relative to the repository when inside it, so cards never show a local absolute path."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(TEMPLATES.parent).as_posix()
    except ValueError:
        return path


def report_summary(results: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The per-split numbers the Space shows next to a sentence's, from a reproduction's results.json."""
    groups = ("close", "long_distance")
    return {
        "source": source,
        "created": results.get("created"),
        "model_dir": _in_repo(results.get("model_dir")),
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
            json.loads((report_dir / "results.json").read_text()), _in_repo(str(report_dir))
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

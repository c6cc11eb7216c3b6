"""Every card renders from results and parses back with huggingface_hub to the same numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard, RepoCard, SpaceCard

from hf_illusions.cli import main
from hf_illusions.data.dyck import SPLITS
from hf_illusions.hub import HUB_REPO_IDS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_dyck_dir):
    """A tiny random model saved with its tokenizer, an SVD proxy of it, and `evaluate` results."""
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.data.tokenizer import dyck_tokenizer
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
    from hf_illusions.simplify import SVDSimplifier

    root = tmp_path_factory.mktemp("cards")
    torch.manual_seed(0)
    model = IllusionForCausalLM(IllusionConfig(d_model=16, n_head=1, d_mlp=32, n_positions=128)).eval()
    model.save_pretrained(root / "model")
    dyck_tokenizer(20, 128).save_pretrained(root / "model")
    proxy = SVDSimplifier(rank=2, n_sequences=50).fit(model, load_folder(tiny_dyck_dir)["train"])
    proxy.save_pretrained(root / "svd2")
    results = root / "evaluate.json"
    args = [
        "evaluate",
        "--model",
        str(root / "model"),
        "--proxy",
        str(root / "svd2"),
        "--data",
        str(tiny_dyck_dir),
    ]
    assert main([*args, "--max_sentences", "32", "--out", str(results)]) == 0
    return root, results


def test_model_card_metadata_matches_the_measured_accuracy(workspace, tiny_dyck_dir):
    root, _ = workspace
    folder = root / "model"
    assert main(["card", "model", str(folder), "--data", str(tiny_dyck_dir)]) == 0
    measured = json.loads((folder / "eval_results.json").read_text())
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.datasets == [HUB_REPO_IDS["dataset"]] and "interpretability" in card.data.tags
    values = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert len(values) == 2 * len(measured) == 2 * (len(SPLITS) - 1)
    for split, res in measured.items():
        assert values[(split, "closing-bracket accuracy (close)")] == round(res["close"]["accuracy"], 6)
        assert values[(split, "closing-bracket accuracy (long-distance)")] == round(
            res["long_distance"]["accuracy"], 6
        )
    assert "## Training" in card.text and "## Intended use and limitations" in card.text


def test_model_card_re_renders_from_its_results_file_without_measuring(workspace, tiny_dyck_dir):
    root, _ = workspace
    folder = root / "model"
    if not (folder / "eval_results.json").exists():
        assert main(["card", "model", str(folder), "--data", str(tiny_dyck_dir)]) == 0
    before = (folder / "README.md").read_text()
    saved = folder.parent / "eval_results.json"
    shutil.copyfile(folder / "eval_results.json", saved)
    assert main(["card", "model", str(folder), "--results", str(saved), "--data", "/nonexistent"]) == 0
    assert (folder / "README.md").read_text() == before


def test_dataset_card_sizes_and_configs_match_the_files(tiny_dyck_dir, tmp_path):
    import pyarrow.parquet as pq
    from datasets import load_dataset

    folder = tmp_path / "dyck-illusions"
    shutil.copytree(tiny_dyck_dir, folder)
    built = (folder / "README.md").read_text()
    assert main(["card", "dataset", str(folder)]) == 0
    assert (folder / "README.md").read_text() == built  # the build renders the very same card
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    files = {f["split"]: f["path"] for f in data["configs"][0]["data_files"]}
    assert list(files) == list(SPLITS) and all((folder / p).is_file() for p in files.values())
    info = data["dataset_info"]
    rows = {s["name"]: s["num_examples"] for s in info["splits"]}
    assert rows == {s: pq.ParquetFile(folder / files[s]).metadata.num_rows for s in SPLITS}
    assert info["download_size"] == sum((folder / p).stat().st_size for p in files.values())
    assert data["size_categories"] == "1K<n<10K" and data["license"] == "apache-2.0"
    for needed in ("## Sampling process", "## Splits", "## Citation", "test_unseen_depth", "redrawn"):
        assert needed in card.text
    ds = load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))  # the metadata must not break loading
    assert {s: len(ds[s]) for s in ds} == rows


def test_proxy_card_reports_faithfulness_per_split_from_evaluate_results(workspace):
    root, results = workspace
    folder = root / "svd2"
    assert main(["card", "proxy", str(folder), "--results", str(results)]) == 0
    measured = json.loads(results.read_text())
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == HUB_REPO_IDS["model"] and "simplifier-svd" in card.data.tags
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    for split, res in measured.items():
        for metric in ("jsd", "agreement", "accuracy"):
            assert values[(split, metric)] == round(res["svd2"]["close"][metric], 6), (split, metric)
    assert "Generalization gap" in card.text and "--rank 2" in card.text
    gap = measured["test_unseen_depth"]["svd2"]["close"]["jsd"] - measured["test_iid"]["svd2"]["close"]["jsd"]
    assert f"`test_unseen_depth` | {gap:+.4f}" in card.text


def test_proxy_card_names_the_missing_proxy(workspace, capsys):
    root, results = workspace
    assert main(["card", "proxy", str(root / "svd2"), "--results", str(results), "--name", "svd9"]) == 2
    assert "no proxy named 'svd9' (pass --name; available: ['svd2'])" in capsys.readouterr().err


def test_metric_folder_is_a_loadable_evaluate_space(tmp_path):
    import evaluate

    out = tmp_path / "faithfulness-metric"
    assert main(["card", "metric", "--out", str(out)]) == 0
    card = RepoCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["sdk"] == "gradio" and "metric" in meta["tags"] and (out / meta["app_file"]).is_file()
    assert "hf-illusions" in (out / "requirements.txt").read_text()
    module = evaluate.load(str(out / "faithfulness.py"))
    assert module.compute(predictions=[[0.5, 0.5]], references=[[0.5, 0.5]]) == {
        "jsd": 0.0,
        "agreement": 1.0,
        "n": 1,
    }


def test_space_card_and_assets_come_from_the_report(tmp_path, workspace, tiny_dyck_dir):
    from hf_illusions.reproduce import reproduce_dyck

    root, _ = workspace
    report = reproduce_dyck(
        root / "model", tiny_dyck_dir, tmp_path / "report", data_config="tiny", svd_ranks=(2,),
        kmeans_ks=(), n_fit_sequences=50, max_eval_sentences=16, progress=False,
    ).parent  # fmt: skip
    space = tmp_path / "space"
    space.mkdir()
    assert main(["card", "space", str(space), "--report", str(report)]) == 0
    card = SpaceCard.load(space / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.models == [HUB_REPO_IDS["model"]] and card.data.datasets == [HUB_REPO_IDS["dataset"]]
    assert len(card.data.short_description) <= 60  # the Hub's limit
    assert (space / "assets" / "gap.png").read_bytes() == (report / "gap.png").read_bytes()
    summary = json.loads((space / "assets" / "report.json").read_text())
    results = json.loads((report / "results.json").read_text())
    assert summary["weights_sha256_16"] == results["model"]["weights_sha256_16"]
    for split, res in results["splits"].items():
        assert summary["faithfulness"]["svd_r2"][split]["close"]["jsd"] == res["svd_r2"]["close"]["jsd"]
    assert "assets/gap.png" in card.text


def test_space_card_without_a_report_says_how_to_make_one(tmp_path):
    assert main(["card", "space", str(tmp_path)]) == 0
    assert "No report has been copied here yet" in SpaceCard.load(tmp_path / "README.md").text
    assert main(["card", "space", str(tmp_path), "--report", str(tmp_path / "nope")]) == 2


def test_the_shipped_space_folder_is_complete():
    space = ROOT / "spaces_app"
    card = SpaceCard.load(space / "README.md")
    assert card.data.sdk == "gradio" and (space / card.data.app_file).is_file()
    assert card.data.models == [HUB_REPO_IDS["model"]] and card.data.datasets == [HUB_REPO_IDS["dataset"]]
    assert "hf-illusions" in (space / "requirements.txt").read_text()

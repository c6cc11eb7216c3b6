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


def test_cards_print_no_absolute_path_of_this_machine(workspace, tiny_dyck_dir):
    """A command line and results source naming local folders come out relative to the card's folder."""
    root, results = workspace
    folder = root / "model"
    command = f"accelerate launch scripts/train.py --output_dir {root / 'run'} --dataset_dir {tiny_dyck_dir}"
    train_args = {"output_dir": str(root / "run"), "dataset_dir": str(tiny_dyck_dir), "seed": 0}
    accuracy = json.loads(results.read_text())["splits"]
    from hf_illusions.cards import write_model_card, write_proxy_card

    measured = {s: {**r["original"], "sentences": 32} for s, r in accuracy.items()}
    readme = write_model_card(folder, measured, train_args, command, 0.5, "1 min").read_text()
    assert "--output_dir ../run" in readme and "`../run`" in readme
    source = f"`hf-illusions card proxy` against {folder} on {tiny_dyck_dir}"
    proxy_results = {s: {"original": r["original"], "proxy": r["svd2"]} for s, r in accuracy.items()}
    proxy_readme = write_proxy_card(root / "svd2", proxy_results, results_source=source).read_text()
    assert "against ../model on" in proxy_readme
    for text in (readme, proxy_readme):
        assert str(root) not in text and str(tiny_dyck_dir) not in text and str(ROOT) not in text


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
    measured = json.loads(results.read_text())["splits"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == HUB_REPO_IDS["model"] and "simplifier-svd" in card.data.tags
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    for split, res in measured.items():
        for metric in ("jsd", "agreement", "accuracy"):
            assert values[(split, metric)] == round(res["svd2"]["close"][metric], 6), (split, metric)
    assert "Generalization gap" in card.text and "--rank 2" in card.text
    gap = measured["test_unseen_depth"]["svd2"]["close"]["jsd"] - measured["test_iid"]["svd2"]["close"]["jsd"]
    assert f"`test_unseen_depth` | {gap:+.4f}" in card.text


def test_evaluate_records_what_its_numbers_rest_on(workspace, tiny_dyck_dir):
    """`evaluate --proxy` writes the model, data, proxies and scored sentences beside the numbers,
    as paths relative to the results file's folder (no absolute path of this machine)."""
    root, results = workspace
    written = json.loads(results.read_text())
    assert written["model"] == "model" and written["proxies"] == {"svd2": "svd2"}
    assert (results.parent / written["data"]).resolve() == Path(tiny_dyck_dir).resolve()
    assert written["sentences"] == {
        "scored": {split: 32 for split in written["splits"]},
        "which": "the first of each split",
    }
    assert sorted(written["splits"]) == sorted(s for s in SPLITS if s.startswith("test_"))
    assert str(root) not in results.read_text()


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
    from hf_illusions.reproduction import reproduce_dyck

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
    for text in ((space / "README.md").read_text(), (space / "assets" / "report.json").read_text()):
        assert str(tmp_path) not in text and str(root) not in text  # paths relative to the repo or the card


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


# --------------------------------------------------------------------------- code model card


@pytest.fixture(scope="module")
def code_model_dir(tmp_path_factory):
    """A tiny random character-level model saved as a training checkpoint would save it."""
    from hf_illusions.data import code
    from hf_illusions.data.tokenizer import code_tokenizer
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    folder = tmp_path_factory.mktemp("code-cards") / "tiny-code"
    torch.manual_seed(0)
    config = IllusionConfig(vocab_size=code.VOCAB_SIZE, n_positions=129, d_model=16, n_head=2, d_mlp=32)
    IllusionForCausalLM(config).save_pretrained(folder)
    code_tokenizer(129).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def code_card(code_model_dir, tiny_code_dir):
    """`hf-illusions card model` on the tiny code folder: the card and the numbers it was made from."""
    assert main(["card", "model", str(code_model_dir), "--data", str(tiny_code_dir)]) == 0
    measured = json.loads((code_model_dir / "eval_results.json").read_text())
    return ModelCard.load(code_model_dir / "README.md"), measured


def test_code_model_card_metadata_matches_the_measured_accuracy(code_card, tiny_code_dir):
    from hf_illusions.cards import CODE_ACCURACY_SPLITS
    from hf_illusions.data.hub_folder import load_folder

    card, measured = code_card
    present = [s for s in CODE_ACCURACY_SPLITS if s in load_folder(tiny_code_dir)]
    assert list(measured) == present and {"test_iid", "test_unseen_package"} <= set(present)
    assert (
        card.data.datasets == [HUB_REPO_IDS["code_dataset"]] and card.data.pipeline_tag == "text-generation"
    )
    assert "code" in card.data.tags and "dyck" not in card.data.tags
    values = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    expected = {
        (split, f"next-character accuracy ({label})"): round(res[group]["accuracy"], 6)
        for split, res in measured.items()
        for group, label in (("all", "all"), ("identifier_repeat", "identifier-repeat"))
        if res[group]["accuracy"] is not None
    }
    assert values == expected
    assert all((s, "next-character accuracy (all)") in values for s in present)
    for res in measured.values():  # every window scored, every character in exactly one type
        assert res["all"]["n"] == sum(res[t]["n"] for t in res if t not in ("all", "sentences"))
    for section in ("## Use", "## Evaluation", "## Training", "## Intended use and limitations"):
        assert section in card.text
    assert "accelerate launch scripts/train.py --task code" in card.text


def test_code_model_card_has_a_per_type_row_for_every_prediction_type(code_card):
    from hf_illusions.data.code_labels import PREDICTION_TYPES

    card, measured = code_card
    table = card.text.split("### Accuracy per prediction type")[1].split("\n- ")[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `")}
    assert list(rows) == [f"`{t}`" for t in PREDICTION_TYPES]
    for i, (split, res) in enumerate(measured.items()):
        for t in PREDICTION_TYPES:
            acc, n = res[t]["accuracy"], res[t]["n"]
            cell = rows[f"`{t}`"].split("|")[2 + i].strip()
            assert cell == ("–" if acc is None else f"{acc:.4f} ({n:,})"), (split, t)


def test_code_model_card_usage_snippet_runs_on_the_saved_folder(code_card, code_model_dir):
    card, _ = code_card
    snippet = card.text.split("```python\n")[1].split("```")[0]
    assert "import hf_illusions" in snippet and "AutoModelForCausalLM.from_pretrained" in snippet
    exec(snippet.replace(HUB_REPO_IDS["code_model"], str(code_model_dir)), {})


def test_code_model_card_re_renders_from_its_results_file(code_card, code_model_dir):
    before = (code_model_dir / "README.md").read_text()
    saved = code_model_dir.parent / "code_eval_results.json"
    shutil.copyfile(code_model_dir / "eval_results.json", saved)
    assert (
        main(["card", "model", str(code_model_dir), "--results", str(saved), "--data", "/nonexistent"]) == 0
    )
    assert (code_model_dir / "README.md").read_text() == before


def test_checkpoint_card_reports_its_step_and_the_loss_logged_at_it(code_model_dir, code_card, tmp_path):
    run = tmp_path / "code"
    model = run / "checkpoint-200" / "model"
    shutil.copytree(code_model_dir, model)
    (run / "checkpoint-200" / "trainer_state.json").write_text('{"step": 200}\n')
    train_args = {"task": "code", "data_config": "tiny", "max_steps": 300}
    (run / "train_args.json").write_text(json.dumps(train_args))
    losses = [{"step": s, "loss": 4.0 - s / 100} for s in (100, 200, 300)]  # training went on to 300
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in losses))
    args = ["card", "model", str(model), "--results", str(code_model_dir / "eval_results.json")]
    assert main([*args, "--run", str(run), "--wall-time", "3 min", "--command", "make train-code"]) == 0
    card = ModelCard.load(model / "README.md")
    assert card.data.model_name == "code-checkpoint-200" and "# code-checkpoint-200\n" in card.text
    assert "Training loss at step 200: 2.0000; wall time: 3 min." in card.text
    assert "intermediate checkpoint** (step 200 of 300)" in card.text and "make train-code" in card.text
    assert {r.dataset_config for r in card.data.eval_results} == {"tiny"}


def test_model_card_refuses_a_model_of_the_other_task(
    workspace, code_model_dir, tiny_dyck_dir, tiny_code_dir, capsys
):
    root, _ = workspace
    assert main(["card", "model", str(root / "model"), "--data", str(tiny_code_dir)]) == 2
    assert "vocab_size=43 but the code data" in capsys.readouterr().err
    assert main(["card", "model", str(code_model_dir), "--data", str(tiny_dyck_dir)]) == 2
    assert "vocab_size=101 but the Dyck data" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["interaction_basis", "sparse_circuit"])
def test_proxy_card_describes_residual_and_circuit_proxies(workspace, tiny_dyck_dir, kind):
    from hf_illusions.checkpoints import load_checkpoint
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.simplify import InteractionBasisSimplifier
    from hf_illusions.sparse import SparseCircuitPruner

    root, _ = workspace
    model, train = load_checkpoint(root / "model"), load_folder(tiny_dyck_dir)["train"]
    if kind == "interaction_basis":
        proxy = InteractionBasisSimplifier(k=4, layers=[1], n_sequences=16).fit(model, train)
    else:
        proxy = SparseCircuitPruner.with_slack(model, train, 0.2, n_sequences=16, steps=10).fit(model, train)
    folder = root / kind
    proxy.save_pretrained(folder)
    out = root / f"{kind}.json"
    args = ["evaluate", "--model", str(root / "model"), "--proxy", str(folder), "--data", str(tiny_dyck_dir)]
    assert main([*args, "--max_sentences", "16", "--out", str(out)]) == 0
    assert main(["card", "proxy", str(folder), "--results", str(out)]) == 0
    card = ModelCard.load(folder / "README.md")
    assert f"simplifier-{kind}" in card.data.tags
    first = card.text.split("## Use")[0]
    assert "the attention of" not in first  # these proxies do not touch attention weights
    if kind == "interaction_basis":
        assert "residual stream entering layer(s) 1" in first and "top 4 **interaction-basis**" in first
        assert "IllusionProxyForCausalLM" in card.text
    else:
        size = proxy.config.circuit_size
        assert f"{size['kept_nodes']} of its {size['total_nodes']} nodes" in first
        assert "IllusionCircuitForCausalLM" in card.text and "--target_loss" in card.text

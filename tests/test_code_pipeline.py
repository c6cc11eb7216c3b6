"""The code task end to end: `train --task code` → copy-head scores → `reproduce_code` → report.

A tiny model trained for a few steps on the `tiny` code preset is enough for the contract (every
split × prediction type scored, the copy-head proxies present, full-rank SVD exact, report files,
resume); the shipped checkpoint's numbers are in README.md and the closing notes.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from hf_illusions.data import code
from hf_illusions.data.code_folder import verify_code_folder
from hf_illusions.data.code_labels import PREDICTION_TYPES
from hf_illusions.errors import SettingsError
from hf_illusions.report import CODE_PLOTS, PLOTS, type_findings, type_gap_proxies, type_gaps
from hf_illusions.tasks.copying import head_scores
from hf_illusions.train import TASK_DEFAULTS, TrainArgs
from hf_illusions.train import main as train_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEST_SPLITS = ("test_iid", *code.OOD_SPLITS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_code_dir):
    """`hf-illusions train --task code` for 12 steps on the tiny code folder (window 128)."""
    out = tmp_path_factory.mktemp("code-train") / "run"
    final = train_main(
        [
            "--task", "code", "--dataset_dir", str(tiny_code_dir), "--data_config", "tiny",
            "--output_dir", str(out), "--n_positions", "129", "--d_model", "32", "--n_head", "2",
            "--d_mlp", "64", "--max_steps", "12", "--warmup_steps", "2", "--max_batch_tokens", "2064",
            "--eval_every", "12", "--save_every", "12", "--eval_sentences", "8", "--report_to", "none",
        ]
    )  # fmt: skip
    return out, final


@pytest.fixture(scope="module")
def reproduced(trained, tiny_code_dir, tmp_path_factory):
    from hf_illusions.reproduction import reproduce_code

    out = tmp_path_factory.mktemp("code-report")
    readme = reproduce_code(
        trained[1], tiny_code_dir, out, data_config="tiny", svd_ranks=(1, 16), kmeans_ks=(4,),
        copy_head_ranks=(1, 16), n_fit_sequences=20, max_eval_sentences=16, progress=False,
    )  # fmt: skip
    return out, readme, json.loads((out / "results.json").read_text())


def test_task_defaults_fill_only_what_was_not_given():
    args = TrainArgs(task="code")
    assert (args.d_model, args.n_head, args.dataset_dir) == (128, 4, "code-illusions")
    assert args.n_positions == TASK_DEFAULTS["code"]["n_positions"]
    assert TrainArgs(task="code", d_model=48, n_head=2).d_model == 48
    assert TrainArgs().dataset_dir == "dyck-illusions"
    with pytest.raises(SettingsError, match=r"--data_config must be one of .* for --task code"):
        TrainArgs(task="code", data_config="dyck-20-10")
    with pytest.raises(SettingsError, match="--task must be one of"):
        TrainArgs(task="java")


def test_code_training_logs_per_type_headline_and_saves_a_char_tokenizer(trained):
    out, final = trained
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "test_iid/accuracy" in r]
    assert evals and 0 <= evals[-1]["test_unseen_package/identifier_repeat_accuracy"] <= 1
    # a group without positions in the few evaluated windows is logged as null, never as NaN
    assert "NaN" not in (out / "metrics.jsonl").read_text()
    assert json.loads((out / "train_args.json").read_text())["task"] == "code"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    text = "def f(x):\n\treturn x"
    assert tok(text)["input_ids"] == code.encode(text)


def test_head_scores_match_a_direct_computation_and_are_seeded(trained):
    from hf_illusions.checkpoints import load_checkpoint

    model = load_checkpoint(trained[1])
    tokens = range(len(code.SPECIALS), code.VOCAB_SIZE)
    scores = head_scores(model, tokens, code.BOS_ID, n_sequences=4, copy_length=20, seed=3)
    assert scores == head_scores(model, tokens, code.BOS_ID, n_sequences=4, copy_length=20, seed=3)
    assert scores != head_scores(model, tokens, code.BOS_ID, n_sequences=4, copy_length=20, seed=4)
    # recompute layer 1, head 1 by hand from the same random strings
    generator = torch.Generator().manual_seed(3)
    half = torch.as_tensor(list(tokens))[torch.randint(len(tokens), (4, 20), generator=generator)]
    ids = torch.cat([torch.full((4, 1), code.BOS_ID), half, half], dim=1)
    attn = model(ids, output_attentions=True).attentions[1][:, 1]
    manual = sum(attn[:, q, q - 19].mean().item() for q in range(21, 41)) / 20
    assert scores["induction"][1][1] == pytest.approx(manual, abs=1e-6)
    assert scores["previous_token"][0][0] == pytest.approx(
        sum(
            model(ids, output_attentions=True).attentions[0][:, 0, q, q - 1].mean().item()
            for q in range(1, 41)
        )
        / 40,
        abs=1e-6,
    )
    best = scores["copy_head"]
    assert best["layer"] == 1 and best["induction_score"] == max(scores["induction"][1])
    with pytest.raises(SettingsError, match="copy_length must be in"):
        head_scores(model, tokens, code.BOS_ID, copy_length=100)


def test_reproduce_code_scores_every_split_and_prediction_type(reproduced):
    _, _, results = reproduced
    assert results["task"] == "code" and list(results["splits"]) == list(TEST_SPLITS)
    layer, head = (
        results["analyses"]["heads"]["copy_head"]["layer"],
        results["analyses"]["heads"]["copy_head"]["head"],
    )
    assert results["evaluation"]["copy_head"] == [layer, head]
    names = set(results["proxies"])
    assert {"svd_r1", "svd_r16", "kmeans_k4", "onehot", "copy_svd_r1", "copy_svd_r16", "copy_onehot"} <= names
    for split in TEST_SPLITS:
        original = results["splits"][split]["original"]
        assert sum(original[t]["n"] for t in PREDICTION_TYPES) == original["all"]["n"] > 0
        for name in names:
            for group in ("all", "identifier_repeat"):
                cell = results["splits"][split][name][group]
                assert 0 <= cell["agreement"] <= 1 and cell["jsd"] >= 0
        # full rank (d_head = 16) is the model itself, whole model or copy head alone
        for name in ("svd_r16", "copy_svd_r16"):
            assert results["splits"][split][name]["all"]["jsd"] < 1e-6
            assert results["splits"][split][name]["all"]["agreement"] == 1.0
    # the copy-head proxies simplify that head only: attention below its layer is the original's
    attention = results["splits"]["test_iid"]["copy_onehot"]["attention_jsd"]
    assert attention[str(layer)] > 0
    assert all(v < 1e-9 for k, v in attention.items() if int(k) < layer)
    # the head was chosen on real code: the largest attention on induction targets
    heads = results["analyses"]["heads"]
    mass = heads["on_data"]["mass"]
    assert mass[layer][head] == max(max(row) for row in mass) == heads["copy_head"]["induction_mass_on_data"]
    assert heads["on_data"]["n_positions"] > 0 and 0 < heads["on_data"]["chance"] < 1


def test_code_report_has_per_type_tables_plots_and_copy_head_section(reproduced):
    out, readme, _ = reproduced
    text = readme.read_text()
    assert text.startswith("# Code reproduction")
    for section in (
        "## Faithfulness per prediction type",
        "### Which type's faithfulness",
        "## The copying head",
    ):
        assert section in text
    for t in PREDICTION_TYPES:
        assert f"| {t} " in text or f"| {t} |" in text  # a column of the per-type tables
    for png in (*PLOTS, *CODE_PLOTS):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC


def hand_made_code_results() -> dict:
    """test_iid and one OOD split; three types of 2000 characters and one rare type."""

    def cell(jsd: float, agreement: float = 0.9, n: int = 2000) -> dict:
        return {"n": n, "jsd": jsd, "agreement": agreement, "accuracy": 0.8}

    def model(repeat: float, keyword: float, rare: float, agreement: float = 0.9) -> dict:
        return {
            "all": cell(0.05, agreement, 6100),
            "identifier_repeat": cell(repeat),
            "keyword": cell(keyword),
            "whitespace": cell(0.01),
            "number": cell(rare, n=100),
        }

    original = {
        g: {"n": 2000, "accuracy": 0.8} for g in ("all", "identifier_repeat", "keyword", "whitespace")
    }
    original["number"] = {"n": 100, "accuracy": 0.8}  # counts come from the original's groups
    return {
        "task": "code",
        "evaluation": {"headline_groups": ["all", "identifier_repeat"]},
        "proxies": {
            "a": {"family": "svd", "param": 1},
            "b": {"family": "kmeans", "param": 2},
            "crude": {"family": "onehot", "param": None},
        },
        "splits": {
            "test_iid": {"original": original, "a": model(0.1, 0.1, 0.1), "b": model(0.1, 0.1, 0.1),
                         "crude": model(0.1, 0.1, 0.1, agreement=0.3)},
            "test_unseen_package": {"original": original, "a": model(0.3, 0.2, 0.9),
                                    "b": model(0.15, 0.2, 0.1), "crude": model(0.9, 0.1, 0.1, agreement=0.3)},
        },
    }  # fmt: skip


def test_type_gaps_rank_well_populated_types_of_faithful_proxies():
    results = hand_made_code_results()
    assert type_gap_proxies(results) == ["a", "b"]  # "crude" is not faithful in distribution
    gaps = type_gaps(results, "a", "test_unseen_package")
    assert list(gaps) == ["identifier_repeat", "keyword", "whitespace"]  # `number` has 100 < 1000 characters
    assert gaps["identifier_repeat"] == pytest.approx(0.2) and gaps["whitespace"] == pytest.approx(0.0)
    assert next(iter(type_gaps(results, "b", "test_unseen_package"))) == "keyword"
    facts = dict(type_findings(results))
    (fact,) = [f for f in facts if "largest output-JSD gap" in f]
    assert "≥ 1000 characters" in fact and facts[fact].startswith("1 of 2")


def test_reproduce_code_resumes_without_refitting(reproduced, trained, tiny_code_dir):
    from hf_illusions.reproduction import reproduce_code

    out, _, first = reproduced
    reproduce_code(
        trained[1], tiny_code_dir, out, data_config="tiny", svd_ranks=(1, 16), kmeans_ks=(4,),
        copy_head_ranks=(1, 16), n_fit_sequences=20, max_eval_sentences=16, progress=False,
    )  # fmt: skip
    again = json.loads((out / "results.json").read_text())
    assert all(again["resumed"].values())
    assert again["splits"] == first["splits"]


def test_verify_code_folder_passes_a_built_folder_and_catches_a_leaked_window(tiny_code_dir, tmp_path):
    import shutil

    assert verify_code_folder(tiny_code_dir)["ok"]
    bad = tmp_path / "bad"
    shutil.copytree(tiny_code_dir, bad)
    train = pq.read_table(bad / "data" / "train.parquet")
    test = pq.read_table(bad / "data" / "test_iid.parquet")
    import pyarrow as pa

    pq.write_table(
        pa.concat_tables([test, train.slice(0, 1).cast(test.schema)]), bad / "data" / "test_iid.parquet"
    )
    report = verify_code_folder(bad)
    assert not report["ok"]
    assert any("also occurs in train" in v for v in report["violations"])
    assert any("also feeds split 'train'" in v for v in report["violations"])


def test_copy_scores_on_data_match_a_direct_computation(trained):
    from hf_illusions.checkpoints import load_checkpoint
    from hf_illusions.tasks.copying import copy_scores_on_data

    model = load_checkpoint(trained[1])
    seq = [code.BOS_ID, *code.encode("ab_ab_ab")[1:]]  # bigram "ab" repeats: induction targets exist
    scores = copy_scores_on_data(model, [seq])
    attn = model(torch.tensor([seq]), output_attentions=True).attentions
    # scored queries t and their targets j + 1, for every earlier j with (x[j-1], x[j]) == (x[t-1], x[t])
    pairs = {
        t: [j + 1 for j in range(1, t) if (seq[j - 1], seq[j]) == (seq[t - 1], seq[t])]
        for t in range(1, len(seq))
    }
    pairs = {t: js for t, js in pairs.items() if js}
    for layer in range(2):
        for h in range(2):
            manual = sum(attn[layer][0, h, t, js].sum().item() for t, js in pairs.items()) / len(pairs)
            assert scores["mass"][layer][h] == pytest.approx(manual, abs=1e-6)
    assert scores["n_positions"] == len(pairs)
    assert scores["chance"] == pytest.approx(sum(len(js) / (t + 1) for t, js in pairs.items()) / len(pairs))
    # only the flagged positions are scored
    only_last = [[t == len(seq) - 1 for t in range(len(seq))]]
    assert copy_scores_on_data(model, [seq], only_last)["n_positions"] == 1
    with pytest.raises(SettingsError, match="no scored position repeats an earlier bigram"):
        copy_scores_on_data(model, [code.encode("abcdef")])


def test_training_records_its_train_split_and_reproduce_refuses_other_data(trained, tiny_code_dir, tmp_path):
    import shutil

    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.errors import SplitError
    from hf_illusions.reproduction import reproduce_code, sequences_hash

    recorded = json.loads((trained[1] / "training_data.json").read_text())
    train = load_folder(tiny_code_dir)["train"]["input_ids"]
    assert recorded["train_sha256_16"] == sequences_hash(train) and recorded["n_train"] == len(train)
    assert recorded["task"] == "code" and "tqdm" in recorded["source_versions"]
    model = tmp_path / "model"
    shutil.copytree(trained[1], model)
    (model / "training_data.json").write_text(json.dumps({**recorded, "train_sha256_16": "0" * 16}))
    small = dict(svd_ranks=(1,), kmeans_ks=(), onehot=False, copy_head_ranks=(), n_fit_sequences=4)
    with pytest.raises(SplitError, match="was trained on another 'train' split than this dataset holds"):
        reproduce_code(model, tiny_code_dir, tmp_path / "r1", data_config="tiny", progress=False, **small)
    readme = reproduce_code(
        model, tiny_code_dir, tmp_path / "r2", data_config="tiny", progress=False, max_eval_sentences=4,
        allow_other_training_data=True, **small,
    )  # fmt: skip
    assert "train split vs the model's training data: **differs**" in readme.read_text()

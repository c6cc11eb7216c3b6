"""The user's own model and text (issue 13, item 4), offline, end to end.

Everything is built here: a local text dataset with three splits (parquet, Hub layout), a
byte-level BPE tokenizer trained on its train split, tiny GPT-2 and Llama models with that
vocabulary saved with the tokenizer. Numbers are checked against computations written in this
file (windows packed by hand, the two models' logits, scipy's JSD).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from hf_illusions import load_proxy
from hf_illusions.cli import main
from hf_illusions.errors import CheckpointError, DatasetError, SettingsError, SplitError
from hf_illusions.own_data import VOLATILE_KEYS, evaluate_own_model
from hf_illusions.simplify import SVDSimplifier

EOS = "<|endoftext|>"
WINDOW, HIDDEN, HEADS, SCALE = 24, 32, 2, 16.0
ANIMALS, PLACES = ["cat", "dog", "bird", "fox", "cow"], ["mat", "hill", "road", "barn", "tree"]


def _texts(kind: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    if kind == "far":  # a systematic shift: arithmetic instead of animals
        return [f"{rng.randint(1, 99)} plus {rng.randint(1, 99)} is a number" for _ in range(n)]
    return [
        " ".join(
            f"the {rng.choice(ANIMALS)} sat on the {rng.choice(PLACES)}." for _ in range(rng.randint(1, 3))
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    return {"train": _texts("near", 60, 0), "near": _texts("near", 30, 1), "far": _texts("far", 30, 2)}


@pytest.fixture(scope="module")
def data(tmp_path_factory, texts) -> str:
    import datasets

    root = tmp_path_factory.mktemp("own-text")
    for split, rows in texts.items():
        ds = datasets.Dataset.from_dict({"body": rows, "id": list(range(len(rows)))})
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return str(root)


@pytest.fixture(scope="module")
def tokenizer(texts):
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts["train"], vocab_size=300, min_frequency=1, special_tokens=[EOS], show_progress=False
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS)


def _peaked(model):
    """Scale q/k projections (peaked attention) and the final norm (peaked outputs): rank 1 moves them."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "k_proj")):
                module.weight.mul_(SCALE)
            elif name.endswith("attn.c_attn"):
                module.weight[:, : 2 * HIDDEN].mul_(SCALE)
            elif name in ("transformer.ln_f", "model.norm"):  # sharper next-token distributions
                module.weight.mul_(SCALE)
    return model.eval()


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, tokenizer) -> str:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=HIDDEN, n_layer=2, n_head=HEADS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return _save(_peaked(GPT2LMHeadModel(config)), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tokenizer) -> str:
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return _save(_peaked(LlamaForCausalLM(config)), tokenizer, tmp_path_factory.mktemp("llama"))


def _run(model, data, **kwargs):
    settings = {"text_column": "body", "splits": ["near", "far"], "window": WINDOW, "n_resamples": 200}
    return evaluate_own_model(model, data, **{**settings, **kwargs})


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, :-1].double()


# ---------------------------------------------------------------- numbers


def test_windows_are_packed_as_documented(gpt2, data, texts, tokenizer):
    ev = _run(gpt2, data, simplifier="onehot", max_windows=5, n_fit=7)
    stream = [
        t
        for text in texts["far"]
        for t in [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    ]
    far = ev.windows["far"]
    assert far.n_tokens == len(stream) and far.n_available == len(stream) // (WINDOW - 1)
    assert len(far.input_ids) == 5 and far.starts == sorted(far.starts)
    for ids, start in zip(far.input_ids, far.starts, strict=True):
        assert ids == [tokenizer.bos_token_id, *stream[start : start + WINDOW - 1]]
    assert len(ev.fit_windows.input_ids) == 7 and ev.results["fit"]["split"] == "train"
    assert ev.results["windows"]["far"]["starts"] == far.starts  # the rows used are recorded


def test_full_rank_svd_proxy_is_exact(gpt2, data):
    ev = _run(gpt2, data, simplifier="svd", rank=HIDDEN // HEADS, layers=[0, 1])
    for split in ("near", "far"):
        res = ev.results["splits"][split]
        assert res["svd_r16"]["all"]["jsd"] < 1e-9, res["svd_r16"]["all"]["jsd"]
        print(f"full-rank SVD JSD on {split}: {res['svd_r16']['all']['jsd']:.3g}")
        assert res["svd_r16"]["all"]["agreement"] == 1.0
        assert res["svd_r16"]["all"]["accuracy"] == res["original"]["all"]["accuracy"]
        assert res["svd_r16"]["all"]["n"] == len(ev.windows[split].input_ids) * (WINDOW - 1)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_rank1_proxy_numbers_equal_a_hand_computation(family, request, data):
    path = request.getfixturevalue(family)
    ev = _run(path, data, simplifier="svd", rank=1, n_fit=20, max_windows=12)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    # the proxy is the SVD fit on the fit split's windows, as a direct fit gives it
    direct = SVDSimplifier(rank=1, n_sequences=20).fit(model, ev.fit_windows.input_ids)
    per_split = {}
    for split in ("near", "far"):
        jsd, agree, acc_o, acc_p = [], [], [], []
        for ids in ev.windows[split].input_ids:
            lo, lp = _logits(model, ids), _logits(ev.proxy, ids)
            assert torch.equal(lp, _logits(direct, ids))
            po, pp = lo.softmax(-1).numpy(), lp.softmax(-1).numpy()
            jsd += list(jensenshannon(pp, po, base=2, axis=-1) ** 2)
            agree += (lp.argmax(-1) == lo.argmax(-1)).tolist()
            target = torch.tensor(ids[1:])
            acc_o += (lo.argmax(-1) == target).tolist()
            acc_p += (lp.argmax(-1) == target).tolist()
        got = ev.results["splits"][split]
        assert got["svd_r1"]["all"]["jsd"] == pytest.approx(np.mean(jsd), rel=1e-5, abs=1e-9)
        assert got["svd_r1"]["all"]["agreement"] == pytest.approx(np.mean(agree))
        assert got["svd_r1"]["all"]["accuracy"] == pytest.approx(np.mean(acc_p))
        assert got["original"]["all"]["accuracy"] == pytest.approx(np.mean(acc_o))
        lo_ci, hi_ci = got["svd_r1"]["all"]["ci"]["jsd"]
        assert lo_ci <= np.mean(jsd) <= hi_ci
        per_split[split] = float(np.mean(jsd))
    assert per_split["near"] > 1e-4  # the rank-1 projection visibly moves the logits
    gap = ev.results["gaps"]["svd_r1"]["far"]["all"]["jsd"]
    assert gap["value"] == pytest.approx(per_split["far"] - per_split["near"], rel=1e-5, abs=1e-9)
    print(f"{family}: rank-1 JSD near={per_split['near']:.6g} far={per_split['far']:.6g}")


def test_labeller_adds_one_group_per_label(gpt2, data, tokenizer):
    def labeller(ids):
        return ["digit" if tokenizer.decode([t]).strip().isdigit() else "other" for t in ids[1:]]

    ev = _run(
        gpt2, data, simplifier="svd", rank=2, labeller=labeller, labels=["digit", "other"], max_windows=8
    )
    far = ev.results["splits"]["far"]["svd_r2"]
    assert far["digit"]["n"] > 0 and far["digit"]["n"] + far["other"]["n"] == far["all"]["n"]
    assert ev.results["evaluation"]["groups"] == ["all", "digit", "other"]


# ---------------------------------------------------------------- CLI, report, determinism


def _cli(model, data, out, *extra):
    args = ["evaluate", "--model", model, "--data", data, "--text_column", "body", "--fit_split", "train"]
    args += ["--splits", "near,far", "--simplifier", "svd", "--rank", "2", "--layers", "0,1"]
    return main(
        [*args, "--window", str(WINDOW), "--max_windows", "10", "--n_fit", "20", "--out", str(out), *extra]
    )


def _stable(path) -> str:
    results = json.loads((path / "results.json").read_text())
    for key in VOLATILE_KEYS:
        results.pop(key)
    return json.dumps(results, indent=2)


def test_cli_writes_the_report_and_a_reloadable_adapter(gpt2, data, tmp_path):
    assert _cli(gpt2, data, tmp_path / "a", "--save_proxy", str(tmp_path / "proxy")) == 0
    assert _cli(gpt2, data, tmp_path / "b") == 0
    print((tmp_path / "a" / "README.md").read_text())
    out = tmp_path / "a"
    results = json.loads((out / "results.json").read_text())
    assert (
        results["settings"]["reference_split"] == "near"
        and results["settings"]["simplifier_settings"]["rank"] == 2
    )
    assert results["windows"]["far"]["n_windows"] == 10 and results["fit"]["n_windows"] == 20
    readme = (out / "README.md").read_text()
    assert "| `far` |" in readme and "Gaps against `near`" in readme and "[" in readme
    assert (out / "faithfulness_per_split.png").stat().st_size > 1000 and (out / "gap.png").is_file()
    assert (out / "sums" / "far.npz").is_file()
    assert _stable(out) == _stable(tmp_path / "b")  # same seed, same bytes (timings aside)
    proxy = load_proxy(tmp_path / "proxy")
    ids = torch.tensor([[0, 5, 9, 40, 7]])
    fitted = SVDSimplifier(rank=2, layers=[0, 1], n_sequences=20)
    base = GPT2LMHeadModel.from_pretrained(gpt2).eval()
    from hf_illusions.data.windows import load_text_splits, split_windows

    train = split_windows(load_text_splits(data, "body", ["train"]), "train", _tok(gpt2), "body", WINDOW, 20)
    with torch.no_grad():
        assert torch.equal(proxy(ids).logits, fitted.fit(base, train.input_ids)(ids).logits)
    assert sum(f.stat().st_size for f in (tmp_path / "proxy").iterdir()) < 50_000  # an adapter, not a model


def test_cli_reruns_an_evaluation_from_the_config_it_recorded(gpt2, data, tmp_path):
    """results.json records the run's OwnDataConfig (paths relative to the report); `evaluate
    --config` runs it again — the same bytes — and flags given change it."""
    assert _cli(gpt2, data, tmp_path / "first") == 0
    recorded = json.loads((tmp_path / "first" / "results.json").read_text())["config"]
    assert recorded["out"] == "." and (recorded["simplifier"], recorded["rank"]) == ("svd", 2)
    assert recorded["sample"] == {"n_fit_sequences": 20, "max_eval_sentences": 10, "seed": 0}
    assert recorded["splits"] == ["near", "far"] and recorded["layers"] == [0, 1]
    assert not any(str(tmp_path) in str(value) for value in recorded.values())
    first = tmp_path / "first" / "results.json"
    assert main(["evaluate", "--config", str(first), "--out", str(tmp_path / "again")]) == 0
    assert _stable(tmp_path / "again") == _stable(tmp_path / "first")
    assert (
        main(["evaluate", "--config", str(tmp_path / "first"), "--seed", "1", "--out", str(tmp_path / "s1")])
        == 0
    )
    changed = json.loads((tmp_path / "s1" / "results.json").read_text())
    assert changed["config"]["sample"]["seed"] == 1 and changed["config"]["rank"] == 2
    assert changed["windows"]["far"]["starts"] != recorded_windows(tmp_path / "first")


def recorded_windows(folder):
    return json.loads((folder / "results.json").read_text())["windows"]["far"]["starts"]


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_cli_llama_and_another_seed(llama, data, tmp_path):
    assert _cli(llama, data, tmp_path / "s0") == 0
    assert _cli(llama, data, tmp_path / "s1", "--seed", "1") == 0
    r0, r1 = (json.loads((tmp_path / s / "results.json").read_text()) for s in ("s0", "s1"))
    assert r0["model_type"] == "llama" and r0["windows"]["far"]["starts"] != r1["windows"]["far"]["starts"]


# ---------------------------------------------------------------- errors


def test_errors_name_what_is_wrong(gpt2, data, tmp_path, tokenizer):
    with pytest.raises(DatasetError, match=r"no text column 'text'.*\['body', 'id'\]"):
        evaluate_own_model(gpt2, data, rank=2)
    with pytest.raises(SplitError, match=r"\['nope'\] not in the dataset; available splits"):
        _run(gpt2, data, rank=2, splits=["near", "nope"])
    with pytest.raises(SplitError, match="fit_split"):
        _run(gpt2, data, rank=2, fit_split="validation")
    with pytest.raises(SettingsError, match="window 65 is longer than the model's 64 positions"):
        _run(gpt2, data, rank=2, window=65)
    with pytest.raises(SettingsError, match="needs --rank"):
        _run(gpt2, data)
    with pytest.raises(SettingsError, match="must be one of"):
        _run(gpt2, data, simplifier="interaction_basis")
    bare = tmp_path / "bare"
    GPT2LMHeadModel.from_pretrained(gpt2).save_pretrained(bare)
    with pytest.raises(CheckpointError, match="has no tokenizer"):
        _run(str(bare), data, rank=2)


def test_too_few_tokens_for_one_window(gpt2, tmp_path, tokenizer):
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["the cat sat on the mat."] * 20}),
         "tiny": datasets.Dataset.from_dict({"text": ["the cat"]})}
    ).save_to_disk(str(tmp_path / "d"))  # fmt: skip
    with pytest.raises(DatasetError, match=r"split 'tiny' holds \d+ tokens, fewer than one window of 23"):
        evaluate_own_model(gpt2, str(tmp_path / "d"), rank=2, window=WINDOW)


def test_cli_errors_are_one_line(gpt2, data, tmp_path, capsys):
    assert main(["evaluate", "--model", gpt2, "--data", data, "--simplifier", "svd", "--rank", "2",
                 "--text_column", "txt", "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "no text column 'txt'" in capsys.readouterr().err
    assert main(["evaluate", "--model", gpt2, "--rank", "2", "--out", str(tmp_path / "o.json")]) == 2
    assert "apply only with --simplifier" in capsys.readouterr().err
    assert main(["evaluate", "--simplifier", "svd", "--proxy", "p", "--out", str(tmp_path / "o")]) == 2
    assert "--proxy does not apply with --simplifier" in capsys.readouterr().err


# ---------------------------------------------------------------- the README section


def _section() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("## Use it on your own model")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_own_model_section_runs(tmp_path, monkeypatch):
    """Its Python block on its own, then its CLI command on what the block built."""
    import re
    import shlex

    monkeypatch.chdir(tmp_path)
    (python,) = re.findall(r"```python\n(.*?)```", _section(), flags=re.S)
    namespace: dict = {}
    exec(compile(python, "README.md", "exec"), namespace)
    own = namespace["own"]
    assert set(own.results["splits"]) == {"held_out", "numbers"} and own.results["fit"]["n_windows"] > 0
    assert (tmp_path / "reports" / "my-gpt2-svd4" / "README.md").is_file()
    ids = torch.tensor([own.windows["numbers"].input_ids[0]])
    with torch.no_grad():
        assert torch.equal(namespace["my_proxy"](ids).logits, own.proxy(ids).logits)
    (bash,) = re.findall(r"```bash\n(.*?)```", _section(), flags=re.S)
    command, again = re.sub(r"\\\n\s*", " ", bash).splitlines()[:2]
    assert main(shlex.split(command)[1:]) == 0
    assert json.loads((tmp_path / "reports" / "my-gpt2-svd8" / "results.json").read_text())["proxies"][
        "svd_r8"
    ]
    assert (tmp_path / "my-gpt2-svd8").is_dir()
    assert again.startswith("hf-illusions evaluate --config") and main(shlex.split(again)[1:]) == 0
    assert _stable(tmp_path / "reports" / "my-gpt2-svd8-again") == _stable(
        tmp_path / "reports" / "my-gpt2-svd8"
    )


# ---------------------------------------------------------------- devices, dtypes, processes


def test_dtype_and_device_are_checked_and_recorded(gpt2, data):
    with pytest.raises(SettingsError, match="dtype 'float16' is not supported on cpu"):
        _run(gpt2, data, rank=2, dtype="float16")
    with pytest.raises(SettingsError, match="device 'cuda:99' is not available"):
        _run(gpt2, data, rank=2, device="cuda:99")
    ev = _run(gpt2, data, rank=16, layers=[0, 1], dtype="bfloat16", max_windows=6)
    assert ev.results["settings"]["dtype"] == "bfloat16" and ev.results["settings"]["device"] == "cpu"
    assert next(ev.proxy.parameters()).dtype == torch.bfloat16
    full = ev.results["splits"]["far"]["svd_r16"]["all"]
    assert 0 <= full["jsd"] < 1e-2 and full["agreement"] > 0.9  # exact up to bfloat16 rounding
    print(f"bfloat16 full-rank SVD: JSD {full['jsd']:.3g}, agreement {full['agreement']:.3f}")


def test_shards_concatenate_to_the_one_process_sums(gpt2, data):
    """What a data-parallel run gathers: per-window sums of contiguous shards, in process order."""
    from hf_illusions.distributed import concat_sums, shard
    from hf_illusions.evaluation import sentence_sums
    from hf_illusions.tasks.lm import LanguageModelTask

    ev = _run(gpt2, data, rank=2, max_windows=7)
    model, task, windows = (
        AutoModelForCausalLM.from_pretrained(gpt2).eval(),
        LanguageModelTask(),
        ev.windows["far"],
    )
    whole = sentence_sums(model, windows.input_ids, task, {"p": ev.proxy}, attention=False)
    parts = [shard(windows.input_ids, i, 3)[0] for i in range(3)]
    assert [ids for part in parts for ids in part] == windows.input_ids and all(parts)
    joined = concat_sums([sentence_sums(model, p, task, {"p": ev.proxy}, attention=False) for p in parts])
    np.testing.assert_allclose(joined.n, whole.n)
    for q, values in whole.models["p"].items():
        np.testing.assert_allclose(joined.models["p"][q], values, rtol=1e-6, atol=1e-12, err_msg=q)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_give_the_one_process_numbers(gpt2, data, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    assert _cli(gpt2, data, tmp_path / "one") == 0
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    args = ["evaluate", "--model", gpt2, "--data", data, "--text_column", "body", "--splits", "near,far"]
    args += ["--simplifier", "svd", "--rank", "2", "--layers", "0,1", "--window", str(WINDOW)]
    args += ["--max_windows", "10", "--n_fit", "20", "--out", str(tmp_path / "two")]
    launch = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    done = subprocess.run(
        [*launch, "-m", "hf_illusions.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert two["timings"]["processes"] == 2 and one["timings"]["processes"] == 1
    assert one["windows"] == two["windows"] and one["fit"] == two["fit"]

    def numbers(results):
        out = {}
        for split, res in results["splits"].items():
            for model, groups in res.items():
                for q in ("n", "jsd", "agreement", "accuracy"):
                    if q in groups["all"]:
                        out[(split, model, q)] = groups["all"][q]
        out.update(
            {
                ("gap", s, q): g["all"][q]["value"]
                for s, g in results["gaps"]["svd_r2"].items()
                for q in g["all"]
            }
        )
        return out

    a, b = numbers(one), numbers(two)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    print("2 processes vs 1: max abs difference", max(abs(a[k] - b[k]) for k in a))


def test_kmeans_and_onehot_proxies_are_named_by_their_setting(llama, data):
    for kwargs, name in (
        ({"simplifier": "kmeans", "k": 3}, "kmeans_k3"),
        ({"simplifier": "onehot"}, "onehot"),
    ):
        res = _run(llama, data, max_windows=4, n_fit=8, **kwargs).results
        assert list(res["proxies"]) == [name] and res["settings"]["simplifier"] == kwargs["simplifier"]
        far = res["splits"]["far"][name]["all"]
        assert 0 < far["jsd"] < 1 and 0 <= far["agreement"] <= 1 and far["n"] == 4 * (WINDOW - 1)


# ---------------------------------------------------------------- device_map (big-model dispatch)


def _without_placement(results: dict) -> dict:
    """``results`` less what legitimately differs between placements: timings and the placement itself."""
    out = {k: v for k, v in results.items() if k not in VOLATILE_KEYS}
    out["settings"] = {k: v for k, v in results["settings"].items() if k != "device_map"}
    out["config"] = {k: v for k, v in results["config"].items() if k != "device_map"}
    return out


def test_device_map_auto_gives_the_numbers_of_one_device(llama, data):
    """On this CPU-only machine ``auto`` puts every layer on the CPU: the same proxy, the same numbers."""
    run = {"rank": 2, "layers": [0, 1], "max_windows": 6, "n_fit": 20}
    plain = _run(llama, data, **run)
    mapped = _run(llama, data, device_map="auto", **run)
    assert (
        mapped.results["settings"]["device_map"] == "auto" and plain.results["settings"]["device_map"] is None
    )
    assert mapped.results["settings"]["devices"] == ["cpu"] == plain.results["settings"]["devices"]
    assert json.dumps(_without_placement(mapped.results)) == json.dumps(_without_placement(plain.results))
    ids = torch.tensor([mapped.windows["far"].input_ids[0]])
    with torch.no_grad():
        assert torch.equal(mapped.proxy(ids).logits, plain.proxy(ids).logits)


def test_cli_device_map(gpt2, data, tmp_path, capsys):
    assert _cli(gpt2, data, tmp_path / "mapped", "--device_map", "auto") == 0
    assert _cli(gpt2, data, tmp_path / "plain") == 0
    mapped, plain = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("mapped", "plain"))
    assert mapped["settings"]["device_map"] == "auto"
    assert json.dumps(_without_placement(mapped)) == json.dumps(_without_placement(plain))
    capsys.readouterr()
    assert _cli(gpt2, data, tmp_path / "both", "--device", "cpu", "--device_map", "auto") == 2
    err = capsys.readouterr().err
    assert "pass either device ('cpu', --device" in err and "or device_map ('auto', --device_map" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "both").exists()


def test_device_map_errors_name_the_argument(gpt2, data):
    with pytest.raises(SettingsError, match=r"pass either device \('cpu', --device.*not both"):
        _run(gpt2, data, rank=2, device="cpu", device_map="auto")
    with pytest.raises(
        SettingsError, match=r"device_map \(--device_map\) must be one of \['auto', 'balanced'"
    ):
        _run(gpt2, data, rank=2, device_map="everywhere")
    with pytest.raises(SettingsError, match=r"device 'cuda:7' is not available"):
        _run(gpt2, data, rank=2, device_map={"": "cuda:7"})
    loaded = AutoModelForCausalLM.from_pretrained(gpt2)
    with pytest.raises(SettingsError, match="a model object is already placed"):
        _run(loaded, data, rank=2, tokenizer=_tok(gpt2), device_map="auto")


def test_a_proxy_of_a_dispatched_model_is_dispatched_like_it(llama, data):
    """accelerate's hooks (what several GPUs get) forced on the CPU: the proxy gets the same placement,
    its buffers sit on their layer's device, and it computes what the proxy of the plain model does."""
    from accelerate import dispatch_model

    from hf_illusions.data.windows import load_text_splits, split_windows

    train = split_windows(load_text_splits(data, "body", ["train"]), "train", _tok(llama), "body", WINDOW, 20)
    plain = AutoModelForCausalLM.from_pretrained(llama).eval()
    placement = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu"}
    placement |= {"model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    dispatched = dispatch_model(
        AutoModelForCausalLM.from_pretrained(llama).eval(), placement, force_hooks=True
    )
    fit = SVDSimplifier(rank=2, layers=[0, 1], n_sequences=20)
    proxy, reference = fit.fit(dispatched, train.input_ids), fit.fit(plain, train.input_ids)
    assert proxy.hf_device_map == placement
    assert hasattr(proxy, "_hf_hook") and hasattr(proxy.model.layers[1], "_hf_hook")
    for layer in proxy.model.layers:
        buffers = dict(layer.self_attn.simplification.named_buffers())
        assert buffers and all(b.device == layer.self_attn.q_proj.weight.device for b in buffers.values())
    ids = torch.tensor([train.input_ids[0]])
    with torch.no_grad():
        assert torch.equal(proxy(ids).logits, reference(ids).logits)
        assert not torch.equal(proxy(ids).logits, dispatched(ids).logits)  # rank 2 changes the model


def test_offloaded_weights_are_refused(llama):
    """Offloaded weights (cpu/disk offload next to GPUs) live on the meta device: no proxy from them."""
    from accelerate import init_empty_weights

    from hf_illusions.errors import SimplifierError
    from hf_illusions.simplify import build_proxy

    config = AutoModelForCausalLM.from_pretrained(llama).config
    with init_empty_weights():
        offloaded = LlamaForCausalLM(config)
    with pytest.raises(SimplifierError, match=r"weight\(s\) of the model are offloaded .*meta device"):
        build_proxy(offloaded, "identity", {0: [0]}, {}, {})

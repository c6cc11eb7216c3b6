"""`hf-illusions push`: folders are checked, listed, and uploaded by huggingface_hub unchanged.

The Hub cannot be reached here, so the real ``create_repo`` + ``upload_folder`` code talks to a
stand-in on 127.0.0.1 (``HF_ENDPOINT``) that imitates the four endpoints they call and writes each
commit to disk. Pushes run as the user runs them — the CLI in a fresh process — and what arrives
must load with ``from_pretrained`` / ``load_dataset`` exactly like the local folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
import yaml

from hf_illusions.hub import PushError, plan_push, push_folder

TOKEN = "hf_standin_token"
REPO_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class StandInHub(ThreadingHTTPServer):
    """The Hub endpoints ``create_repo`` and ``upload_folder`` call, backed by a folder.

    It answers ``preupload`` with ``uploadMode: regular`` for every file (as the Hub does for
    small files), so contents travel base64-encoded inside the commit and no LFS/Xet storage is
    needed; everything else — request shapes, auth header, YAML validation, repo bookkeeping,
    the commit payload — is what the library really sends.
    """

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.log: list[tuple[str, str]] = []
        self.repos: set[tuple[str, str]] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / repo_type / repo_id


class _Handler(BaseHTTPRequestHandler):
    server: StandInHub

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.server.log.append(("POST", path))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, {"error": "Invalid credentials in Authorization header"})
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            return self.create_repo(json.loads(body))
        if path == "/api/validate-yaml":
            return self.validate_yaml(json.loads(body))
        if len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
            repo_type, repo_id = parts[1].removesuffix("s"), f"{parts[2]}/{parts[3]}"
            if (repo_type, repo_id) not in self.server.repos:
                return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                return self.reply(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    },
                )
            return self.commit(repo_type, repo_id, body)
        return self.reply(404, {"error": f"no such endpoint {path}"})

    def create_repo(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_type == "space" and not payload.get("sdk"):
            return self.reply(400, {"error": "sdk is required for a Space"})
        url = f"{self.server.endpoint}/{REPO_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.server.repos:
            return self.reply(409, {"error": "You already created this repo", "url": url})
        self.server.repos.add((repo_type, repo_id))
        return self.reply(200, {"url": url})

    def validate_yaml(self, payload: dict) -> None:
        text = payload["content"]
        if not text.startswith("---\n"):
            return self.reply(200, {"warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
        try:
            yaml.safe_load(text.split("---\n")[1])
        except yaml.YAMLError as err:
            return self.reply(400, {"errors": [{"message": str(err)}]})
        return self.reply(200, {})

    def commit(self, repo_type: str, repo_id: str, body: bytes) -> None:
        target = self.server.repo_dir(repo_type, repo_id)
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                assert value["encoding"] == "base64"
                out = target / value["path"]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(value["content"]))
            elif item["key"] != "header":
                return self.reply(400, {"error": f"stand-in does not support {item['key']!r}"})
        oid = hashlib.sha1(body).hexdigest()
        url = f"{self.server.endpoint}/{REPO_PREFIX[repo_type]}{repo_id}/commit/{oid}"
        return self.reply(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = StandInHub(tmp_path_factory.mktemp("hub"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def push_cli(hub: StandInHub, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    """`hf-illusions push …` in a fresh process pointed at the stand-in, online."""
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": token}
    env.pop("HF_HUB_ETAG_TIMEOUT", None)
    exe = Path(sys.executable).with_name("hf-illusions")
    return subprocess.run([str(exe), "push", *args], env=env, capture_output=True, text=True, timeout=120)


def received_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_dyck_dir):
    """A tiny random model as `save_pretrained` + tokenizer + rendered card, plus local junk."""
    from hf_illusions.cards import evaluate_checkpoint, write_model_card
    from hf_illusions.data.tokenizer import dyck_tokenizer
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    torch.manual_seed(0)
    model = IllusionForCausalLM(
        IllusionConfig(d_model=16, n_head=2, d_mlp=32, vocab_size=43, n_positions=128)
    )
    out = tmp_path_factory.mktemp("push") / "tiny-dyck"
    model.save_pretrained(out)
    dyck_tokenizer(20, 128).save_pretrained(out)
    accuracy = evaluate_checkpoint(model.eval(), tiny_dyck_dir, splits=("test_iid",))
    write_model_card(out, accuracy, {"max_steps": 0}, "python -c 'untrained'")
    (out / "__pycache__").mkdir()
    (out / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (out / "model.safetensors.tmp").write_bytes(b"half-written")
    return out


def logits(model, ids=(1, 3, 4, 24, 23, 2)) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_dry_run_lists_the_upload_without_touching_the_network(model_dir):
    # conftest keeps HF_HUB_OFFLINE=1: any HTTP request here would raise OfflineModeIsEnabled
    plan = push_folder("model", model_dir, "someone/tiny-dyck", dry_run=True)
    assert plan.repo_type == "model" and plan.url is None
    assert "model.safetensors" in plan.files and "README.md" in plan.files and "tokenizer.json" in plan.files
    assert not any("__pycache__" in f or f.endswith(".tmp") for f in plan.files)
    assert f"{len(plan.files)} files" in plan.describe() and "model.safetensors" in plan.describe()


def test_model_push_uploads_exactly_the_listed_files_and_they_load(hub, model_dir):
    from transformers import AutoModelForCausalLM

    import hf_illusions.modeling  # noqa: F401

    result = push_cli(hub, "model", str(model_dir), "--repo-id", "someone/tiny-dyck")
    assert result.returncode == 0, result.stderr
    assert "uploaded: http://127.0.0.1" in result.stdout
    got = hub.repo_dir("model", "someone/tiny-dyck")
    assert received_files(got) == plan_push("model", model_dir, "someone/tiny-dyck").files
    for name in received_files(got):
        assert (got / name).read_bytes() == (model_dir / name).read_bytes(), name
    calls = [path for _, path in hub.log]
    assert calls[:4] == [
        "/api/repos/create",
        "/api/validate-yaml",
        "/api/models/someone/tiny-dyck/preupload/main",
        "/api/models/someone/tiny-dyck/commit/main",
    ]
    torch.testing.assert_close(
        logits(AutoModelForCausalLM.from_pretrained(got)),
        logits(AutoModelForCausalLM.from_pretrained(model_dir)),
    )
    again = push_cli(
        hub, "model", str(model_dir), "--repo-id", "someone/tiny-dyck"
    )  # repo exists: 409 is fine
    assert again.returncode == 0, again.stderr


def test_proxy_push_round_trips_to_the_proxy_class_with_its_fitted_bases(
    hub, model_dir, tiny_dyck_dir, tmp_path
):
    from transformers import AutoModelForCausalLM

    from hf_illusions.cards import evaluate_proxy, write_proxy_card
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.simplify import IllusionProxyForCausalLM, SVDSimplifier

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    proxy = SVDSimplifier(rank=2, n_sequences=50).fit(model, load_folder(tiny_dyck_dir)["train"])
    folder = tmp_path / "tiny-dyck-svd2"
    proxy.save_pretrained(folder)
    write_proxy_card(folder, evaluate_proxy(proxy, model, tiny_dyck_dir, splits=("test_iid",)))
    result = push_cli(hub, "proxy", str(folder), "--repo-id", "someone/tiny-dyck-svd2")
    assert result.returncode == 0, result.stderr
    loaded = AutoModelForCausalLM.from_pretrained(hub.repo_dir("model", "someone/tiny-dyck-svd2"))
    assert isinstance(loaded, IllusionProxyForCausalLM) and loaded.config.simplifier == "svd"
    basis = "model.layers.1.self_attn.simplification.query_basis"
    torch.testing.assert_close(loaded.state_dict()[basis], proxy.state_dict()[basis])
    torch.testing.assert_close(logits(loaded.eval()), logits(proxy))


def test_a_stock_model_proxy_pushes_as_a_small_adapter_and_loads_back(hub, tmp_path):
    """GPT-2's proxy goes up as simplification config + buffers + card, and rebuilds on its base."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_illusions import load_proxy
    from hf_illusions.cards.proxy import write_adapter_card
    from hf_illusions.simplify import SVDSimplifier

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2)).eval()
    proxy = SVDSimplifier(rank=2).fit(base, [[3, 4, 5, 6, 7], [8, 9, 10, 11]])
    folder = tmp_path / "tiny-gpt2-svd2"
    proxy.save_pretrained(folder, base_model_name_or_path="someone/tiny-gpt2")
    write_adapter_card(folder, {"test": {"jsd": 0.01, "agreement": 0.9}}, repo_id="someone/tiny-gpt2-svd2")
    plan = plan_push("proxy", folder, "someone/tiny-gpt2-svd2")
    assert plan.files == ["README.md", "simplification.safetensors", "simplification_config.json"]
    assert plan.total_bytes < 20_000
    result = push_cli(hub, "proxy", str(folder), "--repo-id", "someone/tiny-gpt2-svd2")
    assert result.returncode == 0, result.stderr
    got = hub.repo_dir("model", "someone/tiny-gpt2-svd2")
    assert received_files(got) == plan.files
    assert "base_model: someone/tiny-gpt2" in (got / "README.md").read_text()
    assert torch.equal(logits(load_proxy(got, base_model=base)), logits(proxy))


def test_an_adapter_whose_base_hub_users_cannot_load_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_illusions.cards.proxy import write_adapter_card
    from hf_illusions.simplify import OneHotSimplifier

    base = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    OneHotSimplifier().fit(base).save_pretrained(tmp_path / "p", base_model_name_or_path=str(tmp_path))
    write_adapter_card(tmp_path / "p")
    with pytest.raises(PushError, match="which Hub users cannot load"):
        plan_push("proxy", tmp_path / "p", "someone/p")


def test_dataset_push_loads_with_load_dataset(hub, tiny_dyck_dir, tmp_path):
    from datasets import load_dataset

    from hf_illusions.data.dyck import SPLITS

    result = push_cli(hub, "dataset", str(tiny_dyck_dir), "--repo-id", "someone/dyck-illusions")
    assert result.returncode == 0, result.stderr
    got = hub.repo_dir("dataset", "someone/dyck-illusions")
    assert ("POST", "/api/datasets/someone/dyck-illusions/commit/main") in hub.log
    remote = load_dataset(str(got), cache_dir=str(tmp_path / "a"))
    local = load_dataset(str(tiny_dyck_dir), cache_dir=str(tmp_path / "b"))
    assert list(remote) == list(local) == list(SPLITS)
    assert remote["test_unseen_depth"]["input_ids"] == local["test_unseen_depth"]["input_ids"]


def test_space_push_sends_the_app_card_and_requirements(hub):
    space = Path(__file__).resolve().parents[1] / "spaces_app"
    plan = plan_push("space", space, "someone/illusions")
    assert {"app.py", "README.md", "requirements.txt"} <= set(plan.files) and plan.space_sdk == "gradio"
    assert not any("__pycache__" in f for f in plan.files)
    result = push_cli(hub, "space", str(space), "--repo-id", "someone/illusions")
    assert result.returncode == 0, result.stderr
    assert received_files(hub.repo_dir("space", "someone/illusions")) == plan.files


def test_a_bad_token_fails_with_one_line(hub, model_dir):
    result = push_cli(hub, "model", str(model_dir), "--repo-id", "someone/other", token="hf_wrong")
    assert result.returncode == 2
    assert result.stderr.startswith("hf-illusions: error:") and "401" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_offline_mode_refuses_to_push_but_allows_dry_runs(model_dir):
    with pytest.raises(PushError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\).*--dry_run"):
        push_folder("model", model_dir, "someone/tiny-dyck")


@pytest.mark.parametrize(
    ("kind", "breakage", "message"),
    [
        ("model", "no card", "has no README.md card; write it first with `hf-illusions card model"),
        (
            "proxy",
            "none",
            "type 'illusion-transformer', not 'illusion-proxy' or 'illusion-circuit'; "
            "push it with `hf-illusions push model`",
        ),
        ("model", "no tokenizer", "missing ['tokenizer.json']"),
        ("model", "no metadata", "has no YAML metadata block"),
    ],
)
def test_incomplete_folders_are_refused_before_any_upload(
    model_dir, tmp_path, capsys, kind, breakage, message
):
    from hf_illusions.cli import main

    folder = tmp_path / "folder"
    shutil.copytree(model_dir, folder)
    if breakage == "no card":
        (folder / "README.md").unlink()
    elif breakage == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    elif breakage == "no metadata":
        (folder / "README.md").write_text("# a card without metadata\n")
    assert main(["push", kind, str(folder), "--repo-id", "someone/x", "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_a_dataset_card_must_name_files_that_exist(tiny_dyck_dir, tmp_path):
    folder = tmp_path / "dyck-illusions"
    shutil.copytree(tiny_dyck_dir, folder)
    (folder / "data" / "test_iid.parquet").unlink()
    with pytest.raises(PushError, match=r"missing \['data/test_iid.parquet'\]"):
        plan_push("dataset", folder, "someone/dyck")
    with pytest.raises(PushError, match="--repo_id must look like 'namespace/name'"):
        plan_push("dataset", tiny_dyck_dir, "dyck")


def test_push_defaults_to_the_code_repositories_for_code_folders(model_dir, tiny_code_dir, capsys):
    from hf_illusions.cli import main

    assert main(["push", "dataset", str(tiny_code_dir), "--dry-run"]) == 0
    assert "hf-illusions/code-illusions" in capsys.readouterr().out
    assert main(["push", "model", str(model_dir), "--dry-run"]) == 0
    assert "hf-illusions/dyck-transformer" in capsys.readouterr().out


def test_a_pruned_circuit_pushes_as_a_proxy_and_loads_back(hub, model_dir, tiny_dyck_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_illusions.cards import evaluate_proxy, write_proxy_card
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.sparse import IllusionCircuitForCausalLM, SparseCircuitPruner

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    train = load_folder(tiny_dyck_dir)["train"]
    circuit = SparseCircuitPruner.with_slack(model, train, 0.2, n_sequences=16, steps=10).fit(model, train)
    folder = tmp_path / "tiny-dyck-circuit"
    circuit.save_pretrained(folder)
    write_proxy_card(folder, evaluate_proxy(circuit, model, tiny_dyck_dir, splits=("test_iid",)))
    result = push_cli(hub, "proxy", str(folder), "--repo-id", "someone/tiny-dyck-circuit")
    assert result.returncode == 0, result.stderr
    loaded = AutoModelForCausalLM.from_pretrained(hub.repo_dir("model", "someone/tiny-dyck-circuit"))
    assert isinstance(loaded, IllusionCircuitForCausalLM)
    assert loaded.config.circuit_size == circuit.config.circuit_size
    torch.testing.assert_close(logits(loaded.eval()), logits(circuit), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("truncated weights", "truncated or corrupt"),
        ("config from another size", "config and weights do not match"),
        ("tokenizer of another vocabulary", "the tokenizer in"),
    ],
)
def test_a_dry_run_refuses_weights_that_do_not_load(model_dir, tmp_path, breakage, message):
    """What goes up must load: the checkpoint checks run in dry runs too."""
    from hf_illusions.data.tokenizer import dyck_tokenizer

    folder = tmp_path / "folder"
    shutil.copytree(model_dir, folder)
    if breakage == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif breakage == "config from another size":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "d_mlp": 64}))
    else:
        dyck_tokenizer(5, 128).save_pretrained(folder)
    with pytest.raises(PushError, match=message):
        push_folder("model", folder, "someone/tiny-dyck", dry_run=True)


def test_a_llama_dyck_model_pushes_like_ours(tmp_path):
    """A Dyck model trained with `--architecture llama` (transformers' own class) is a model folder too."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_illusions.data.tokenizer import dyck_tokenizer

    folder = tmp_path / "dyck-llama"
    config = LlamaConfig(
        vocab_size=43, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    dyck_tokenizer(20, 128).save_pretrained(folder)
    (folder / "README.md").write_text(
        "---\nmodel-index:\n- name: dyck-llama\n  results: []\nlicense: apache-2.0\n---\n# a card\n"
    )
    plan = push_folder("model", folder, "someone/dyck-llama", dry_run=True)
    assert "model.safetensors" in plan.files
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(PushError, match="truncated or corrupt"):
        push_folder("model", folder, "someone/dyck-llama", dry_run=True)

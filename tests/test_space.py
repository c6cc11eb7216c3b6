"""The Space in a real browser: `python spaces_app/app.py` served on localhost, driven by Playwright.

Headless Debian chromium (``apt-get install -y chromium``; ``make test`` and ``.ci/run`` install it)
types a sentence, switches simplifier and layer, samples from a split and sends malformed input;
every number the page shows must equal what :class:`hf_illusions.analysis.IllusionExplorer`
returns in this process for the same input. A missing browser is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_illusions.analysis import IllusionExplorer, ProxyChoice, SentenceAnalysis
from hf_illusions.errors import CheckpointError, IllusionsError
from hf_illusions.reproduction.inputs import sample_split

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("HF_ILLUSIONS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
BANK = {"n_fit_sequences": 50, "svd_ranks": (1, 4), "kmeans_ks": (2, 4)}
TIMEOUT_MS = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_dyck_dir):
    """A tiny random model on disk and a Space assets folder made from a real (tiny) report."""
    import torch

    from hf_illusions.cards import write_space_card
    from hf_illusions.data.tokenizer import dyck_tokenizer
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
    from hf_illusions.reproduction import reproduce_dyck

    root = tmp_path_factory.mktemp("space")
    torch.manual_seed(0)
    # A wide initialization gives sharp attention: with the default (0.02) attention is near-uniform, and
    # one-hot argmaxes between near-equal weights could flip with float rounding across processes.
    config = IllusionConfig(d_model=16, n_head=1, d_mlp=32, n_positions=128, initializer_range=0.5)
    model = IllusionForCausalLM(config)
    model.save_pretrained(root / "model")
    dyck_tokenizer(20, 128).save_pretrained(root / "model")
    report = reproduce_dyck(
        root / "model", tiny_dyck_dir, root / "report", data_config="tiny", svd_ranks=BANK["svd_ranks"],
        kmeans_ks=BANK["kmeans_ks"], n_fit_sequences=50, max_eval_sentences=16, progress=False,
    ).parent  # fmt: skip
    (root / "space").mkdir()
    write_space_card(root / "space", report)
    return root


def serve(model: Path, data: Path, assets: Path, log: Path) -> Iterator[str]:
    """`python spaces_app/app.py` as a user starts it, on a free localhost port; yields its URL."""
    port = free_port()
    args = [
        sys.executable, str(ROOT / "spaces_app" / "app.py"), "--model", str(model), "--data", str(data),
        "--assets", str(assets), "--port", str(port),
        "--n-fit-sequences", "50", "--svd-ranks", "1,4", "--kmeans-ks", "2,4",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with status {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the app did not answer on {url} within 120 s:\n{log.read_text()}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(workspace, tiny_dyck_dir):
    """The Space on our tiny model, with the assets of a real (tiny) report."""
    assets = workspace / "space" / "assets"
    yield from serve(workspace / "model", tiny_dyck_dir, assets, workspace / "app.log")


@pytest.fixture(scope="module")
def explorer(workspace, tiny_dyck_dir):
    """The Python API on the same model, data and settings as the server."""
    return IllusionExplorer.from_paths(workspace / "model", tiny_dyck_dir, build_missing=False, **BANK)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (`make test` and "
            ".ci/run do), or point HF_ILLUSIONS_CHROMIUM at a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (no `playwright install` needed)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def shown_numbers(page) -> dict[str, float]:
    """The headline numbers and the per-group table as the page renders them."""
    out = {
        key: float(page.locator(f"#{key} input").input_value())
        for key in ("jsd", "agreement", "disagreements")
    }
    for cell in page.locator("#metrics td[data-metric]").all():
        text = cell.inner_text().strip()
        out[cell.get_attribute("data-metric")] = float("nan") if text == "–" else float(text)
    return out


def page_matches(page, analysis: SentenceAnalysis) -> None:
    """Assert that every number, row and image on the page is the one ``analysis`` holds."""
    status = page.locator("#status").inner_text()
    assert f"{analysis.n_brackets} brackets · proxy {analysis.proxy_name} (" in status, status
    shown = shown_numbers(page)
    close = analysis.metrics["close"]
    assert shown["jsd"] == pytest.approx(close["jsd"], abs=1e-6)
    assert shown["agreement"] == pytest.approx(close["agreement"], abs=1e-6)
    assert shown["disagreements"] == len(analysis.disagreements)
    for group, values in analysis.metrics.items():
        for metric, value in values.items():
            if value is not None:
                assert shown[f"{group}.{metric}"] == pytest.approx(value, abs=6e-5), (group, metric)
    assert page.locator("#predictions tr[data-position]").count() == len(analysis.predictions)
    assert page.locator("#predictions tr.disagree").count() == len(analysis.disagreements)
    assert page.locator("#attention img").evaluate("img => img.naturalWidth") > 100


def check_page_matches(page, analysis: SentenceAnalysis) -> None:
    """:func:`page_matches`, polled: the outputs of one event may land over a few render frames."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        try:
            return page_matches(page, analysis)
        except (AssertionError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise
            page.wait_for_timeout(100)


def test_the_space_shows_the_python_api_numbers(server, browser, explorer, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    start = time.monotonic()
    page.goto(server)
    expect(page.locator("#status")).to_contain_text("Analysed", timeout=TIMEOUT_MS)  # the example, on load

    sentence = "(a (b (c (d (e (f (g (h (i (j (k (l l) k) j) i) h) g) f) e) d) c) b) a) (m m)"
    page.locator("#sentence textarea").fill(sentence)
    page.locator("#analyze").click()
    check_page_matches(page, explorer.analyze(sentence, ProxyChoice("svd", 4)))  # default: middle rank

    page.locator("#method").get_by_text("k-means (k)").click()
    check_page_matches(page, explorer.analyze(sentence, ProxyChoice("kmeans", 4)))

    page.locator("#layer").get_by_text("1", exact=True).click()
    check_page_matches(page, explorer.analyze(sentence, ProxyChoice("kmeans", 4, (1,))))

    page.locator("#method").get_by_text("one-hot").click()
    check_page_matches(page, explorer.analyze(sentence, ProxyChoice("onehot", layers=(1,))))
    expect(page.locator("#setting input")).to_be_disabled()
    expect(page.locator("#report-table")).to_contain_text(
        "onehot_l1: split"
    )  # the report's per-layer one-hot

    report_plot = page.locator("#report-plot img")
    expect(report_plot).to_be_visible()
    assert report_plot.evaluate("img => img.naturalWidth") > 100
    page.locator("#layer").get_by_text("all", exact=True).click()
    check_page_matches(page, explorer.analyze(sentence, ProxyChoice("onehot")))
    expect(page.locator("#report-table")).to_contain_text("this sentence")
    page.screenshot(path=str(tmp_path / "space.png"), full_page=True)

    page.locator("#sentence textarea").fill("(a (b a) b)")
    page.locator("#analyze").click()
    expect(page.locator("#status")).to_contain_text("Not analysed", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("but the innermost open bracket is type 'b'")

    page.locator("#sample").click()
    expect(page.locator("#status")).to_contain_text("Analysed", timeout=TIMEOUT_MS)
    sampled = page.locator("#sentence textarea").input_value()
    depth_split = {" ".join(t[1:-1]) for t in explorer.dataset["test_unseen_depth"]["tokens"]}
    assert sampled in depth_split
    check_page_matches(page, explorer.analyze(sampled, ProxyChoice("onehot")))
    assert time.monotonic() - start < 60
    page.close()


def test_the_report_section_explains_a_missing_plot(tmp_path):
    plot, summary, note = load_app().load_report(tmp_path, weights="0" * 16)
    assert plot is None and summary is None
    assert "hf-illusions card space --report reports/dyck" in note


# --------------------------------------------------------------------------- stock transformers models


def save_stock_dyck_model(folder: Path, architecture: str, vocab_size: int = 43, tokenizer=None) -> Path:
    """A tiny random LlamaForCausalLM / GPT2LMHeadModel (as ``train --architecture`` builds them) with
    the Dyck tokenizer saved next to it, or ``tokenizer`` (``False``: none)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from hf_illusions.data.tokenizer import dyck_tokenizer

    torch.manual_seed(0)
    special = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}
    # a wide initialization gives sharp attention (see `workspace`): one-hot stays stable across processes
    if architecture == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
            initializer_range=0.5, **special,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=128, n_embd=16, n_layer=2, n_head=2, n_inner=32,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.5, **special,
        )  # fmt: skip
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    if tokenizer is None:
        tokenizer = dyck_tokenizer(20, 128)
    if tokenizer is not False:
        tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def stock_explorer(request, tmp_path_factory, tiny_dyck_dir):
    folder = save_stock_dyck_model(tmp_path_factory.mktemp(request.param), request.param)
    return IllusionExplorer.from_paths(folder, tiny_dyck_dir, build_missing=False, **BANK)


def test_the_space_serves_a_stock_dyck_model(stock_explorer, tiny_dyck_dir):
    """Ours and transformers' Llama / GPT-2 go through the same bank, analysis and page helpers."""
    import random

    import torch

    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.evaluation import evaluate_models
    from hf_illusions.simplify import make_simplifier

    app = load_app()
    explorer = stock_explorer
    geometry = explorer.bank.geometry
    assert (geometry.n_layer, geometry.n_head, geometry.d_head) == (2, 2, 8)
    assert explorer.bank.options == {"svd": [1, 4], "kmeans": [2, 4], "onehot": []}
    sentence = explorer.sample("test_unseen_depth", random.Random(0))
    for choice in (ProxyChoice("svd", 1), ProxyChoice("kmeans", 2, (1,)), ProxyChoice("onehot", layers=(0,))):
        analysis = explorer.analyze(sentence, choice)
        loop = evaluate_models(
            explorer.model, [analysis.input_ids], explorer.task, {"p": explorer.bank.proxy(choice)}
        )
        assert analysis.metrics["close"]["n"] == loop["p"]["close"]["n"] > 0
        assert analysis.metrics["close"]["jsd"] == pytest.approx(loop["p"]["close"]["jsd"], abs=1e-7)
        assert analysis.metrics["close"]["agreement"] == pytest.approx(loop["p"]["close"]["agreement"])
        assert analysis.attentions[0][0].shape == (2, len(analysis.tokens), len(analysis.tokens))
        before = range(min(choice.layers)) if choice.layers else range(0)
        for layer in before:  # layers before the simplified one keep the model's attention exactly
            assert analysis.attention_jsd[layer] == pytest.approx(0.0, abs=1e-9)
        assert "<table>" in app.predictions_html(analysis) and "data-metric" in app.metrics_html(analysis)
        app.attention_figure(analysis, list(choice.layers or range(2)))
    # the bank's proxy of one layer is the one the simplifier fits directly on the reproduction's
    # seeded sample of train (the report's proxy), buffers at the model's paths
    direct = make_simplifier("svd", rank=4, layers=[1], n_sequences=BANK["n_fit_sequences"])
    train = load_folder(tiny_dyck_dir)["train"]
    fit_rows = train.select(sample_split(train, BANK["n_fit_sequences"], "train"))
    direct_state = direct.fit(explorer.model, fit_rows).state_dict()
    banked = explorer.bank.proxy(ProxyChoice("svd", 4, (1,))).state_dict()
    fitted = sorted(k for k in banked if ".simplification." in k and "head_mask" not in k)
    assert fitted and all(".1." in k for k in fitted)
    assert direct_state.keys() == banked.keys()
    for key in fitted:
        assert torch.equal(direct_state[key], banked[key]), key
    note = app.model_note(explorer)
    assert type(explorer.model).__name__ in note and "2 layers × 2 heads (d_head 8)" in note
    assert "**interaction basis** is not offered" in note and "**sparse circuit** is not offered" in note


def load_app():
    """spaces_app/app.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "spaces_app" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


def test_our_model_note_offers_every_family_the_space_has(explorer):
    note = load_app().model_note(explorer)
    assert "IllusionForCausalLM" in note and "not offered" not in note


def other_tokenizer(size: int):
    """A word-level tokenizer of ``size`` words that are no brackets: the right size, the wrong vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(size)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0")


@pytest.mark.parametrize(
    ("vocab_size", "tokenizer", "message"),
    [
        (50, False, "vocab_size=50, which is no Dyck vocabulary"),
        (43, "other", "is not the Dyck-20 tokenizer (id 0 is 'w0', not '<pad>')"),
        (13, "dyck5", "the model has vocab_size=13 but the data in"),
    ],
    ids=["not-dyck-vocab", "not-dyck-tokenizer", "other-dyck-size"],
)
def test_folders_the_space_cannot_serve_are_refused_clearly(
    tmp_path, tiny_dyck_dir, vocab_size, tokenizer, message
):
    from hf_illusions.data.tokenizer import dyck_tokenizer

    tok = {"other": other_tokenizer(43), "dyck5": dyck_tokenizer(5, 128), False: False}[tokenizer]
    folder = save_stock_dyck_model(tmp_path / "model", "llama", vocab_size, tok)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        IllusionExplorer.from_paths(folder, tiny_dyck_dir, build_missing=False, **BANK)
    # the app stops with that message on one line (no traceback), naming the folder
    with pytest.raises(SystemExit) as stopped:
        load_app().main(["--model", str(folder), "--data", str(tiny_dyck_dir), "--n-fit-sequences", "50"])
    assert str(stopped.value).startswith(f"app.py: cannot serve --model {folder}") and message in str(
        stopped.value
    )


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory, tiny_dyck_dir):
    root = tmp_path_factory.mktemp("llama-space")
    model = save_stock_dyck_model(root / "model", "llama")
    for url in serve(model, tiny_dyck_dir, root / "no-assets", root / "app.log"):
        yield url, model


def test_the_space_in_a_browser_on_a_llama_model(llama_server, browser, tiny_dyck_dir):
    """`app.py --model <LlamaForCausalLM folder>`: the page shows the Python API's numbers and says why
    the families that need our own model are absent."""
    from playwright.sync_api import expect

    url, folder = llama_server
    explorer = IllusionExplorer.from_paths(folder, tiny_dyck_dir, build_missing=False, **BANK)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    expect(page.locator("#status")).to_contain_text("Analysed", timeout=TIMEOUT_MS)
    check_page_matches(page, explorer.analyze(load_app().EXAMPLES[0], ProxyChoice("svd", 4)))
    expect(page.locator("#model-note")).to_contain_text("LlamaForCausalLM")
    expect(page.locator("#model-note")).to_contain_text("interaction basis is not offered")
    expect(page.locator("#report-note")).to_contain_text("No precomputed report plot")
    page.locator("#method").get_by_text("k-means (k)").click()
    page.locator("#layer").get_by_text("1", exact=True).click()
    check_page_matches(page, explorer.analyze(load_app().EXAMPLES[0], ProxyChoice("kmeans", 4, (1,))))
    page.close()


def test_the_space_fits_the_reproduction_config_it_is_started_with():
    """`app.py` builds the Dyck reproduction's config (so the report's sweep and fitting sample);
    its flags change the config, and the Space refuses a code config."""
    from hf_illusions.config import ReproductionConfig

    app = load_app()
    config = app.space_config(app.parse_args(["--model", "m", "--data", "d"]))
    assert config == ReproductionConfig.for_task("dyck", model="m", data="d")
    changed = app.space_config(app.parse_args(["--model", "m", "--data", "d", "--svd-ranks", "2,4"]))
    assert changed.sweep.svd_ranks == (2, 4) and changed.sample == config.sample
    with pytest.raises(IllusionsError, match="this config's task is 'code'"):
        IllusionExplorer.from_config(ReproductionConfig.for_task("code"))

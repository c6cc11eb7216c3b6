"""The Space in a real browser: `python spaces_app/app.py` served on localhost, driven by Playwright.

Headless Debian chromium (``apt-get install -y chromium``; ``make test`` and ``.ci/run`` install it)
types a sentence, switches simplifier and layer, samples from a split and sends malformed input;
every number the page shows must equal what :class:`hf_illusions.analysis.IllusionExplorer`
returns in this process for the same input. A missing browser is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hf_illusions.analysis import IllusionExplorer, ProxyChoice, SentenceAnalysis

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
    from hf_illusions.reproduce import reproduce_dyck

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


@pytest.fixture(scope="module")
def server(workspace, tiny_dyck_dir):
    """`python spaces_app/app.py` as a user starts it, on a free localhost port."""
    port = free_port()
    args = [
        sys.executable, str(ROOT / "spaces_app" / "app.py"), "--model", str(workspace / "model"),
        "--data", str(tiny_dyck_dir), "--assets", str(workspace / "space" / "assets"), "--port", str(port),
        "--n-fit-sequences", "50", "--svd-ranks", "1,4", "--kmeans-ks", "2,4",
    ]  # fmt: skip
    log = workspace / "app.log"
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
    yield url
    proc.terminate()
    proc.wait(timeout=20)


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
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "spaces_app" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    plot, summary, note = app.load_report(tmp_path, weights="0" * 16)
    assert plot is None and summary is None
    assert "hf-illusions card space --report reports/dyck" in note

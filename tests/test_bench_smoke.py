"""Every benchmark runs end to end at tiny sizes and writes its report (never judged on speed).

``make bench`` runs them at full size; here each runs with ``--smoke`` on the session's tiny
dataset so the scripts keep working as the package changes. Targets may be missed at these
sizes — that is not checked; the correctness checks (equal outputs) must pass. conftest's
single-thread fixture applies, so the timings here mean nothing; they only have to exist.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCHMARKS = {
    "train": "bench_train.py",
    "proxy": "bench_proxy.py",
    "intervention": "bench_intervention.py",
    "data": "bench_data.py",
    "fit_eval": "bench_fit_eval.py",
    "scaling": "bench_scaling.py",
    "any_model": "bench_any_model.py",
}
KEYS = {
    "benchmark",
    "title",
    "mode",
    "sizes",
    "environment",
    "results",
    "tables",
    "targets",
    "checks",
    "notes",
}


def load_script(file: str):
    spec = importlib.util.spec_from_file_location(f"bench_{Path(file).stem}", SCRIPTS / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_smoke_run_writes_its_report(name, out_dir, tiny_dyck_dir):
    argv = ["--smoke", "--out", str(out_dir)]
    if name != "data":  # the data benchmark builds its own (tiny) folder: building is what it times
        argv += ["--data", str(tiny_dyck_dir)]
    path = load_script(BENCHMARKS[name]).main(argv)
    report = json.loads(Path(path).read_text())
    assert path == out_dir / f"{name}.json"
    assert set(report) >= KEYS and report["benchmark"] == name and report["mode"] == "smoke"
    assert bool(report["targets"]) == (name != "scaling"), "each timed comparison states its target"
    for target in report["targets"]:
        assert {"name", "value", "target", "comparison", "met"} <= set(target)
    assert all(report["checks"].values()), report["checks"]
    assert report["environment"]["cpu_count"] >= 1
    summary = (out_dir / "README.md").read_text()
    assert f"`{name}`" in summary


def test_expected_checks_are_recorded(out_dir):
    """The equality checks the issue asks for are part of the reports (run after the smoke runs)."""
    proxy = json.loads((out_dir / "proxy.json").read_text())
    intervention = json.loads((out_dir / "intervention.json").read_text())
    assert any("full-rank SVD" in c for c in proxy["checks"])
    hooked = {"forward hooks"} | ({"nnsight"} if importlib.util.find_spec("nnsight") else set())
    assert {c.split(" logits")[0] for c in intervention["checks"]} == hooked  # nnsight: the bench extra
    scaling = json.loads((out_dir / "scaling.json").read_text())
    assert (out_dir / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"exponent/sentences (test_iid)", "exponent/d_model"} <= set(scaling["results"])

"""The README's Python examples run as written (on the tiny preset)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    results = namespace["results"]
    assert set(results) == {"original", "svd_r4"}
    assert 0.0 <= results["svd_r4"]["close"]["jsd"] <= 1.0
    assert (tmp_path / "proxy-svd4" / "model.safetensors").is_file()
    assert "'jsd'" in capsys.readouterr().out


def test_readme_metric_example_runs():
    namespace: dict = {}
    exec(compile(python_blocks()[1], "README.md", "exec"), namespace)
    out = namespace["faith"].compute(predictions=[[0.9, 0.1]], references=[[0.5, 0.5]])
    assert out["agreement"] == 1.0 and 0.0 < out["jsd"] < 1.0


def test_every_readme_python_block_runs_in_order(tmp_path, monkeypatch):
    """The code-task, interaction-basis and circuit examples build on the first block's names."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in python_blocks():
        exec(compile(block, "README.md", "exec"), namespace)
    assert set(namespace["code_results"]) == {"original", "copy_svd_r4"}
    assert namespace["code_results"]["copy_svd_r4"]["identifier_repeat"]["n"] > 0
    assert namespace["copy"]["layer"] == 1
    assert (tmp_path / "proxy-ib16" / "model.safetensors").is_file()
    size = namespace["size"]
    assert 0 <= size["kept_nodes"] <= size["total_nodes"] > 0  # a random model needs few nodes
    assert namespace["circuit"].config.circuit_loss <= namespace["pruner"].target_loss
    assert (tmp_path / "circuit-0p05" / "config.json").is_file()

"""The public API: ``import hf_illusions as hi`` registers every model type and exposes ``hi.__all__``."""

from __future__ import annotations

import ast
import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hf_illusions as hi
from hf_illusions.simplify import OneHotSimplifier, SVDSimplifier
from hf_illusions.sparse.circuit import build_circuit

PACKAGE = Path(hi.__file__).parent
CHECKPOINT = PACKAGE.parent / "checkpoints" / "dyck"


def test_fresh_import_registers_every_model_type_and_all_names_resolve(tiny_model, tmp_path):
    """In a new interpreter nothing else has imported ``modeling`` or ``simplify`` first."""
    tiny_model.save_pretrained(tmp_path / "model")
    OneHotSimplifier(layers=[0]).fit(tiny_model).save_pretrained(tmp_path / "proxy")
    build_circuit(tiny_model).save_pretrained(tmp_path / "circuit")
    folders = [str(CHECKPOINT), *(str(tmp_path / name) for name in ("model", "proxy", "circuit"))]
    script = (
        "import json, sys\n"
        "import hf_illusions as hi\n"
        "from transformers import AutoModelForCausalLM\n"
        "classes = [type(AutoModelForCausalLM.from_pretrained(p)).__name__ for p in sys.argv[1:]]\n"
        "missing = [name for name in hi.__all__ if getattr(hi, name, None) is None]\n"
        # a subpackage of the same name, once imported, would shadow a lazy name (hi.reproduce)
        "modules = [n for n in hi.__all__ if type(getattr(hi, n)).__name__ == 'module']\n"
        "print(json.dumps({'classes': classes, 'missing': missing, 'modules': modules}))\n"
    )
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(
        [sys.executable, "-c", script, *folders], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "classes": [
            "IllusionForCausalLM",
            "IllusionForCausalLM",
            "IllusionProxyForCausalLM",
            "IllusionCircuitForCausalLM",
        ],
        "missing": [],
        "modules": [],
    }


def test_all_lists_exactly_the_eager_and_lazy_names():
    eager = {"IllusionConfig", "IllusionForCausalLM", "__version__"}
    assert len(hi.__all__) == len(set(hi.__all__))
    assert set(hi.__all__) == eager | set(hi._LAZY)
    assert set(hi.__all__) <= set(dir(hi))
    # each lazy name is the object its module defines, not a wrapper
    assert hi.SVDSimplifier is SVDSimplifier
    assert hi.make_simplifier("svd", rank=2).rank == 2


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        hi.NoSuchThing  # noqa: B018


def test_package_docstring_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    result = doctest.testmod(hi, optionflags=doctest.ELLIPSIS, raise_on_error=False)
    assert result.attempted >= 8 and result.failed == 0
    assert (tmp_path / "proxy-svd4" / "config.json").is_file()


def test_modeling_does_not_import_the_layers_above_it():
    """Dependencies point one way (data → modeling → simplify …); registration sits in the package root."""
    above = ("hf_illusions.simplify", "hf_illusions.sparse", "hf_illusions.evaluation", "hf_illusions.cli")
    for path in sorted((PACKAGE / "modeling").glob("*.py")):
        imported = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]
        assert not [m for m in imported if m and m.startswith(above)], path.name

"""The code labeller, the `code-illusions` builder and folder, the CodeSearchNet loader, CodeTask."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json

import numpy as np
import pytest
from datasets import load_dataset

from hf_illusions.data import code
from hf_illusions.data.code_corpus import from_codesearchnet, normalize_text, package_root
from hf_illusions.data.code_folder import read_manifest, write_code_folder
from hf_illusions.data.code_labels import (
    PREDICTION_TYPES,
    LabelError,
    label_c_like,
    label_python,
    window_types,
)
from hf_illusions.data.hub_folder import load_folder
from hf_illusions.data.tokenizer import code_tokenizer
from hf_illusions.errors import DatasetError, SplitError
from hf_illusions.tasks.code import CodeTask

CSN_FUNCTIONS = [
    ("alice/geo", "geo/point.py", "def norm(point):\n    return (point.x ** 2 + point.y ** 2) ** 0.5\n"),
    (
        "alice/geo",
        "geo/point.py",
        "    def shift(self, dx):\n        self.x = self.x + dx\n        return self\n",
    ),
    ("bob/text", "text/util.py", "def shout(word):\n    # loud\n    return word.upper() + '!'\n"),
    ("carol/io", "io/files.py", "def read(path):\n    with open(path) as fh:\n        return fh.read()\n"),
    ("dave/math", "m/ops.py", "def add(a, b):\n    total = a + b\n    return total\n"),
    ("erin/web", "w/app.py", "def route(url):\n    if url:\n        return url\n    return None\n"),
    ("frank/bad", "b/broken.py", 'def broken(:\n    return """never closed\n'),
]


def types_of(text: str, start: int = 0, stop: int | None = None) -> list[str]:
    labels = label_python(text)
    return [PREDICTION_TYPES[t] for t in window_types(labels, start, len(text) if stop is None else stop)]


def span_types(text: str, piece: str, types: list[str], occurrence: int = 0) -> set[str]:
    """The set of types over the ``occurrence``-th appearance of ``piece`` in ``text``."""
    at = -1
    for _ in range(occurrence + 1):
        at = text.index(piece, at + 1)
    return set(types[at : at + len(piece)])


# ---- labeller -------------------------------------------------------------------------------


def test_every_prediction_type_on_a_snippet():
    text = "def area(r):\n    if r > 0:\n        return 3.14 * r * r  # pi\n    return 'none'\n"
    types = types_of(text)
    assert span_types(text, "def", types) == {"keyword"}
    assert span_types(text, "area", types) == {"identifier_first"}
    assert span_types(text, "r", types, occurrence=1) == {"identifier_first"}  # the parameter (after "area")
    assert span_types(text, "if r", types) == {"keyword", "whitespace", "identifier_repeat"}
    assert span_types(text, " > ", types) == {"whitespace", "punctuation"}
    assert span_types(text, "3.14", types) == {"number"}
    assert span_types(text, "# pi", types) == {"string_or_comment"}
    assert span_types(text, "'none'", types) == {"string_or_comment"}
    assert span_types(text, "(", types) == {"punctuation"}
    assert span_types(text, "\n        ", types) == {"whitespace"}  # newline + indentation
    assert set(types) == set(PREDICTION_TYPES)


def test_repeated_identifier_is_decided_within_the_window():
    text = "value = 1\nother = value\nvalue += other\n"
    types = types_of(text)
    assert span_types(text, "value", types, 0) == {"identifier_first"}
    assert span_types(text, "value", types, 1) == {"identifier_repeat"}
    assert span_types(text, "other", types, 1) == {"identifier_repeat"}
    # a window that starts after the first "value" sees its second occurrence as new
    start = text.index("other")
    window = types_of(text, start)
    assert set(window[: len("other")]) == {"identifier_first"}
    assert set(window[len("other = ") : len("other = value")]) == {"identifier_first"}


def test_identifier_cut_by_the_window_start_is_first_and_not_remembered():
    text = "alpha = alpha\n"
    types = types_of(text, 2)  # window starts inside the first "alpha"
    assert set(types[: len("pha")]) == {"identifier_first"}
    assert set(types[-len("alpha\n") : -1]) == {"identifier_first"}


def test_window_starting_mid_string_is_labelled_from_the_whole_file():
    text = 'doc = """first line\nif x: return 1\n"""\nif y:\n    pass\n'
    start = text.index("if x")  # a line start inside the triple-quoted string
    types = types_of(text, start)
    window = text[start:]
    assert span_types(window, "if x: return 1", types) == {"string_or_comment"}
    assert span_types(window, "if", types, occurrence=1) == {"keyword"}
    assert span_types(window, "y", types) == {"identifier_first"}


def test_soft_keywords_and_backslash_continuations():
    text = "match = 1 + \\\n    2\n"
    types = types_of(text)
    assert span_types(text, "match", types) == {"identifier_first"}
    assert span_types(text, "\\", types) == {"punctuation"}
    assert span_types(text, "2", types) == {"number"}


def test_untokenizable_python_raises_label_error():
    with pytest.raises(LabelError):
        label_python('x = """never closed\n')


def test_c_lexer_types():
    text = "#define N 10 /* max */\nstatic int count(const char *s) { return s[0] == 'a' ? N : 0; }\n"
    labels = label_c_like(text)
    types = [PREDICTION_TYPES[t] for t in window_types(labels, 0, len(text))]
    assert span_types(text, "static", types) == {"keyword"}
    assert span_types(text, "/* max */", types) == {"string_or_comment"}
    assert span_types(text, "'a'", types) == {"string_or_comment"}
    assert span_types(text, "10", types) == {"number"}
    assert span_types(text, "N", types, 0) == {"identifier_first"}
    assert span_types(text, " N ", types, 0) == {"whitespace", "identifier_first"}
    assert span_types(text, "? N", types) >= {"identifier_repeat"}


# ---- vocabulary ---------------------------------------------------------------------------------


def test_encoding_maps_non_ascii_to_unk_and_matches_the_tokenizer():
    text = "x = 'café'\n\tpass"
    ids = code.encode(text)
    assert ids[0] == code.BOS_ID and len(ids) == len(text) + 1
    assert ids.count(code.UNK_ID) == 1
    assert code_tokenizer()(text)["input_ids"] == ids
    assert code.decode(ids) == text.replace("é", "\ufffd")
    assert code.VOCAB_SIZE == 4 + 2 + 95


# ---- builder and folder ---------------------------------------------------------------------------


def test_window_starts_are_line_starts_and_full_length():
    text = "".join(f"line {i}\n" for i in range(40))
    starts = code.window_starts(text, 20, max_windows=100)
    assert starts and all(s == 0 or text[s - 1] == "\n" for s in starts)
    assert all(s + 20 <= len(text) for s in starts)
    assert all(b >= a + 20 for a, b in itertools.pairwise(starts))


def test_tiny_folder_has_every_split_and_loads_with_load_dataset(tiny_code_dir, tmp_path):
    ds = load_dataset(str(tiny_code_dir), cache_dir=str(tmp_path / "cache"))
    assert list(ds) == list(code.SPLITS)
    assert all(len(ds[s]) > 0 for s in code.SPLITS)
    row = ds["train"][0]
    assert row["input_ids"] == code.encode(row["text"])
    assert len(row["prediction_types"]) == len(row["text"]) == code.PRESETS["tiny"].window_chars


def test_splits_are_disjoint_by_file_and_by_window(tiny_code_dir):
    ds = load_folder(tiny_code_dir)
    files = {s: set(ds[s]["source"]) for s in ds}
    windows = {s: {tuple(ids) for ids in ds[s]["input_ids"]} for s in ds}
    names = list(ds)
    for i, a in enumerate(names):
        assert len(windows[a]) == len(ds[a])  # no duplicate within a split either
        for b in names[i + 1 :]:
            assert not files[a] & files[b], (a, b)
            assert not windows[a] & windows[b], (a, b)
    settings = code.PRESETS["tiny"]
    assert set(ds["test_unseen_package"]["package"]) == set(settings.unseen_packages)
    trained = set(ds["train"]["package"])
    assert not trained & set(ds["test_unseen_package"]["package"])
    assert trained <= set(settings.train_packages)
    assert set(ds["test_other_language"]["package"]) == set(settings.other_language)


def test_windows_are_cut_from_their_file_at_line_starts(tiny_code_dir):
    manifest = read_manifest(tiny_code_dir)
    ds = load_folder(tiny_code_dir)
    for split in ("train", "test_unseen_package", "test_other_language"):
        for row in ds[split].select(range(0, len(ds[split]), 7)):
            root = package_root(row["package"])[0]
            text = normalize_text((root / row["source"].split("/", 1)[1]).read_bytes())
            assert text[row["start"] : row["start"] + len(row["text"])] == row["text"]
            assert row["start"] == 0 or text[row["start"] - 1] == "\n"
    assert sum(f["windows"] for f in manifest["files"]) == sum(len(ds[s]) for s in ds)


def test_manifest_lists_every_file_with_hash_and_licence(tiny_code_dir):
    manifest = read_manifest(tiny_code_dir)
    ds = load_folder(tiny_code_dir)
    listed = {f["path"]: f for f in manifest["files"]}
    assert [f["path"] for f in manifest["files"]] == sorted(listed)
    used = {src for s in ds for src in ds[s]["source"]}
    assert used <= set(listed)
    for f in manifest["files"]:
        assert len(f["sha256"]) == 64 and f["size"] > 0 and f["license"]
        assert f["split"] in code.SPLITS and f["status"] == "ok"
    assert manifest["counts"]["train_windows"] == len(ds["train"])
    # the versions the corpus was read at: an upgraded package changes the splits
    import importlib.metadata
    import platform

    versions = manifest["source_versions"]
    assert versions["stdlib"] == f"python {platform.python_version()}"
    assert versions["tqdm"] == importlib.metadata.version("tqdm")
    assert set(versions) == {"stdlib", "tqdm", "packaging", "jinja2", "python-include"}  # the tiny preset
    assert f"| `tqdm` | {versions['tqdm']} |" in (tiny_code_dir / "README.md").read_text()  # the card too


def test_same_settings_give_identical_bytes(tiny_code_dir, tmp_path):
    again = write_code_folder(tmp_path / "code-illusions", config_name="tiny")
    for name in [*(f"data/{s}.parquet" for s in code.SPLITS), "manifest.json", "README.md"]:
        a, b = (tiny_code_dir / name).read_bytes(), (again / name).read_bytes()
        assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest(), name


def test_settings_are_validated():
    with pytest.raises(SplitError, match="unseen_packages"):
        code.CodeSettings(train_packages=("tqdm",), unseen_packages=("tqdm",))
    with pytest.raises(SplitError, match="validation_fraction"):
        code.CodeSettings(validation_fraction=0.6, test_fraction=0.5)


# ---- CodeSearchNet ---------------------------------------------------------------------------------


def write_csn(path, rows=CSN_FUNCTIONS, language="python"):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for repo, file_path, fn in rows:
            record = {"repo": repo, "path": file_path, "language": language, "func_name": "f", "code": fn}
            fh.write(json.dumps(record) + "\n")
    return path


def test_codesearchnet_groups_functions_by_file_and_drops_broken_ones(tmp_path):
    docs = from_codesearchnet([write_csn(tmp_path / "python_test_0.jsonl.gz")])
    by_path = {d.source: d for d in docs}
    point = by_path["alice/geo/geo/point.py"]
    assert point.record["functions"] == 2
    assert "def shift(self, dx):\n    self.x" in point.text  # the method was dedented
    assert len(point.labels.types) == len(point.text)
    assert by_path["frank/bad/b/broken.py"].labels is None


def test_codesearchnet_splits_hold_out_repositories(tmp_path):
    csn = write_csn(tmp_path / "python.jsonl.gz")
    other = write_csn(
        tmp_path / "go.jsonl.gz", [("gina/srv", "main.go", "func main() {\n\treturn\n}\n")], "go"
    )
    settings = code.CodeSettings(
        codesearchnet=(str(csn), str(other)), window_chars=16, validation_fraction=0.2, test_fraction=0.2
    )
    corpus = code.build_corpus(settings)
    unseen = set(corpus.unseen_packages)
    assert len(unseen) == 1
    held = {r["package"] for r in corpus.examples["test_unseen_package"]}
    assert held <= unseen
    for split in ("train", "validation", "test_iid"):
        assert not {r["package"] for r in corpus.examples[split]} & unseen
    assert {r["package"] for r in corpus.examples["test_other_language"]} == {"gina/srv"}


def test_codesearchnet_rejects_records_without_code(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"repo": "r", "path": "p"}) + "\n")
    with pytest.raises(DatasetError, match="not a CodeSearchNet record"):
        from_codesearchnet([bad])


# ---- task ---------------------------------------------------------------------------------------------


def test_code_task_groups_align_with_stored_labels(tiny_code_dir):
    ds = load_folder(tiny_code_dir)
    task = CodeTask.from_dataset(ds)
    row = ds["test_unseen_package"][3]
    groups = task.groups(row["input_ids"])
    n_pred = len(row["input_ids"]) - 1
    assert set(groups) == {"all", *PREDICTION_TYPES}
    assert all(m.shape == (n_pred,) for m in groups.values())
    assert groups["all"].all()
    stacked = np.stack([groups[t] for t in PREDICTION_TYPES])
    assert (stacked.sum(0) == 1).all()  # every position has exactly one type
    for t, label in enumerate(row["prediction_types"]):
        assert groups[PREDICTION_TYPES[label]][t]
    with pytest.raises(DatasetError, match="not among the windows"):
        task.groups([code.BOS_ID, 10, 11])


def test_code_task_runs_in_the_evaluation_loop(tiny_code_dir):
    import torch

    from hf_illusions.evaluation import evaluate_models
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    ds = load_folder(tiny_code_dir)
    task = CodeTask.from_dataset(ds["test_iid"])
    torch.manual_seed(0)
    config = IllusionConfig(
        d_model=16, n_head=1, d_mlp=32, n_layer=1, vocab_size=code.VOCAB_SIZE, n_positions=256
    )
    model = IllusionForCausalLM(config).eval()
    seqs = ds["test_iid"]["input_ids"][:4]
    results = evaluate_models(model, seqs, task, attention=False)
    assert results["original"]["all"]["n"] == sum(len(s) - 1 for s in seqs)
    assert sum(results["original"][t]["n"] for t in PREDICTION_TYPES) == results["original"]["all"]["n"]


def test_a_files_split_does_not_depend_on_which_other_files_exist():
    """A package upgrade adds and removes files; no file that stays may move between splits."""
    from hf_illusions.data.code_corpus import Document

    def docs(paths):
        return [Document(p, p.split("/")[0], "python", "x = 1\n") for p in paths]

    settings = code.CodeSettings()
    before = [f"pkg/mod_{i}.py" for i in range(400)]
    after = before[50:] + [f"pkg/new_{i}.py" for i in range(120)]  # 50 removed, 120 added
    split_of = {}
    for paths in (before, after):
        out = code.assign_splits(docs(paths), settings, unseen=())
        split_of[len(paths)] = {d.source: split for split, members in out.items() for d in members}
    kept = set(before) & set(after)
    assert all(split_of[400][p] == split_of[470][p] for p in kept)
    # the fractions hold on average (seeded hash → uniform draw)
    shares = {s: sum(v == s for v in split_of[470].values()) / 470 for s in ("validation", "test_iid")}
    assert 0.02 < shares["validation"] < 0.09 and 0.06 < shares["test_iid"] < 0.15


def _fake_distribution(folder, name: str, version: str, body: str = "X = 1\n") -> None:
    """A package folder plus the ``*.dist-info`` that ``pip install --target`` would leave."""
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(body)
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: MIT\n")


def test_pinned_sources_folder_is_read_instead_of_the_environment(tmp_path, monkeypatch):
    from hf_illusions.data import code_corpus as cc

    _fake_distribution(tmp_path, "filelock", "0.0.1", "PINNED = True\n")
    monkeypatch.setenv(cc.SOURCES_ENV, str(tmp_path))
    root, _, language, licence = package_root("filelock")
    assert root == tmp_path / "filelock" and language == "python" and licence == "MIT"
    assert cc.source_version("filelock") == "0.0.1"  # not the venv's filelock
    docs = cc.discover("filelock", 0, 10, 10_000, 10_000)
    assert [d.source for d in docs] == ["filelock/__init__.py"] and docs[0].text == "PINNED = True\n"
    with pytest.raises(DatasetError, match=r"'tqdm' is not in \$HF_ILLUSIONS_CODE_SOURCES"):
        package_root("tqdm")
    monkeypatch.setenv(cc.SOURCES_ENV, str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="is not a folder"):
        package_root("filelock")


def test_install_pinned_sources_installs_nothing_when_every_pin_is_there(tmp_path):
    from hf_illusions.data import code_corpus as cc

    for name, version in cc.PINNED_SOURCES.items():
        _fake_distribution(tmp_path, name, version)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cc.install_pinned_sources(tmp_path) == tmp_path  # no pip run (offline here): all present
    assert sorted(p.name for p in tmp_path.iterdir()) == before

"""The Dyck sampler, the split definitions and the Hub folder."""

from __future__ import annotations

import hashlib
import random
import re

import pytest
from datasets import load_dataset

from hf_illusions.data import dyck
from hf_illusions.data import dyck_language as dl
from hf_illusions.data.hub_folder import load_folder, write_dyck_folder
from hf_illusions.data.tokenizer import dyck_tokenizer
from hf_illusions.data.verify import verify_dyck_folder
from hf_illusions.errors import DyckError, IllusionsError, SplitError

VOCAB = dl.DyckVocab(20)


def codes_of(example: dict) -> list[int]:
    return dl.parse_tokens(example["tokens"], VOCAB)


def test_sampler_yields_balanced_sentences_within_bounds():
    rng = random.Random(1)
    for _ in range(2000):
        codes = dl.sample_sentence(rng, n_types=20, max_depth=10, min_length=4, max_length=100)
        dl.check_balanced(codes, 20)
        assert 4 <= len(codes) <= 100
        assert dl.max_depth(codes, 20) <= 10


def test_sampler_length_statistics_match_the_process():
    # heavy-tailed: median 14 brackets; P(length == 4) = P(two opens, closes, stop) = 1/2 * 1/2 * ... is large
    rng = random.Random(0)
    lengths = sorted(len(dl.sample_sentence(rng)) for _ in range(20000))
    assert 10 <= lengths[len(lengths) // 2] <= 18
    assert lengths[0] == 4


def test_structure_and_depth_of_a_hand_written_sentence():
    codes = dl.parse_sentence("(a (b b) a) (c c)", VOCAB)
    assert dl.structure(codes, 20) == ["(())", "()"]
    assert dl.max_depth(codes, 20) == 2
    assert dl.matching_open_positions(codes, 20) == [-1, -1, 1, 0, -1, 4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(a b)", "closes type 'b'"),
        ("(a (b b)", "left open"),
        ("a)", "no matching opening"),
        ("(a x)", "unknown token 'x)'"),
        ("", "empty"),
        ("(a <pad> a)", "unknown token '<pad>'"),
    ],
)
def test_malformed_sentences_raise_dyck_error(text, message):
    with pytest.raises(DyckError, match=re.escape(message)):
        dl.parse_sentence(text, VOCAB)


def test_bad_settings_are_rejected():
    with pytest.raises(SplitError, match="depth_test_bound"):
        dyck.DyckSettings(train_depth=10, depth_test_bound=10)
    with pytest.raises(SplitError, match="unknown splits"):
        dyck.DyckSettings(eval_sizes={"test_typo": 3})
    with pytest.raises(DyckError, match="n_types"):
        dyck.DyckSettings(n_types=30)


def test_split_definitions_hold(tiny_dyck_dir):
    ds = load_folder(tiny_dyck_dir)
    settings = dyck.PRESETS["tiny"]
    train = [tuple(codes_of(e)) for e in ds["train"]]
    train_set = set(train)
    seen = {s for c in train for s in dl.structure(c, 20)}
    for split in dyck.EVAL_SPLITS:
        for example in ds[split]:
            codes = codes_of(example)
            assert tuple(codes) not in train_set, f"{split} sentence occurs in train"
            unseen = [s for s in dl.structure(codes, 20) if s not in seen]
            if split == "test_seen_struct":
                assert not unseen
            if split.startswith("test_unseen_struct"):
                assert unseen
            if split == "test_unseen_struct_short":
                assert len(codes) <= settings.short_threshold
            if split == "test_unseen_struct_long":
                assert len(codes) > settings.short_threshold
            if split == "test_unseen_depth":
                assert example["max_depth"] > settings.train_depth
            else:
                assert example["max_depth"] <= settings.train_depth
    assert all(dl.max_depth(c, 20) <= settings.train_depth for c in train)
    # eval splits are pairwise disjoint
    eval_sets = [{tuple(e["input_ids"]) for e in ds[s]} for s in dyck.EVAL_SPLITS]
    assert sum(len(s) for s in eval_sets) == len(set().union(*eval_sets))


def test_fields_are_consistent(tiny_dyck_dir):
    ds = load_folder(tiny_dyck_dir)
    example = ds["test_iid"][0]
    codes = codes_of(example)
    assert example["tokens"][0] == dl.BOS and example["tokens"][-1] == dl.EOS
    assert example["input_ids"] == dl.codes_to_ids(codes)
    assert example["length"] == len(codes) == len(example["tokens"]) - 2
    assert example["structure"] == dl.structure(codes, 20)


def test_load_dataset_returns_the_named_splits(tiny_dyck_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_dyck_dir.parent)
    ds = load_dataset("dyck-illusions", cache_dir=str(tmp_path / "cache"))
    assert list(ds) == list(dyck.SPLITS)
    assert len(ds["train"]) == dyck.PRESETS["tiny"].n_train
    assert ds["validation"].features["tokens"].feature.dtype == "string"
    readme = (tiny_dyck_dir / "README.md").read_text()
    assert "test_unseen_depth" in readme and "configs:" in readme and "redrawn" in readme


def folder_hash(path) -> str:
    digest = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            digest.update(f.relative_to(path).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path, tiny_dyck_dir):
    again = write_dyck_folder(tmp_path / "dyck-illusions", config_name="tiny")
    assert folder_hash(again) == folder_hash(tiny_dyck_dir)
    other = dyck.DyckSettings(**{**dyck.settings_dict(dyck.PRESETS["tiny"]), "seed": 1})
    different = write_dyck_folder(tmp_path / "other", settings=other, config_name="tiny")
    assert (different / "data/train.parquet").read_bytes() != (again / "data/train.parquet").read_bytes()


def test_existing_output_is_not_overwritten_silently(tiny_dyck_dir):
    with pytest.raises(IllusionsError, match="already exists"):
        write_dyck_folder(tiny_dyck_dir, config_name="tiny")


def test_verify_passes_on_built_data_and_catches_tampering(tiny_dyck_dir, tmp_path):
    report = verify_dyck_folder(tiny_dyck_dir)
    assert report["ok"], report["violations"]
    assert report["checks"]["train_sentences"] == dyck.PRESETS["tiny"].n_train

    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "tampered"
    shutil.copytree(tiny_dyck_dir, bad)
    train = pq.read_table(bad / "data/train.parquet")
    leaked = pq.read_table(bad / "data/test_iid.parquet").slice(0, 1)
    pq.write_table(pa.concat_tables([train, leaked]), bad / "data/train.parquet")
    report = verify_dyck_folder(bad)
    assert not report["ok"]
    assert any("occurs in train" in v for v in report["violations"])


def test_tokenizer_round_trip_matches_vocab(tmp_path):
    from transformers import AutoTokenizer

    tok = dyck_tokenizer(20)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    codes = dl.parse_sentence("(a (t t) a)", VOCAB)
    assert loaded("(a (t t) a)").input_ids == dl.codes_to_ids(codes)[:-1]  # BOS added, no EOS
    assert loaded.decode(dl.codes_to_ids(codes)) == "<bos> (a (t t) a) <eos>"
    assert loaded.pad_token_id == dl.PAD_ID


@pytest.mark.slow
def test_full_paper_build_is_fast_and_sound(tmp_path):
    import time

    start = time.perf_counter()
    out = write_dyck_folder(tmp_path / "dyck-illusions", config_name="dyck-20-10")
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"full build took {elapsed:.1f}s"
    assert verify_dyck_folder(out)["ok"]

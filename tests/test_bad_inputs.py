"""A battery of bad inputs: each one gets a specific exception (library) or one error line (CLI).

Researchers will feed hf-illusions malformed strings, odd ranks, other people's checkpoints and
impossible flags. Every row below is one distinct bad input. Library calls must raise the
exception class from :mod:`hf_illusions.errors` that names the problem; the CLI must print one
``hf-illusions: error: …`` line naming the flag, exit with status 2 and show no traceback
(``--debug`` shows it). The last section checks the safety rules: safetensors only, no pickle
loaded without ``weights_only=True``, no ``trust_remote_code``.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_illusions.checkpoints import check_model_fits, load_checkpoint
from hf_illusions.cli import main
from hf_illusions.data import dyck
from hf_illusions.data import dyck_language as dl
from hf_illusions.data.hub_folder import load_folder, read_settings, select_splits, write_dyck_folder
from hf_illusions.data.tokenizer import dyck_tokenizer
from hf_illusions.data.verify import verify_dyck_folder
from hf_illusions.errors import (
    CheckpointError,
    DatasetError,
    DyckError,
    FaithfulnessInputError,
    IllusionsError,
    PathError,
    SettingsError,
    SimplifierError,
    SplitError,
)
from hf_illusions.metrics import faithfulness, jsd
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.reproduction import reproduce_dyck
from hf_illusions.simplify import KMeansSimplifier, OneHotSimplifier, SVDSimplifier, make_simplifier
from hf_illusions.train import TrainArgs
from hf_illusions.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
VOCAB = dl.DyckVocab(20)
P = [[0.5, 0.5], [0.9, 0.1]]  # two valid distributions


def tiny_train_args(ws: SimpleNamespace, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset_dir", str(ws.data), "--output_dir", str(out), "--max_steps", "5", "--d_model", "16",
        "--d_mlp", "32", "--n_positions", "128", "--max_batch_tokens", "2048", "--warmup_steps", "1",
        "--eval_every", "1000", "--save_every", "5", "--eval_sentences", "4", "--report_to", "none", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_dyck_dir) -> SimpleNamespace:
    """A model (with tokenizer), a fitted proxy, a finished 5-step training run, and a plain file."""
    root = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    model = IllusionForCausalLM(IllusionConfig(d_model=16, d_mlp=32, n_positions=128)).eval()
    model.save_pretrained(root / "model")
    dyck_tokenizer(20, model_max_length=128).save_pretrained(root / "model")
    train = load_folder(tiny_dyck_dir)["train"]
    SVDSimplifier(rank=2, n_sequences=8).fit(model, train).save_pretrained(root / "proxy")
    (root / "a_file").write_text("not a folder\n")
    ns = SimpleNamespace(root=root, data=tiny_dyck_dir, model=root / "model", proxy=root / "proxy")
    ns.file, ns.train, ns.loaded = root / "a_file", train, model
    train_main(tiny_train_args(ns, root / "run"))
    ns.run, ns.final = root / "run", root / "run" / "final"
    return ns


# --------------------------------------------------------------------------- broken model folders


def edit_config(**changes: object) -> Callable[[Path], None]:
    """Change config.json keys (``None`` deletes one)."""

    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        config = {k: v for k, v in config.items() if v is not None}
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def edit_weights(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        state = load_file(folder / "model.safetensors")
        change(state)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    return edit


def truncate_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])  # a download cut off halfway


def pickle_weights_only(folder: Path) -> None:
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")


def swap_tokenizer(n_types: int | None = None, reverse: bool = False) -> Callable[[Path], None]:
    """Replace the tokenizer: another Dyck size, or the right size with its ids reversed."""

    def edit(folder: Path) -> None:
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
        if not reverse:
            dyck_tokenizer(n_types).save_pretrained(folder)
            return
        tokens = VOCAB.tokens[::-1]
        backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token=None))
        PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(folder)

    return edit


def variant(ws: SimpleNamespace, name: str, edit: Callable[[Path], None], source: str = "model") -> Path:
    """A copy of ``ws.<source>`` broken by ``edit`` (made once per module)."""
    folder = ws.root / "variants" / name
    if not folder.exists():
        shutil.copytree(getattr(ws, source), folder)
        edit(folder)
    return folder


BROKEN_CHECKPOINTS = {
    # name: (edit, source folder, message)
    "gpt2_config": (
        edit_config(model_type="gpt2", n_embd=16),
        "model",
        r"lacks \d+ tensor\(s\) the config needs",
    ),
    "vision_config": (
        edit_config(model_type="vit"),
        "model",
        r"model_type='vit', which is neither one of hf-illusions' .* nor a causal language model",
    ),
    "no_model_type": (edit_config(model_type=None), "model", r"model_type=None"),
    "config_not_json": (
        lambda f: (f / "config.json").write_text('{"model_type": "illus'),
        "model",
        r"config.json' is not valid JSON",
    ),
    "impossible_config_value": (
        edit_config(n_layer=0),
        "model",
        r"impossible settings: n_layer must be >= 1",
    ),
    "config_value_of_wrong_type": (edit_config(d_model="wide"), "model", r"impossible settings"),
    "no_config": (lambda f: (f / "config.json").unlink(), "model", r"has no config.json"),
    "no_weights": (lambda f: (f / "model.safetensors").unlink(), "model", r"has no model.safetensors"),
    "pickle_weights_only": (pickle_weights_only, "model", r"only pickle weights \['pytorch_model.bin'\]"),
    "truncated_safetensors": (truncate_weights, "model", r"truncated or corrupt"),
    "garbage_safetensors": (
        lambda f: (f / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header"),
        "model",
        r"truncated or corrupt",
    ),
    "tensor_missing": (
        edit_weights(lambda s: s.pop("lm_head.weight")),
        "model",
        r"lacks 1 tensor\(s\).*lm_head.weight.*randomly initialised",
    ),
    "tensor_unexpected": (
        edit_weights(lambda s: s.update(extra=torch.zeros(2))),
        "model",
        r"tensor\(s\) this model does not use.*extra",
    ),
    "config_of_another_size": (
        edit_config(d_model=32, d_head=32),
        "model",
        r"has shape \[43, 16\] in model.safetensors but config.json implies \[43, 32\]",
    ),
    "nan_weights": (
        edit_weights(lambda s: s["lm_head.weight"].__setitem__((0, 0), float("nan"))),
        "model",
        r"hold NaN or inf",
    ),
    "tokenizer_of_another_vocab": (
        swap_tokenizer(n_types=5),
        "model",
        r"tokenizer .* has 13 tokens but config.json has vocab_size=43",
    ),
    "tokenizer_ids_reordered": (
        swap_tokenizer(reverse=True),
        "model",
        r"does not use the Dyck-20 id order: id 0 is 't\)'",
    ),
    "proxy_without_fitted_buffers": (
        edit_weights(lambda s: s.pop("model.layers.1.self_attn.simplification.key_basis")),
        "proxy",
        r"lacks 1 tensor\(s\).*key_basis",
    ),
    "proxy_of_unknown_simplifier": (
        edit_config(simplifier="pca"),
        "proxy",
        r"simplifier must be one of",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN_CHECKPOINTS))
def test_broken_checkpoint_folders_raise_checkpoint_error(ws, name):
    edit, source, message = BROKEN_CHECKPOINTS[name]
    folder = variant(ws, name, edit, source)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_missing_folder_a_file_and_a_dataset_folder_are_not_checkpoints(ws):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(ws.root / "no-such-model")
    with pytest.raises(CheckpointError, match="does not exist locally, and fetching it as a Hub id failed"):
        load_checkpoint("someone/no-such-model")  # offline in tests: the Hub look-up fails fast
    with pytest.raises(CheckpointError, match="is a file"):
        load_checkpoint(ws.file)
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        load_checkpoint(ws.data)


def test_good_folders_load_and_match_the_saved_model(ws):
    ids = torch.tensor([[1, 3, 23, 2]])
    loaded = load_checkpoint(ws.model)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, ws.loaded(ids).logits)
    assert type(load_checkpoint(ws.proxy)).__name__ == "IllusionProxyForCausalLM"


def test_a_model_that_does_not_fit_the_data_is_refused(ws):
    with pytest.raises(CheckpointError, match=r"vocab_size=43 but the data uses 13 tokens"):
        check_model_fits(ws.loaded, dl.DyckVocab(5).size, 20, "the data")
    with pytest.raises(CheckpointError, match=r"reaches 200 tokens but the model has n_positions=128"):
        check_model_fits(ws.loaded, VOCAB.size, 200, "the data")


# --------------------------------------------------------------------------- library calls


def corrupt_file(ws: SimpleNamespace, name: str, relative: str, content: str | None) -> Path:
    """A copy of the dataset folder with one file replaced (or deleted when ``content`` is None)."""
    folder = ws.root / "bad-data" / name
    if not folder.exists():
        shutil.copytree(ws.data, folder)
        if content is None:
            (folder / relative).unlink()
        else:
            (folder / relative).write_text(content)
    return folder


def parquet_without_input_ids(ws: SimpleNamespace) -> Path:
    import pyarrow.parquet as pq

    folder = corrupt_file(ws, "no_input_ids", "README.md", "card\n")
    table = pq.read_table(folder / "data/test_iid.parquet")
    pq.write_table(table.drop_columns(["input_ids"]), folder / "data/test_iid.parquet")
    return folder


def raises_cleanly(error: type[Exception], message: str, call: Callable[[], object]) -> None:
    """``call()`` raises ``error`` (an IllusionsError) matching ``message``, in one line (the CLI's text)."""
    with pytest.raises(error, match=message) as caught:
        call()
    assert isinstance(caught.value, IllusionsError)
    assert "\n" not in str(caught.value)


DYCK_STRINGS = [
    # id, sentence, what the DyckError says (max_length=510 brackets, as for a 512-position model)
    ("unbalanced", "(a (b b)", "1 bracket(s) left open"),
    ("mismatched", "(a b)", "closes type 'b' but the innermost open bracket is type 'a'"),
    ("close_first", "a) (a", "position 0 has no matching opening bracket"),
    ("unknown_token", "(a [ a)", "unknown token '[' at position 1"),
    ("type_beyond_n_types", "(z z)", "unknown token '(z'"),
    ("empty", "", "the sentence is empty"),
    ("only_bos_eos", "<bos> <eos>", "the sentence is empty"),
    ("special_inside", "(a <eos> a)", "unknown token '<eos>' at position 1"),
    ("over_max_length", "(a a) " * 300, "600 brackets, more than max_length=510"),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(*c[1:], id=c[0]) for c in DYCK_STRINGS])
def test_bad_dyck_strings(text, message):
    raises_cleanly(DyckError, re.escape(message), lambda: dl.parse_sentence(text, VOCAB, max_length=510))


METRIC_INPUTS = [
    # id, proxy, original, keyword arguments, what the FaithfulnessInputError says
    ("shape_mismatch", P, [[1.0, 0.0, 0.0]] * 2, {}, "must have the same shape"),
    ("negative", P, [[1.2, -0.2], [0.5, 0.5]], {}, "original has negative values in row 0"),
    ("row_sum_off", [[0.6, 0.6], [0.5, 0.5]], P, {}, "row 0 sums to 1.2"),
    ("nan", P, [[np.nan, 1.0], [0.5, 0.5]], {}, "original has non-finite values"),
    ("inf", [[np.inf, 0.0], [0.5, 0.5]], P, {}, "proxy has non-finite values"),
    ("logits", [[2.0, -1.0]], [[0.5, 0.5]], {}, "negative values"),
    ("unnormalised_scores", [[3.0, 1.0]], [[0.5, 0.5]], {}, "not logits or scores"),
    ("labels_out_of_range", P, P, {"references": [0, 2]}, "references must lie in [0, 2)"),
    ("labels_wrong_shape", P, P, {"references": [0]}, "references must have the leading (row) shape"),
    ("mask_wrong_shape", P, P, {"mask": [1, 0, 1]}, "does not broadcast"),
    ("mask_selects_nothing", P, P, {"mask": [0, 0]}, "mask selects no rows"),
    ("atol_one", P, P, {"atol": 1.0}, "atol must be in [0, 1)"),
    ("empty", [], [], {}, "is empty"),
    ("scalar", 0.5, 0.5, {}, "got a scalar"),
    ("ragged", [[0.5, 0.5], [1.0]], P, {}, "could not be read as an array"),
]


@pytest.mark.parametrize(
    ("proxy", "original", "kwargs", "message"), [pytest.param(*c[1:], id=c[0]) for c in METRIC_INPUTS]
)
def test_bad_metric_inputs(proxy, original, kwargs, message):
    raises_cleanly(
        FaithfulnessInputError, re.escape(message), lambda: faithfulness(proxy, original, **kwargs)
    )


TRAIN_FLAGS = [
    # id, flags for `hf-illusions train`, what the SettingsError says (before any work)
    ("max_steps_zero", "--max_steps 0", "--max_steps must be >= 1, got 0"),
    ("lr_nan", "--learning_rate nan", "--learning_rate must be a finite number > 0, got nan"),
    ("lr_negative", "--learning_rate=-1e-3", "--learning_rate must be a finite number > 0"),
    ("min_lr_ratio_2", "--min_lr_ratio 2", "--min_lr_ratio must be a finite number in [0, 1]"),
    ("heads_do_not_divide", "--d_model 10 --n_head 3", "--d_model (10) must be divisible by --n_head (3)"),
    ("task_unknown", "--task java", "--task must be one of ['code', 'dyck']"),
    (
        "data_config_of_other_task",
        "--task code --data_config dyck-20-10",
        "--data_config must be one of ['code-py', 'tiny'] for --task code, got 'dyck-20-10'",
    ),
    (
        "weight_sparsity_one",
        "--weight_sparsity 1",
        "--weight_sparsity must be a finite number in [0, 1), got 1.0",
    ),
    ("row_floor_zero", "--min_nonzero_per_row 0", "--min_nonzero_per_row must be >= 1, got 0"),
    ("anneal_negative", "--sparsity_anneal_steps=-5", "--sparsity_anneal_steps must be >= 0, got -5"),
    ("data_config_typo", "--data_config dyck20", "--data_config must be one of"),
    ("attn_flash", "--attn_implementation flash", "--attn_implementation must be one of"),
    ("report_to_bogus", "--report_to bogus", "--report_to must be one of"),
    ("seed_negative", "--seed -1", "--seed must be >= 0"),
    ("eval_sentences_zero", "--eval_sentences 0", "--eval_sentences must be >= 1"),
    ("int_flag_given_a_float", "--max_steps 1.5", "argument --max_steps: invalid int value: '1.5'"),
]


@pytest.mark.parametrize(("flags", "message"), [pytest.param(*c[1:], id=c[0]) for c in TRAIN_FLAGS])
def test_bad_training_flags(flags, message):
    raises_cleanly(SettingsError, re.escape(message), lambda: TrainArgs.parse(flags.split()))


API_CASES = [
    # id, call on the workspace, exception class, regular expression its message matches
    # -- the sampler
    ("sampler_min_over_max", lambda ws: dl.sample_sentence(random.Random(0), min_length=12, max_length=10),
     DyckError, "max_length must be >= 12"),
    ("sampler_odd_bounds", lambda ws: dl.sample_sentence(random.Random(0), min_length=5, max_length=5),
     DyckError, "max_length must be >= 6"),
    ("sampler_depth_zero", lambda ws: dl.sample_sentence(random.Random(0), max_depth=0),
     DyckError, "max_depth must be >= 1"),
    ("n_types_zero", lambda ws: dl.DyckVocab(0), DyckError, "n_types must be between 1 and 26"),
    ("n_types_27", lambda ws: dl.DyckVocab(27), DyckError, "n_types must be between 1 and 26"),
    ("sentence_not_a_string", lambda ws: dl.parse_sentence(["(a", "a)"], VOCAB), DyckError, "must be a str"),
    # -- dataset settings, splits and folders
    ("depth_bound_not_deeper", lambda ws: dyck.DyckSettings(depth_test_bound=10), SplitError, "must exceed"),
    ("n_train_zero", lambda ws: dyck.DyckSettings(n_train=0), SplitError, "n_train must be >= 1"),
    ("eval_size_zero", lambda ws: dyck.DyckSettings(eval_sizes={"validation": 0}), SplitError, "validation"),
    ("unknown_split", lambda ws: dyck.split_predicate("test_typo", dyck.PRESETS["tiny"], set()),
     SplitError, "unknown split 'test_typo'"),
    ("select_unknown_split", lambda ws: select_splits(load_folder(ws.data), ["test_iid", "tset_iid"]),
     SplitError, r"splits \['tset_iid'\] not in the dataset"),
    ("unknown_preset", lambda ws: write_dyck_folder(ws.root / "x", config_name="dyck-5"),
     SettingsError, "config_name must be one of"),
    ("existing_out", lambda ws: write_dyck_folder(ws.data, config_name="tiny"), PathError, "already exists"),
    ("out_under_a_file", lambda ws: write_dyck_folder(ws.file / "d", config_name="tiny"),
     PathError, "is a file"),
    ("missing_dataset", lambda ws: load_folder(ws.root / "nope"), DatasetError, "does not exist"),
    ("not_a_dataset", lambda ws: load_folder(ws.model), DatasetError, r"no data/\*\.parquet"),
    ("corrupt_parquet", lambda ws: load_folder(corrupt_file(ws, "pq", "data/train.parquet", "PAR1 no")),
     DatasetError, "not a readable parquet file"),
    ("parquet_without_input_ids", lambda ws: load_folder(parquet_without_input_ids(ws)),
     DatasetError, "no 'input_ids' column"),
    ("settings_not_json", lambda ws: verify_dyck_folder(corrupt_file(ws, "json", "dyck_settings.json", "{")),
     DatasetError, "not a valid settings file"),
    ("settings_unknown_key",
     lambda ws: read_settings(corrupt_file(ws, "key", "dyck_settings.json", '{"x": 1}')),
     DatasetError, "unexpected keyword argument 'x'"),
    ("settings_missing", lambda ws: verify_dyck_folder(corrupt_file(ws, "none", "dyck_settings.json", None)),
     DatasetError, "dyck_settings.json is missing"),
    # -- simplifiers
    ("rank_zero", lambda ws: SVDSimplifier(rank=0), SimplifierError, "rank must be between 1 and d_head"),
    ("rank_over_d_head", lambda ws: SVDSimplifier(rank=17).fit(ws.loaded, ws.train),
     SimplifierError, "rank must be between 1 and d_head=16, got 17"),
    ("k_negative", lambda ws: KMeansSimplifier(k=-2), SimplifierError, "k must be >= 1"),
    ("k_over_fitted_vectors", lambda ws: KMeansSimplifier(k=500, n_sequences=2).fit(ws.loaded, ws.train),
     SimplifierError, r"k=500 exceeds the number of fitted vectors"),
    ("layer_out_of_range", lambda ws: OneHotSimplifier(layers=[2]).fit(ws.loaded),
     SimplifierError, r"layers \[2\] out of range: the model has n_layer=2"),
    ("negative_layer", lambda ws: OneHotSimplifier(layers=[-1]).fit(ws.loaded),
     SimplifierError, r"layers \[-1\] out of range"),
    ("head_out_of_range", lambda ws: OneHotSimplifier(heads=[1]).fit(ws.loaded),
     SimplifierError, r"heads \[1\] out of range: the model has n_head=1"),
    ("no_layers", lambda ws: SVDSimplifier(rank=2, layers=[]), SimplifierError, "at least one index"),
    ("zero_sequences", lambda ws: SVDSimplifier(rank=2).fit(ws.loaded, []), SimplifierError, "no sequences"),
    ("empty_sequence", lambda ws: SVDSimplifier(rank=2).fit(ws.loaded, [[]]),
     SimplifierError, "row 0 is empty"),
    ("sequence_over_n_positions", lambda ws: SVDSimplifier(rank=2).fit(ws.loaded, [[1] * 129]),
     SimplifierError, "129 tokens but the model has n_positions=128"),
    ("unknown_simplifier", lambda ws: make_simplifier("pca"), SimplifierError, "name must be one of"),
    ("setting_of_another_simplifier", lambda ws: make_simplifier("onehot", n_sequences=5),
     SimplifierError, r"settings \['n_sequences'\] do not fit the 'onehot' simplifier"),
    # -- training runs
    ("n_positions_shorter_than_data",
     lambda ws: train_main(tiny_train_args(ws, ws.root / "short", "--n_positions", "32")),
     SettingsError, r"--n_positions=32 is shorter than the longest sentence"),
    ("resume_from_missing_checkpoint",
     lambda ws: train_main(tiny_train_args(ws, ws.root / "r1", "--resume_from_checkpoint", "nope")),
     CheckpointError, "'nope' does not exist"),
    ("resume_with_other_sizes",
     lambda ws: train_main([*tiny_train_args(ws, ws.root / "r2", "--resume_from_checkpoint",
                                             str(ws.run / "checkpoint-5")), "--d_model", "32"]),
     CheckpointError, r"other model sizes .*'d_model': \(16, 32\)"),
    ("resume_from_a_model_folder",
     lambda ws: train_main(tiny_train_args(ws, ws.root / "r3", "--resume_from_checkpoint", str(ws.final))),
     CheckpointError, "is not a finished checkpoint"),
    ("output_dir_holds_a_run", lambda ws: train_main(tiny_train_args(ws, ws.run)),
     PathError, "already holds a run"),
    # -- the reproduction pipeline (all refused before any data is built or fitted)
    ("reproduce_n_fit_zero", lambda ws: reproduce_dyck(ws.model, ws.data, ws.root / "rep", n_fit_sequences=0),
     SettingsError, "n_fit_sequences must be >= 1"),
    ("reproduce_data_config_typo", lambda ws: reproduce_dyck(ws.model, ws.root / "nodata", data_config="big"),
     SettingsError, "data_config must be one of"),
    ("reproduce_out_is_a_file", lambda ws: reproduce_dyck(ws.model, ws.data, ws.file, data_config="tiny"),
     PathError, "exists and is not a folder"),
    ("reproduce_foreign_model",
     lambda ws: reproduce_dyck(variant(ws, "gpt2_config", *BROKEN_CHECKPOINTS["gpt2_config"][:2]), ws.data,
                               ws.root / "rep", data_config="tiny"),
     CheckpointError, "lacks"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "message"), [pytest.param(*c[1:], id=c[0]) for c in API_CASES])
def test_bad_library_input_raises_a_specific_error(ws, call, error, message):
    raises_cleanly(error, message, lambda: call(ws))


def test_metric_tolerance_is_documented_and_applied():
    """Rows may miss 1 by up to atol=1e-3 (float16 softmax); beyond that they are rejected."""
    almost = [[0.5004, 0.5], [0.9, 0.1]]
    assert jsd(P, almost) >= 0.0
    with pytest.raises(FaithfulnessInputError, match=r"within atol=0\.001"):
        jsd(P, [[0.502, 0.5], [0.9, 0.1]])
    readme = (REPO / "README.md").read_text()
    assert "1e-3" in readme and "FaithfulnessInputError" in readme


# --------------------------------------------------------------------------- the command line


def run_cli(capsys, args: list[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exit:  # only --help and verify's "violations found" exit this way
        code = exit.code
    return code, capsys.readouterr().err


EVAL = "evaluate --model {m} --data {d} --out {r}/e.json"
CLI_CASES = [
    # id, command line ({m} model, {d} data, {p} proxy, {f} a file, {r} a scratch folder), the error's text
    ("no_command", "", "arguments are required: command"),
    ("unknown_command", "simplfy", "invalid choice: 'simplfy'"),
    ("unknown_flag", "evaluate --modle {m}", "unrecognized arguments: --modle"),
    ("rank_zero", "simplify svd --rank 0 --out {r}/p", "argument --rank: expected an integer >= 1, got 0"),
    ("rank_not_a_number", "simplify svd --rank four --out {r}/p", "expected an integer >= 1, got 'four'"),
    ("k_negative", "simplify kmeans --k -3 --out {r}/p", "argument --k"),
    ("layers_not_integers", "simplify svd --layers 0,x --out {r}/p", "argument --layers"),
    ("method_unknown", "simplify pca --out {r}/p", "argument method: invalid choice: 'pca'"),
    (
        "circuit_without_target",
        "simplify sparse_circuit --model {m} --data {d} --out {r}/p",
        "--target_loss is required for sparse_circuit",
    ),
    (
        "circuit_with_layers",
        "simplify sparse_circuit --target_loss 9 --layers 0 --out {r}/p",
        "--layers does not apply to sparse_circuit",
    ),
    (
        "circuit_target_below_model",
        "simplify sparse_circuit --target_loss 0.01 --model {m} --data {d} --out {r}/p",
        "is below the full model's loss",
    ),
    (
        "reproduce_unknown_family",
        "reproduce dyck --simplifiers svd,lasso --out {r}/rep",
        "simplifiers must be a non-empty subset of",
    ),
    ("rank_over_d_head", "simplify svd --rank 64 --model {m} --data {d} --out {r}/p", "d_head=16, got 64"),
    ("layer_out_of_range", "simplify onehot --layers 0,5 --model {m} --data {d} --out {r}/p", "layers [5]"),
    ("simplify_out_exists", "simplify onehot --model {m} --data {d} --out {p}", "--out '{p}' already exists"),
    ("simplify_out_under_a_file", "simplify onehot --model {m} --data {d} --out {f}/p", "'{f}' is a file"),
    ("model_missing", EVAL.replace("{m}", "{r}/nope"), "model folder '{r}/nope' does not exist"),
    ("model_is_gpt2_config_on_other_weights", EVAL.replace("{m}", "{gpt2}"), "lacks"),
    ("proxy_truncated", EVAL + " --proxy {truncated}", "'{truncated}/model.safetensors' is truncated"),
    (
        "proxy_names_collide",
        "evaluate --proxy {p} --proxy {p} --out {r}/e",
        "--proxy folders must have distinct",
    ),
    (
        "model_vocab_mismatch",
        EVAL.replace("{m}", "{vocab13}"),
        "--model '{vocab13}': the model has vocab_size=13",
    ),
    ("splits_typo", EVAL + " --splits test_idd", "--splits ['test_idd'] not in the dataset"),
    ("max_sentences_zero", "evaluate --max_sentences 0", "argument --max_sentences"),
    ("data_missing", EVAL.replace("{d}", "{r}/nodata"), "dataset folder '{r}/nodata' does not exist"),
    (
        "evaluate_out_exists",
        EVAL.replace("{r}/e.json", "{f}"),
        "--out '{f}' already exists; pass --overwrite",
    ),
    (
        "evaluate_out_not_writable",
        EVAL.replace("{r}/e.json", "/proc/e.json"),
        "'/proc/e.json' is not writable",
    ),
    ("build_config_typo", "data build dyck --data_config dyck20 --out {r}/d", "--data_config must be one of"),
    ("build_out_exists", "data build dyck --config tiny --out {d}", "--out '{d}' already exists"),
    ("build_task_unknown", "data build cobol", "argument task: invalid choice: 'cobol'"),
    ("verify_missing", "data verify {r}/nodata", "dataset folder '{r}/nodata' does not exist"),
    ("verify_out_exists", "data verify {d} --out {f}", "--out '{f}' already exists"),
    ("reproduce_data_config_typo", "reproduce dyck --data_config big", "--data_config must be one of"),
    (
        "reproduce_out_is_a_file",
        "reproduce dyck --data_config tiny --out {f}",
        "--out '{f}' exists and is not",
    ),
    ("card_run_missing", "card model {m} --run {r}/norun", "--run '{r}/norun' is not a training output_dir"),
    ("train_max_steps_zero", "train --max_steps 0", "--max_steps must be >= 1, got 0"),
    ("train_lr_not_a_number", "train --learning_rate fast", "--learning_rate: invalid float value: 'fast'"),
    ("train_unknown_flag", "train --epochs 3", "unrecognized arguments: --epochs 3"),
    ("train_task_unknown", "train --task java", "--task must be one of"),
    ("train_output_dir_holds_a_run", "train --dataset_dir {d} --output_dir {run}", "already holds a run"),
]


@pytest.fixture(scope="module")
def cli_paths(ws) -> dict[str, str]:
    vocab13 = ws.root / "variants" / "vocab13"
    if not vocab13.exists():
        torch.manual_seed(0)
        config = IllusionConfig(d_model=16, d_mlp=32, n_positions=128, vocab_size=13)
        IllusionForCausalLM(config).save_pretrained(vocab13)
    return {
        "r": str(ws.root),
        "d": str(ws.data),
        "m": str(ws.model),
        "p": str(ws.proxy),
        "f": str(ws.file),
        "run": str(ws.run),
        "vocab13": str(vocab13),
        "gpt2": str(variant(ws, "gpt2_config", *BROKEN_CHECKPOINTS["gpt2_config"][:2])),
        "truncated": str(variant(ws, "truncated_proxy", truncate_weights, "proxy")),
    }


@pytest.mark.parametrize(("line", "expected"), [pytest.param(*case[1:], id=case[0]) for case in CLI_CASES])
def test_cli_prints_one_error_line_naming_the_flag(ws, cli_paths, capsys, line, expected):
    before = sorted(p.name for p in ws.root.iterdir())
    code, err = run_cli(capsys, line.format(**cli_paths).split())
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("hf-illusions:")]
    assert len(errors) == 1, err
    assert err.rstrip().splitlines()[-1] == errors[0]  # nothing after the error line
    assert expected.format(**cli_paths) in errors[0]
    assert sorted(p.name for p in ws.root.iterdir()) == before  # a refused command writes nothing


def test_existing_outputs_are_untouched_and_replaced_only_with_overwrite(ws, capsys, tmp_path):
    out = tmp_path / "report.json"
    out.write_text("keep me\n")
    args = ["evaluate", "--model", str(ws.model), "--data", str(ws.data), "--splits", "test_iid"]
    code, _ = run_cli(capsys, [*args, "--max_sentences", "4", "--out", str(out)])
    assert code == 2 and out.read_text() == "keep me\n"
    code, _ = run_cli(capsys, [*args, "--max_sentences", "4", "--out", str(out), "--overwrite"])
    assert code == 0 and set(json.loads(out.read_text())["splits"]) == {"test_iid"}


def test_debug_re_raises_the_specific_exception(ws, capsys):
    with pytest.raises(SettingsError, match="--data_config must be one of"):
        main(["--debug", "data", "build", "dyck", "--config", "nope"])
    with pytest.raises(CheckpointError, match="does not exist"):  # --debug may come anywhere
        main(["evaluate", "--model", str(ws.root / "nope"), "--data", str(ws.data), "--debug"])


SUBPROCESS_ENV_KEYS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "PATH", "HOME")


def start(*args: str) -> subprocess.Popen:
    env = {k: os.environ[k] for k in SUBPROCESS_ENV_KEYS if k in os.environ} | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], stderr=subprocess.PIPE, text=True, env=env)


def test_real_processes_print_no_traceback_and_debug_prints_one(ws):
    cli, missing = ["-m", "hf_illusions.cli"], str(ws.root / "nodata")
    procs = {  # started together: most of each one's time is importing
        "plain": start(*cli, "data", "verify", missing),
        "debug": start(*cli, "--debug", "data", "verify", missing),
        "script": start(str(REPO / "scripts/train.py"), "--max_steps", "-5"),
    }
    stderr = {name: proc.communicate(timeout=120)[1] for name, proc in procs.items()}
    assert procs["plain"].returncode == 2
    assert stderr["plain"].strip().splitlines() == [
        f"hf-illusions: error: dataset folder '{missing}' does not exist "
        "(build it with `hf-illusions data build dyck`)"
    ]
    assert procs["debug"].returncode != 0
    assert "Traceback (most recent call last)" in stderr["debug"] and "DatasetError" in stderr["debug"]
    assert procs["script"].returncode == 2 and "Traceback" not in stderr["script"]
    assert (
        stderr["script"].strip().splitlines()[-1] == "hf-illusions: error: --max_steps must be >= 1, got -5"
    )


# --------------------------------------------------------------------------- safety


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")


def test_model_proxy_and_trained_folders_hold_no_pickle(ws):
    for folder in (ws.model, ws.proxy, ws.run / "final", ws.run / "checkpoint-5" / "model"):
        files = [p.name for p in folder.rglob("*") if p.is_file()]
        assert "model.safetensors" in files, folder
        assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)], (folder, files)


def test_loading_never_unpickles(ws, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    load_checkpoint(ws.model)
    load_checkpoint(ws.proxy)
    with pytest.raises(CheckpointError, match="only pickle weights"):
        load_checkpoint(variant(ws, "pickle_weights_only", pickle_weights_only))


def test_resume_loads_pickled_optimizer_and_rng_state_with_weights_only(ws, tmp_path, monkeypatch):
    """accelerate pickles optimizer/scheduler/RNG state; every load of it must be ``weights_only=True``."""
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append((Path(str(args[0])).name, kwargs.get("weights_only")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    shutil.copytree(ws.run, tmp_path / "run")
    train_main(
        tiny_train_args(ws, tmp_path / "run", "--resume_from_checkpoint", "latest", "--max_steps", "6")
    )
    names = {name for name, _ in calls}
    assert {"optimizer.bin", "scheduler.bin", "random_states_0.pkl"} <= names, calls
    assert all(weights_only is True for _, weights_only in calls), calls


def unsafe_calls(source: str) -> list[tuple[int, str]]:
    """Calls of ``torch.load`` / ``pickle.load(s)``; ``trust_remote_code=True`` / ``weights_only=False``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (
            (func.value.id, func.attr)
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            else None
        )
        if name in {("torch", "load"), ("pickle", "load"), ("pickle", "loads")}:
            found.append((node.lineno, ".".join(name)))
        for kw in node.keywords:
            unsafe = {"trust_remote_code": True, "weights_only": False}
            if kw.arg in unsafe and isinstance(kw.value, ast.Constant) and kw.value.value is unsafe[kw.arg]:
                found.append((node.lineno, f"{kw.arg}={kw.value.value}"))
    return found


def test_package_never_unpickles_or_trusts_remote_code():
    assert unsafe_calls("torch.load(f)\nAutoModel.from_pretrained(x, trust_remote_code=True)") == [
        (1, "torch.load"),
        (2, "trust_remote_code=True"),
    ]
    offenders = {
        str(path.relative_to(REPO)): calls
        for path in sorted([*(REPO / "hf_illusions").rglob("*.py"), *(REPO / "scripts").rglob("*.py")])
        if (calls := unsafe_calls(path.read_text()))
    }
    assert not offenders, offenders


def test_the_battery_has_at_least_40_distinct_bad_inputs():
    tables = {
        "str": DYCK_STRINGS,
        "metric": METRIC_INPUTS,
        "train": TRAIN_FLAGS,
        "api": API_CASES,
        "cli": CLI_CASES,
    }
    ids = [f"{table}:{case[0]}" for table, cases in tables.items() for case in cases]
    ids += [f"checkpoint:{name}" for name in BROKEN_CHECKPOINTS]
    assert len(ids) == len(set(ids)) >= 40, len(ids)

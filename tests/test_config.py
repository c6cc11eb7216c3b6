"""Settings as objects: one ReproductionConfig describes a run, is written into results.json, and
running the recorded config again gives the same numbers.

The presets are checked against the constants they are made of; bad settings fail when the config
is made (before any model is loaded); the end-to-end part runs a tiny reproduction from a config,
reruns it from its results.json (in place: everything reused; elsewhere: recomputed, same bytes)
through the Python API and the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_illusions.cli import main
from hf_illusions.config import ReproductionConfig, SampleConfig, SweepConfig
from hf_illusions.errors import PathError, SettingsError
from hf_illusions.presets import (
    ATTENTION_PROXIES,
    DEFAULT_CIRCUIT_SLACKS,
    DEFAULT_IB_KS,
    DEFAULT_KMEANS_KS,
    DEFAULT_SVD_RANKS,
    EVAL_SENTENCES,
    QUICK,
    SEED_SWEEPS,
    TASK_DEFAULTS,
)
from hf_illusions.reproduction import reproduce
from hf_illusions.reproduction.run import stable_results

TINY = dict(
    svd_ranks=(1, 16),
    kmeans_ks=(2,),
    n_fit_sequences=40,
    max_eval_sentences=24,
    data_config="tiny",
    attention_metrics=("svd_r1",),
    progress=False,
)


def test_full_preset_is_what_make_reproduce_runs():
    config = ReproductionConfig.for_task("dyck")
    assert config.model == TASK_DEFAULTS["dyck"]["model"] and config.out == "reports/dyck"
    assert (config.data, config.data_config) == ("dyck-illusions", "dyck-20-10")
    assert config.sweep.svd_ranks == DEFAULT_SVD_RANKS and config.sweep.kmeans_ks == DEFAULT_KMEANS_KS
    assert config.sweep.interaction_basis_ks == DEFAULT_IB_KS
    assert config.sweep.circuit_slacks == DEFAULT_CIRCUIT_SLACKS
    assert config.sweep.attention_metrics == ATTENTION_PROXIES["dyck"]
    assert config.sample == SampleConfig(n_fit_sequences=1000, max_eval_sentences=EVAL_SENTENCES["dyck"])
    assert config.sweep.families is None  # the task's default: every family the model supports


@pytest.mark.parametrize("task", ["dyck", "code"])
def test_seed_and_quick_presets_and_overrides_win(task):
    seed = ReproductionConfig.for_task(task, sweep="seed")
    assert seed.sweep.svd_ranks == SEED_SWEEPS[task]["svd_ranks"]
    assert seed.sweep.attention_metrics is False
    quick = ReproductionConfig.for_task(task, quick=True, svd_ranks=(2,), out="elsewhere")
    assert quick.sweep.svd_ranks == (2,) and quick.out == "elsewhere"
    assert quick.sample.n_fit_sequences == QUICK[task]["n_fit_sequences"]


def test_create_routes_flat_settings_and_replace_keeps_the_rest():
    config = ReproductionConfig.create("dyck", model="m", kmeans_ks=[4, 2], seed=3, fit_seed=5, resume=False)
    assert config.sweep.kmeans_ks == (4, 2) and config.sweep.fit_seed == 5
    assert config.sample.seed == 3 and config.resume is False and config.data == "dyck-illusions"
    changed = config.replace(max_eval_sentences=10, out="x")
    assert changed.sample == SampleConfig(n_fit_sequences=1000, max_eval_sentences=10, seed=3)
    assert changed.sweep == config.sweep and changed.out == "x" and config.out == "reports/dyck"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"task": "lm"}, "task must be one of"),
        ({"svd_rank": (1,)}, "unknown reproduction settings ['svd_rank']"),
        ({"svd_ranks": (0, 4)}, "every value of svd_ranks must be >= 1, got 0"),
        ({"kmeans_ks": "16"}, "kmeans_ks must be a sequence of integers"),
        ({"families": ["svd", "lasso"]}, "simplifiers must be a non-empty subset"),
        ({"circuit_slacks": (-0.1,)}, "circuit_slacks must be finite numbers > 0"),
        ({"n_fit_sequences": 0}, "n_fit_sequences must be >= 1, got 0"),
        ({"max_eval_sentences": 0}, "max_eval_sentences must be >= 1 or None, got 0"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"fit_seed": 1.5}, "fit_seed must be an integer >= 0, got 1.5"),
        ({"copy_head_ranks": (4,)}, "copy_head_ranks apply to the code reproduction only"),
        ({"task": "code", "interaction_basis_ks": (8,)}, "['interaction_basis_ks'] do not apply to the code"),
        ({"task": "code", "layers": (0,)}, "['layers'] do not apply to the code"),
        ({"model": ""}, "model must be a non-empty path or name"),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be >= 1"),
    ],
)
def test_impossible_settings_fail_when_the_config_is_made(settings, message):
    settings = dict(settings)
    task = settings.pop("task", "dyck")
    with pytest.raises(SettingsError) as err:
        ReproductionConfig.create(task, **settings)
    assert message in str(err.value)


def test_dict_round_trip_and_portable_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "reports" / "r").mkdir(parents=True)
    config = ReproductionConfig.for_task("dyck", model=str(tmp_path / "models" / "m"), out="reports/r")
    assert ReproductionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    written = config.to_dict(relative_to="reports/r")
    assert (written["model"], written["out"], written["data"]) == (
        "../../models/m",
        ".",
        "../../dyck-illusions",
    )
    assert not any(str(tmp_path) in json.dumps(v) for v in written.values())
    back = ReproductionConfig.from_dict(written, base=tmp_path / "reports" / "r")
    assert Path(back.model).resolve() == tmp_path / "models" / "m"
    assert Path(back.out).resolve() == tmp_path / "reports" / "r"
    hub = config.replace(model="someone/some-model").to_dict(relative_to="reports/r")
    assert ReproductionConfig.from_dict(hub, base=Path("reports/r")).model == "someone/some-model"


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, PathError, "does not exist"),
        ("{not json", PathError, "is not a readable results.json"),
        ('{"task": "dyck"}', SettingsError, "records no 'config'"),
        (
            '{"config": {"task": "dyck", "sweep": {"rank": 2}}}',
            SettingsError,
            "must be an object with fields",
        ),
        ('{"config": {"task": "dyck", "colour": 1}}', SettingsError, "unknown reproduction config fields"),
        ('{"config": {"task": "dyck"}}', SettingsError, "incomplete reproduction config"),
    ],
)
def test_from_results_says_what_is_wrong(tmp_path, content, error, message):
    file = tmp_path / "results.json"
    if content is not None:
        file.write_text(content)
    with pytest.raises(error) as err:
        ReproductionConfig.from_results(file)
    assert message in str(err.value)


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_dyck_dir):
    """A tiny reproduction run from a config (a random 2-layer model on the tiny preset)."""
    import torch

    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    root = tmp_path_factory.mktemp("config-run")
    torch.manual_seed(0)
    IllusionForCausalLM(IllusionConfig(d_model=16, n_head=1, d_mlp=32, n_layer=2)).save_pretrained(
        root / "model"
    )
    config = ReproductionConfig.create(
        "dyck", model=root / "model", data=tiny_dyck_dir, out=root / "first", fit_seed=0, **TINY
    )
    reproduce(config)
    return root, config


def read(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_results_record_the_config_and_it_reads_back(first):
    root, config = first
    results = read(root / "first")
    assert results["config"]["out"] == "." and results["config"]["model"] == "../model"
    assert not os.path.isabs(results["config"]["data"])
    assert results["config"]["sweep"]["svd_ranks"] == [1, 16]
    back = ReproductionConfig.from_results(root / "first" / "results.json")
    assert back.replace(model=config.model, data=config.data, out=config.out) == config
    assert Path(back.model).resolve() == (root / "model").resolve()
    assert Path(back.data).resolve() == Path(config.data).resolve()
    assert "hf-illusions reproduce --config" in (root / "first" / "README.md").read_text()


def test_rerun_in_place_reuses_every_split(first):
    root, _ = first
    before = read(root / "first")
    reproduce(ReproductionConfig.from_results(root / "first").replace(progress=False))
    after = read(root / "first")
    assert all(after["resumed"].values()) and after["timing"]["fit_s"] == {}
    assert stable_results(after, {"resumed"}) == stable_results(before, {"resumed"})


def test_cli_reruns_a_report_elsewhere_with_the_same_numbers(first, capsys):
    root, _ = first
    results = root / "first" / "results.json"
    assert main(["reproduce", "--config", str(results), "--out", str(root / "again")]) == 0
    again = read(root / "again")
    assert not any(again["resumed"].values())  # computed anew, not copied
    assert stable_results(again, {"resumed"}) == stable_results(read(root / "first"), {"resumed"})
    capsys.readouterr()


def test_cli_show_config_prints_without_running(first, tmp_path, capsys):
    root, _ = first
    out = tmp_path / "never"
    code = main(["reproduce", "--config", str(root / "first"), "--out", str(out), "--show_config"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0 and not out.exists()
    assert shown["sample"]["max_eval_sentences"] == 24 and shown["sweep"]["kmeans_ks"] == [2]
    assert main(["reproduce", "code", "--quick", "--show_config"]) == 0
    assert (
        json.loads(capsys.readouterr().out)["sample"]["n_fit_sequences"] == QUICK["code"]["n_fit_sequences"]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reproduce"], "give the TASK (dyck or code), or --config"),
        (["reproduce", "dyck", "--config", "x/results.json"], "TASK: --config already says"),
        (["reproduce", "--config", "x/results.json", "--quick"], "--quick: --config already says"),
        (["reproduce", "--config", "nowhere/results.json"], "does not exist"),
        (["reproduce", "dyck", "--max_eval_sentences", "-1"], "--max_eval_sentences must be >= 0"),
        (["reproduce", "dyck", "--simplifiers", "svd,lasso", "--show_config"], "non-empty subset"),
    ],
)
def test_cli_reproduce_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_sweep_and_sample_are_plain_frozen_data():
    sweep = SweepConfig(svd_ranks=[8, 4], attention_metrics=["svd_r8"])
    assert sweep.svd_ranks == (8, 4) and sweep.attention_metrics == ("svd_r8",)
    with pytest.raises(AttributeError):
        sweep.svd_ranks = (1,)  # type: ignore[misc]
    assert hash(SampleConfig()) == hash(SampleConfig())


def test_own_data_config_names_the_sample_as_the_caller_did():
    from hf_illusions.own_config import OwnDataConfig

    config = OwnDataConfig.create(model="gpt2", data="text", rank=4, n_fit=50, max_windows=8, seed=2)
    assert config.sample == SampleConfig(n_fit_sequences=50, max_eval_sentences=8, seed=2)
    assert config.arguments()["n_fit"] == 50 and config.arguments()["max_windows"] == 8
    assert OwnDataConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SettingsError, match="n_fit must be >= 1, got 0"):
        OwnDataConfig.create(model="gpt2", data="text", rank=4, n_fit=0)
    with pytest.raises(SettingsError, match="needs --rank"):
        OwnDataConfig.create(model="gpt2", data="text")
    with pytest.raises(SettingsError, match=r"records no 'config'.*`hf-illusions evaluate --simplifier`"):
        _records_nothing(OwnDataConfig)
    call = {"model": object(), "data": "text", "simplifier": "svd"}
    assert OwnDataConfig.from_call(call) is None  # a loaded model: nothing a file can hold


def _records_nothing(kind):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "results.json").write_text("{}")
        kind.from_results(folder)

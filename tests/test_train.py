"""The Accelerate training loop: it learns, logs, checkpoints atomically and resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_illusions.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


# Bitwise-exact resume holds for a fixed CPU thread count (the kernels' summation order depends on
# it), so this process and every training child run single-threaded, whatever earlier tests did.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny_args(data_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "--dataset_dir", str(data_dir), "--data_config", "tiny", "--output_dir", str(out),
        "--max_steps", str(steps), "--d_model", "16", "--d_mlp", "32", "--n_positions", "128",
        "--max_batch_tokens", "2048", "--warmup_steps", "2", "--eval_every", "1000", "--save_every", "5",
        "--log_every", "5", "--eval_sentences", "16", "--report_to", "none", *extra,
    ]  # fmt: skip


def weights(path: Path) -> dict:
    return load_file(path / "model.safetensors")


def test_training_learns_logs_and_saves_a_loadable_model(tiny_dyck_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = train_main(tiny_args(tiny_dyck_dir, tmp_path / "run", 40, "--learning_rate", "3e-3"))
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 0.2, losses  # 40 steps of a 16-wide model: a clear, steady drop
    evals = [r for r in records if "test_iid/accuracy" in r]
    assert evals and 0.0 <= evals[-1]["test_unseen_depth/accuracy"] <= 1.0
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.d_model == 16
    assert AutoTokenizer.from_pretrained(final)("(a a)").input_ids == [1, 3, 23]
    assert not list((tmp_path / "run").glob("*.tmp")), "no half-written checkpoint is left behind"


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tiny_dyck_dir, tmp_path):
    """Kill a real training process with SIGKILL, resume from the last checkpoint, compare bitwise."""
    import signal
    import time

    steps = 120
    straight = Path(train_main(tiny_args(tiny_dyck_dir, tmp_path / "a", steps)))
    run = tmp_path / "b"
    cmd = [sys.executable, str(REPO / "scripts/train.py"), *tiny_args(tiny_dyck_dir, run, steps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CHILD_ENV)
    deadline = time.monotonic() + 120
    while not list(run.glob("checkpoint-*[0-9]")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "final").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*[0-9]"))
    assert killed_at < steps
    resumed = Path(train_main(tiny_args(tiny_dyck_dir, run, steps, "--resume_from_checkpoint", "latest")))
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:  # bitwise on CPU: same data order (a function of step), same RNG/optimizer state
        assert (a[name] == b[name]).all(), name


def test_same_seed_same_weights(tiny_dyck_dir, tmp_path):
    first = weights(Path(train_main(tiny_args(tiny_dyck_dir, tmp_path / "a", 5))))
    second = weights(Path(train_main(tiny_args(tiny_dyck_dir, tmp_path / "b", 5))))
    assert all((first[k] == second[k]).all() for k in first)


@pytest.mark.slow
def test_two_cpu_processes_follow_the_one_process_loss_curve(tiny_dyck_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) vs one process, same global batch."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    script = str(REPO / "scripts/train.py")
    one = tiny_args(tiny_dyck_dir, tmp_path / "one", 20)
    two = tiny_args(tiny_dyck_dir, tmp_path / "two", 20)
    subprocess.run([*launch, "--num_processes", "1", script, *one], check=True, env=env, cwd=tmp_path)
    subprocess.run(
        [*launch, "--multi_gpu", "--num_processes", "2", "--main_process_port", "29533", script, *two],
        check=True, env=env, cwd=tmp_path,
    )  # fmt: skip

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines if '"loss"' in x]

    # Same data, same global normalisation: only the all-reduce summation order differs.
    diffs = [abs(a - b) for a, b in zip(losses("one"), losses("two"), strict=True)]
    print(f"2-process vs 1-process loss curve: max |difference| = {max(diffs):.2e} over {len(diffs)} points")
    for l1, l2 in zip(losses("one"), losses("two"), strict=True):
        assert abs(l1 - l2) <= 1e-4 * max(1.0, abs(l1)), (losses("one"), losses("two"))


# A driver for the child process: the real training entry point, except that the process SIGKILLs
# itself at the worst moment of the second save: every file of `checkpoint-10.tmp` is written
# (trainer_state.json included), only the rename is left. No flag in the library is involved.
KILL_BEFORE_RENAME = """
import os, pathlib, signal, sys
real_rename = pathlib.Path.rename
def rename_or_die(self, target):
    if self.name == "checkpoint-10.tmp":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rename(self, target)
pathlib.Path.rename = rename_or_die
from hf_illusions.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_kill_during_a_save_leaves_a_tmp_folder_that_resume_ignores_and_removes(tiny_dyck_dir, tmp_path):
    import signal

    from hf_illusions.train import latest_checkpoint

    steps = 20
    straight = Path(train_main(tiny_args(tiny_dyck_dir, tmp_path / "a", steps)))
    run = tmp_path / "b"
    args = tiny_args(tiny_dyck_dir, run, steps)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE_RENAME, *args], capture_output=True, env=CHILD_ENV
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    half = run / "checkpoint-10.tmp"
    assert (half / "trainer_state.json").is_file() and (half / "model/model.safetensors").is_file()
    assert latest_checkpoint(run) == run / "checkpoint-5"  # the complete-looking .tmp never counts
    with (run / "metrics.jsonl").open("a") as log:
        log.write('{"step": 11, "lo')  # and a log line torn by a kill mid-write is dropped on resume

    resumed = Path(train_main(tiny_args(tiny_dyck_dir, run, steps, "--resume_from_checkpoint", "latest")))
    assert not list(run.glob("*.tmp")) and not list(run.glob("*.old"))
    a, b = weights(straight), weights(resumed)
    assert all((a[name] == b[name]).all() for name in a)
    steps_logged = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == sorted(steps_logged), (
        "the killed run's log lines after step 5 were redone, not kept"
    )


def test_latest_checkpoint_takes_only_finished_numbered_folders(tmp_path):
    from hf_illusions.train import latest_checkpoint

    folders = {"checkpoint-5": True, "checkpoint-40": False, "checkpoint-30.tmp": True}
    folders |= {"checkpoint-x9": True, "checkpoint-20.old": True, "checkpoint-10": True}
    for name, finished in folders.items():
        (tmp_path / name).mkdir()
        if finished:
            (tmp_path / name / "trainer_state.json").write_text('{"step": 0}\n')
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert latest_checkpoint(tmp_path / "checkpoint-5") is None


@pytest.mark.parametrize(
    ("architecture", "model_class", "position_key"),
    [("llama", "LlamaForCausalLM", None), ("gpt2", "GPT2LMHeadModel", "transformer.wpe.weight")],
)
def test_stock_architecture_trains_resumes_and_loads_as_itself(
    tiny_dyck_dir, tmp_path, architecture, model_class, position_key
):
    """``--architecture llama|gpt2`` trains transformers' own class, which loads back through our checks,
    resumes bitwise and refuses a resume with other sizes."""
    from transformers import AutoModelForCausalLM

    from hf_illusions.checkpoints import load_checkpoint
    from hf_illusions.errors import CheckpointError

    arch = ("--architecture", architecture)
    run = tmp_path / "run"
    final = Path(train_main(tiny_args(tiny_dyck_dir, run, 10, *arch)))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in records if "loss" in r)
    model = load_checkpoint(final)
    assert type(model).__name__ == model_class
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 2
    keys = set(weights(final))
    if position_key is None:  # rotary: no position table at all
        assert not any("wpe" in k or "position" in k for k in keys), keys
    else:  # learned absolute positions
        assert weights(final)[position_key].shape == (128, 16)
    assert type(AutoModelForCausalLM.from_pretrained(final)).__name__ == model_class

    # resume from the step-5 checkpoint into a fresh folder: the same weights, bit for bit
    resume = ("--resume_from_checkpoint", str(run / "checkpoint-5"))
    resumed = Path(train_main(tiny_args(tiny_dyck_dir, tmp_path / "resumed", 10, *arch, *resume)))
    straight, again = weights(final), weights(resumed)
    assert straight.keys() == again.keys()
    assert all((straight[k] == again[k]).all() for k in straight)
    with pytest.raises(CheckpointError, match="other model sizes"):
        train_main(tiny_args(tiny_dyck_dir, tmp_path / "wider", 10, *arch, "--d_model", "32", *resume))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--architecture", "mamba"), "--architecture must be one of"),
        (("--architecture", "llama", "--d_mlp", "0"), "attention-only"),
        (
            ("--architecture", "gpt2", "--weight_sparsity", "0.5"),
            "--weight_sparsity needs --architecture illusion",
        ),
    ],
)
def test_architecture_settings_are_checked(tiny_dyck_dir, tmp_path, flags, message):
    from hf_illusions.errors import SettingsError

    with pytest.raises(SettingsError, match=message):
        train_main(tiny_args(tiny_dyck_dir, tmp_path / "run", 5, *flags))

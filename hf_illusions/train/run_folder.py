"""The run folder (``--output_dir``): atomic checkpoints, resuming from one, and what a killed run left.

Everything that decides whether work is kept, lost or mixed up between runs is here: which folder
is a finished ``checkpoint-N`` (a save goes to ``checkpoint-N.tmp`` and is renamed, so a kill
mid-save leaves nothing ``--resume_from_checkpoint latest`` would take), whether a checkpoint fits
the current flags, how its training state is restored (every pickle read with
``weights_only=True``), and which ``metrics.jsonl`` lines survive a resume.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from pathlib import Path

from accelerate import Accelerator
from transformers import PreTrainedConfig

from hf_illusions.data.hub_folder import finish_out_dir
from hf_illusions.errors import CheckpointError, PathError, SettingsError
from hf_illusions.paths import check_output_path
from hf_illusions.train.args import STOCK_SIZE_NAMES, TrainArgs

CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
TRAINING_DATA_FILE = "training_data.json"
#: config fields that fix a checkpoint's weight shapes, under each architecture's names
SIZE_FIELDS = frozenset(
    {"model_type", "vocab_size", "n_positions", "d_model", "n_layer", "n_head", "d_head", "d_mlp"}
    | {field for names in STOCK_SIZE_NAMES.values() for field in names}
)


def size_fields(config: dict) -> dict:
    """The entries of a config dict that fix the weight shapes (:data:`SIZE_FIELDS`)."""
    return {k: v for k, v in config.items() if k in SIZE_FIELDS}


def describe_training_data(args: TrainArgs, train_ids: list[list[int]]) -> dict:
    """What ``training_data.json`` in every saved model records about the train split it was fit on.

    ``reproduce`` compares ``train_sha256_16`` with the data it evaluates on: a rebuilt dataset
    whose train split differs (e.g. the code corpus read from other installed package versions)
    could put the model's training text into a test split.
    """
    from hf_illusions.fingerprints import sequences_hash

    record = {
        "task": args.task,
        "dataset_dir": args.dataset_dir,
        "n_train": len(train_ids),
        "train_sha256_16": sequences_hash(train_ids),
    }
    manifest = Path(args.dataset_dir) / "manifest.json"
    if manifest.is_file():  # code: the versions the corpus was read at
        record["source_versions"] = json.loads(manifest.read_text()).get("source_versions")
    return record


def checkpoint_step(path: Path) -> int | None:
    """N for a finished ``checkpoint-N`` folder; None for anything else (``.tmp``, strays, half copies)."""
    match = CHECKPOINT_NAME.fullmatch(path.name)
    return int(match.group(1)) if match and (path / "trainer_state.json").is_file() else None


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The finished checkpoint with the highest step; ``checkpoint-N.tmp`` (a killed save) never counts."""
    done = [(step, p) for p in output_dir.glob("checkpoint-*") if (step := checkpoint_step(p)) is not None]
    return max(done)[1] if done else None


def check_resumable(checkpoint: Path, config: PreTrainedConfig, max_steps: int) -> int:
    """The step to resume from, after checking the checkpoint is complete and matches the model settings."""
    if not checkpoint.is_dir():
        raise CheckpointError(f"--resume_from_checkpoint {str(checkpoint)!r} does not exist")
    missing = [
        n for n in ("trainer_state.json", "state", "model/config.json") if not (checkpoint / n).exists()
    ]
    if missing:
        raise CheckpointError(
            f"--resume_from_checkpoint {str(checkpoint)!r} is not a finished checkpoint ({missing} missing)"
        )
    try:
        step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
        saved = json.loads((checkpoint / "model/config.json").read_text())
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{str(checkpoint)!r} holds a corrupt trainer_state.json or config: {err!r}"
        ) from None
    now = size_fields(config.to_dict())
    before = size_fields(saved)
    differ = {
        k: (before.get(k), now.get(k))
        for k in sorted(now.keys() | before.keys())
        if before.get(k) != now.get(k)
    }
    if differ:
        raise CheckpointError(
            f"--resume_from_checkpoint {str(checkpoint)!r} was trained with other model sizes "
            f"(checkpoint vs now: {differ}); resume with the flags it was trained with"
        )
    if step > max_steps:
        raise SettingsError(f"the checkpoint is at step {step}, beyond --max_steps={max_steps}")
    return step


def restore_state(accelerator: Accelerator, checkpoint: Path) -> None:
    """``accelerator.load_state`` with ``weights_only=True`` for every pickle, failing loudly.

    accelerate only logs "Could not load random states" when the RNG file is unreadable and goes
    on; a resume that is not exact must not look exact, so that file is read here first.
    """
    from accelerate.utils import load

    state = checkpoint / "state"
    try:
        load(state / f"random_states_{accelerator.process_index}.pkl", weights_only=True)
        accelerator.load_state(str(state), load_kwargs={"weights_only": True})
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"could not restore the training state in {str(state)!r} ({type(err).__name__}: {err}); "
            "the checkpoint is incomplete or corrupt"
        ) from None


def prepare_output_dir(args: TrainArgs, out: Path) -> None:
    """Refuse to mix two runs in one ``output_dir`` unless asked to resume or to start over."""
    check_output_path(out, arg="--output_dir", reuse=True)
    found = out.glob("checkpoint-*") if out.is_dir() else []
    previous = [p.name for p in found if checkpoint_step(p) is not None]
    if (out / "metrics.jsonl").exists():
        previous.append("metrics.jsonl")
    if previous and not args.resume_from_checkpoint and not args.overwrite_output_dir:
        raise PathError(
            f"--output_dir {str(out)!r} already holds a run ({sorted(previous)[:3]}…); pass "
            "--resume_from_checkpoint latest to continue it or --overwrite_output_dir to start over"
        )


def clean_output_dir(out: Path, start_step: int, start_over: bool) -> None:
    """Remove what a killed or replaced run left behind, so the new run's files are all its own.

    Always: ``checkpoint-N.tmp`` / ``.old`` folders (a save killed midway; never resumable).
    Resuming at step ``s``: log lines after ``s`` (the killed run's, about to be redone, so the
    log reads like an uninterrupted run); finished checkpoints are kept (a later one is replaced
    atomically when the run reaches it). Starting over: every checkpoint, ``final/`` and the log.
    """
    for stale in [*out.glob("checkpoint-*.tmp"), *out.glob("checkpoint-*.old")]:
        shutil.rmtree(stale)
    if start_over:
        for ckpt in [p for p in out.glob("checkpoint-*") if checkpoint_step(p) is not None]:
            shutil.rmtree(ckpt)
        if (out / "final").exists():
            shutil.rmtree(out / "final")
    log = out / "metrics.jsonl"
    if log.exists():
        kept = [] if start_over else [x for x in log.read_text().splitlines() if logged_step(x) <= start_step]
        log.write_text("".join(x + "\n" for x in kept))


def logged_step(line: str) -> float:
    """The step of a metrics.jsonl line; a line torn by a kill mid-write counts as after any step."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def save_checkpoint(
    accelerator: Accelerator, path: Path, step: int, tokenizer, training_data: dict | None = None
) -> None:
    """``model/`` (save_pretrained + tokenizer), ``state/`` (accelerate), ``trainer_state.json``; atomic.

    Everything is written to ``checkpoint-N.tmp`` and renamed at the end; a kill at any point
    leaves either no ``checkpoint-N`` or a complete one (an existing one is moved aside first
    and deleted only after the rename).
    """
    tmp = path.with_name(path.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(accelerator._models[0])
        unwrapped.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        if training_data is not None:  # which train split the model saw (checked by `reproduce`)
            (tmp / "model" / TRAINING_DATA_FILE).write_text(json.dumps(training_data, indent=2) + "\n")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}) + "\n")
        finish_out_dir(tmp, path)  # some complete checkpoint folder always exists
    accelerator.wait_for_everyone()

"""Training an illusion transformer with Accelerate: ``hf-illusions train``, ``scripts/train.py``.

One run, in four modules, read in this order:

* :mod:`~hf_illusions.train.args`: :class:`TrainArgs`, every flag with its help, per-task default
  and check (``hf-illusions train --help`` is built from it);
* :mod:`~hf_illusions.train.build`: the task's data, the model and the optimizer those settings build;
* :mod:`~hf_illusions.train.run_folder`: the output folder, its atomic checkpoints and resuming;
* :mod:`~hf_illusions.train.loop`: :func:`main`, the training loop itself (one flat function).

Every name below is re-exported here, so ``from hf_illusions.train import main, TrainArgs`` is the
one import the CLI, the scripts and the tests need; ``python -m hf_illusions.train`` runs :func:`main`.
"""

from hf_illusions.train.args import (
    ARCHITECTURES,
    ATTN_IMPLEMENTATIONS,
    FLAG_ALIASES,
    STOCK_SIZE_NAMES,
    TASK_DEFAULTS,
    TRACKERS,
    TrainArgs,
    arg,
    task_presets,
)
from hf_illusions.train.build import build_model, build_optimizer, load_task_data
from hf_illusions.train.loop import log_metrics, main, step_loss
from hf_illusions.train.run_folder import (
    CHECKPOINT_NAME,
    SIZE_FIELDS,
    TRAINING_DATA_FILE,
    check_resumable,
    checkpoint_step,
    clean_output_dir,
    describe_training_data,
    latest_checkpoint,
    logged_step,
    prepare_output_dir,
    restore_state,
    save_checkpoint,
    size_fields,
)

__all__ = [
    "ARCHITECTURES",
    "ATTN_IMPLEMENTATIONS",
    "CHECKPOINT_NAME",
    "FLAG_ALIASES",
    "SIZE_FIELDS",
    "STOCK_SIZE_NAMES",
    "TASK_DEFAULTS",
    "TRACKERS",
    "TRAINING_DATA_FILE",
    "TrainArgs",
    "arg",
    "build_model",
    "build_optimizer",
    "check_resumable",
    "checkpoint_step",
    "clean_output_dir",
    "describe_training_data",
    "latest_checkpoint",
    "load_task_data",
    "log_metrics",
    "logged_step",
    "main",
    "prepare_output_dir",
    "restore_state",
    "save_checkpoint",
    "size_fields",
    "step_loss",
    "task_presets",
]

"""The settings of a training run: :class:`TrainArgs`, one field per flag of ``hf-illusions train``.

What a user may change lives here, apart from the loop that only reads it: every flag with its
help text, the per-task defaults (:data:`TASK_DEFAULTS`, those of the shipped checkpoints), the
checks that reject an impossible value by naming its flag, and the parser built from all of that
(its ``--help`` opens with :data:`USAGE`).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from typing import Any

from hf_illusions.errors import SettingsError

#: the description of ``hf-illusions train --help``: how to launch a run, and what a run guarantees
USAGE = """Train an illusion transformer with Accelerate: one flat loop, settings at the top.

    accelerate launch scripts/train.py --task dyck --output_dir runs/dyck
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py …   # 2 CPU procs
    hf-illusions train --task dyck --output_dir runs/dyck                                       # same loop

Every global batch is a pure function of (seed, step) and is split row-wise across processes, and
the loss is normalised by the *global* token count, so N processes follow the 1-process curve.
Checkpoints (``save_pretrained`` + optimizer/scheduler/RNG via ``accelerator.save_state``) are
written to a temporary folder and renamed, so a kill mid-save never leaves a checkpoint that
``--resume_from_checkpoint latest`` would pick up (a leftover ``checkpoint-N.tmp`` is ignored
and removed on the next start).

What is pickled: the model weights are safetensors everywhere (``model/`` and ``state/``), but
accelerate stores the optimizer, scheduler and RNG states as ``torch.save`` files
(``state/optimizer.bin``, ``scheduler.bin``, ``random_states_0.pkl``); a resume loads every
one of them with ``torch.load(weights_only=True)`` (tensors, numbers, numpy arrays: no code
runs), see :func:`restore_state`.
"""

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
#: ``--architecture``: our model, or transformers' own Llama (rotary positions, RMSNorm, SwiGLU) or
#: GPT-2 (learned absolute positions), built at the same sizes from the same flags
ARCHITECTURES = ("illusion", "llama", "gpt2")
#: each stock architecture's config field → the ``TrainArgs`` size it takes (same sizes, their names)
STOCK_SIZE_NAMES = {
    "llama": {
        "hidden_size": "d_model",
        "intermediate_size": "d_mlp",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "num_key_value_heads": "n_head",
        "max_position_embeddings": "n_positions",
    },
    "gpt2": {
        "n_embd": "d_model",
        "n_inner": "d_mlp",
        "n_layer": "n_layer",
        "n_head": "n_head",
        "n_positions": "n_positions",
    },
}
TRACKERS = ("auto", "none", "tensorboard", "trackio", "wandb", "aim", "comet_ml", "mlflow", "clearml")


#: Per-task defaults of the settings left as ``None`` in :class:`TrainArgs`: those of the shipped
#: ``checkpoints/dyck`` and ``checkpoints/code``. A flag given explicitly always wins.
TASK_DEFAULTS: dict[str, dict[str, object]] = {
    "dyck": {
        "dataset_dir": "dyck-illusions",
        "data_config": "dyck-20-10",
        "output_dir": "runs/dyck",
        "d_model": 64,
        "n_head": 1,
        "d_mlp": 256,
        "n_positions": 512,
        "max_steps": 10000,
        "max_batch_tokens": 8192,
    },
    "code": {  # 4 heads of 32 so that one can copy (previous-token + induction) while others do syntax
        "dataset_dir": "code-illusions",
        "data_config": "code-py",
        "output_dir": "runs/code",
        "d_model": 128,
        "n_head": 4,
        "d_mlp": 512,
        "n_positions": 257,
        "max_steps": 5000,
        "max_batch_tokens": 8224,  # 32 windows of 257 tokens
    },
}


def arg(default: object, help_text: str) -> Any:
    """A :class:`TrainArgs` field whose ``--help`` text travels with it (as in ``TrainingArguments``)."""
    return field(default=default, metadata={"help": help_text})


#: the names every other command uses for the same things (``--data``, ``--out``, ``--overwrite``)
FLAG_ALIASES = {"dataset_dir": "--data", "output_dir": "--out", "overwrite_output_dir": "--overwrite"}


@dataclass
class TrainArgs:
    """Every setting of a run; ``None`` means the task's default (:data:`TASK_DEFAULTS`)."""

    task: str = arg("dyck", "dyck (bracket languages) or code (Python characters)")
    dataset_dir: str | None = arg(None, "dataset folder, built from --data_config when missing")
    data_config: str | None = arg(None, "preset built into --dataset_dir when it is missing")
    output_dir: str | None = arg(None, "run folder: checkpoints, metrics.jsonl, final model")
    # model
    architecture: str = arg("illusion", "illusion (ours), or transformers' own llama or gpt2 classes")
    d_model: int | None = arg(None, "residual stream width")
    n_layer: int = arg(2, "transformer blocks")
    n_head: int | None = arg(None, "attention heads per layer")
    d_mlp: int | None = arg(None, "MLP hidden width (0: attention-only, --architecture illusion)")
    n_positions: int | None = arg(None, "longest sequence, BOS included")
    attn_implementation: str = arg("sdpa", "attention kernel while training: sdpa or eager")
    # optimisation
    max_steps: int | None = arg(None, "optimizer steps")
    max_batch_tokens: int | None = arg(None, "padded tokens per *global* batch (all processes)")
    learning_rate: float = arg(2e-3, "peak AdamW learning rate")
    min_lr_ratio: float = arg(0.1, "final learning rate of the cosine schedule, as a fraction of the peak")
    warmup_steps: int = arg(300, "linear warm-up steps")
    weight_decay: float = arg(0.01, "AdamW weight decay")
    max_grad_norm: float = arg(1.0, "gradient clipping norm")
    seed: int = arg(0, "seed of initialisation and of every batch (a pure function of seed and step)")
    # weight sparsity (Gao et al. 2025): after every optimizer step keep only the largest-magnitude
    # entries of each block weight matrix; the kept fraction anneals from 1 to 1 - weight_sparsity
    weight_sparsity: float = arg(0.0, "fraction of each block weight matrix's entries that end up zero")
    sparsity_anneal_steps: int | None = arg(
        None, "steps of the linear sparsity anneal (default: half of --max_steps)"
    )
    min_nonzero_per_row: int = arg(4, "floor of kept entries per output row, so no unit goes dead")
    # bookkeeping
    eval_every: int = arg(1000, "steps between evaluations on every split")
    eval_sentences: int = arg(500, "sentences per split in each periodic evaluation")
    save_every: int = arg(1000, "steps between checkpoints")
    log_every: int = arg(100, "steps between loss / throughput lines")
    resume_from_checkpoint: str | None = arg(
        None, "a checkpoint folder, or latest (default: start from step 0)"
    )
    overwrite_output_dir: bool = arg(False, "start over in an --output_dir that already holds a run")
    report_to: str = arg(
        "auto", f"tracker: auto (trackio/tensorboard when installed), none, or one of {list(TRACKERS[2:])}"
    )

    def __post_init__(self) -> None:
        """Fill the task's defaults, then reject impossible settings, naming the flag (SettingsError)."""
        if self.task not in TASK_DEFAULTS:
            raise SettingsError(f"--task must be one of {sorted(TASK_DEFAULTS)}, got {self.task!r}")
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.sparsity_anneal_steps is None:
            self.sparsity_anneal_steps = self.max_steps // 2
        at_least = {
            **dict.fromkeys(("max_steps", "max_batch_tokens", "eval_every", "save_every", "log_every"), 1),
            **dict.fromkeys(("eval_sentences", "d_model", "n_layer", "n_head", "n_positions"), 1),
            **dict.fromkeys(
                ("d_mlp", "warmup_steps", "seed", "sparsity_anneal_steps"), 0
            ),  # d_mlp 0 = attn-only
            "min_nonzero_per_row": 1,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise SettingsError(f"--{name} must be >= {low}, got {getattr(self, name)}")
        for name, (ok, bound) in {
            "learning_rate": (lambda v: v > 0, "> 0"),
            "max_grad_norm": (lambda v: v > 0, "> 0"),
            "weight_decay": (lambda v: v >= 0, ">= 0"),
            "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
            "weight_sparsity": (lambda v: 0 <= v < 1, "in [0, 1)"),
        }.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and ok(value)):
                raise SettingsError(f"--{name} must be a finite number {bound}, got {value}")
        if self.d_model % self.n_head:
            raise SettingsError(f"--d_model ({self.d_model}) must be divisible by --n_head ({self.n_head})")
        presets = task_presets(self.task)
        if self.data_config not in presets:
            raise SettingsError(
                f"--data_config must be one of {sorted(presets)} for --task {self.task}, "
                f"got {self.data_config!r}"
            )
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise SettingsError(
                f"--attn_implementation must be one of {list(ATTN_IMPLEMENTATIONS)}, "
                f"got {self.attn_implementation!r}"
            )
        if self.architecture not in ARCHITECTURES:
            raise SettingsError(
                f"--architecture must be one of {list(ARCHITECTURES)}, got {self.architecture!r}"
            )
        if self.architecture != "illusion" and self.d_mlp == 0:
            raise SettingsError(
                f"--d_mlp 0 (attention-only) needs --architecture illusion; "
                f"{self.architecture} always has an MLP"
            )
        if self.architecture != "illusion" and self.weight_sparsity > 0:
            raise SettingsError(
                "--weight_sparsity needs --architecture illusion (the sparse circuits are fitted on "
                f"our model's weights), got --architecture {self.architecture}"
            )
        if self.report_to not in TRACKERS:
            raise SettingsError(f"--report_to must be one of {list(TRACKERS)}, got {self.report_to!r}")

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """The parser of ``hf-illusions train`` and ``scripts/train.py``: a flag per field, help included."""
        from hf_illusions.argparsing import ArgumentParser, RawDescriptionHelpFormatter  # one-line errors

        parser = ArgumentParser(
            prog="hf-illusions train", description=USAGE, formatter_class=RawDescriptionHelpFormatter
        )
        for f in fields(cls):
            names = [f"--{f.name}", *([FLAG_ALIASES[f.name]] if f.name in FLAG_ALIASES else [])]
            help_text = f.metadata["help"]
            if f.default is None and f.name in TASK_DEFAULTS["dyck"]:
                per_task = ", ".join(f"{task} {values[f.name]}" for task, values in TASK_DEFAULTS.items())
                help_text = f"{help_text} (default per --task: {per_task})"
            if str(f.type) == "bool":
                parser.add_argument(*names, dest=f.name, action="store_true", help=help_text)
                continue
            kind = {"int": int, "float": float}.get(str(f.type).removesuffix(" | None"), str)
            parser.add_argument(*names, dest=f.name, type=kind, default=f.default, help=help_text)
        return parser

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> TrainArgs:
        return cls(**vars(cls.parser().parse_args(argv)))


def task_presets(task: str) -> dict:
    """The dataset presets ``--data_config`` may name for ``task``."""
    if task == "code":
        from hf_illusions.data.code import PRESETS
    else:
        from hf_illusions.data.dyck import PRESETS
    return PRESETS

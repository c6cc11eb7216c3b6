"""Train an illusion transformer with Accelerate: one flat loop, settings at the top.

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

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pickle
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import PreTrainedConfig, PreTrainedModel, get_cosine_with_min_lr_schedule_with_warmup

from hf_illusions.data.batching import StepBatches, pad_batch
from hf_illusions.data.sampling import sample_split_ids
from hf_illusions.errors import CheckpointError, PathError, SettingsError
from hf_illusions.evaluation import evaluate_models
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.paths import check_output_path
from hf_illusions.sparse.weights import keep_fraction, sparsify_model_, weight_density

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
#: config fields that fix a checkpoint's weight shapes, under each architecture's names
SIZE_FIELDS = frozenset(
    {"model_type", "vocab_size", "n_positions", "d_model", "n_layer", "n_head", "d_head", "d_mlp"}
    | {field for names in STOCK_SIZE_NAMES.values() for field in names}
)
TRACKERS = ("auto", "none", "tensorboard", "trackio", "wandb", "aim", "comet_ml", "mlflow", "clearml")
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
TRAINING_DATA_FILE = "training_data.json"


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
            prog="hf-illusions train", description=__doc__, formatter_class=RawDescriptionHelpFormatter
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


def load_task_data(args: TrainArgs):
    """(task, DatasetDict, tokenizer, vocab_size); builds the dataset folder on first use.

    The vocabulary comes from the folder's own settings (not ``--data_config``, which only says
    what to build when the folder is missing), so a model always matches the data it reads.
    """
    from hf_illusions.data.hub_folder import load_folder, read_settings, write_dyck_folder
    from hf_illusions.data.tokenizer import code_tokenizer, dyck_tokenizer
    from hf_illusions.tasks.code import CodeTask
    from hf_illusions.tasks.dyck import DyckTask

    if args.task == "code":
        from hf_illusions.data.code_folder import write_code_folder

        if not Path(args.dataset_dir).exists():
            write_code_folder(args.dataset_dir, config_name=args.data_config)
        ds = load_folder(args.dataset_dir)
        tokenizer = code_tokenizer(model_max_length=args.n_positions)
        return (
            CodeTask.from_dataset({s: d for s, d in ds.items() if s != "train"}),
            ds,
            tokenizer,
            len(tokenizer),
        )
    if not Path(args.dataset_dir).exists():
        write_dyck_folder(args.dataset_dir, config_name=args.data_config)
    ds = load_folder(args.dataset_dir)
    n_types = read_settings(args.dataset_dir).n_types
    tokenizer = dyck_tokenizer(n_types, model_max_length=args.n_positions)
    return DyckTask(n_types), ds, tokenizer, len(tokenizer)


def build_model(args: TrainArgs, vocab_size: int, tokenizer) -> PreTrainedModel:
    """A freshly initialised causal LM of ``args.architecture`` at the sizes the flags give.

    ``llama`` and ``gpt2`` are transformers' own ``LlamaForCausalLM`` and ``GPT2LMHeadModel``, so a
    model trained here is simplified through the same attention seam as any Hub model; dropout is
    off and embeddings untied, as in ours, so the three differ in their blocks and positions only.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    sizes = {
        "vocab_size": vocab_size,
        **{field: getattr(args, ours) for field, ours in STOCK_SIZE_NAMES.get(args.architecture, {}).items()},
    }
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    stock = {
        "llama": (LlamaConfig, LlamaForCausalLM, {}),
        "gpt2": (GPT2Config, GPT2LMHeadModel, {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}),
    }
    if args.architecture in stock:
        config_class, model_class, fixed = stock[args.architecture]
        return model_class(config_class(**sizes, **fixed, tie_word_embeddings=False, **special))
    config = IllusionConfig(
        vocab_size=vocab_size,
        n_positions=args.n_positions,
        d_model=args.d_model,
        n_layer=args.n_layer,
        n_head=args.n_head,
        d_mlp=args.d_mlp,
    )
    return IllusionForCausalLM(config)


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


def build_optimizer(model: torch.nn.Module, args: TrainArgs, total_steps: int):
    """AdamW (decay on weight matrices only, not embeddings/biases/norms) + warmup-cosine to min_lr_ratio."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(0.9, 0.98),
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, args.warmup_steps, total_steps, min_lr_rate=args.min_lr_ratio
    )
    return optimizer, scheduler


def step_loss(model, ids: torch.Tensor, mask: torch.Tensor, global_tokens: int, world: int) -> torch.Tensor:
    """Summed next-token loss over this process's rows, scaled so the all-reduced mean is the global mean."""
    logits = model(ids, attention_mask=mask).logits[:, :-1]
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss * world / global_tokens


def main(argv: list[str] | None = None) -> Path:
    args = TrainArgs.parse(argv)
    out = Path(args.output_dir)
    prepare_output_dir(args, out)
    trackers = [t for t in ("trackio", "tensorboard") if importlib.util.find_spec(t)]
    log_with = (
        trackers if args.report_to == "auto" else ([] if args.report_to == "none" else [args.report_to])
    )
    # step_scheduler_with_optimizer=False: by default accelerate steps the scheduler once per
    # *process* each step (it assumes the global batch grows with the process count); ours is fixed.
    accelerator = Accelerator(
        log_with=log_with or None, project_dir=str(out), step_scheduler_with_optimizer=False
    )
    set_seed(args.seed)
    task, ds, tokenizer, vocab_size = load_task_data(args)
    train_ids = ds["train"].data.column("input_ids").to_pylist()
    lengths = [len(s) for s in train_ids]
    # a seeded sample of each split (stratified by package for code, whose splits are ordered by path)
    eval_splits = {s: sample_split_ids(ds[s], args.eval_sentences, s) for s in ds if s != "train"}
    longest = max(max(lengths), *(len(x) for seqs in eval_splits.values() for x in seqs))
    if longest > args.n_positions:
        raise SettingsError(
            f"--n_positions={args.n_positions} is shorter than the longest sentence in "
            f"{args.dataset_dir!r} ({longest} tokens); raise it or build the data with a smaller max_tokens"
        )

    model = build_model(args, vocab_size, tokenizer)
    config = model.config
    model.set_attn_implementation(args.attn_implementation)
    optimizer, scheduler = build_optimizer(model, args, args.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    start_step = 0
    resume = args.resume_from_checkpoint
    if resume == "latest":
        found = latest_checkpoint(out)
        resume = str(found) if found else None
        if not found:
            accelerator.print(f"no finished checkpoint in {out}: starting from step 0")
    if resume:
        start_step = check_resumable(Path(resume), config, args.max_steps)
        restore_state(accelerator, Path(resume))
        accelerator.print(f"resumed from {resume} at step {start_step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        clean_output_dir(out, start_step, args.overwrite_output_dir and not resume)
        (out / "train_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.init_trackers("hf-illusions", config=asdict(args))

    global_batch = StepBatches(lengths, args.max_batch_tokens, args.seed)  # a pure function of step
    training_data = describe_training_data(args, train_ids)

    log_file = out / "metrics.jsonl"
    n_params = sum(p.numel() for p in model.parameters())
    bar = tqdm(
        range(start_step, args.max_steps),
        initial=start_step,
        total=args.max_steps,
        disable=not accelerator.is_main_process,
        desc="train",
    )
    tokens_seen, t0 = 0, time.perf_counter()
    interval_loss = torch.zeros((), device=accelerator.device)  # token-weighted, this process's share
    interval_tokens = 0
    for step in bar:
        model.train()
        batch = global_batch[step]
        global_tokens = sum(lengths[i] - 1 for i in batch)
        mine = batch[accelerator.process_index :: accelerator.num_processes]
        ids, mask = pad_batch([train_ids[i] for i in mine]) if mine else pad_batch([train_ids[batch[0]]])
        ids, mask = ids.to(accelerator.device), mask.to(accelerator.device)
        loss = step_loss(model, ids, mask, global_tokens, accelerator.num_processes)
        if not mine:  # more processes than rows: contribute zero gradient, keep the collective in step
            loss = loss * 0
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if args.weight_sparsity > 0:
            keep = keep_fraction(step + 1, args.weight_sparsity, args.sparsity_anneal_steps)
            sparsify_model_(accelerator.unwrap_model(model), keep, args.min_nonzero_per_row)
        tokens_seen += global_tokens
        interval_loss += loss.detach() * global_tokens / accelerator.num_processes
        interval_tokens += global_tokens
        done = step + 1

        if done % args.log_every == 0 or done == args.max_steps:
            # mean next-token loss over every token since the last log line
            mean_loss = accelerator.reduce(interval_loss, reduction="sum").item() / interval_tokens
            interval_loss.zero_()
            interval_tokens = 0
            elapsed = time.perf_counter() - t0
            record = {
                "step": done,
                "loss": mean_loss,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "tokens_per_s": tokens_seen / elapsed,
                "train_flops_per_s": 6 * n_params * tokens_seen / elapsed,  # nanoGPT's 6N estimate
            }
            if args.weight_sparsity > 0:
                record["weight_density"] = weight_density(accelerator.unwrap_model(model))
            bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            log_metrics(accelerator, log_file, record)
        if (done % args.eval_every == 0 or done == args.max_steps) and accelerator.is_main_process:
            record = {"step": done}
            for split, seqs in eval_splits.items():
                res = evaluate_models(accelerator.unwrap_model(model), seqs, task)["original"]
                headline, second = task.headline_groups  # e.g. close / long_distance, all / identifier_repeat
                record |= {
                    f"{split}/accuracy": res[headline]["accuracy"],
                    f"{split}/{'long' if task.name == 'dyck' else second}_accuracy": res[second]["accuracy"],
                }
            log_metrics(accelerator, log_file, record)
            accelerator.print(json.dumps(record))
        if done % args.save_every == 0 or done == args.max_steps:
            save_checkpoint(accelerator, out / f"checkpoint-{done}", done, tokenizer, training_data)
    final = out / "final"
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(out / f"checkpoint-{args.max_steps}" / "model", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def log_metrics(accelerator: Accelerator, log_file: Path, record: dict) -> None:
    """To the trackers and ``metrics.jsonl``; NaN (a group with no positions yet) is logged as null."""
    record = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}
    accelerator.log({k: v for k, v in record.items() if k != "step" and v is not None}, step=record["step"])
    if accelerator.is_main_process:
        with log_file.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


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
        old = path.with_name(path.name + ".old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()

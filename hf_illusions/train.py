"""Train an illusion transformer with Accelerate: one flat loop, settings at the top.

    accelerate launch scripts/train.py --task dyck --output_dir runs/dyck
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py …   # 2 CPU procs
    hf-illusions train --task dyck --output_dir runs/dyck                                       # same loop

Every global batch is a pure function of (seed, step) and is split row-wise across processes, and
the loss is normalised by the *global* token count, so N processes follow the 1-process curve.
Checkpoints (``save_pretrained`` + optimizer/scheduler/RNG via ``accelerator.save_state``) are
written to a temporary folder and renamed, so a kill mid-save never leaves a checkpoint that
``--resume_from_checkpoint latest`` would pick up.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from hf_illusions.data.batching import StepBatches, pad_batch
from hf_illusions.evaluation import evaluate_models
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM


@dataclass
class TrainArgs:
    task: str = "dyck"
    dataset_dir: str = "dyck-illusions"
    data_config: str = "dyck-20-10"  # preset built into dataset_dir when it is missing
    output_dir: str = "runs/dyck"
    # model
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 1
    d_mlp: int = 512
    n_positions: int = 512
    attn_implementation: str = "sdpa"
    # optimisation
    max_steps: int = 3000
    max_batch_tokens: int = 8192  # padded tokens per *global* batch
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    # bookkeeping
    eval_every: int = 500
    eval_sentences: int = 500  # per split, for the periodic evaluation
    save_every: int = 500
    log_every: int = 20
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "latest"
    report_to: str = "auto"  # "auto" = trackio/tensorboard when installed, "none", or a tracker name

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> TrainArgs:
        parser = argparse.ArgumentParser(
            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        for f in fields(cls):
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(f"--{f.name}", type=kind, default=f.default)
        args = cls(**vars(parser.parse_args(argv)))
        for name in ("max_steps", "max_batch_tokens", "eval_every", "save_every", "log_every"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
        if args.learning_rate <= 0:
            parser.error(f"--learning_rate must be > 0, got {args.learning_rate}")
        return args


def load_task_data(args: TrainArgs):
    """(task, DatasetDict, tokenizer, vocab_size); builds the dataset folder on first use."""
    if args.task != "dyck":
        raise ValueError(f"--task must be 'dyck' (code arrives with the code task), got {args.task!r}")
    from hf_illusions.data.dyck import PRESETS
    from hf_illusions.data.hub_folder import load_folder, write_dyck_folder
    from hf_illusions.data.tokenizer import dyck_tokenizer
    from hf_illusions.tasks.dyck import DyckTask

    if not Path(args.dataset_dir).exists():
        write_dyck_folder(args.dataset_dir, config_name=args.data_config)
    ds = load_folder(args.dataset_dir)
    n_types = PRESETS[args.data_config].n_types
    tokenizer = dyck_tokenizer(n_types, model_max_length=args.n_positions)
    return DyckTask(n_types), ds, tokenizer, len(tokenizer)


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = sorted(output_dir.glob("checkpoint-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


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
    trackers = [t for t in ("trackio", "tensorboard") if importlib.util.find_spec(t)]
    log_with = (
        trackers if args.report_to == "auto" else ([] if args.report_to == "none" else [args.report_to])
    )
    accelerator = Accelerator(log_with=log_with or None, project_dir=str(out))
    set_seed(args.seed)
    task, ds, tokenizer, vocab_size = load_task_data(args)
    train_ids = ds["train"].data.column("input_ids").to_pylist()
    lengths = [len(s) for s in train_ids]
    eval_splits = {
        s: ds[s].data.column("input_ids").to_pylist()[: args.eval_sentences] for s in ds if s != "train"
    }

    config = IllusionConfig(
        vocab_size=vocab_size,
        n_positions=args.n_positions,
        d_model=args.d_model,
        n_layer=args.n_layer,
        n_head=args.n_head,
        d_mlp=args.d_mlp,
    )
    model = IllusionForCausalLM(config)
    model.set_attn_implementation(args.attn_implementation)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(0.9, 0.98),
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, args.warmup_steps, args.max_steps, min_lr_rate=args.min_lr_ratio
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    start_step = 0
    resume = args.resume_from_checkpoint
    if resume == "latest":
        found = latest_checkpoint(out)
        resume = str(found) if found else None
    if resume:
        accelerator.load_state(str(Path(resume) / "state"))
        start_step = json.loads((Path(resume) / "trainer_state.json").read_text())["step"]
        accelerator.print(f"resumed from {resume} at step {start_step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    accelerator.init_trackers("hf-illusions", config=asdict(args))

    global_batch = StepBatches(lengths, args.max_batch_tokens, args.seed)  # a pure function of step

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
            bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            log_metrics(accelerator, log_file, record)
        if (done % args.eval_every == 0 or done == args.max_steps) and accelerator.is_main_process:
            record = {"step": done}
            for split, seqs in eval_splits.items():
                res = evaluate_models(accelerator.unwrap_model(model), seqs, task)["original"]
                record |= {
                    f"{split}/accuracy": res["close"]["accuracy"],
                    f"{split}/long_accuracy": res["long_distance"]["accuracy"],
                }
            log_metrics(accelerator, log_file, record)
            accelerator.print(json.dumps(record))
        if done % args.save_every == 0 or done == args.max_steps:
            save_checkpoint(accelerator, out / f"checkpoint-{done}", done, tokenizer)
    final = out / "final"
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(out / f"checkpoint-{args.max_steps}" / "model", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def log_metrics(accelerator: Accelerator, log_file: Path, record: dict) -> None:
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
    if accelerator.is_main_process:
        with log_file.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def save_checkpoint(accelerator: Accelerator, path: Path, step: int, tokenizer) -> None:
    """``model/`` (save_pretrained + tokenizer), ``state/`` (accelerate), ``trainer_state.json``; atomic."""
    tmp = path.with_name(path.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(accelerator._models[0])
        unwrapped.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}) + "\n")
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()

"""The training loop, :func:`main`: one flat function, from the flags to ``<output_dir>/final``.

Every global batch is a pure function of (seed, step), split row-wise across the processes, and
each step's loss is normalised by the *global* token count (:func:`step_loss`), so N processes
follow the one-process curve. What the loop reads and writes lives beside it: the settings
(:mod:`~hf_illusions.train.args`), the data, model and optimizer they build
(:mod:`~hf_illusions.train.build`), and the checkpoints (:mod:`~hf_illusions.train.run_folder`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from hf_illusions.data.batching import StepBatches, pad_batch
from hf_illusions.data.sampling import sample_split_ids
from hf_illusions.errors import SettingsError
from hf_illusions.evaluation import evaluate_models
from hf_illusions.sparse.weights import keep_fraction, sparsify_model_, weight_density
from hf_illusions.train.args import TrainArgs
from hf_illusions.train.build import build_model, build_optimizer, load_task_data
from hf_illusions.train.run_folder import (
    check_resumable,
    clean_output_dir,
    describe_training_data,
    latest_checkpoint,
    prepare_output_dir,
    restore_state,
    save_checkpoint,
)


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

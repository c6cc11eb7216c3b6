"""What a run's settings build: the task's data, a freshly initialised model, and its optimizer.

Apart from the loop so that each piece can be made on its own (``scripts/bench_train.py`` times a
bare loop with this very optimizer) and the loop reads as the steps of training only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, get_cosine_with_min_lr_schedule_with_warmup

from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.train.args import STOCK_SIZE_NAMES, TrainArgs


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
    # our IllusionConfig names its sizes as the flags do
    sizes |= {name: getattr(args, name) for name in ("n_positions", "d_model", "n_layer", "n_head", "d_mlp")}
    return IllusionForCausalLM(IllusionConfig(**sizes))


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

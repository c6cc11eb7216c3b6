"""What a benchmark runs on: its flags, the model (the shipped checkpoint, or a random one of its
sizes) and the Dyck data (the full folder, or the tiny preset in ``--smoke``), found the same way
by every ``scripts/bench_*.py`` (:mod:`hf_illusions.bench` re-exports them with the timing tools).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

DEFAULT_OUT = "reports/bench"
FULL_DATA = "dyck-illusions"
#: where the shipped model lives, then the training run it comes from (newest checkpoint first)
MODEL_CANDIDATES = ("checkpoints/dyck", "runs/dyck-d64/final", "runs/dyck-d64/checkpoint-*/model")
#: the shipped checkpoint's sizes, for a random stand-in when no trained model is around
SHIPPED_SIZES = {"d_model": 64, "n_layer": 2, "n_head": 1, "d_mlp": 256, "vocab_size": 43, "n_positions": 512}
SMOKE_SIZES = {"d_model": 16, "n_layer": 2, "n_head": 1, "d_mlp": 32, "vocab_size": 43, "n_positions": 128}


def parser(description: str | None) -> argparse.ArgumentParser:
    """The flags every benchmark takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: only checks the benchmark runs")
    p.add_argument("--out", default=DEFAULT_OUT, help="folder for <name>.json and the README.md summary")
    p.add_argument("--model", default=None, help="model folder (default: the shipped checkpoint, if any)")
    p.add_argument("--data", default=None, help=f"Dyck dataset folder (default: {FULL_DATA}; smoke: tiny)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default: per benchmark)")
    return p


def find_model_dir(explicit: str | None = None) -> Path | None:
    """``explicit``, else the shipped checkpoint, else the newest checkpoint of the default run."""
    if explicit:
        return Path(explicit)
    for pattern in MODEL_CANDIDATES:
        found = sorted(Path().glob(pattern), key=_step_key)
        found = [p for p in found if (p / "config.json").is_file()]
        if found:
            return found[-1]
    return None


def _step_key(path: Path) -> tuple[int, str]:
    digits = "".join(c for c in path.parent.name if c.isdigit())
    return (int(digits) if digits else -1, str(path))


def bench_model(smoke: bool, explicit: str | None = None) -> tuple[torch.nn.Module, str]:
    """The model to benchmark and where it came from (a random one of the shipped sizes if none)."""
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    if not smoke:
        path = find_model_dir(explicit)
        if path is not None:
            from hf_illusions.checkpoints import load_checkpoint

            return load_checkpoint(path).eval(), str(path)
    torch.manual_seed(0)
    sizes = SMOKE_SIZES if smoke else SHIPPED_SIZES
    return IllusionForCausalLM(IllusionConfig(**sizes)).eval(), f"random init ({sizes})"


def bench_data(smoke: bool, explicit: str | None = None, scratch: str | Path | None = None) -> Path:
    """The Dyck folder: ``explicit``, else the full one (built if missing), else tiny in ``scratch``."""
    from hf_illusions.data.hub_folder import write_dyck_folder

    if explicit:
        return Path(explicit)
    if not smoke:
        path = Path(FULL_DATA)
        return path if path.exists() else write_dyck_folder(path, config_name="dyck-20-10")
    if scratch is None:
        raise ValueError("scratch is required in smoke mode: the tiny dataset is built there")
    path = Path(scratch) / "dyck-tiny"
    return path if path.exists() else write_dyck_folder(path, config_name="tiny")


def first_ids(split: Any, n: int | None = None) -> list[list[int]]:
    """The first ``n`` id lists of a dataset split (all with ``n=None``)."""
    column = split.data.column("input_ids")
    rows = column.to_pylist() if n is None else column.slice(0, n).to_pylist()
    return [list(r) for r in rows]

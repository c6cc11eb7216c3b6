"""Devices, dtypes and data-parallel evaluation for :func:`hf_illusions.own_data.evaluate_own_model`.

Data parallelism (``accelerate launch --num_processes N …``; on CPU
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 …``, since ``--cpu``
silently runs one process): every process builds the same windows (they are seeded) and fits the
same proxy on the same fitting windows (one pass; identical in every process), then scores a
contiguous shard of each split's windows. :class:`~hf_illusions.evaluation.SentenceSums` arrays
are per window, so gathering the shards in process order and concatenating them gives exactly the
arrays of a one-process run over the windows in order (to float tolerance: batches differ).
Everything downstream (intervals, gaps, the report) runs on the gathered sums; only the main
process writes files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_illusions.errors import SettingsError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _state() -> Any:
    """accelerate's process state; CPU processes (gloo) when asked for or when there is no GPU.

    ``PartialState()`` alone ignores ``ACCELERATE_USE_CPU`` (only ``Accelerator`` reads it) and
    then reports one process per CPU worker, so every worker would score every window.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def world() -> tuple[int, int]:
    """``(process index, number of processes)``: ``(0, 1)`` unless launched with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    state = _state()
    return state.process_index, state.num_processes


def resolve_device(device: str | None) -> torch.device:
    """The device to run on: ``device`` if this machine has it; default the process's accelerate
    device when launched with several processes, else CPU (GPU paths never required)."""
    if device is None:
        if world()[1] > 1:
            return _state().device
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise SettingsError(
            f"device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {err}"
        ) from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
    }
    if not available.get(dev.type, False):
        raise SettingsError(f"device {device!r} is not available on this machine")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``float32`` by default; ``bfloat16`` / ``float16`` only where ``device`` computes in them."""
    name = dtype or "float32"
    if name not in DTYPES:
        raise SettingsError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    supported = {"float32"}
    if device.type == "cuda":
        supported |= {"float16"} | ({"bfloat16"} if torch.cuda.is_bf16_supported() else set())
    elif device.type == "mps":
        supported |= {"float16"}
    elif device.type == "cpu":
        supported |= {"bfloat16"}  # CPU matmuls exist in bfloat16; float16 ones are missing or emulated
    if name not in supported:
        raise SettingsError(
            f"dtype {name!r} is not supported on {device.type} (supported: {sorted(supported)})"
        )
    return DTYPES[name]


def shard(items: Sequence[Any], index: int, count: int) -> tuple[list[Any], slice]:
    """The contiguous part of ``items`` that process ``index`` of ``count`` scores, and its slice."""
    bounds = np.linspace(0, len(items), count + 1).round().astype(int)
    part = slice(int(bounds[index]), int(bounds[index + 1]))
    return list(items[part]), part


def concat_sums(parts: Sequence[Any]) -> Any:
    """One :class:`~hf_illusions.evaluation.SentenceSums` from shards in window order (``None`` skipped)."""
    from hf_illusions.evaluation import SentenceSums

    parts = [p for p in parts if p is not None]
    first = parts[0]
    if any(p.groups != first.groups for p in parts):
        raise ValueError("shards disagree on the position groups; every process must use the same task")
    return SentenceSums(
        n_sentences=sum(p.n_sentences for p in parts),
        groups=list(first.groups),
        n=np.concatenate([p.n for p in parts], axis=1),
        models={
            m: {q: np.concatenate([p.models[m][q] for p in parts], axis=1) for q in qs}
            for m, qs in first.models.items()
        },
        lengths=np.concatenate([p.lengths for p in parts]) if first.lengths is not None else None,
    )


def gather_sums(local: Any, count: int) -> Any:
    """Every process's shard of one split's sums, concatenated in process order (``local`` alone if 1)."""
    if count == 1:
        return local
    from accelerate.utils import gather_object

    return concat_sums(gather_object([local]))


__all__ = ["DTYPES", "concat_sums", "gather_sums", "resolve_device", "resolve_dtype", "shard", "world"]

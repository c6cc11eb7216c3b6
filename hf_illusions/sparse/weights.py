"""Weight-sparse training (Gao et al. 2025): keep the largest-magnitude weights of every matrix.

After every optimizer step each *block* weight matrix (attention q/k/v/o and MLP up/down of every
layer; embeddings, norms, biases and the output head stay dense, as their rows are per-token
lookups) keeps only its ``keep_fraction`` largest-magnitude entries, with a floor of
``min_per_row`` entries per output row so that no unit is cut off entirely. The kept fraction
anneals linearly from dense to its target, so the model first learns and then concentrates.

A projection after each step (not a penalty) makes the sparsity exact at every step, and it is
a pure function of the weights, so a resumed run stays bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hf_illusions.errors import SettingsError

SPARSE_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")


def sparse_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The block weight matrices that weight sparsity applies to, by parameter name."""
    return {
        name: param
        for name, param in model.named_parameters()
        if name.endswith(".weight") and name.rsplit(".", 2)[-2] in SPARSE_MODULES
    }


def keep_fraction(step: int, target_sparsity: float, anneal_steps: int) -> float:
    """Kept fraction after ``step`` steps: 1 → ``1 - target_sparsity``, linearly over ``anneal_steps``."""
    if not 0 <= target_sparsity < 1:
        raise SettingsError(f"target_sparsity must be in [0, 1), got {target_sparsity}")
    progress = 1.0 if anneal_steps <= 0 else min(1.0, step / anneal_steps)
    return 1.0 - target_sparsity * progress


@torch.no_grad()
def sparsify_(weight: torch.Tensor, keep: float, min_per_row: int = 1) -> torch.Tensor:
    """Zero all but the ``ceil(keep · numel)`` largest-|w| entries of ``weight`` in place (plus a row floor).

    Each row (output unit) also keeps its ``min_per_row`` largest entries even when they are
    below the global cut, so the result can hold slightly more than ``keep · numel`` entries.
    Ties at the cut are broken by ``torch.topk`` (deterministic on CPU). Returns the kept mask.
    """
    if weight.ndim != 2:
        raise SettingsError(f"sparsify_ expects a 2-D weight matrix, got shape {tuple(weight.shape)}")
    if not 0 < keep <= 1:
        raise SettingsError(f"keep must be in (0, 1], got {keep}")
    n_keep = min(weight.numel(), max(1, math.ceil(keep * weight.numel())))
    if n_keep == weight.numel():
        return torch.ones_like(weight, dtype=torch.bool)
    magnitude = weight.abs()
    mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[magnitude.flatten().topk(n_keep, sorted=False).indices] = True
    mask = mask.view_as(weight)
    floor = min(min_per_row, weight.shape[1])
    if floor > 0:
        mask.scatter_(1, magnitude.topk(floor, dim=1, sorted=False).indices, True)
    weight.mul_(mask)
    return mask


def sparsify_model_(model: nn.Module, keep: float, min_per_row: int = 1) -> dict[str, float]:
    """:func:`sparsify_` every block matrix of ``model``; returns each matrix's nonzero fraction."""
    density = {}
    for name, param in sparse_matrices(model).items():
        if keep < 1:
            sparsify_(param.data, keep, min_per_row)
        density[name] = float((param.data != 0).float().mean())
    return density


def weight_density(model: nn.Module) -> float:
    """Nonzero fraction over all block matrices together (the L0 the sparsity targets)."""
    mats = list(sparse_matrices(model).values())
    nonzero = sum(int((p != 0).sum()) for p in mats)
    return nonzero / max(1, sum(p.numel() for p in mats))

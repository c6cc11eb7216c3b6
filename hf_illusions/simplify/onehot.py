"""Hard attention: each attention distribution replaced by a one-hot on its argmax.

Friedman et al. (2024, §3.1) use this data-independent simplification to ask whether a head
behaves like a discrete pointer (as in RASP-style programs); soft attention that spreads mass
over several keys can look "hard" in distribution and not out of it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from hf_illusions.simplify.base import AttentionSimplification
from hf_illusions.simplify.simplifier import Simplifier


def one_hot_argmax(weights: torch.Tensor) -> torch.Tensor:
    """One-hot rows at the argmax of attention probabilities ``(…, query, key)``; ties → first index.

    Only allowed keys can win: masked keys have probability 0 after the softmax, and every row
    has at least one allowed key with probability ≥ 1/n_keys.
    """
    index = weights.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(weights).scatter_(-1, index, 1.0)


class OneHotSimplification(AttentionSimplification):
    """No fitted state beyond ``head_mask``."""

    name = "onehot"

    def transform_weights(self, weights: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.only_simplified(one_hot_argmax(weights), weights)


class OneHotSimplifier(Simplifier):
    """One-hot attention on the chosen heads; ``fit`` accepts data but does not need it."""

    name: ClassVar[str] = "onehot"
    needs_data: ClassVar[bool] = False
    requires_own_model: ClassVar[str | None] = None
    simplifies_keys: ClassVar[bool] = False

    def __init__(self, layers: Any = None, heads: Any = None):
        super().__init__(layers=layers, heads=heads)

    def settings(self) -> dict[str, Any]:
        return {}


__all__ = ["OneHotSimplification", "OneHotSimplifier", "one_hot_argmax"]

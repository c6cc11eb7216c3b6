"""Attention shapes of a model, read from its config and attention modules.

The bottom of the ``simplify`` package (with :mod:`~hf_illusions.simplify.seam`): the
simplifications size their buffers by it, the adapter records it, and the fitting pass
(:mod:`~hf_illusions.simplify.collect`) and the simplifiers check chosen heads against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel

from hf_illusions.errors import SimplifierError
from hf_illusions.simplify.seam import attention_layers

SIDES = ("query", "key")


@dataclass(frozen=True)
class HeadGeometry:
    """Attention shapes of a model: what the simplifications' buffers are sized by.

    ``n_kv_head < n_head`` is grouped-query attention: query head ``h`` reads key/value head
    ``h // (n_head // n_kv_head)``.
    """

    n_layer: int
    n_head: int
    n_kv_head: int
    d_head: int
    d_model: int

    @property
    def group(self) -> int:
        return self.n_head // self.n_kv_head

    def kv_heads(self, heads: Sequence[int]) -> list[int]:
        """The key/value heads read by the query heads ``heads``."""
        return sorted({h // self.group for h in heads})

    def side_heads(self, side: str, heads: Sequence[int]) -> list[int]:
        return list(heads) if side == "query" else self.kv_heads(heads)

    def n_side(self, side: str) -> int:
        return self.n_head if side == "query" else self.n_kv_head


def config_head_dim(config: Any) -> int:
    """Width of one head from a config alone (``head_dim`` where the family has it, else even split)."""
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def model_geometry(model: PreTrainedModel) -> HeadGeometry:
    """The :class:`HeadGeometry` of ``model`` (raises for models the seam cannot simplify)."""
    layers = attention_layers(model)
    config = model.config
    module = next(iter(layers.values()))[1]
    n_head = int(config.num_attention_heads)
    n_kv_head = int(getattr(config, "num_key_value_heads", None) or n_head)
    d_head = getattr(module, "head_dim", None) or getattr(module, "head_size", None)
    d_head = int(d_head or config_head_dim(config))
    n_layer = int(config.num_hidden_layers)
    if sorted(layers) != list(range(n_layer)):
        raise SimplifierError(
            f"{config.model_type}: attention modules found for layers {sorted(layers)}, but the config has "
            f"num_hidden_layers={n_layer}; this architecture cannot be simplified here"
        )
    if n_head % n_kv_head:
        raise SimplifierError(
            f"{config.model_type}: {n_head} query heads do not split into {n_kv_head} groups"
        )
    return HeadGeometry(n_layer, n_head, n_kv_head, d_head, int(config.hidden_size))


def max_positions(model: PreTrainedModel) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


__all__ = ["SIDES", "HeadGeometry", "config_head_dim", "max_positions", "model_geometry"]

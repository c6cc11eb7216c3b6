"""What every simplification shares: the module a proxy attaches, fitting data, index checks.

Friedman et al. (2024, §3) simplify a trained transformer's keys and queries — project them onto
a few principal directions, snap them to k-means centroids — or its attention itself (one-hot
on the argmax), fitting each simplification on ~1,000 training sequences; the simplified
model (the *proxy*) is then compared with the original in and out of distribution. Here:

* :class:`AttentionSimplification` is what a proxy attaches to a simplified layer's attention
  module as ``.simplification``. Its buffers are the fitted state and its transforms are applied
  by the registered proxy attention functions (:mod:`~hf_illusions.simplify.seam`): the model's
  own attention seam, no hooks — for our models and for any transformers model whose attention
  goes through the attention interface (GPT-2, GPT-NeoX, Llama, Qwen2, …).
* :class:`~hf_illusions.simplify.simplifier.Simplifier` holds settings and turns
  ``fit(model, data)`` into a proxy; it lives above this module, the proxy and the fitting pass,
  so that each of them imports only downwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from hf_illusions.errors import SimplifierError
from hf_illusions.simplify.geometry import HeadGeometry


class SimplificationShapes(Protocol):
    """What a simplification module reads of its config (sizes, heads, settings).

    Met by :class:`~hf_illusions.simplify.proxy.IllusionProxyConfig` (our models) and by
    :class:`~hf_illusions.simplify.adapter.SimplificationConfig` (stock models); a protocol, so
    that this module need not import either (they import it). ``n_kv_head`` is optional
    (read with ``getattr``; absent means no grouped-query attention).
    """

    n_head: int
    d_head: int
    simplified_heads: dict[str, list[int]] | None
    simplifier_settings: dict[str, Any] | None


#: simplification name (``config.simplifier``) → module class; filled by subclassing.
SIMPLIFICATIONS: dict[str, type[Simplification]] = {}


class Simplification(nn.Module):
    """What every simplification module shares: registration by ``name``, ``layer_idx``, settings.

    Built from the proxy config alone (``config`` + ``layer_idx``, like every module of the
    model), with zero-filled buffers of the right shapes: ``from_pretrained`` or
    :func:`~hf_illusions.simplify.proxy.build_proxy` fills them. Every buffer is persistent, so
    the fitted state travels with the checkpoint.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # abstract bases (no name of their own) are not registered
            SIMPLIFICATIONS[cls.name] = cls

    def __init__(self, config: SimplificationShapes, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.settings = dict(config.simplifier_settings or {})

    def setting(self, key: str) -> Any:
        """A value of ``config.simplifier_settings`` that fixes buffer shapes (e.g. ``rank``)."""
        if key not in self.settings:
            raise SimplifierError(
                f"simplifier_settings must give {key!r} for {self.name!r}, got {self.settings}"
            )
        return self.settings[key]

    def extra_repr(self) -> str:
        return f"layer={self.layer_idx}"


def config_geometry(config: Any) -> tuple[int, int, int]:
    """``(n_head, n_kv_head, d_head)`` of a proxy config (ours, or a stock model's adapter config)."""
    return int(config.n_head), int(getattr(config, "n_kv_head", None) or config.n_head), int(config.d_head)


class AttentionSimplification(Simplification):
    """Identity simplification of one attention layer; subclasses change only the simplified heads.

    ``head_mask`` ``(n_head,)`` marks the simplified query heads. Under grouped-query attention
    keys belong to key/value heads: the simplified key heads are those the simplified query
    heads read (whole groups; :meth:`Simplifier.resolve` refuses partial ones).
    """

    name: ClassVar[str] = "identity"
    head_mask: torch.Tensor

    def __init__(self, config: SimplificationShapes, layer_idx: int):
        super().__init__(config, layer_idx)
        self.n_head, self.n_kv_head, self.d_head = config_geometry(config)
        heads = sorted({int(h) for h in (config.simplified_heads or {}).get(str(layer_idx), [])})
        mask = torch.zeros(self.n_head, dtype=torch.bool)
        mask[heads] = True
        self.register_buffer("head_mask", mask)
        group = self.n_head // self.n_kv_head
        self.kv_heads = sorted({h // group for h in heads})
        # decided from the config, not the buffer, which is still on the meta device while loading
        self.all_heads = len(heads) == self.n_head
        self._kv_masks: dict[torch.device, torch.Tensor] = {}

    @property
    def changes_weights(self) -> bool:
        """Whether this simplification rewrites the attention probabilities (then they are computed)."""
        return type(self).transform_weights is not AttentionSimplification.transform_weights

    def only_simplified(self, simplified: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Per query head, ``simplified`` where the head is simplified, else ``original`` (head dim is 1)."""
        if self.all_heads:  # the common case (one head per layer in the paper): skip a full pass
            return simplified
        return torch.where(self.head_mask.view(1, -1, 1, 1), simplified, original)

    def only_simplified_keys(self, simplified: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Per key/value head, ``simplified`` where the head is simplified, else ``original``."""
        if self.all_heads:
            return simplified
        if simplified.device not in self._kv_masks:
            mask = torch.zeros(self.n_kv_head, dtype=torch.bool)
            mask[self.kv_heads] = True
            self._kv_masks[simplified.device] = mask.to(simplified.device).view(1, -1, 1, 1)
        return torch.where(self._kv_masks[simplified.device], simplified, original)

    def transform_query(self, query: torch.Tensor) -> torch.Tensor:
        """Queries ``(batch, n_head, seq, d_head)`` as the proxy sees them."""
        return query

    def transform_key(self, key: torch.Tensor) -> torch.Tensor:
        """Keys ``(batch, n_kv_head, seq, d_head)`` as the proxy sees them."""
        return key

    def transform_value(self, value: torch.Tensor) -> torch.Tensor:
        """Values ``(batch, n_kv_head, seq, d_head)`` as the proxy sees them."""
        return value

    def transform_weights(self, weights: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Attention probabilities ``(batch, n_head, query, key)`` as the proxy uses them."""
        return weights

    def extra_repr(self) -> str:
        return f"layer={self.layer_idx}, heads={self.head_mask.nonzero().flatten().tolist()}"


class ResidualSimplification(Simplification):
    """A map of the residual stream at the input of one block (``layer.residual_simplification``).

    The residual-stream counterpart of :class:`AttentionSimplification`; the layers it applies
    to are ``config.simplified_residuals``. Subclasses implement :meth:`forward`.
    """


def fitting_sequences(data: Any, n_sequences: int, n_positions: int | None = None) -> list[list[int]]:
    """The first ``n_sequences`` id lists of ``data``, in order (deterministic: no shuffling).

    ``data`` is a ``datasets.Dataset`` with an ``input_ids`` column or any iterable of id lists.
    Taking a prefix, not a random sample, makes a fit reproducible from the dataset alone; the
    Dyck training split is itself an i.i.d. draw, so its prefix is a fair sample.
    """
    if data is None:
        raise SimplifierError(
            "data is required: pass a Dataset with an 'input_ids' column or a list of id lists"
        )
    if hasattr(data, "column_names"):  # a datasets.Dataset, without importing datasets
        if "input_ids" not in data.column_names:
            raise SimplifierError(f"data has no 'input_ids' column (columns: {data.column_names})")
        rows: Iterable = data.select(range(min(n_sequences, len(data))))["input_ids"]
    else:
        rows = itertools.islice(data, n_sequences)
    sequences = [[int(t) for t in row] for row in rows]
    if not sequences:
        raise SimplifierError("data holds no sequences: the simplifier needs at least one to fit on")
    for i, seq in enumerate(sequences):
        if not seq:
            raise SimplifierError(f"data row {i} is empty: every fitting sequence needs at least one token")
        if n_positions is not None and len(seq) > n_positions:
            raise SimplifierError(
                f"data row {i} has {len(seq)} tokens but the model has n_positions={n_positions}"
            )
    return sequences


def check_indices(indices: Sequence[int], bound: int, name: str, what: str) -> None:
    """Raise :class:`SimplifierError` naming ``name`` unless every index is in ``range(bound)``."""
    bad = [i for i in indices if not 0 <= i < bound]
    if bad:
        raise SimplifierError(
            f"{name} {bad} out of range: the model has {what}={bound} (valid 0..{bound - 1})"
        )


def check_whole_groups(heads: Sequence[int], geometry: HeadGeometry) -> None:
    """Under grouped-query attention, simplified query heads must cover whole key/value groups.

    The query heads of a group share one key head; simplifying the keys of some of them would
    change the others too, so a partial group is refused rather than silently widened.
    """
    if geometry.group == 1:
        return
    partial = [
        g
        for g in geometry.kv_heads(heads)
        if not set(range(g * geometry.group, (g + 1) * geometry.group)) <= set(heads)
    ]
    if partial:
        g = partial[0]
        raise SimplifierError(
            f"heads {sorted(heads)} split key/value group(s) {partial}: the model has grouped-query "
            f"attention ({geometry.n_head} query heads share {geometry.n_kv_head} key heads, "
            f"{geometry.group} per group), so simplify whole groups, e.g. heads "
            f"{list(range(g * geometry.group, (g + 1) * geometry.group))}"
        )


def stack_heads(
    layer: int, n_head: int, per_head: Mapping[int, Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """One layer's per-head fitted tensors as ``(n_head, …)`` buffers, zeros for unsimplified heads.

    Keys are the proxy's state-dict names (``model.layers.{layer}.self_attn.simplification.{name}``).
    """
    first = next(iter(per_head.values()))
    state = {}
    for name, template in first.items():
        stacked = torch.zeros((n_head, *template.shape), dtype=template.dtype)
        for head, tensors in per_head.items():
            stacked[head] = tensors[name]
        state[f"model.layers.{layer}.self_attn.simplification.{name}"] = stacked
    return state


__all__ = [
    "SIMPLIFICATIONS",
    "AttentionSimplification",
    "ResidualSimplification",
    "check_indices",
    "check_whole_groups",
    "config_geometry",
    "fitting_sequences",
    "stack_heads",
]

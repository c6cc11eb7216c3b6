"""Queries and keys as attention sees them, collected in one streamed pass over the fitting data.

Every attention-side simplifier (SVD, k-means) is fitted on each head's queries and keys over
the fitting sequences. Those are taken at the attention seam (:mod:`~hf_illusions.simplify.seam`),
so they are what attention really uses — after rotary embeddings and q/k norms, per key/value
head under grouped-query attention — and they are handed batch by batch to per-(layer, side)
*collectors* (running moments for SVD, a bounded reservoir for k-means): memory does not grow
with the fitting data. The pass runs a weight-sharing proxy of the model without any
simplification, so the model the user passed is never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel

from hf_illusions.data.batching import pad_batch, token_budget_batches
from hf_illusions.errors import SimplifierError
from hf_illusions.simplify.geometry import SIDES, max_positions, model_geometry
from hf_illusions.simplify.seam import attention_layers, model_type_of, recording


class Collector(Protocol):
    """Accumulates one layer's queries (or keys) of the simplified heads, batch by batch."""

    def update(self, vectors: torch.Tensor, rows: torch.Tensor) -> None:
        """``vectors`` ``(n, heads, d_head)`` of real tokens; ``rows`` their indices in sequence order."""

    def head(self, index: int) -> Any:
        """What the simplifier fits head ``index`` (position in the collector's heads) on."""


class FitsCollected(Protocol):
    """What :func:`fit_attention` needs of a simplifier: a collector per head side, and a fit of it.

    Met by every :class:`~hf_illusions.simplify.simplifier.Simplifier`; a protocol, so that the
    fitting pass need not import the simplifiers (they import it).
    """

    def collector(self, layer: int, side: str, heads: list[int], d_head: int) -> Collector:
        """A fresh accumulator of ``side`` vectors of ``heads`` in ``layer``."""

    def fit_collected(self, layer: int, side: str, collected: Any) -> dict[str, torch.Tensor]:
        """Fitted tensors of one head and side from what its collector accumulated."""


def sequence_rows(lengths: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
    """Row indices, in the fitting data's sequence order, of the real tokens of batch ``idx``."""
    starts = torch.cumsum(lengths, 0) - lengths
    return torch.cat([torch.arange(starts[i], starts[i] + lengths[i]) for i in idx])


def fitting_pass(
    model: PreTrainedModel,
    sequences: list[list[int]],
    collectors: dict[tuple[int, str], tuple[list[int], Collector]],
    batch_size: int = 64,
    max_batch_tokens: int = 8192,
) -> None:
    """One no-grad pass of ``sequences`` feeding ``{(layer, side): (heads, collector)}``.

    Batches of similar lengths, right-padded with an attention mask; only real tokens are
    collected. Raises :class:`SimplifierError` if a layer's attention never reached the seam
    (a family doing its own attention arithmetic).
    """
    from hf_illusions.simplify.proxy import build_proxy

    runner = build_proxy(model, "identity", {}, {}, {})  # shares the weights; no simplification
    modules = {layer: module for layer, (_, module) in attention_layers(runner).items()}
    layers = sorted({layer for layer, _ in collectors})
    lengths = torch.tensor([len(s) for s in sequences])
    device = next(model.parameters()).device
    state: dict[str, Any] = {}
    seen: set[int] = set()

    def record(layer: int, query: torch.Tensor, key: torch.Tensor) -> None:
        seen.add(layer)
        for side, x in (("query", query), ("key", key)):
            if (layer, side) in collectors:
                heads, collector = collectors[(layer, side)]
                real = state["real"]
                if real.device != x.device:  # a model dispatched over devices (device_map)
                    real = real.to(x.device)
                vectors = x.transpose(1, 2)[real][:, heads]  # (n, heads, d_head)
                collector.update(vectors.detach().float().cpu(), state["rows"])

    body = runner.base_model  # the decoder without the LM head: fitting needs no logits
    with torch.no_grad(), recording({layer: modules[layer] for layer in layers}, record):
        for idx in token_budget_batches(lengths.tolist(), max_batch_tokens, batch_size):
            ids, mask = pad_batch([sequences[i] for i in idx])
            state["real"], state["rows"] = mask.bool().to(device), sequence_rows(lengths, idx)
            body(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    missing = sorted(set(layers) - seen)
    if missing:
        raise SimplifierError(
            f"{model_type_of(model)}: the attention of layers {missing} never reached transformers' "
            "attention interface during the fitting pass; this model cannot be simplified here"
        )


def fit_attention(
    model: PreTrainedModel,
    data: Any,
    simplifiers: Sequence[FitsCollected],
    chosen: dict[int, list[int]],
    n_sequences: int,
    batch_size: int = 64,
    max_batch_tokens: int = 8192,
    fit_times: list[float] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Fitted state (state-dict name → tensor) of each simplifier on the heads ``chosen``, one pass.

    Several simplifiers fitted together see the same batches in the same order, so each result
    is bit-identical to fitting that simplifier alone (the Space's proxy bank and the
    reproduction's shared fitting pass rely on it). ``fit_times``, when given, receives each
    simplifier's own fitting seconds after the shared pass.
    """
    import time

    from hf_illusions.simplify.base import fitting_sequences

    geometry = model_geometry(model)
    paths = {layer: path for layer, (path, _) in attention_layers(model).items()}
    sequences = fitting_sequences(data, n_sequences, max_positions(model))
    per_simplifier = [
        {
            (layer, side): s.collector(layer, side, geometry.side_heads(side, heads), geometry.d_head)
            for layer, heads in chosen.items()
            for side in SIDES
        }
        for s in simplifiers
    ]
    fan_out = {
        key: (geometry.side_heads(key[1], chosen[key[0]]), _FanOut([c[key] for c in per_simplifier]))
        for key in per_simplifier[0]
    }
    fitting_pass(model, sequences, fan_out, batch_size, max_batch_tokens)
    results = []
    for simplifier, collectors in zip(simplifiers, per_simplifier, strict=True):
        tick = time.perf_counter()
        fitted: dict[str, torch.Tensor] = {}
        for (layer, side), collector in collectors.items():
            heads = geometry.side_heads(side, chosen[layer])
            per_head = {
                h: simplifier.fit_collected(layer, side, collector.head(i)) for i, h in enumerate(heads)
            }
            prefix = f"{paths[layer]}.simplification.{side}_"
            fitted.update(stack_side(prefix, geometry.n_side(side), per_head))
        results.append(fitted)
        if fit_times is not None:
            fit_times.append(time.perf_counter() - tick)
    return results


class _FanOut:
    """One recorded batch handed to several simplifiers' collectors."""

    def __init__(self, collectors: list[Collector]):
        self.collectors = collectors

    def update(self, vectors: torch.Tensor, rows: torch.Tensor) -> None:
        for collector in self.collectors:
            collector.update(vectors, rows)


def stack_side(
    prefix: str, n_heads: int, per_head: dict[int, dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Per-head tensors as ``(n_heads, …)`` buffers named ``prefix + name``, zeros for other heads."""
    first = next(iter(per_head.values()))
    state = {}
    for name, template in first.items():
        stacked = torch.zeros((n_heads, *template.shape), dtype=template.dtype)
        for head, tensors in per_head.items():
            stacked[head] = tensors[name]
        state[prefix + name] = stacked
    return state


class _AllVectors:
    """Keeps every vector (what :func:`collect_qk` returns), then puts rows in sequence order."""

    def __init__(self) -> None:
        self.chunks: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, vectors: torch.Tensor, rows: torch.Tensor) -> None:
        self.chunks.append((vectors, rows))

    def result(self) -> torch.Tensor:
        vectors = torch.cat([v for v, _ in self.chunks])
        rows = torch.cat([r for _, r in self.chunks])
        return torch.empty_like(vectors).index_copy_(0, rows, vectors)


def collect_qk(
    model: PreTrainedModel,
    data: Any,
    n_sequences: int = 1000,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    max_batch_tokens: int = 8192,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """All queries and keys of every non-pad position of the fitting sequences, per layer.

    Returns ``{layer: (queries, keys)}``: ``(n_vectors, n_head, d_head)`` and
    ``(n_vectors, n_kv_head, d_head)`` on the CPU, rows in sequence order then position order,
    taken where attention sees them (the model's unsimplified attention, even if ``model`` is a
    proxy). Memory grows with the data: fitting itself streams (:func:`fit_attention`).
    """
    from hf_illusions.simplify.base import fitting_sequences

    geometry = model_geometry(model)
    layers = list(range(geometry.n_layer)) if layers is None else list(layers)
    sequences = fitting_sequences(data, n_sequences, max_positions(model))
    collectors = {
        (layer, side): (list(range(geometry.n_side(side))), _AllVectors())
        for layer in layers
        for side in SIDES
    }
    fitting_pass(model, sequences, collectors, batch_size, max_batch_tokens)
    return {
        layer: (collectors[(layer, "query")][1].result(), collectors[(layer, "key")][1].result())
        for layer in layers
    }


__all__ = [
    "Collector",
    "collect_qk",
    "fit_attention",
    "fitting_pass",
    "stack_side",
]

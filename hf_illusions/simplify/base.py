"""What every simplifier shares: the attention-side module, fitting data, and the fit loop.

Friedman et al. (2024, §3) simplify a trained transformer's keys and queries — project them onto
a few principal directions, snap them to k-means centroids — or its attention itself (one-hot
on the argmax), fitting each simplification on ~1,000 training sequences; the simplified
model (the *proxy*) is then compared with the original in and out of distribution. Here:

* :class:`AttentionSimplification` is what a proxy attaches to a simplified layer as
  ``self_attn.simplification``. Its buffers are the fitted state (saved in ``model.safetensors``)
  and its transforms are applied by the registered ``illusion_simplified`` attention function
  (see ``proxy.py``): the model's own attention seam, no hooks.
* :func:`collect_qk` gathers the raw per-head queries and keys of fitting data.
* :class:`Simplifier` holds settings and turns ``fit(model, data)`` into a proxy; subclasses only
  say how one head is fitted (:meth:`Simplifier.fit_head`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from hf_illusions.data.batching import pad_batch, token_budget_batches
from hf_illusions.errors import SimplifierError
from hf_illusions.modeling import IllusionForCausalLM

if TYPE_CHECKING:
    from hf_illusions.simplify.proxy import IllusionProxyConfig, IllusionProxyForCausalLM

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

    def __init__(self, config: IllusionProxyConfig, layer_idx: int):
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


class AttentionSimplification(Simplification):
    """Identity simplification of one attention layer; subclasses change only the heads in ``head_mask``."""

    name: ClassVar[str] = "identity"
    head_mask: torch.Tensor

    def __init__(self, config: IllusionProxyConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        heads = sorted({int(h) for h in (config.simplified_heads or {}).get(str(layer_idx), [])})
        mask = torch.zeros(config.n_head, dtype=torch.bool)
        mask[heads] = True
        self.register_buffer("head_mask", mask)
        # decided from the config, not the buffer, which is still on the meta device while loading
        self.all_heads = len(heads) == config.n_head

    def only_simplified(self, simplified: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Per head, ``simplified`` where the head is simplified, else ``original`` (head dim is 1)."""
        if self.all_heads:  # the common case (one head per layer in the paper): skip a full pass
            return simplified
        return torch.where(self.head_mask.view(1, -1, 1, 1), simplified, original)

    def transform_query(self, query: torch.Tensor) -> torch.Tensor:
        """Queries ``(batch, n_head, seq, d_head)`` as the proxy sees them."""
        return query

    def transform_key(self, key: torch.Tensor) -> torch.Tensor:
        """Keys ``(batch, n_head, seq, d_head)`` as the proxy sees them."""
        return key

    def transform_value(self, value: torch.Tensor) -> torch.Tensor:
        """Values ``(batch, n_head, seq, d_head)`` as the proxy sees them."""
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


def collect_qk(
    model: IllusionForCausalLM,
    data: Any,
    n_sequences: int = 1000,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    max_batch_tokens: int = 8192,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Raw queries and keys of every non-pad position of the fitting sequences, per layer.

    Returns ``{layer: (queries, keys)}``, each ``(n_vectors, n_head, d_head)`` on the CPU, rows in
    sequence order then position order. One no-grad eval-mode pass (batches of similar lengths,
    right-padded with PAD 0 plus an attention mask); values are those the model's ``q_proj`` /
    ``k_proj`` produce, i.e. before any simplification even when ``model`` is a proxy.
    """
    config = model.config
    layers = list(range(config.n_layer)) if layers is None else list(layers)
    sequences = fitting_sequences(data, n_sequences, config.n_positions)
    lengths = torch.tensor([len(s) for s in sequences])
    starts = torch.cumsum(lengths, 0) - lengths  # where each sequence's rows go in the result
    batches = token_budget_batches(lengths.tolist(), max_batch_tokens, batch_size)
    device = next(model.parameters()).device
    chunks: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {layer: [] for layer in layers}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in batches:
                ids, mask = pad_batch([sequences[i] for i in idx])
                ids, mask = ids.to(device), mask.to(device)
                out = model(ids, attention_mask=mask, output_queries=True, output_keys=True, use_cache=False)
                real = mask.bool()  # right padding: real rows come out sequence by sequence
                for layer in layers:
                    chunks[layer].append((out.queries[layer][real].cpu(), out.keys[layer][real].cpu()))
    finally:
        model.train(was_training)
    # rows were produced batch by batch (length-sorted); put them back in sequence order
    rows = torch.cat([torch.arange(starts[i], starts[i] + lengths[i]) for idx in batches for i in idx])
    shape = (-1, config.n_head, config.d_head)
    result = {}
    for layer in layers:
        queries, keys = (torch.cat(side) for side in zip(*chunks[layer], strict=True))
        result[layer] = (
            torch.empty_like(queries).index_copy_(0, rows, queries).reshape(shape),
            torch.empty_like(keys).index_copy_(0, rows, keys).reshape(shape),
        )
    return result


def _index_list(values: Iterable[int] | None, name: str) -> list[int] | None:
    """Sorted unique indices, or None for "all"; the range is checked once the model is known."""
    if values is None:
        return None
    indices = sorted({int(v) for v in values})
    if not indices:
        raise SimplifierError(f"{name} must name at least one index (or be None for all), got {list(values)}")
    return indices


def check_indices(indices: Sequence[int], bound: int, name: str, what: str) -> None:
    """Raise :class:`SimplifierError` naming ``name`` unless every index is in ``range(bound)``."""
    bad = [i for i in indices if not 0 <= i < bound]
    if bad:
        raise SimplifierError(
            f"{name} {bad} out of range: the model has {what}={bound} (valid 0..{bound - 1})"
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


class Simplifier:
    """Fit a simplification of chosen attention heads and return the proxy model.

    Args:
        layers: layers to simplify (default: all).
        heads: heads to simplify in each chosen layer (default: all).
        n_sequences: fit on the first ``n_sequences`` rows of the data (the paper uses ~1,000
            training sequences); fewer rows are used as they are.
        batch_size: most sequences per forward pass while collecting queries and keys.
        max_batch_tokens: most padded tokens per forward pass.
        seed: seed of any randomness in the fit (k-means initialization).
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool] = True

    def __init__(
        self,
        layers: Iterable[int] | None = None,
        heads: Iterable[int] | None = None,
        n_sequences: int = 1000,
        batch_size: int = 64,
        max_batch_tokens: int = 8192,
        seed: int = 0,
    ):
        self.layers = _index_list(layers, "layers")
        self.heads = _index_list(heads, "heads")
        for arg, value in (("n_sequences", n_sequences), ("batch_size", batch_size)):
            if value < 1:
                raise SimplifierError(f"{arg} must be >= 1, got {value}")
        if max_batch_tokens < 1:
            raise SimplifierError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.n_sequences = n_sequences
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        """JSON-safe settings that determine the fit; saved as ``config.simplifier_settings``.

        ``make_simplifier(name, **settings)`` rebuilds an equivalent simplifier (layers and
        heads are stored separately, in ``config.simplified_heads``).
        """
        return {"n_sequences": self.n_sequences, "seed": self.seed}

    def check_model(self, config: Any) -> None:
        """Reject settings impossible for this model before any work (e.g. rank > d_head)."""

    def fit_head(
        self, layer: int, head: int, queries: torch.Tensor, keys: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Fitted tensors of one head from its ``(n_vectors, d_head)`` queries and keys."""
        raise NotImplementedError(f"{type(self).__name__} must implement fit_head")

    def resolve(self, model: Any) -> dict[int, list[int]]:
        """``{layer: heads}`` to simplify in ``model``, checked against its sizes."""
        from hf_illusions.simplify.proxy import IllusionProxyForCausalLM

        if not isinstance(model, IllusionForCausalLM):
            raise SimplifierError(
                f"model must be an IllusionForCausalLM (or a subclass), got {type(model).__name__}"
            )
        if isinstance(model, IllusionProxyForCausalLM):
            raise SimplifierError(
                "model is already a simplified proxy: fit simplifiers on the original model"
            )
        config = model.config
        layers = self.layers if self.layers is not None else list(range(config.n_layer))
        heads = self.heads if self.heads is not None else list(range(config.n_head))
        check_indices(layers, config.n_layer, "layers", "n_layer")
        check_indices(heads, config.n_head, "heads", "n_head")
        self.check_model(config)
        return {layer: list(heads) for layer in layers}

    def fit(self, model: IllusionForCausalLM, data: Any = None) -> IllusionProxyForCausalLM:
        """Fit every chosen (layer, head) on ``data``; returns the proxy in eval mode, on model's device."""
        from hf_illusions.simplify.proxy import build_proxy  # proxy.py imports this module

        chosen = self.resolve(model)
        fitted: dict[str, torch.Tensor] = {}
        if self.needs_data:
            qk = collect_qk(
                model, data, self.n_sequences, list(chosen), self.batch_size, self.max_batch_tokens
            )
            for layer, heads in chosen.items():
                queries, keys = qk[layer]
                per_head = {h: self.fit_head(layer, h, queries[:, h], keys[:, h]) for h in heads}
                fitted.update(stack_heads(layer, model.config.n_head, per_head))
        return build_proxy(model, self.name, chosen, self.settings(), fitted)

    def __repr__(self) -> str:
        args = {**self.settings(), "layers": self.layers, "heads": self.heads}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


__all__ = [
    "SIMPLIFICATIONS",
    "AttentionSimplification",
    "ResidualSimplification",
    "Simplifier",
    "check_indices",
    "collect_qk",
    "fitting_sequences",
    "stack_heads",
]

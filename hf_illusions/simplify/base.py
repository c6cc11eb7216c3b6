"""What every simplifier shares: the attention-side module, fitting data, and the fit loop.

Friedman et al. (2024, §3) simplify a trained transformer's keys and queries — project them onto
a few principal directions, snap them to k-means centroids — or its attention itself (one-hot
on the argmax), fitting each simplification on ~1,000 training sequences; the simplified
model (the *proxy*) is then compared with the original in and out of distribution. Here:

* :class:`AttentionSimplification` is what a proxy attaches to a simplified layer's attention
  module as ``.simplification``. Its buffers are the fitted state and its transforms are applied
  by the registered proxy attention functions (:mod:`~hf_illusions.simplify.seam`): the model's
  own attention seam, no hooks — for our models and for any transformers model whose attention
  goes through the attention interface (GPT-2, GPT-NeoX, Llama, Qwen2, …).
* :class:`Simplifier` holds settings and turns ``fit(model, data)`` into a proxy; subclasses say
  how queries/keys are accumulated (:meth:`Simplifier.collector`, streamed batch by batch, see
  :mod:`~hf_illusions.simplify.collect`) and how one head is fitted from that
  (:meth:`Simplifier.fit_collected`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_illusions.errors import SimplifierError
from hf_illusions.modeling import IllusionForCausalLM
from hf_illusions.simplify.collect import HeadGeometry, collect_qk, model_geometry

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

    def __init__(self, config: IllusionProxyConfig, layer_idx: int):
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
    #: whether the simplification changes keys (then grouped-query heads go by whole groups)
    simplifies_keys: ClassVar[bool] = True

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
        """Reject settings impossible for this model before any work (e.g. rank > d_head).

        ``config`` is the model's :class:`~hf_illusions.simplify.collect.HeadGeometry`
        (``n_layer``, ``n_head``, ``n_kv_head``, ``d_head``, ``d_model``).
        """

    def collector(self, layer: int, side: str, heads: list[int], d_head: int) -> Any:
        """A fresh accumulator of ``side`` (``"query"``/``"key"``) vectors of ``heads`` in ``layer``.

        It receives every batch of the fitting pass (see :class:`~hf_illusions.simplify.collect.Collector`).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement collector")

    def fit_collected(self, layer: int, side: str, collected: Any) -> dict[str, torch.Tensor]:
        """Fitted tensors of one head and side (e.g. ``{"mean": …, "basis": …}``) from its collector."""
        raise NotImplementedError(f"{type(self).__name__} must implement fit_collected")

    def fit_head(
        self, layer: int, head: int, queries: torch.Tensor, keys: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Fitted tensors of one head from all its ``(n_vectors, d_head)`` queries and keys.

        For callers holding :func:`collect_qk` output; the same arithmetic as :meth:`fit`, with the
        vectors accumulated in one chunk (so equal to a streamed fit to float tolerance).
        """
        fitted = {}
        for side, vectors in (("query", queries), ("key", keys)):
            collector = self.collector(layer, side, [head], vectors.shape[-1])
            collector.update(vectors[:, None], torch.arange(len(vectors)))
            for name, tensor in self.fit_collected(layer, side, collector.head(0)).items():
                fitted[f"{side}_{name}"] = tensor
        return fitted

    #: why a simplifier works only on :class:`IllusionForCausalLM` (``None``: any model the seam supports)
    requires_own_model: ClassVar[str | None] = (
        "it needs seams only IllusionForCausalLM has (residual-stream and MLP-neuron simplification modules)"
    )

    def resolve(self, model: Any) -> dict[int, list[int]]:
        """``{layer: heads}`` to simplify in ``model``, checked against its sizes."""
        from hf_illusions.simplify.proxy import SimplifiedModelMixin

        if not isinstance(model, PreTrainedModel):
            raise SimplifierError(
                f"model must be a transformers PreTrainedModel (e.g. IllusionForCausalLM, "
                f"GPT2LMHeadModel, LlamaForCausalLM), got {type(model).__name__}"
            )
        if isinstance(model, SimplifiedModelMixin):
            raise SimplifierError(
                "model is already a simplified proxy: fit simplifiers on the original model"
            )
        if self.requires_own_model and not isinstance(model, IllusionForCausalLM):
            raise SimplifierError(
                f"the {self.name!r} simplifier works only on IllusionForCausalLM models, got "
                f"{type(model).__name__} ({model.config.model_type}): {self.requires_own_model}"
            )
        geometry = model_geometry(model)
        layers = self.layers if self.layers is not None else list(range(geometry.n_layer))
        heads = self.heads if self.heads is not None else list(range(geometry.n_head))
        check_indices(layers, geometry.n_layer, "layers", "n_layer")
        check_indices(heads, geometry.n_head, "heads", "n_head")
        if self.simplifies_keys:
            check_whole_groups(heads, geometry)
        self.check_model(geometry)
        return {layer: list(heads) for layer in layers}

    def fit(self, model: PreTrainedModel, data: Any = None) -> IllusionProxyForCausalLM:
        """Fit every chosen (layer, head) on ``data``; returns the proxy in eval mode, on model's device.

        ``model`` is our :class:`IllusionForCausalLM` or any transformers model whose attention
        goes through the attention interface; it is left unchanged (a stock model's proxy shares
        its weight tensors, see :func:`~hf_illusions.simplify.proxy.build_proxy`).
        """
        from hf_illusions.simplify.collect import fit_attention
        from hf_illusions.simplify.proxy import build_proxy  # proxy.py imports this module

        chosen = self.resolve(model)
        fitted: dict[str, torch.Tensor] = {}
        if self.needs_data:
            (fitted,) = fit_attention(
                model, data, [self], chosen, self.n_sequences, self.batch_size, self.max_batch_tokens
            )
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
    "check_whole_groups",
    "collect_qk",
    "config_geometry",
    "fitting_sequences",
    "stack_heads",
]

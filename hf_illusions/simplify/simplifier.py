"""The simplifier: settings in, ``fit(model, data)`` → proxy out.

Subclasses say how queries/keys are accumulated (:meth:`Simplifier.collector`, streamed batch by
batch, see :mod:`~hf_illusions.simplify.collect`) and how one head is fitted from that
(:meth:`Simplifier.fit_collected`). Above the modules it drives: the simplification modules
(:mod:`~hf_illusions.simplify.base`), the proxy built from them (:mod:`~hf_illusions.simplify.proxy`)
and the fitting pass (:mod:`~hf_illusions.simplify.collect`), none of which imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel

from hf_illusions.errors import SimplifierError
from hf_illusions.modeling import IllusionForCausalLM
from hf_illusions.simplify.base import check_indices, check_whole_groups
from hf_illusions.simplify.collect import fit_attention
from hf_illusions.simplify.geometry import model_geometry
from hf_illusions.simplify.proxy import IllusionProxyForCausalLM, SimplifiedModelMixin, build_proxy


def _index_list(values: Iterable[int] | None, name: str) -> list[int] | None:
    """Sorted unique indices, or None for "all"; the range is checked once the model is known."""
    if values is None:
        return None
    indices = sorted({int(v) for v in values})
    if not indices:
        raise SimplifierError(f"{name} must name at least one index (or be None for all), got {list(values)}")
    return indices


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

        ``config`` is the model's :class:`~hf_illusions.simplify.geometry.HeadGeometry`
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


__all__ = ["Simplifier"]

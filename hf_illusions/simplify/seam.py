"""The one seam every proxy uses: transformers' attention interface.

transformers' own attention modules (GPT-2, GPT-NeoX, Llama, Qwen2, Mistral, … and ours) compute
queries and keys — after rotary embeddings and q/k norms — and then call
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``
with ``(module, query, key, value, attention_mask, scaling=…, dropout=…, **kwargs)``. A proxy
runs one of the two attention functions registered here, which

* hand ``(query, key)`` to ``module.qk_recorder`` when one is set (fitting: queries and keys *as
  attention sees them*, one pass, no hooks);
* apply ``module.simplification`` (see :mod:`hf_illusions.simplify.base`) to q, k, v and, for
  simplifications of the weights themselves (one-hot), to the attention probabilities;
* otherwise compute attention exactly as the base model does, with its own ``scaling``, mask
  (padding, causal, sliding window — built by the mask function registered under the same name)
  and dropout: ``illusion_simplified`` calls the model's own eager function (bitwise the base
  model's eager attention), ``illusion_simplified_sdpa`` transformers' sdpa function (the fast
  kernel, for SVD and k-means too, since they change only q and k). Explicit weights are
  computed only when they are needed: one-hot, or ``output_attentions=True``.

Attention this seam cannot honour — logit softcapping, attention sinks, position biases — raises
:class:`~hf_illusions.errors.SimplifierError` naming the model type, never a silently wrong proxy.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from hf_illusions.errors import SimplifierError

#: the proxy attention running the model's own eager arithmetic (our models' default)
ATTN_IMPLEMENTATION = "illusion_simplified"
#: the proxy attention running transformers' sdpa kernel (stock models' default)
ATTN_IMPLEMENTATION_SDPA = "illusion_simplified_sdpa"
PROXY_IMPLEMENTATIONS = (ATTN_IMPLEMENTATION, ATTN_IMPLEMENTATION_SDPA)

#: attention-function kwargs that change the arithmetic in ways the proxy does not implement
UNHONOURED_KWARGS = {
    "softcap": "attention logit softcapping",
    "s_aux": "attention sinks",
    "position_bias": "additive position biases",
}
#: config fields that mean the same, checked before any work
UNHONOURED_CONFIG = {"attn_logit_softcapping": "attention logit softcapping"}


def model_type_of(module: nn.Module) -> str:
    config = getattr(module, "config", None)
    return getattr(config, "model_type", None) or type(module).__name__


def weights_requested(kwargs: dict[str, Any]) -> bool:
    """Whether this forward must return attention probabilities (``output_attentions``).

    GPT-2 consumes the flag before the attention call, so besides the kwarg this asks
    transformers' output collector (``capture_outputs``) whether attentions are being recorded.
    """
    if kwargs.get("output_attentions"):
        return True
    try:
        from transformers.utils.output_capturing import _active_collector
    except ImportError:  # pragma: no cover - a transformers without the collector passes the kwarg
        return False
    collected = _active_collector.get()
    return collected is not None and "attentions" in collected


def additive_mask(
    mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor, module: nn.Module
) -> torch.Tensor | None:
    """An sdpa-style mask (boolean, or ``None`` = rely on ``is_causal``) as eager's additive one.

    ``None`` with several queries on a causal module means what sdpa's ``is_causal`` means
    (top-left-aligned causal mask; ``sdpa_mask`` only skips the mask where that is right).
    """
    if mask is not None and mask.dtype != torch.bool:
        return mask
    if mask is None:
        q_length, kv_length = query.shape[2], key.shape[2]
        if q_length == 1 or not getattr(module, "is_causal", True):
            return None
        mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device).tril()[None, None]
    zero = torch.zeros((), dtype=query.dtype, device=query.device)
    return torch.where(mask, zero, torch.finfo(query.dtype).min)


def explicit_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
    dropout: float,
    transform_weights: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ · scaling + mask) v with the probabilities (float32 softmax) exposed to a transform.

    ``mask`` is additive; grouped key/value heads are repeated for their query heads.
    """
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores + mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if transform_weights is not None:
        weights = transform_weights(weights, mask)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def model_eager_function(module: nn.Module) -> Callable:
    """The ``eager_attention_forward`` of the module's own modeling file (every transformers model has one).

    Falls back to :func:`explicit_attention` for a modeling file without one.
    """
    own = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if own is not None:
        return own

    def fallback(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        return explicit_attention(module, query, key, value, attention_mask, scaling, dropout)

    return fallback


def refuse_unhonoured(module: nn.Module, kwargs: dict[str, Any]) -> None:
    for name, feature in UNHONOURED_KWARGS.items():
        if kwargs.get(name) is not None:
            raise SimplifierError(
                f"{model_type_of(module)}: its attention uses {feature} ({name}=…), which the proxy "
                "does not implement; this model type cannot be simplified here"
            )


def _simplified_attention(
    base: str,
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    refuse_unhonoured(module, kwargs)
    recorder = getattr(module, "qk_recorder", None)
    if recorder is not None:
        recorder(query, key)
    simplification = getattr(module, "simplification", None)
    if simplification is not None:
        query = simplification.transform_query(query)
        key = simplification.transform_key(key)
        value = simplification.transform_value(value)
    eager_format = attention_mask if base == "eager" else None
    if simplification is not None and simplification.changes_weights:
        mask = eager_format if base == "eager" else additive_mask(attention_mask, query, key, module)
        return explicit_attention(
            module, query, key, value, mask, scaling, dropout, simplification.transform_weights
        )
    if base == "sdpa" and not weights_requested(kwargs):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    mask = eager_format if base == "eager" else additive_mask(attention_mask, query, key, module)
    eager = model_eager_function(module)
    return eager(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)


def simplified_attention_forward(module: nn.Module, *args: Any, **kwargs: Any) -> tuple:
    """``illusion_simplified``: simplification (if any) + the model's own eager attention."""
    return _simplified_attention("eager", module, *args, **kwargs)


def simplified_sdpa_attention_forward(module: nn.Module, *args: Any, **kwargs: Any) -> tuple:
    """``illusion_simplified_sdpa``: simplification (if any) + transformers' sdpa attention."""
    return _simplified_attention("sdpa", module, *args, **kwargs)


AttentionInterface.register(ATTN_IMPLEMENTATION, simplified_attention_forward)
AttentionInterface.register(ATTN_IMPLEMENTATION_SDPA, simplified_sdpa_attention_forward)
# Without a mask function of its own name, transformers builds no mask for a custom attention
# implementation: the causal and padding masks would be silently dropped. Each variant gets the
# mask format of the attention it delegates to.
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION_SDPA, sdpa_mask)


def expose_attention_weights(model: PreTrainedModel) -> PreTrainedModel:
    """Switch ``model`` to its own eager attention when its kernel returns no weights (sdpa, flash).

    Eager is the same arithmetic with the probabilities exposed, so attention maps and attention
    metrics of the original exist; proxies built from the model afterwards inherit it. In place.
    """
    if model.config._attn_implementation != "eager":
        model.set_attn_implementation("eager")
    return model


def proxy_implementation(requested: str | None, default: str) -> str:
    """The proxy attention for a requested implementation: eager → eager variant, any other → sdpa."""
    if requested is None:
        return default
    if requested in PROXY_IMPLEMENTATIONS:
        return requested
    return ATTN_IMPLEMENTATION if requested == "eager" else ATTN_IMPLEMENTATION_SDPA


# --- finding the attention layers of a model ---


@cache
def _calls_attention_interface(cls: type) -> bool:
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source or "get_interface(" in source


def attention_layers(model: PreTrainedModel) -> dict[int, tuple[str, nn.Module]]:
    """``{layer_idx: (module path, attention module)}`` of the modules that call the attention interface.

    Raises :class:`SimplifierError` naming the model type when the model has none, or when a
    layer's attention does its own arithmetic (the model class does not declare
    ``_supports_attention_backend``) or uses features the proxy does not implement.
    """
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if not getattr(model, "_supports_attention_backend", False):
        raise SimplifierError(
            f"{model_type} ({type(model).__name__}) computes attention itself instead of calling "
            "transformers' attention interface (ALL_ATTENTION_FUNCTIONS), so no proxy can patch it; "
            "supported are models whose attention goes through that interface (GPT-2, GPT-NeoX, "
            "Llama, Qwen2, Mistral, …)"
        )
    for field, feature in UNHONOURED_CONFIG.items():
        if getattr(model.config, field, None) is not None:
            raise SimplifierError(
                f"{model_type}: its attention uses {feature} (config.{field}="
                f"{getattr(model.config, field)}), which the proxy does not implement"
            )
    found: dict[int, tuple[str, nn.Module]] = {}
    for path, module in model.named_modules():
        layer = getattr(module, "layer_idx", None)
        if not isinstance(layer, int) or not _calls_attention_interface(type(module)):
            continue
        if getattr(module, "sinks", None) is not None:
            raise SimplifierError(
                f"{model_type}: its attention uses attention sinks ({path}.sinks), which the proxy "
                "does not implement"
            )
        if layer in found:
            raise SimplifierError(
                f"{model_type}: layer {layer} has two attention modules ({found[layer][0]}, {path}); "
                "only decoder-only self-attention models can be simplified"
            )
        found[layer] = (path, module)
    if not found:
        raise SimplifierError(
            f"{model_type} ({type(model).__name__}) has no attention module calling transformers' "
            "attention interface; it cannot be simplified here"
        )
    return dict(sorted(found.items()))


@contextmanager
def recording(
    modules: dict[int, nn.Module], record: Callable[[int, torch.Tensor, torch.Tensor], None]
) -> Iterator[None]:
    """Within the block, each call of these modules' attention hands ``(layer, query, key)`` to ``record``."""
    for layer, module in modules.items():
        module.qk_recorder = lambda q, k, layer=layer: record(layer, q, k)
    try:
        yield
    finally:
        for module in modules.values():
            del module.qk_recorder


__all__ = [
    "ATTN_IMPLEMENTATION",
    "ATTN_IMPLEMENTATION_SDPA",
    "PROXY_IMPLEMENTATIONS",
    "additive_mask",
    "attention_layers",
    "explicit_attention",
    "proxy_implementation",
    "recording",
    "simplified_attention_forward",
    "simplified_sdpa_attention_forward",
]

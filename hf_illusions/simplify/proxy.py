"""The proxy model: the original model with a registered attention function that simplifies.

A proxy is an ordinary ``PreTrainedModel`` (Friedman et al. 2024's "simplified model"): the
original's weights plus, on each simplified layer's attention, an
:class:`~hf_illusions.simplify.base.AttentionSimplification` whose buffers hold the fitted
state. Attention runs through ``illusion_simplified``, registered with transformers' attention
interface — the same seam ``eager``/``sdpa`` use — so the proxy saves, loads
(``AutoModelForCausalLM.from_pretrained``) and records attentions/hidden states like the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from hf_illusions.errors import CheckpointError, SimplifierError
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.modeling.modeling_illusion import attention_probabilities
from hf_illusions.simplify.base import SIMPLIFICATIONS, ResidualSimplification, check_indices

ATTN_IMPLEMENTATION = "illusion_simplified"


def simplified_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with the module's simplification applied to q, k, v and the weights.

    Layers without a ``simplification`` attribute run plain eager attention, so one attention
    implementation serves the whole proxy. The returned weights are the ones actually used
    (what ``output_attentions=True`` shows for the proxy).
    """
    simplification = getattr(module, "simplification", None)
    if simplification is not None:
        query = simplification.transform_query(query)
        key = simplification.transform_key(key)
        value = simplification.transform_value(value)
    weights = attention_probabilities(query, key, attention_mask, scaling)
    if simplification is not None:
        weights = simplification.transform_weights(weights, attention_mask)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


AttentionInterface.register(ATTN_IMPLEMENTATION, simplified_attention_forward)
# Without a mask function of its own name, transformers builds no mask for a custom attention
# implementation: the causal and padding masks would be silently dropped.
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


class IllusionProxyConfig(IllusionConfig):
    r"""The original model's config plus what was simplified and how.

    Args:
        simplifier: name of the simplification (``"svd"``, ``"kmeans"``, ``"onehot"``,
            ``"interaction_basis"``, ``"sparse_circuit"`` — through
            :class:`~hf_illusions.sparse.circuit.IllusionCircuitConfig` — or ``"identity"``), which
            picks the module class attached to each simplified layer.
        simplified_heads: layer index (a string, as JSON keys are) → simplified head indices.
        simplified_residuals: layers whose input residual stream is simplified (for
            residual-stream simplifiers such as ``"interaction_basis"``; empty for the others).
        simplifier_settings: the simplifier's settings (e.g. ``{"rank": 8, "center": True}``);
            they fix the shapes of the fitted buffers.
        base_model_type: ``model_type`` of the model the proxy simplifies.
    """

    model_type = "illusion-proxy"

    simplifier: str = "identity"
    simplified_heads: dict | None = None
    simplified_residuals: list | None = None
    simplifier_settings: dict | None = None
    base_model_type: str = "illusion-transformer"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.simplifier not in SIMPLIFICATIONS:
            raise SimplifierError(
                f"simplifier must be one of {sorted(SIMPLIFICATIONS)}, got {self.simplifier!r}"
            )
        heads = {
            str(int(layer)): sorted({int(h) for h in hs})
            for layer, hs in (self.simplified_heads or {}).items()
        }
        check_indices([int(layer) for layer in heads], self.n_layer, "simplified_heads layers", "n_layer")
        for hs in heads.values():
            check_indices(hs, self.n_head, "simplified_heads heads", "n_head")
        self.simplified_heads = dict(sorted(heads.items(), key=lambda item: int(item[0])))
        residuals = sorted({int(layer) for layer in self.simplified_residuals or []})
        check_indices(residuals, self.n_layer, "simplified_residuals layers", "n_layer")
        self.simplified_residuals = residuals
        on_residual = issubclass(SIMPLIFICATIONS[self.simplifier], ResidualSimplification)
        if (on_residual and heads) or (not on_residual and residuals):
            raise SimplifierError(
                f"simplifier {self.simplifier!r} acts on "
                f"{'the residual stream' if on_residual else 'attention heads'}: give it only "
                f"{'simplified_residuals' if on_residual else 'simplified_heads'}"
            )
        self.simplifier_settings = dict(self.simplifier_settings or {})


class IllusionProxyForCausalLM(IllusionForCausalLM):
    """:class:`IllusionForCausalLM` whose attention in ``config.simplified_heads`` is simplified.

    Always runs the ``illusion_simplified`` attention implementation (a request for another
    one, e.g. ``sdpa``, is overridden), since that function is what applies the simplification.
    """

    config_class = IllusionProxyConfig
    config: IllusionProxyConfig

    def __init__(self, config: IllusionProxyConfig):
        super().__init__(config)
        simplification_class = SIMPLIFICATIONS[config.simplifier]
        for layer in config.simplified_heads:
            attention = self.model.layers[int(layer)].self_attn
            attention.simplification = simplification_class(config, int(layer))
        for layer in config.simplified_residuals:
            self.model.layers[layer].residual_simplification = simplification_class(config, layer)

    def _check_and_adjust_attn_implementation(self, attn_implementation: str | None, *args, **kwargs) -> str:
        return super()._check_and_adjust_attn_implementation(ATTN_IMPLEMENTATION, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``, refusing checkpoints that lack fitted buffers.

        transformers fills missing weights with fresh initializations (and missing buffers with
        uninitialized memory); a proxy without its fitted state is not the proxy, so this raises
        :class:`~hf_illusions.errors.CheckpointError` instead.
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(k for k in info["missing_keys"] if "simplification." in k)
        if missing:
            raise CheckpointError(
                f"the checkpoint lacks the proxy's fitted buffers {missing}; refit the simplifier "
                "or check that model.safetensors is complete"
            )
        return (model, info) if want_info else model


# PreTrainedConfig bookkeeping that must not be copied from the original into the proxy config.
_NOT_COPIED = ("model_type", "architectures", "transformers_version", "_name_or_path", "auto_map")


def build_proxy(
    model: IllusionForCausalLM,
    simplifier_name: str,
    heads: dict[int, list[int]] | dict[str, list[int]],
    settings: dict[str, Any],
    fitted_state: dict[str, torch.Tensor],
    residual_layers: list[int] | None = None,
) -> IllusionProxyForCausalLM:
    """The proxy of ``model``: its config and weights, plus the fitted simplification buffers.

    ``fitted_state`` maps state-dict names (``model.layers.{i}.self_attn.simplification.*``) to
    tensors and must cover every fitted buffer (``head_mask`` comes from ``heads``);
    ``residual_layers`` are the layers of a residual-stream simplifier (buffers
    ``model.layers.{i}.residual_simplification.*``, with ``heads`` empty). The proxy is
    on ``model``'s device and dtype, in eval mode.
    """
    base = {k: v for k, v in model.config.to_dict().items() if k not in _NOT_COPIED}
    config = IllusionProxyConfig(
        **base,
        simplifier=simplifier_name,
        simplified_heads={str(layer): list(hs) for layer, hs in heads.items()},
        simplified_residuals=list(residual_layers or []),
        simplifier_settings=settings,
        base_model_type=model.config.model_type,
    )
    parameter = next(model.parameters())
    proxy = IllusionProxyForCausalLM(config).to(device=parameter.device, dtype=parameter.dtype)
    state = {**model.state_dict(), **{k: v.to(parameter.device) for k, v in fitted_state.items()}}
    try:
        missing, unexpected = proxy.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch between fitted tensors and the config's buffers
        raise SimplifierError(f"fitted_state does not fit the proxy's buffers: {err}") from err
    missing = [k for k in missing if not k.endswith(".simplification.head_mask")]
    if missing or unexpected:
        raise SimplifierError(
            f"the proxy's state does not match: missing {missing}, unexpected {unexpected} "
            "(is model an unmodified IllusionForCausalLM, and fitted_state complete?)"
        )
    return proxy.eval()


__all__ = [
    "ATTN_IMPLEMENTATION",
    "IllusionProxyConfig",
    "IllusionProxyForCausalLM",
    "build_proxy",
    "simplified_attention_forward",
]

"""The proxy model: the original model's own class, subclassed, its attention patched at the seam.

A proxy (Friedman et al. 2024's "simplified model") is the original model with, on each
simplified layer's attention module, an :class:`~hf_illusions.simplify.base.AttentionSimplification`
whose buffers hold the fitted state, and its attention implementation switched to one of the
functions registered in :mod:`~hf_illusions.simplify.seam` (the same seam ``eager``/``sdpa`` use).
One mechanism for every model:

* our :class:`IllusionForCausalLM` → :class:`IllusionProxyForCausalLM`, whose config carries the
  simplification, so it saves whole and loads with ``AutoModelForCausalLM.from_pretrained``;
* any transformers model whose attention goes through the attention interface (GPT-2,
  GPT-NeoX, Llama, Qwen2, …) → ``Simplified<ModelClass>`` (:func:`proxy_class`), sharing the base
  model's weight tensors and saving as a small adapter (the simplification's config and buffers,
  see :mod:`~hf_illusions.simplify.adapter`), reloaded with :func:`hf_illusions.load_proxy`.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel

from hf_illusions.errors import CheckpointError, SimplifierError
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.simplify.base import SIMPLIFICATIONS, ResidualSimplification, check_indices
from hf_illusions.simplify.seam import (
    ATTN_IMPLEMENTATION,
    ATTN_IMPLEMENTATION_SDPA,
    attention_layers,
    proxy_implementation,
    simplified_attention_forward,
)


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


class SimplifiedModelMixin:
    """What every proxy class adds to the model class it subclasses.

    Attaches the simplification modules (:meth:`attach_simplifications`) and pins the attention
    implementation to a proxy variant: a request for ``eager`` runs the model's own eager
    arithmetic, any other (``sdpa``, flash, …) transformers' sdpa kernel, both through the seam.
    """

    #: the proxy attention when none is requested
    default_proxy_attention: ClassVar[str] = ATTN_IMPLEMENTATION

    def _check_and_adjust_attn_implementation(self, attn_implementation: str | None, *args, **kwargs) -> str:
        chosen = proxy_implementation(attn_implementation, self.default_proxy_attention)
        return super()._check_and_adjust_attn_implementation(chosen, *args, **kwargs)

    def attach_simplifications(self, config: Any) -> None:
        """Set ``.simplification`` on the attention module of each layer in ``config.simplified_heads``."""
        simplification_class = SIMPLIFICATIONS[config.simplifier]
        modules = attention_layers(self)
        for layer in config.simplified_heads:
            modules[int(layer)][1].simplification = simplification_class(config, int(layer))


class IllusionProxyForCausalLM(SimplifiedModelMixin, IllusionForCausalLM):
    """:class:`IllusionForCausalLM` whose attention in ``config.simplified_heads`` is simplified.

    Runs the model's eager attention through the seam unless ``attn_implementation="sdpa"`` is
    requested; either way the simplification is applied.
    """

    config_class = IllusionProxyConfig
    config: IllusionProxyConfig

    def __init__(self, config: IllusionProxyConfig):
        super().__init__(config)
        self.attach_simplifications(config)
        simplification_class = SIMPLIFICATIONS[config.simplifier]
        for layer in config.simplified_residuals:
            self.model.layers[layer].residual_simplification = simplification_class(config, layer)

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


class StockProxyMixin(SimplifiedModelMixin):
    """A proxy of a stock transformers model: sdpa by default, saved as a small adapter."""

    default_proxy_attention: ClassVar[str] = ATTN_IMPLEMENTATION_SDPA
    base_class: ClassVar[type]
    simplification_config: Any

    def save_pretrained(
        self, save_directory: Any, base_model_name_or_path: str | None = None, **kwargs: Any
    ) -> None:
        """Write the adapter: ``simplification_config.json`` + ``simplification.safetensors``.

        ``base_model_name_or_path`` overrides the recorded base (default: the base model's own
        ``name_or_path``). Other ``PreTrainedModel.save_pretrained`` options (shards, safe
        serialization, …) do not apply to a few kilobytes of buffers and are ignored, so
        ``push_to_hub`` works too. See :func:`~hf_illusions.simplify.adapter.save_adapter`.
        """
        from hf_illusions.simplify.adapter import save_adapter

        save_adapter(self, save_directory, base_model_name_or_path)


@cache
def proxy_class(base_class: type) -> type:
    """``Simplified<base_class>``: the model's own class with the proxy mixin (one per class)."""
    return type(
        f"Simplified{base_class.__name__}",
        (StockProxyMixin, base_class),
        {"base_class": base_class, "__module__": __name__, "__doc__": f"A proxy of {base_class.__name__}."},
    )


# PreTrainedConfig bookkeeping that must not be copied from the original into the proxy config.
_NOT_COPIED = ("model_type", "architectures", "transformers_version", "_name_or_path", "auto_map")


_PROXY_FIELDS = (
    "simplifier",
    "simplified_heads",
    "simplified_residuals",
    "simplifier_settings",
    "base_model_type",
)


def base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict without any simplification buffers (a proxy's is its base model's)."""
    return {k: v for k, v in model.state_dict().items() if "simplification." not in k}


def _load_fitted(proxy: torch.nn.Module, state: dict[str, torch.Tensor], assign: bool) -> None:
    try:
        missing, unexpected = proxy.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as err:  # shape mismatch between fitted tensors and the config's buffers
        raise SimplifierError(f"fitted_state does not fit the proxy's buffers: {err}") from err
    missing = [k for k in missing if not k.endswith(".simplification.head_mask")]
    if missing or unexpected:
        raise SimplifierError(
            f"the proxy's state does not match: missing {missing}, unexpected {unexpected} "
            "(is model an unmodified base model, and fitted_state complete?)"
        )


def build_proxy(
    model: PreTrainedModel,
    simplifier_name: str,
    heads: dict[int, list[int]] | dict[str, list[int]],
    settings: dict[str, Any],
    fitted_state: dict[str, torch.Tensor],
    residual_layers: list[int] | None = None,
) -> Any:
    """The proxy of ``model``: its weights, plus the fitted simplification buffers.

    ``fitted_state`` maps state-dict names (``<attention module>.simplification.*``, e.g.
    ``model.layers.{i}.self_attn.simplification.query_basis``) to tensors and must cover every
    fitted buffer (``head_mask`` comes from ``heads``); ``residual_layers`` are the layers of a
    residual-stream simplifier (our models only; buffers ``model.layers.{i}.residual_simplification.*``,
    with ``heads`` empty). The proxy is on ``model``'s device and dtype, in eval mode.

    For our :class:`IllusionForCausalLM` the proxy is an :class:`IllusionProxyForCausalLM` with its
    own copy of the weights. For any other model it is ``proxy_class(type(model))`` built without
    allocating weights: it *shares* ``model``'s parameter tensors (so a 7B model is not held twice;
    changing the base's weights in place changes the proxy's too).
    """
    heads = {str(layer): sorted(int(h) for h in hs) for layer, hs in heads.items()}
    refuse_offloaded(model)
    if not isinstance(model, IllusionForCausalLM):
        from hf_illusions.simplify.adapter import SimplificationConfig

        config = SimplificationConfig.for_model(model, simplifier_name, heads, settings)
        return build_stock_proxy(model, config, fitted_state)
    base = {k: v for k, v in model.config.to_dict().items() if k not in (*_NOT_COPIED, *_PROXY_FIELDS)}
    config = IllusionProxyConfig(
        **base,
        simplifier=simplifier_name,
        simplified_heads=heads,
        simplified_residuals=list(residual_layers or []),
        simplifier_settings=settings,
        base_model_type=getattr(model.config, "base_model_type", model.config.model_type),
    )
    config._attn_implementation = model.config._attn_implementation
    parameter = next(model.parameters())
    proxy = IllusionProxyForCausalLM(config).to(device=parameter.device, dtype=parameter.dtype)
    _load_fitted(
        proxy, {**base_state(model), **{k: v.to(parameter.device) for k, v in fitted_state.items()}}, False
    )
    return dispatch_like(proxy, model).eval()


def refuse_offloaded(model: torch.nn.Module) -> None:
    """Raise if some of ``model``'s weights are offloaded (``device_map`` with cpu/disk offload).

    accelerate keeps offloaded weights on the meta device and streams them in per forward; a
    proxy is built from the base model's tensors, so it would get empty ones.
    """
    offloaded = [name for name, p in model.named_parameters() if p.is_meta]
    if offloaded:
        raise SimplifierError(
            f"{len(offloaded)} weight(s) of the model are offloaded (e.g. {offloaded[0]!r} is on the meta "
            "device: its device_map put modules on 'cpu' next to GPUs, or on 'disk'); a proxy needs every "
            "weight on a device: load with a device_map that fits (max_memory=…, a smaller dtype, more GPUs)"
        )


def dispatch_like(proxy: torch.nn.Module, model: torch.nn.Module) -> torch.nn.Module:
    """Give ``proxy`` the placement ``model`` was dispatched with (``from_pretrained(device_map=…)``).

    A model spread over several devices runs through accelerate's hooks, which move each layer's
    inputs to that layer's device; a proxy is a new module tree without them, so it is dispatched
    with the base model's ``hf_device_map`` (its weights already sit there, so nothing is copied
    for a stock model). A model on one device has no map, and nothing is done.
    """
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return proxy
    from accelerate import dispatch_model

    skip = getattr(proxy, "_skip_keys_device_placement", None)
    # hooks exactly when the base has them (accelerate adds them for several devices, or when forced)
    forced = hasattr(model, "_hf_hook")
    return dispatch_model(proxy, device_map=dict(device_map), skip_keys=skip, force_hooks=forced)


def build_stock_proxy(model: PreTrainedModel, config: Any, fitted_state: dict[str, torch.Tensor]) -> Any:
    """``proxy_class(type(model))`` on ``model``'s weight tensors (shared), with ``config``'s simplification.

    The class is built with empty (meta) parameters — only buffers such as rotary frequencies
    are computed — and the base model's tensors are then assigned, not copied.
    """
    from accelerate import init_empty_weights

    if config.simplifier not in SIMPLIFICATIONS:
        raise SimplifierError(
            f"simplifier must be one of {sorted(SIMPLIFICATIONS)}, got {config.simplifier!r}"
        )
    cls = proxy_class(getattr(type(model), "base_class", type(model)))
    model_config = copy.deepcopy(model.config)
    with init_empty_weights(include_buffers=False):
        proxy = cls(model_config)
    proxy.simplification_config = config
    proxy.attach_simplifications(config)
    refuse_offloaded(model)
    # each layer's buffers on that layer's device: a model dispatched with device_map="auto" spreads
    # its layers over devices, and the seam applies the buffers to tensors on the layer's device
    base_layers = attention_layers(model)
    for layer, (_, module) in attention_layers(proxy).items():
        if hasattr(module, "simplification"):
            weight = next(base_layers[layer][1].parameters())
            module.simplification.to(device=weight.device, dtype=weight.dtype)
    buffers = proxy.state_dict()
    fitted = {
        k: v.to(device=buffers[k].device, dtype=buffers[k].dtype) if k in buffers else v
        for k, v in fitted_state.items()
    }
    _load_fitted(proxy, {**base_state(model), **fitted}, assign=True)
    meta = [name for name, p in proxy.named_parameters() if p.is_meta]
    if meta:
        raise SimplifierError(f"the proxy's parameters {meta[:3]} were not filled from the base model")
    return dispatch_like(proxy, model).eval()


__all__ = [
    "ATTN_IMPLEMENTATION",
    "ATTN_IMPLEMENTATION_SDPA",
    "IllusionProxyConfig",
    "IllusionProxyForCausalLM",
    "SimplifiedModelMixin",
    "StockProxyMixin",
    "base_state",
    "build_proxy",
    "build_stock_proxy",
    "dispatch_like",
    "proxy_class",
    "refuse_offloaded",
    "simplified_attention_forward",
]

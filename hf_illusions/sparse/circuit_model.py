"""A pruned circuit as a model: its node masks, config and causal-LM class, and its size.

What a fitted circuit *is*, apart from how :class:`~hf_illusions.sparse.circuit.SparseCircuitPruner`
finds it: the classes a saved circuit loads into (``AutoModelForCausalLM``, registered in
``registry.py``), :func:`build_circuit` (a model's all-kept circuit, where a fit starts) and
:func:`circuit_size` (nodes and edges kept), which also measures any unpruned model.

Nodes, per layer:

* ``query`` / ``key`` / ``value``: the ``n_head * d_head`` output channels of ``q_proj`` /
  ``k_proj`` / ``v_proj`` (channel ``h * d_head + j`` is head ``h``, dimension ``j``);
* ``mlp``: the ``d_mlp`` MLP neurons, after the GELU.

Residual-stream channels are deliberately *not* nodes: the stream is read through a LayerNorm,
so replacing one channel by its mean changes the norm's mean and variance and with them every
other channel the next block reads — a residual mask would not act on one node alone. Attention
and MLP channels sit after the norms and before the linear read-outs, where a mask is local.

A pruned node is **mean-ablated**: its value is replaced at every position by its mean over all
real (non-pad) positions of the fitting data, computed once on the original model. The masks act
through the model's own seams, not hooks: q/k/v channels in the attention function
(:meth:`CircuitAttentionSimplification.transform_query` etc., see ``simplify/proxy.py``), MLP
neurons through ``IllusionMLP.neuron_simplification``.

Size (:func:`circuit_size`): nodes kept per kind, and **edges**: the nonzero weight entries that
connect a kept node with what it reads or writes — a q/k channel's nonzero ``q_proj``/``k_proj``
row entries (it writes only into attention scores, which carry no weights), a v channel's
nonzero ``v_proj`` row plus ``o_proj`` column entries, an MLP neuron's nonzero ``up_proj`` row plus
``down_proj`` column entries. Counted over all nodes, the edges are the nonzero entries of the
block matrices, so for a dense model they are the parameter count of those matrices and for a
weight-sparse one (``train --weight_sparsity``) a small fraction of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hf_illusions.errors import SimplifierError
from hf_illusions.modeling import IllusionForCausalLM
from hf_illusions.simplify.base import AttentionSimplification
from hf_illusions.simplify.proxy import _NOT_COPIED, IllusionProxyConfig, IllusionProxyForCausalLM

#: node kinds, in the order they are listed within a layer
NODE_KINDS = ("query", "key", "value", "mlp")
SIMPLIFIER_NAME = "sparse_circuit"


class NodeMask(nn.Module):
    """Keep or mean-ablate each of a group of channels: ``x ↦ where(mask, x, mean)``.

    Buffers (persistent): ``mask`` (bool, True = kept) and ``mean``, both of ``shape``. Inputs are
    ``(batch, seq, *shape)``, or ``(batch, n_head, seq, d_head)`` when ``heads_first`` (the layout
    of queries, keys and values inside the attention function).

    Two plain attributes serve the fit only and are never saved:

    * ``gate``: a float tensor of ``shape`` with values exactly 0 or 1 (carrying surrogate
      gradients); when set it replaces ``mask`` as ``x·gate + mean·(1 − gate)``, which equals the
      ``where`` above value for value.
    * ``tap``: a list that receives each input, as ``(batch, seq, *shape)``, before masking (to
      compute the means without hooks).
    """

    def __init__(self, shape: Sequence[int], heads_first: bool = False):
        super().__init__()
        self.heads_first = heads_first
        self.register_buffer("mask", torch.ones(*shape, dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(*shape))
        self.gate: torch.Tensor | None = None
        self.tap: list[torch.Tensor] | None = None

    def _broadcast(self, t: torch.Tensor) -> torch.Tensor:
        return t[None, :, None, :] if self.heads_first else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tap is not None:
            self.tap.append((x.transpose(1, 2) if self.heads_first else x).detach())
        mean = self._broadcast(self.mean)
        if self.gate is not None:
            gate = self._broadcast(self.gate).to(x.dtype)
            return x * gate + mean * (1 - gate)
        return torch.where(self._broadcast(self.mask), x, mean)

    def extra_repr(self) -> str:
        return f"kept={int(self.mask.sum())}/{self.mask.numel()}"


class CircuitAttentionSimplification(AttentionSimplification):
    """Channel masks of one layer's queries, keys and values (submodules ``query``/``key``/``value``).

    Each is a :class:`NodeMask` of shape ``(n_head, d_head)``; its buffers are saved as
    ``model.layers.{i}.self_attn.simplification.{query,key,value}.{mask,mean}``.
    """

    name = SIMPLIFIER_NAME

    def __init__(self, config: Any, layer_idx: int):
        super().__init__(config, layer_idx)
        shape = (config.n_head, config.d_head)
        self.query = NodeMask(shape, heads_first=True)
        self.key = NodeMask(shape, heads_first=True)
        self.value = NodeMask(shape, heads_first=True)

    def transform_query(self, query: torch.Tensor) -> torch.Tensor:
        return self.query(query)

    def transform_key(self, key: torch.Tensor) -> torch.Tensor:
        return self.key(key)

    def transform_value(self, value: torch.Tensor) -> torch.Tensor:
        return self.value(value)

    def extra_repr(self) -> str:
        return f"layer={self.layer_idx}"


class IllusionCircuitConfig(IllusionProxyConfig):
    r"""The original model's config plus the circuit's settings and size.

    ``simplifier`` is always ``"sparse_circuit"`` and ``simplified_heads`` always every head of
    every layer (every q/k/v channel is a node, kept or not).

    Args:
        circuit_size: :func:`circuit_size` of the fitted circuit (kept/total nodes and edges).
        circuit_loss: the circuit's next-token loss on the fitting data (nats per token).
        full_loss: the original model's loss on the same data.
    """

    model_type = "illusion-circuit"

    simplifier: str = SIMPLIFIER_NAME
    circuit_size: dict | None = None
    circuit_loss: float | None = None
    full_loss: float | None = None

    def __post_init__(self, **kwargs):
        if self.simplifier != SIMPLIFIER_NAME:
            raise SimplifierError(
                f"simplifier must be {SIMPLIFIER_NAME!r} for an IllusionCircuitConfig, "
                f"got {self.simplifier!r}"
            )
        self.simplified_heads = {str(layer): list(range(self.n_head)) for layer in range(self.n_layer)}
        super().__post_init__(**kwargs)


class IllusionCircuitForCausalLM(IllusionProxyForCausalLM):
    """The model with every attention q/k/v channel and MLP neuron either kept or mean-ablated.

    Loads with ``AutoModelForCausalLM``; like every proxy it refuses a checkpoint without its
    fitted buffers (:class:`~hf_illusions.errors.CheckpointError`). MLP masks are
    ``model.layers.{i}.mlp.neuron_simplification.{mask,mean}``.
    """

    config_class = IllusionCircuitConfig
    config: IllusionCircuitConfig

    def __init__(self, config: IllusionCircuitConfig):
        super().__init__(config)
        for layer in self.model.layers:
            if layer.has_mlp:
                layer.mlp.neuron_simplification = NodeMask((config.d_mlp,))

    def node_masks(self) -> dict[tuple[int, str], NodeMask]:
        """``{(layer, kind): NodeMask}`` in the fixed node order (layers, then :data:`NODE_KINDS`)."""
        return _node_masks(self)


def _node_masks(model: IllusionForCausalLM) -> dict[tuple[int, str], NodeMask]:
    masks = {}
    for i, layer in enumerate(model.model.layers):
        attention = getattr(layer.self_attn, "simplification", None)
        if isinstance(attention, CircuitAttentionSimplification):
            for kind in ("query", "key", "value"):
                masks[(i, kind)] = getattr(attention, kind)
        if layer.has_mlp and isinstance(layer.mlp.neuron_simplification, NodeMask):
            masks[(i, "mlp")] = layer.mlp.neuron_simplification
    return masks


def node_edges(model: IllusionForCausalLM) -> dict[tuple[int, str], torch.Tensor]:
    """Edges of every node, ``{(layer, kind): (n_nodes,) long}`` (see the module docstring)."""
    edges = {}
    for i, layer in enumerate(model.model.layers):
        attention = layer.self_attn
        edges[(i, "query")] = (attention.q_proj.weight != 0).sum(dim=1)
        edges[(i, "key")] = (attention.k_proj.weight != 0).sum(dim=1)
        edges[(i, "value")] = (attention.v_proj.weight != 0).sum(dim=1) + (attention.o_proj.weight != 0).sum(
            dim=0
        )
        if layer.has_mlp:
            mlp = layer.mlp
            edges[(i, "mlp")] = (mlp.up_proj.weight != 0).sum(dim=1) + (mlp.down_proj.weight != 0).sum(dim=0)
    return edges


def circuit_size(model: IllusionForCausalLM) -> dict[str, Any]:
    """Kept and total nodes and edges, overall, per kind and per layer (JSON-safe ints).

    ``model`` is a circuit proxy or any :class:`IllusionForCausalLM` (then every node counts as
    kept). Totals count every node of the model the same way, so ``total_edges`` is the number
    of nonzero entries of the block weight matrices.
    """
    masks = _node_masks(model)
    keys = ("kept_nodes", "total_nodes", "kept_edges", "total_edges")
    by_kind = {kind: dict.fromkeys(keys, 0) for kind in NODE_KINDS}
    by_layer = {str(i): dict.fromkeys(keys, 0) for i in range(len(model.model.layers))}
    for (layer, kind), edges in node_edges(model).items():
        kept = masks[(layer, kind)].mask.flatten().to(edges.device) if (layer, kind) in masks else None
        counts = {
            "kept_nodes": edges.numel() if kept is None else int(kept.sum()),
            "total_nodes": edges.numel(),
            "kept_edges": int(edges.sum()) if kept is None else int(edges[kept].sum()),
            "total_edges": int(edges.sum()),
        }
        for key, value in counts.items():
            by_kind[kind][key] += value
            by_layer[str(layer)][key] += value
    totals = {key: sum(group[key] for group in by_kind.values()) for key in keys}
    return {**totals, "by_kind": by_kind, "by_layer": by_layer}


def build_circuit(
    model: IllusionForCausalLM, settings: dict[str, Any] | None = None
) -> IllusionCircuitForCausalLM:
    """The all-kept circuit of ``model`` (means zero until fitted): same weights, eval mode, same device."""
    base = {k: v for k, v in model.config.to_dict().items() if k not in _NOT_COPIED}
    config = IllusionCircuitConfig(
        **base, simplifier_settings=dict(settings or {}), base_model_type=model.config.model_type
    )
    parameter = next(model.parameters())
    circuit = IllusionCircuitForCausalLM(config).to(device=parameter.device, dtype=parameter.dtype)
    missing, unexpected = circuit.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if "simplification." not in k]
    if missing or unexpected:
        raise SimplifierError(
            f"model does not fit the circuit: missing {missing}, unexpected {unexpected} "
            "(is model an unmodified IllusionForCausalLM?)"
        )
    return circuit.eval()


__all__ = [
    "NODE_KINDS",
    "SIMPLIFIER_NAME",
    "CircuitAttentionSimplification",
    "IllusionCircuitConfig",
    "IllusionCircuitForCausalLM",
    "NodeMask",
    "build_circuit",
    "circuit_size",
    "node_edges",
]

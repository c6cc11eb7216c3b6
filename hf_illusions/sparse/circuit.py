"""Circuit pruning by learned node masks (Gao et al. 2025, weight-sparse transformers' circuits).

Gao et al. explain a behaviour by the smallest set of model *nodes* that still does the task to
a target loss, with every other node mean-ablated; on a weight-sparse model the kept nodes are
joined by few weights, so the circuit is small in edges too. Here that circuit is one more
simplified model: :class:`IllusionCircuitForCausalLM` is a proxy (it saves, loads with
``AutoModelForCausalLM`` and runs through :func:`~hf_illusions.evaluation.evaluate_models`) whose
fitted state is a binary mask and a mean per node, so the paper's question — is a simplified
model faithful off distribution? — can be asked of circuits as well.

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

Fitting (:class:`SparseCircuitPruner`):

* One logit ``l`` per node. The forward pass always uses the **hard** mask ``l > 0``; the backward
  pass uses ``sigmoid(l)`` as a surrogate (straight-through estimator): the gate is
  ``hard + (σ(l) − stop_grad(σ(l)))``, whose value is exactly 0 or 1. The objective is next-token
  cross-entropy over every real position of the fitting data plus ``λ · mean(σ(l))`` (the
  expected fraction of kept nodes). Every step is full-batch, so its forward pass *is* an exact
  evaluation of the current hard circuit on the fitting data.
* λ is not fixed but steered to the target (a multiplicative dual-ascent controller): after
  each step ``λ ← λ·e^{+rate}`` if the hard circuit met ``target_loss`` and ``λ·e^{−rate}`` if not,
  so the circuit shrinks until it crosses the target and then hovers at that boundary. Every
  step's hard circuit that meets the target is a candidate; the smallest one (lowest loss on a
  tie) is kept.
* Then nodes are ranked by their final logits and the smallest top-``k`` circuit meeting the
  target is searched by bisection over ``k`` (about log₂(nodes) forward passes), as Gao et al.
  do; it replaces the candidate when smaller.
* Only evaluated circuits are ever returned, and the all-kept circuit (the model) meets the
  target by the up-front check, so the result's hard-mask loss on the fitting data is always
  ``≤ target_loss``. It is the smallest circuit *found*, not a proven minimum.

Everything is deterministic given ``seed`` (which draws a tiny jitter of the initial logits to
break ties between interchangeable nodes): full batches in a fixed order, no sampling.

Size (:func:`circuit_size`): nodes kept per kind, and **edges**: the nonzero weight entries that
connect a kept node with what it reads or writes — a q/k channel's nonzero ``q_proj``/``k_proj``
row entries (it writes only into attention scores, which carry no weights), a v channel's
nonzero ``v_proj`` row plus ``o_proj`` column entries, an MLP neuron's nonzero ``up_proj`` row plus
``down_proj`` column entries. Counted over all nodes, the edges are the nonzero entries of the
block matrices, so for a dense model they are the parameter count of those matrices and for a
weight-sparse one (``train --weight_sparsity``) a small fraction of it.

Cost: two forward passes (means, full loss), ``steps`` forward+backward passes over the fitting
data (gradients only for the logits), and ~log₂(nodes) forward passes for the bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from hf_illusions.data.batching import pad_batch, token_budget_batches
from hf_illusions.errors import SimplifierError
from hf_illusions.modeling import IllusionForCausalLM
from hf_illusions.simplify.base import AttentionSimplification, fitting_sequences
from hf_illusions.simplify.proxy import _NOT_COPIED, IllusionProxyConfig, IllusionProxyForCausalLM
from hf_illusions.simplify.simplifier import Simplifier

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


def _loss_sum(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the real targets of a right-padded batch."""
    logits = model(ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    targets = mask[:, 1:].bool()
    return nn.functional.cross_entropy(logits[targets].float(), ids[:, 1:][targets], reduction="sum")


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def fitting_batches(
    sequences: Sequence[Sequence[int]],
    device: torch.device,
    batch_size: int = 64,
    max_batch_tokens: int = 8192,
) -> tuple[Batches, int]:
    """Right-padded ``(input_ids, attention_mask)`` batches of ``sequences`` and their number of targets."""
    lengths = [len(s) for s in sequences]
    batches = []
    for idx in token_budget_batches(lengths, max_batch_tokens, batch_size):
        ids, mask = pad_batch([sequences[i] for i in idx])
        batches.append((ids.to(device), mask.to(device)))
    return batches, sum(n - 1 for n in lengths)


@torch.no_grad()
def next_token_loss(model: nn.Module, batches: Batches, n_targets: int) -> float:
    """Mean next-token cross-entropy (nats) over all real targets of ``batches``, in eval mode.

    The loss a :class:`SparseCircuitPruner` holds to ``target_loss``; computed with the same
    batches and summation order as during the fit, so the values agree exactly.
    """
    was_training = model.training
    model.eval()
    try:
        total = sum(float(_loss_sum(model, ids, mask)) for ids, mask in batches)
    finally:
        model.train(was_training)
    return total / n_targets


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


class SparseCircuitPruner(Simplifier):
    """Find the smallest set of nodes whose circuit (the rest mean-ablated) keeps loss ≤ ``target_loss``.

    See the module docstring for nodes, surrogate gradients and the search. ``fit`` returns an
    :class:`IllusionCircuitForCausalLM` in eval mode on the model's device.

    Args:
        target_loss: largest allowed next-token loss (nats per token) of the circuit on the
            fitting data; must be at least the full model's loss there.
        n_sequences: fit on the first ``n_sequences`` rows of the data.
        steps: optimization steps (each one forward and backward pass over the fitting data).
        lr: Adam learning rate of the node logits.
        seed: seed of the initial-logit jitter.
        init_logit: initial logit of every node (> 0: the fit starts from the full model).
        penalty_init: initial λ, in nats per fraction of nodes.
        penalty_rate: λ is multiplied by ``e^{±penalty_rate}`` after each step.
        batch_size, max_batch_tokens: batching of the fitting data (fixed for the whole fit).
    """

    name: ClassVar[str] = SIMPLIFIER_NAME
    needs_data: ClassVar[bool] = True
    requires_own_model: ClassVar[str | None] = (
        "it needs per-channel query/key/value node masks and an MLP-neuron seam "
        "(`neuron_simplification`), which other architectures do not have"
    )

    def __init__(
        self,
        target_loss: float,
        n_sequences: int = 256,
        steps: int = 100,
        lr: float = 0.1,
        seed: int = 0,
        init_logit: float = 0.5,
        penalty_init: float = 0.01,
        penalty_rate: float = 0.1,
        batch_size: int = 64,
        max_batch_tokens: int = 2048,
    ):
        super().__init__(
            n_sequences=n_sequences, batch_size=batch_size, max_batch_tokens=max_batch_tokens, seed=seed
        )
        for arg, value in (
            ("target_loss", target_loss),
            ("lr", lr),
            ("init_logit", init_logit),
            ("penalty_init", penalty_init),
            ("penalty_rate", penalty_rate),
        ):
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise SimplifierError(f"{arg} must be a finite number > 0, got {value!r}")
        if not _is_number(steps) or int(steps) != steps or steps < 1:
            raise SimplifierError(f"steps must be an integer >= 1, got {steps!r}")
        self.target_loss = float(target_loss)
        self.steps = int(steps)
        self.lr = float(lr)
        self.init_logit = float(init_logit)
        self.penalty_init = float(penalty_init)
        self.penalty_rate = float(penalty_rate)

    def settings(self) -> dict[str, Any]:
        return {
            "target_loss": self.target_loss,
            "n_sequences": self.n_sequences,
            "steps": self.steps,
            "lr": self.lr,
            "seed": self.seed,
            "init_logit": self.init_logit,
            "penalty_init": self.penalty_init,
            "penalty_rate": self.penalty_rate,
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
        }

    def model_loss(self, model: IllusionForCausalLM, data: Any) -> float:
        """The full model's next-token loss on this pruner's fitting data, measured as ``fit`` will."""
        sequences = fitting_sequences(data, self.n_sequences, model.config.n_positions)
        batches, n_targets = fitting_batches(
            sequences, next(model.parameters()).device, self.batch_size, self.max_batch_tokens
        )
        if n_targets == 0:
            raise SimplifierError("data has only one-token sequences: there is no next token to score")
        return next_token_loss(model, batches, n_targets)

    @classmethod
    def with_slack(
        cls, model: IllusionForCausalLM, data: Any, slack: float, **settings: Any
    ) -> SparseCircuitPruner:
        """A pruner whose ``target_loss`` is the model's own loss on ``data`` plus ``slack`` nats.

        Targets read best relative to the model ("at most 0.05 nats worse than the model"); the
        absolute target is stored (rounded to 1e-6, upwards) so the fit is reproducible from settings.
        """
        if not (_is_number(slack) and math.isfinite(slack) and slack > 0):
            raise SimplifierError(f"slack must be a finite number > 0 (nats), got {slack!r}")
        probe = cls(target_loss=1.0, **settings)
        target = math.ceil((probe.model_loss(model, data) + slack) * 1e6) / 1e6
        return cls(target_loss=target, **settings)

    def fit(self, model: IllusionForCausalLM, data: Any = None) -> IllusionCircuitForCausalLM:
        """Learn the node masks on ``data`` (see the class and module docstrings)."""
        self.resolve(model)  # an unmodified IllusionForCausalLM
        sequences = fitting_sequences(data, self.n_sequences, model.config.n_positions)
        device = next(model.parameters()).device
        batches, n_targets = fitting_batches(sequences, device, self.batch_size, self.max_batch_tokens)
        if n_targets == 0:
            raise SimplifierError("data has only one-token sequences: there is no next token to fit on")
        circuit = build_circuit(model, self.settings())
        nodes = circuit.node_masks()
        parameters = list(circuit.parameters())
        for p in parameters:
            p.requires_grad_(False)
        try:
            _fit_means(circuit, nodes, batches)
            full_loss = next_token_loss(circuit, batches, n_targets)
            if full_loss > self.target_loss:
                raise SimplifierError(
                    f"target_loss={self.target_loss:.6g} is below the full model's loss {full_loss:.6g} "
                    f"on the {len(sequences)} fitting sequences: no circuit can meet it; choose "
                    f"target_loss >= {full_loss:.6g}"
                )
            best = self._search(circuit, nodes, batches, n_targets, full_loss)
        finally:
            for node in nodes.values():
                node.gate, node.tap = None, None
            for p in parameters:
                p.requires_grad_(True)
        _set_masks(nodes, best)
        circuit.config.circuit_loss = next_token_loss(circuit, batches, n_targets)
        circuit.config.full_loss = full_loss
        circuit.config.circuit_size = circuit_size(circuit)
        return circuit.eval()

    def _search(
        self,
        circuit: IllusionCircuitForCausalLM,
        nodes: dict[tuple[int, str], NodeMask],
        batches: Batches,
        n_targets: int,
        full_loss: float,
    ) -> torch.Tensor:
        """The smallest evaluated hard mask (flat, bool) whose loss is ≤ target_loss."""
        n_nodes = sum(node.mask.numel() for node in nodes.values())
        device = next(circuit.parameters()).device
        generator = torch.Generator().manual_seed(self.seed)
        jitter = 1e-2 * self.init_logit * torch.randn(n_nodes, generator=generator, dtype=torch.float64)
        logits = (self.init_logit + jitter).float().to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=self.lr)
        best_mask, best_kept, best_loss = torch.ones(n_nodes, dtype=torch.bool), n_nodes, full_loss
        penalty = self.penalty_init

        def consider(mask: torch.Tensor, loss: float) -> bool:
            nonlocal best_mask, best_kept, best_loss
            kept = int(mask.sum())
            feasible = loss <= self.target_loss
            if feasible and (kept, loss) < (best_kept, best_loss):
                best_mask, best_kept, best_loss = mask.cpu().clone(), kept, loss
            return feasible

        circuit.eval()
        for _ in range(self.steps):
            optimizer.zero_grad(set_to_none=True)
            hard = logits.detach() > 0
            total = 0.0
            for ids, mask in batches:  # full batch: the forward pass evaluates the hard circuit exactly
                surrogate = torch.sigmoid(logits)
                # value exactly `hard` (s − s is exactly 0), gradient that of the sigmoid surrogate
                _set_gates(nodes, hard.to(surrogate.dtype) + (surrogate - surrogate.detach()))
                loss_sum = _loss_sum(circuit, ids, mask)
                (loss_sum / n_targets).backward()
                total += float(loss_sum.detach())
            feasible = consider(hard, total / n_targets)
            (penalty * torch.sigmoid(logits).mean()).backward()
            optimizer.step()
            penalty *= math.exp(self.penalty_rate if feasible else -self.penalty_rate)
        _set_gates(nodes, None)

        # bisection over k for the smallest top-k circuit (by final logit) that meets the target
        order = torch.sort(logits.detach().cpu(), descending=True, stable=True).indices
        low, high = 0, best_kept
        while low < high:
            k = (low + high) // 2
            candidate = torch.zeros(n_nodes, dtype=torch.bool)
            candidate[order[:k]] = True
            _set_masks(nodes, candidate)
            if consider(candidate, next_token_loss(circuit, batches, n_targets)):
                high = k
            else:
                low = k + 1
        return best_mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool | str)


def _fit_means(
    circuit: IllusionCircuitForCausalLM, nodes: dict[tuple[int, str], NodeMask], batches: Batches
) -> None:
    """Set each node's mean over the real positions of ``batches``, from the all-kept circuit (the model)."""
    for node in nodes.values():
        node.mask.fill_(True)
        node.tap = []
    sums = {key: torch.zeros(node.mean.shape, dtype=torch.float64) for key, node in nodes.items()}
    count = 0
    with torch.no_grad():
        for ids, mask in batches:
            circuit(ids, attention_mask=mask, use_cache=False)
            real = mask.bool()
            count += int(real.sum())
            for key, node in nodes.items():
                (values,) = node.tap
                sums[key] += values[real].to(torch.float64).sum(dim=0).cpu()
                node.tap.clear()
    for key, node in nodes.items():
        node.tap = None
        node.mean.copy_(sums[key] / count)


def _split(nodes: dict[tuple[int, str], NodeMask], flat: torch.Tensor) -> list[torch.Tensor]:
    sizes = [node.mask.numel() for node in nodes.values()]
    return [part.view(node.mask.shape) for part, node in zip(flat.split(sizes), nodes.values(), strict=True)]


def _set_gates(nodes: dict[tuple[int, str], NodeMask], gates: torch.Tensor | None) -> None:
    parts = _split(nodes, gates) if gates is not None else [None] * len(nodes)
    for node, gate in zip(nodes.values(), parts, strict=True):
        node.gate = gate


def _set_masks(nodes: dict[tuple[int, str], NodeMask], flat: torch.Tensor) -> None:
    for node, part in zip(nodes.values(), _split(nodes, flat), strict=True):
        node.mask.copy_(part)


__all__ = [
    "NODE_KINDS",
    "CircuitAttentionSimplification",
    "IllusionCircuitConfig",
    "IllusionCircuitForCausalLM",
    "NodeMask",
    "SparseCircuitPruner",
    "build_circuit",
    "circuit_size",
    "fitting_batches",
    "next_token_loss",
    "node_edges",
]

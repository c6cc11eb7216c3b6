"""Circuit pruning by learned node masks (Gao et al. 2025, weight-sparse transformers' circuits).

Gao et al. explain a behaviour by the smallest set of model *nodes* that still does the task to
a target loss, with every other node mean-ablated; on a weight-sparse model the kept nodes are
joined by few weights, so the circuit is small in edges too. Here that circuit is one more
simplified model: :class:`IllusionCircuitForCausalLM` is a proxy (it saves, loads with
``AutoModelForCausalLM`` and runs through :func:`~hf_illusions.evaluation.evaluate_models`) whose
fitted state is a binary mask and a mean per node, so the paper's question — is a simplified
model faithful off distribution? — can be asked of circuits as well.

The circuit's nodes (attention q/k/v channels and MLP neurons), how a pruned node is
mean-ablated, and how a circuit's size is counted are described with the model classes, in
:mod:`hf_illusions.sparse.circuit_model`; this module finds the circuit.

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
from hf_illusions.simplify.base import fitting_sequences
from hf_illusions.simplify.simplifier import Simplifier
from hf_illusions.sparse.circuit_model import (
    NODE_KINDS,
    SIMPLIFIER_NAME,
    CircuitAttentionSimplification,
    IllusionCircuitConfig,
    IllusionCircuitForCausalLM,
    NodeMask,
    build_circuit,
    circuit_size,
    node_edges,
)


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


class SparseCircuitPruner(Simplifier):
    """Find the smallest set of nodes whose circuit (the rest mean-ablated) keeps loss ≤ ``target_loss``.

    See this module's docstring for the surrogate gradients and the search, and
    :mod:`~hf_illusions.sparse.circuit_model`'s for the nodes. ``fit`` returns an
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

"""The interaction basis of the residual stream (Bushnaq et al. 2024, arXiv 2405.10927).

Bushnaq et al. ("Using Degeneracy in the Loss Landscape for Mechanistic Interpretability",
§ "The Interaction Basis") represent a layer's activations in a basis that is invariant to
invertible linear reparameterizations and orders directions by how much the next layer's
(interaction-basis) coordinates depend on them. The basis is computed backwards from the output,
one *node layer* at a time. Here the node layers are the residual stream at the input of each
block ``ℓ`` (``hidden_states[ℓ]``) and, last, the final residual stream before the final norm.
For node layer ``ℓ`` with activations ``x`` (all non-pad positions of the fitting data):

1. Center, ``G = E[(x − μ)(x − μ)ᵀ] = U D Uᵀ``; drop eigenvalues below ``rtol · max(D)``
   (directions the data does not use) and whiten: ``z = D^{-1/2} Uᵀ (x − μ)``.
2. ``f`` = the next node layer's interaction-basis coordinates as a function of ``x`` (through
   block ``ℓ``; for the final node, the output logits centered over the vocabulary, so the
   softmax-invariant shift of all logits counts for nothing). ``M = E[Jᵀ J]`` with
   ``J = ∂f/∂z``, summed over output positions and coordinates and averaged over input
   positions; ``M = V Σ Vᵀ``, ``Σ`` descending.
3. Coordinates ``c = Σ^{1/2} Vᵀ D^{-1/2} Uᵀ (x − μ)`` (the paper's ``C``: the two rotations
   with their scalings); basis vectors (columns) ``U D^{1/2} V``, with ``Σ`` the interaction
   strength of each direction.

Choices and approximations:

* ``J`` is the full Jacobian of every output position with respect to the input position
  (attention carries a direction at position ``t`` to later positions' outputs), not only the
  same-position block: each input position is one sample of ``M``. It is estimated with
  ``n_random_projections`` random ±1 vectors ``r`` over (output position, coordinate):
  ``E_r[(rᵀJ)ᵀ(rᵀJ)] = JᵀJ`` exactly, so the estimate is unbiased; ``None`` computes it exactly
  (one vector-Jacobian product per output position and coordinate — for tests and tiny models).
* Directions dropped in step 1 get no interaction coordinate; they are appended last (strength
  0) so that the basis is complete and keeping all ``d_model`` directions is the identity.
* The basis of a layer is fitted on the original model; simplifying several layers at once
  composes the approximations.

The proxy (:class:`InteractionBasisSimplification`) keeps the top-``k`` coordinates at the input
of each chosen block and mean-ablates the rest: the training mean of every coordinate is 0 (the
activations are centered), so ``x' = μ + B_k c_k``. The scaling ``Σ^{1/2}`` cancels in this
projection, so the stored ``basis``/``dual`` are ``U D^{1/2} V`` and ``Vᵀ D^{-1/2} Uᵀ``.

Cost: one no-grad forward pass over the fitting data, whose residual streams at every node
layer are kept in memory (``padded tokens × d_model × (n_layer + 1)`` floats); then, for each
node layer from the last down to the lowest chosen one, one forward and ``n_random_projections``
backward passes of a *single* block (the final node: norm + head) per batch — about
``n_random_projections`` full-model backward passes in total; plus two ``d_model × d_model``
float64 eigendecompositions per node layer.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from transformers.masking_utils import create_causal_mask

from hf_illusions.data.batching import pad_batch, token_budget_batches
from hf_illusions.errors import SimplifierError
from hf_illusions.modeling import IllusionForCausalLM
from hf_illusions.simplify.base import ResidualSimplification, fitting_sequences
from hf_illusions.simplify.simplifier import Simplifier

if TYPE_CHECKING:
    from hf_illusions.simplify.proxy import IllusionProxyForCausalLM


@dataclass
class NodeBasis:
    """The interaction basis of one node layer (all float64, ``d = d_model``, ``r`` = Gram rank).

    Attributes:
        mean: ``(d,)`` training mean of the activations.
        transform: ``(r, d)`` coordinate map ``Σ^{1/2} Vᵀ D^{-1/2} Uᵀ`` (applied to ``x − mean``).
        basis: ``(d, d)`` directions as columns, ``[U D^{1/2} V, U_dropped]``, strongest first.
        dual: ``(d, d)`` inverse of ``basis``: row ``i`` gives the unscaled coordinate ``i``.
        strengths: ``(d,)`` interaction strengths ``Σ`` (0 for the dropped directions).
    """

    mean: torch.Tensor
    transform: torch.Tensor
    basis: torch.Tensor
    dual: torch.Tensor
    strengths: torch.Tensor


def whitening(activations: torch.Tensor, rtol: float = 1e-8) -> tuple[torch.Tensor, ...]:
    """Mean, kept eigenvectors ``U`` ``(d, r)``, eigenvalues ``D`` ``(r,)`` and dropped eigenvectors.

    Eigendecomposition of the centered Gram matrix ``(x − μ)ᵀ(x − μ) / n`` in float64, keeping
    eigenvalues above ``rtol`` times the largest (step 1 of the interaction basis).
    """
    x = activations.to(torch.float64)
    mean = x.mean(dim=0)
    centered = x - mean
    eigenvalues, eigenvectors = torch.linalg.eigh(centered.T @ centered / len(x))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # descending
    keep = eigenvalues > rtol * eigenvalues[0].clamp_min(torch.finfo(torch.float64).tiny)
    return mean, eigenvectors[:, keep], eigenvalues[keep], eigenvectors[:, ~keep]


def interaction_basis(
    activations: torch.Tensor, jacobian_gram: torch.Tensor, rtol: float = 1e-8
) -> NodeBasis:
    """The interaction basis from activations ``(n, d)`` and ``E[Jₓᵀ Jₓ]`` ``(d, d)``.

    ``jacobian_gram`` is taken with respect to the raw activations; with ``x = μ + U D^{1/2} z``
    the Jacobian with respect to the whitened ``z`` is ``Jₓ U D^{1/2}``, so
    ``M = D^{1/2} Uᵀ E[Jₓᵀ Jₓ] U D^{1/2}`` (step 2).
    """
    mean, u, d, dropped = whitening(activations, rtol)
    scale = d.sqrt()
    whitened_to_x = u * scale  # U D^{1/2}
    m = whitened_to_x.T @ jacobian_gram.to(torch.float64) @ whitened_to_x
    sigma, v = torch.linalg.eigh((m + m.T) / 2)
    sigma, v = sigma.flip(0).clamp_min(0), v.flip(1)
    dual_kept = v.T @ (u / scale).T  # Vᵀ D^{-1/2} Uᵀ
    return NodeBasis(
        mean=mean,
        transform=sigma.sqrt()[:, None] * dual_kept,
        basis=torch.cat([whitened_to_x @ v, dropped], dim=1),
        dual=torch.cat([dual_kept, dropped.T], dim=0),
        strengths=torch.cat([sigma, sigma.new_zeros(dropped.shape[1])]),
    )


def jacobian_gram(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mask: torch.Tensor,
    n_random_projections: int | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """``Σ_{input positions} Jᵀ J`` ``(d, d)`` (float64) of ``fn``: ``(batch, seq, d) → (batch, seq, out)``.

    ``J`` stacks the derivatives of every non-pad output position and coordinate with respect to
    one input position; sequences in the batch must not interact (as in a transformer). Random
    ±1 projections give an unbiased estimate; ``n_random_projections=None`` is exact.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
    real = mask.bool()
    weight = real[..., None].to(out.dtype)
    if n_random_projections is None:
        probes = []
        for t in range(out.shape[1]):
            for o in range(out.shape[2]):
                probe = torch.zeros_like(out)
                probe[:, t, o] = 1
                probes.append(probe)
    else:
        probes = [
            torch.randint(0, 2, out.shape, generator=generator).to(out) * 2 - 1
            for _ in range(n_random_projections)
        ]
    gram = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float64)
    for i, probe in enumerate(probes):
        (grad,) = torch.autograd.grad(out, x, probe * weight, retain_graph=i < len(probes) - 1)
        g = grad[real].to(torch.float64)
        gram += (g.T @ g).cpu()
    return gram / (1 if n_random_projections is None else n_random_projections)


def fit_interaction_bases(
    model: IllusionForCausalLM,
    sequences: Sequence[Sequence[int]],
    lowest_layer: int,
    n_random_projections: int | None = 8,
    rtol: float = 1e-8,
    seed: int = 0,
    batch_size: int = 64,
    max_batch_tokens: int = 8192,
) -> dict[int, NodeBasis]:
    """Interaction bases of node layers ``lowest_layer … n_layer`` (``n_layer`` = final residual).

    Computed backwards from the output on ``sequences``; see the module docstring for the steps,
    approximations and cost. ``model`` is put in eval mode for the fit and restored after.
    """
    config = model.config
    n_layer = config.n_layer
    device = next(model.parameters()).device
    lengths = [len(s) for s in sequences]
    batches = []  # (real-token mask, causal mask, residual streams at every node layer)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in token_budget_batches(lengths, max_batch_tokens, batch_size):
                ids, mask = pad_batch([sequences[i] for i in idx])
                ids, mask = ids.to(device), mask.to(device)
                out = model(ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
                causal = create_causal_mask(
                    config=config,
                    inputs_embeds=out.hidden_states[0],
                    attention_mask=mask,
                    cache=None,
                    position_ids=torch.arange(ids.shape[1], device=device)[None],
                )
                streams = final_residual_streams(model, out.hidden_states, causal)
                batches.append((mask.bool(), causal, streams))
        generator = torch.Generator().manual_seed(seed)
        n_tokens = sum(lengths)
        bases: dict[int, NodeBasis] = {}
        for node in range(n_layer, lowest_layer - 1, -1):
            fn = _next_coordinates(model, node, bases.get(node + 1))
            gram = torch.zeros(config.d_model, config.d_model, dtype=torch.float64)
            for real, causal, streams in batches:
                gram += jacobian_gram(
                    functools.partial(fn, causal=causal),
                    streams[node],
                    real,
                    n_random_projections,
                    generator,
                )
            activations = torch.cat([streams[node][real].cpu() for real, _, streams in batches])
            bases[node] = interaction_basis(activations, gram / n_tokens, rtol)
    finally:
        model.train(was_training)
    return bases


def final_residual_streams(
    model: IllusionForCausalLM, hidden_states: Sequence[torch.Tensor], causal: Any
) -> list[torch.Tensor]:
    """The node layers' activations: the input of every block, then the final residual *before* the norm.

    transformers' output capturing ties the last entry of ``hidden_states`` to the model's output,
    which is already through the final LayerNorm; fitting on it would apply that norm twice (once in
    the data, once in :func:`_next_coordinates`). The pre-norm final stream is recomputed from the
    last block's input instead: one extra block forward per batch, no hooks.
    """
    n_layer = model.config.n_layer
    inputs = list(hidden_states[:n_layer])
    return [*inputs, model.model.layers[n_layer - 1](inputs[-1], attention_mask=causal)]


def _next_coordinates(
    model: IllusionForCausalLM, node: int, next_basis: NodeBasis | None
) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``f`` of node layer ``node``: next node layer's coordinates, or centered logits at the end."""
    if next_basis is None:

        def centered_logits(x: torch.Tensor, causal: Any) -> torch.Tensor:
            logits = model.lm_head(model.model.norm(x))
            return logits - logits.mean(dim=-1, keepdim=True)

        return centered_logits
    parameter = next(model.parameters())
    mean = next_basis.mean.to(parameter)
    transform = next_basis.transform.to(parameter)
    block = model.model.layers[node]

    def coordinates(x: torch.Tensor, causal: Any) -> torch.Tensor:
        return (block(x, attention_mask=causal) - mean) @ transform.T

    return coordinates


class InteractionBasisSimplification(ResidualSimplification):
    """``x ↦ μ + B_k (D_k (x − μ))``: keep the top-``k`` interaction directions, mean-ablate the rest.

    Buffers: ``mean`` ``(d_model,)``, ``basis`` ``(d_model, k)``, ``dual`` ``(k, d_model)``
    (rows of the inverse basis), ``strengths`` ``(k,)`` (the interaction strengths ``Σ``, kept
    for inspection).
    """

    name = "interaction_basis"

    def __init__(self, config: Any, layer_idx: int):
        super().__init__(config, layer_idx)
        k = int(self.setting("k"))
        self.register_buffer("mean", torch.zeros(config.d_model))
        self.register_buffer("basis", torch.zeros(config.d_model, k))
        self.register_buffer("dual", torch.zeros(k, config.d_model))
        self.register_buffer("strengths", torch.zeros(k))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mean + (hidden_states - self.mean) @ self.dual.T @ self.basis.T


#: model → {fit key: bases}; weak keys, so a model's cached bases go away with the model
_BASES_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class InteractionBasisSimplifier(Simplifier):
    """Keep the top-``k`` interaction-basis directions of the residual stream at chosen blocks.

    Args:
        k: directions kept, 1…d_model (``d_model`` reproduces the model).
        layers: blocks whose input residual stream is simplified (default: all).
        n_random_projections: random ±1 projections per batch estimating ``E[JᵀJ]``; ``None``
            computes it exactly (one backward pass per output position and coordinate).
        rtol: relative eigenvalue threshold below which Gram directions are dropped.
        **kwargs: n_sequences, batch_size, max_batch_tokens, seed (see :class:`Simplifier`).
    """

    name: ClassVar[str] = "interaction_basis"
    requires_own_model: ClassVar[str | None] = (
        "it needs a residual-stream seam on every decoder layer (`residual_simplification`) and our "
        "blocks' layout for the Jacobians, which other architectures do not have"
    )

    def __init__(
        self,
        k: int,
        layers: Sequence[int] | None = None,
        n_random_projections: int | None = 8,
        rtol: float = 1e-8,
        **kwargs: Any,
    ):
        super().__init__(layers=layers, **kwargs)
        if int(k) < 1:
            raise SimplifierError(f"k must be between 1 and d_model, got {k}")
        if n_random_projections is not None and int(n_random_projections) < 1:
            raise SimplifierError(f"n_random_projections must be >= 1 or None, got {n_random_projections}")
        self.k = int(k)
        self.n_random_projections = None if n_random_projections is None else int(n_random_projections)
        self.rtol = float(rtol)

    def settings(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "n_random_projections": self.n_random_projections,
            "rtol": self.rtol,
            **super().settings(),
        }

    def check_model(self, config: Any) -> None:
        if self.k > config.d_model:
            raise SimplifierError(f"k must be between 1 and d_model={config.d_model}, got {self.k}")

    def fit(self, model: IllusionForCausalLM, data: Any = None) -> IllusionProxyForCausalLM:
        """Fit the bases on ``data`` and return the proxy (eval mode, on ``model``'s device)."""
        from hf_illusions.simplify.proxy import build_proxy

        layers = sorted(self.resolve(model))
        sequences = fitting_sequences(data, self.n_sequences, model.config.n_positions)
        # The bases do not depend on k: a sweep over k on the same model and data computes them once.
        key = (
            tuple((id(p), p._version) for p in model.parameters()),  # any in-place update changes it
            hash(tuple(map(tuple, sequences))),
            layers[0],
            self.n_random_projections,
            self.rtol,
            self.seed,
            self.batch_size,
            self.max_batch_tokens,
        )
        cache = _BASES_CACHE.setdefault(model, {})
        if key not in cache:
            cache.clear()  # one entry per model: a sweep needs only the latest
            cache[key] = fit_interaction_bases(
                model,
                sequences,
                layers[0],
                self.n_random_projections,
                self.rtol,
                self.seed,
                self.batch_size,
                self.max_batch_tokens,
            )
        bases = cache[key]
        fitted = {}
        for layer in layers:
            node = bases[layer]
            prefix = f"model.layers.{layer}.residual_simplification."
            fitted[prefix + "mean"] = node.mean
            fitted[prefix + "basis"] = node.basis[:, : self.k].contiguous()
            fitted[prefix + "dual"] = node.dual[: self.k].contiguous()
            fitted[prefix + "strengths"] = node.strengths[: self.k]
        dtype = next(model.parameters()).dtype
        fitted = {key: value.to(dtype) for key, value in fitted.items()}
        return build_proxy(model, self.name, {}, self.settings(), fitted, residual_layers=layers)

    def __repr__(self) -> str:
        args = {**self.settings(), "layers": self.layers}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


__all__ = [
    "InteractionBasisSimplification",
    "InteractionBasisSimplifier",
    "NodeBasis",
    "fit_interaction_bases",
    "interaction_basis",
    "jacobian_gram",
    "whitening",
]

"""Weight-sparse models and their pruned circuits (Gao et al. 2025), as simplifications."""

from hf_illusions.sparse.circuit import (
    IllusionCircuitConfig,
    IllusionCircuitForCausalLM,
    SparseCircuitPruner,
    build_circuit,
    circuit_size,
    next_token_loss,
)
from hf_illusions.sparse.weights import (
    keep_fraction,
    sparse_matrices,
    sparsify_,
    sparsify_model_,
    weight_density,
)

__all__ = [
    "IllusionCircuitConfig",
    "IllusionCircuitForCausalLM",
    "SparseCircuitPruner",
    "build_circuit",
    "circuit_size",
    "keep_fraction",
    "next_token_loss",
    "sparse_matrices",
    "sparsify_",
    "sparsify_model_",
    "weight_density",
]

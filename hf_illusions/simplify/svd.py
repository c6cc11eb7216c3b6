"""Low-rank keys and queries: project each head's q and k onto their top principal directions.

Friedman et al. (2024, §3.1) fit, per head, the principal components of the queries and of the
keys on training data and let the proxy attend with ``q ↦ μ + (q − μ) V Vᵀ`` (and likewise k),
sweeping the rank ``r``; a head that "uses" few dimensions in distribution can still rely on the
discarded ones off distribution, which is the illusion the paper measures.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from hf_illusions.errors import SimplifierError
from hf_illusions.simplify.base import AttentionSimplification, Simplifier


def principal_directions(
    x: torch.Tensor, rank: int, center: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and top-``rank`` right singular vectors ``(d, rank)`` of ``x`` ``(n, d)``.

    Computed in float64 (the projection at full rank must be the identity to float precision)
    and returned in ``x``'s dtype. With ``center=False`` the mean is zero (uncentered SVD).
    """
    x64 = x.to(torch.float64)
    mean = x64.mean(dim=0) if center else torch.zeros(x.shape[1], dtype=torch.float64)
    centered = x64 - mean
    if centered.shape[0] > centered.shape[1]:
        # x = QR has the right singular vectors of R (d × d): same result, ~2× faster for tall x
        centered = torch.linalg.qr(centered, mode="r").R
    # full_matrices when n < d, so every rank up to d has directions (the extra ones span the null space)
    _, _, vh = torch.linalg.svd(centered, full_matrices=centered.shape[0] < centered.shape[1])
    return mean.to(x.dtype), vh[:rank].T.contiguous().to(x.dtype)


def project(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``mean + (x − mean) B Bᵀ`` per head.

    Shapes: ``x`` ``(batch, h, seq, d)``, ``mean`` ``(h, d)``, ``basis`` ``(h, d, r)``.
    """
    mean = mean[None, :, None, :]
    coordinates = torch.matmul(x - mean, basis[None])
    return mean + torch.matmul(coordinates, basis.transpose(1, 2)[None])


class SVDSimplification(AttentionSimplification):
    """Buffers ``{query,key}_mean`` ``(n_head, d_head)``, ``{query,key}_basis`` ``(n_head, d_head, rank)``."""

    name = "svd"

    def __init__(self, config: Any, layer_idx: int):
        super().__init__(config, layer_idx)
        rank = int(self.setting("rank"))
        for side in ("query", "key"):
            self.register_buffer(f"{side}_mean", torch.zeros(config.n_head, config.d_head))
            self.register_buffer(f"{side}_basis", torch.zeros(config.n_head, config.d_head, rank))

    def transform_query(self, query: torch.Tensor) -> torch.Tensor:
        return self.only_simplified(project(query, self.query_mean, self.query_basis), query)

    def transform_key(self, key: torch.Tensor) -> torch.Tensor:
        return self.only_simplified(project(key, self.key_mean, self.key_basis), key)


class SVDSimplifier(Simplifier):
    """Rank-``rank`` PCA of each simplified head's queries and keys (fitted separately).

    Args:
        rank: number of principal directions kept, 1…d_head (d_head reproduces the model).
        center: subtract the mean before the SVD and add it back after projecting (PCA);
            ``False`` projects through the origin.
        **kwargs: layers, heads, n_sequences, batch sizes, seed (see :class:`Simplifier`).
    """

    name: ClassVar[str] = "svd"

    def __init__(self, rank: int, center: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if int(rank) < 1:
            raise SimplifierError(f"rank must be between 1 and d_head, got {rank}")
        self.rank = int(rank)
        self.center = bool(center)

    def settings(self) -> dict[str, Any]:
        return {"rank": self.rank, "center": self.center, **super().settings()}

    def check_model(self, config: Any) -> None:
        if self.rank > config.d_head:
            raise SimplifierError(f"rank must be between 1 and d_head={config.d_head}, got {self.rank}")

    def fit_head(
        self, layer: int, head: int, queries: torch.Tensor, keys: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        query_mean, query_basis = principal_directions(queries, self.rank, self.center)
        key_mean, key_basis = principal_directions(keys, self.rank, self.center)
        return {
            "query_mean": query_mean,
            "query_basis": query_basis,
            "key_mean": key_mean,
            "key_basis": key_basis,
        }


__all__ = ["SVDSimplification", "SVDSimplifier", "principal_directions", "project"]

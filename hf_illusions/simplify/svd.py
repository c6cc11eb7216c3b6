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
from hf_illusions.simplify.base import AttentionSimplification
from hf_illusions.simplify.simplifier import Simplifier


class Moments:
    """Running mean and centered scatter of each head's vectors, float64 (Chan et al.'s pairwise update).

    Memory is ``heads × d_head²`` whatever the amount of fitting data; merging a batch's own
    mean and scatter (not raw sums) keeps the covariance accurate when the mean is large.
    """

    def __init__(self, n_heads: int, d_head: int):
        self.count = 0
        self.mean = torch.zeros(n_heads, d_head, dtype=torch.float64)
        self.scatter = torch.zeros(n_heads, d_head, d_head, dtype=torch.float64)

    def update(self, vectors: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Add ``vectors`` ``(n, heads, d_head)`` (``rows`` is unused: moments ignore order)."""
        n = vectors.shape[0]
        if n == 0:
            return
        x = vectors.to(torch.float64).transpose(0, 1)  # (heads, n, d)
        batch_mean = x.mean(dim=1)
        centered = x - batch_mean[:, None]
        batch_scatter = torch.matmul(centered.transpose(1, 2), centered)
        total = self.count + n
        delta = batch_mean - self.mean
        self.scatter += batch_scatter + delta[:, :, None] * delta[:, None, :] * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total

    def head(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(mean (d,), scatter (d, d), count)`` of one head."""
        return self.mean[index], self.scatter[index], self.count


def directions_from_moments(
    mean: torch.Tensor, scatter: torch.Tensor, count: int, rank: int, center: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and top-``rank`` principal directions ``(d, rank)`` (float64) from moments.

    The eigenvectors of the scatter matrix are the right singular vectors of the centered data
    (uncentered: of the data, from the second moment ``scatter + n·μμᵀ``). ``eigh`` returns a full
    orthonormal basis, so at full rank the projection is the identity to float precision, also
    with fewer vectors than dimensions. Each direction's sign is fixed (largest entry positive)
    so a fit is reproducible bit for bit.
    """
    mean = mean.to(torch.float64)
    matrix = scatter.to(torch.float64)
    if not center:
        matrix = matrix + count * torch.outer(mean, mean)
        mean = torch.zeros_like(mean)
    _, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    basis = vectors.flip(-1)[:, :rank]  # eigh sorts ascending
    largest = basis.abs().argmax(dim=0)
    signs = torch.sign(basis[largest, torch.arange(basis.shape[1])])
    return mean, (basis * torch.where(signs == 0, 1.0, signs)).contiguous()


def principal_directions(
    x: torch.Tensor, rank: int, center: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and top-``rank`` principal directions ``(d, rank)`` of ``x`` ``(n, d)`` (``x``'s dtype).

    Computed in float64 from :class:`Moments` (the projection at full rank must be the identity to
    float precision). With ``center=False`` the mean is zero (uncentered SVD).
    """
    moments = Moments(1, x.shape[1])
    moments.update(x[:, None])
    mean, basis = directions_from_moments(*moments.head(0), rank, center)
    return mean.to(x.dtype), basis.to(x.dtype)


def project(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``mean + (x − mean) B Bᵀ`` per head.

    Shapes: ``x`` ``(batch, h, seq, d)``, ``mean`` ``(h, d)``, ``basis`` ``(h, d, r)``.
    """
    mean = mean[None, :, None, :]
    coordinates = torch.matmul(x - mean, basis[None])
    return mean + torch.matmul(coordinates, basis.transpose(1, 2)[None])


class SVDSimplification(AttentionSimplification):
    """Buffers ``query_mean`` ``(n_head, d_head)``, ``query_basis`` ``(n_head, d_head, rank)``, and the
    same for keys with ``n_kv_head`` heads (grouped-query attention)."""

    name = "svd"

    def __init__(self, config: Any, layer_idx: int):
        super().__init__(config, layer_idx)
        rank = int(self.setting("rank"))
        for side, n in (("query", self.n_head), ("key", self.n_kv_head)):
            self.register_buffer(f"{side}_mean", torch.zeros(n, self.d_head))
            self.register_buffer(f"{side}_basis", torch.zeros(n, self.d_head, rank))

    def transform_query(self, query: torch.Tensor) -> torch.Tensor:
        return self.only_simplified(project(query, self.query_mean, self.query_basis), query)

    def transform_key(self, key: torch.Tensor) -> torch.Tensor:
        return self.only_simplified_keys(project(key, self.key_mean, self.key_basis), key)


class SVDSimplifier(Simplifier):
    """Rank-``rank`` PCA of each simplified head's queries and keys (fitted separately).

    Args:
        rank: number of principal directions kept, 1…d_head (d_head reproduces the model).
        center: subtract the mean before the SVD and add it back after projecting (PCA);
            ``False`` projects through the origin.
        **kwargs: layers, heads, n_sequences, batch sizes, seed (see :class:`Simplifier`).
    """

    name: ClassVar[str] = "svd"
    requires_own_model: ClassVar[str | None] = None

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

    def collector(self, layer: int, side: str, heads: list[int], d_head: int) -> Moments:
        return Moments(len(heads), d_head)

    def fit_collected(
        self, layer: int, side: str, collected: tuple[torch.Tensor, torch.Tensor, int]
    ) -> dict[str, torch.Tensor]:
        mean, basis = directions_from_moments(*collected, self.rank, self.center)
        return {"mean": mean.float(), "basis": basis.float()}


__all__ = [
    "Moments",
    "SVDSimplification",
    "SVDSimplifier",
    "directions_from_moments",
    "principal_directions",
    "project",
]

"""Clustered keys and queries: replace each head's q and k by its nearest k-means centroid.

Friedman et al. (2024, §3.1) cluster, per head, the queries and (separately) the keys of
training data and let the proxy attend with centroids only — a discrete "which kind of token is
this" summary that can look faithful in distribution and fail on new structures.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from hf_illusions.errors import SimplifierError
from hf_illusions.simplify.base import AttentionSimplification
from hf_illusions.simplify.simplifier import Simplifier


def fit_centroids(x: torch.Tensor, k: int, seed: int = 0, n_init: int | str = "auto") -> torch.Tensor:
    """``(k, d)`` centroids of ``x`` ``(n, d)``, in ``x``'s dtype.

    With ``k`` at least the number of distinct rows, the distinct rows themselves are the
    centroids (cycled to fill ``k``; duplicates never win the lowest-index tie-break), so the
    proxy reproduces every fitted vector exactly. Otherwise scikit-learn's ``KMeans`` (k-means++,
    ``random_state=seed``) in float64.
    """
    from sklearn.cluster import KMeans  # importing sklearn costs ~1 s; only fits need it

    data = x.detach().cpu().to(torch.float64).numpy()
    if k >= count_distinct_rows(data):
        distinct = np.unique(data, axis=0)
        centroids = distinct[np.arange(k) % len(distinct)]
    else:
        centroids = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(data).cluster_centers_
    return torch.from_numpy(centroids).to(x.dtype)


def count_distinct_rows(data: np.ndarray) -> int:
    """Number of distinct rows of a 2-D float array, as ``len(np.unique(data, axis=0))`` counts them.

    Hashing each row's bytes is ~8× faster than ``np.unique(axis=0)`` (a sort of 64-field
    records), which was ~40% of a k-means fit on 1,000 sequences; the rows themselves are only
    needed in the rare ``k >= n_distinct`` case. ``+ 0.0`` turns ``-0.0`` into ``0.0`` so the
    two count as one value, as numpy's comparison does.
    """
    rows = np.ascontiguousarray(data + 0.0)
    return len(set(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel().tolist()))


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid per head: ``x`` ``(batch, h, seq, d)``, ``centroids`` ``(h, k, d)``.

    Minimizes ``|c|² − 2 x·c`` (the squared distance minus the row-constant ``|x|²``): one
    matmul, ~30× faster than exact ``cdist`` on CPU, so the proxy costs about what the model
    does. Rounding can only swap centroids whose distances agree to ~1e-7 relative; ties in the
    computed score go to the lowest index. Returns ``(batch, h, seq)``.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)  # half precision would blur the scores
    x, centroids = x.to(dtype), centroids.to(dtype)
    scores = (centroids * centroids).sum(-1)[None, :, None, :] - 2 * torch.matmul(
        x, centroids.transpose(1, 2)[None]
    )
    return scores.argmin(dim=-1)


def snap(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Each vector of ``x`` ``(batch, h, seq, d)`` replaced by its nearest centroid."""
    index = nearest_centroid(x, centroids)  # (batch, h, seq)
    heads = torch.arange(x.shape[1], device=x.device)[None, :, None]
    return centroids[heads, index].to(x.dtype)


class Reservoir:
    """A seeded, bounded uniform sample of the fitting vectors (reservoir sampling, Vitter's algorithm R).

    Holds at most ``capacity`` vectors of every head at the same token positions. While the data
    has no more than ``capacity`` vectors it keeps them all, and :meth:`head` returns them in the
    fitting data's sequence order — exactly what fitting on all vectors sees. Beyond that each
    vector is kept with probability ``capacity / seen``; the draws depend only on ``seed`` and the
    order of the pass, so a fit is reproducible.
    """

    def __init__(self, n_heads: int, d_head: int, capacity: int, seed: int):
        self.capacity = capacity
        self.seen = 0
        self.vectors = torch.empty(0, n_heads, d_head)
        self.rows = torch.empty(0, dtype=torch.long)
        self.rng = np.random.default_rng(seed)

    def update(self, vectors: torch.Tensor, rows: torch.Tensor) -> None:
        free = max(0, min(self.capacity - len(self.rows), len(rows)))
        if free:
            self.vectors = torch.cat([self.vectors, vectors[:free]])
            self.rows = torch.cat([self.rows, rows[:free]])
        rest = len(rows) - free
        if rest > 0:
            # item t (0-based, over the whole stream) replaces slot j ~ U{0..t} when j < capacity
            positions = np.arange(self.seen + free, self.seen + len(rows))
            slots = np.floor(self.rng.random(rest) * (positions + 1)).astype(np.int64)
            keep = slots < self.capacity
            # of several items drawing the same slot in this batch, the last one wins (as in sequence)
            chosen, last = np.unique(slots[keep][::-1], return_index=True)
            source = free + np.flatnonzero(keep)[::-1][last]
            self.vectors[torch.from_numpy(chosen)] = vectors[torch.from_numpy(source)]
            self.rows[torch.from_numpy(chosen)] = rows[torch.from_numpy(source)]
        self.seen += len(rows)

    def head(self, index: int) -> torch.Tensor:
        """The sampled vectors ``(n, d_head)`` of one head, in sequence order."""
        return self.vectors[torch.argsort(self.rows), index]


class KMeansSimplification(AttentionSimplification):
    """Buffers ``query_centroids`` ``(n_head, k, d_head)``, ``key_centroids`` ``(n_kv_head, k, d_head)``."""

    name = "kmeans"

    def __init__(self, config: Any, layer_idx: int):
        super().__init__(config, layer_idx)
        k = int(self.setting("k"))
        for side, n in (("query", self.n_head), ("key", self.n_kv_head)):
            self.register_buffer(f"{side}_centroids", torch.zeros(n, k, self.d_head))

    def transform_query(self, query: torch.Tensor) -> torch.Tensor:
        return self.only_simplified(snap(query, self.query_centroids), query)

    def transform_key(self, key: torch.Tensor) -> torch.Tensor:
        return self.only_simplified_keys(snap(key, self.key_centroids), key)


class KMeansSimplifier(Simplifier):
    """``k`` centroids for each simplified head's queries and, separately, its keys.

    Args:
        k: clusters per head and side; at most the number of fitted vectors (non-pad tokens).
        n_init: k-means restarts (scikit-learn's ``n_init``).
        seed: ``random_state`` of the k-means initialization (and seed of the reservoir sample).
        max_vectors: most vectors per head and side kept for the fit (a seeded reservoir sample of
            the fitting data's queries/keys; memory stays bounded). Data with fewer vectors is
            used whole.
        **kwargs: layers, heads, n_sequences, batch sizes (see :class:`Simplifier`).
    """

    name: ClassVar[str] = "kmeans"
    requires_own_model: ClassVar[str | None] = None

    def __init__(
        self, k: int, seed: int = 0, n_init: int | str = "auto", max_vectors: int = 100_000, **kwargs: Any
    ):
        super().__init__(seed=seed, **kwargs)
        if int(k) < 1:
            raise SimplifierError(f"k must be >= 1, got {k}")
        if int(max_vectors) < 1:
            raise SimplifierError(f"max_vectors must be >= 1, got {max_vectors}")
        self.k = int(k)
        self.n_init = n_init
        self.max_vectors = int(max_vectors)

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "n_init": self.n_init, "max_vectors": self.max_vectors, **super().settings()}

    def collector(self, layer: int, side: str, heads: list[int], d_head: int) -> Reservoir:
        return Reservoir(len(heads), d_head, self.max_vectors, seed=[self.seed, layer, SIDE_IDS[side]])

    def fit_collected(self, layer: int, side: str, collected: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.k > len(collected):
            raise SimplifierError(
                f"k={self.k} exceeds the number of fitted vectors ({len(collected)} non-pad tokens); "
                "lower k or fit on more sequences"
            )
        return {"centroids": fit_centroids(collected, self.k, self.seed, self.n_init)}


SIDE_IDS = {"query": 0, "key": 1}


__all__ = [
    "KMeansSimplification",
    "KMeansSimplifier",
    "Reservoir",
    "count_distinct_rows",
    "fit_centroids",
    "nearest_centroid",
    "snap",
]

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
from hf_illusions.simplify.base import AttentionSimplification, Simplifier


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


class KMeansSimplification(AttentionSimplification):
    """Buffers ``query_centroids`` and ``key_centroids``, each ``(n_head, k, d_head)``."""

    name = "kmeans"

    def __init__(self, config: Any, layer_idx: int):
        super().__init__(config, layer_idx)
        k = int(self.setting("k"))
        for side in ("query", "key"):
            self.register_buffer(f"{side}_centroids", torch.zeros(config.n_head, k, config.d_head))

    def transform_query(self, query: torch.Tensor) -> torch.Tensor:
        return self.only_simplified(snap(query, self.query_centroids), query)

    def transform_key(self, key: torch.Tensor) -> torch.Tensor:
        return self.only_simplified(snap(key, self.key_centroids), key)


class KMeansSimplifier(Simplifier):
    """``k`` centroids for each simplified head's queries and, separately, its keys.

    Args:
        k: clusters per head and side; at most the number of fitted vectors (non-pad tokens).
        n_init: k-means restarts (scikit-learn's ``n_init``).
        seed: ``random_state`` of the k-means initialization.
        **kwargs: layers, heads, n_sequences, batch sizes (see :class:`Simplifier`).
    """

    name: ClassVar[str] = "kmeans"

    def __init__(self, k: int, seed: int = 0, n_init: int | str = "auto", **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        if int(k) < 1:
            raise SimplifierError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.n_init = n_init

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "n_init": self.n_init, **super().settings()}

    def fit_head(
        self, layer: int, head: int, queries: torch.Tensor, keys: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if self.k > len(queries):
            raise SimplifierError(
                f"k={self.k} exceeds the number of fitted vectors ({len(queries)} non-pad tokens); "
                "lower k or fit on more sequences"
            )
        return {
            "query_centroids": fit_centroids(queries, self.k, self.seed, self.n_init),
            "key_centroids": fit_centroids(keys, self.k, self.seed, self.n_init),
        }


__all__ = [
    "KMeansSimplification",
    "KMeansSimplifier",
    "count_distinct_rows",
    "fit_centroids",
    "nearest_centroid",
    "snap",
]

"""What every proxy of one batch is compared with: the original's outputs, prepared once.

The evaluation loop (:func:`hf_illusions.evaluation.sentence_sums`) runs the original first on each
batch and compares every proxy with it. The comparison costs about as much as the forward passes
on long sequences, so what it needs from the original (normalised float64 distributions, their
entropies, the attention argmaxes) is computed once per batch here, in chunks that bound the memory
of a large vocabulary and skip the attention entries a causal model leaves at exactly zero. Kept
apart from the loop so that this memory and speed bookkeeping does not hide the loop's accounting
of the per-sentence sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from hf_illusions.metrics import entropy_rows, jsd_rows, normalize_rows

#: query positions per attention chunk; see :class:`BatchReference`.
ATTENTION_CHUNK = 64


class BatchReference:
    """What every proxy of one batch is compared with, computed once from the original's outputs.

    Next-token distributions: normalised float64 rows and their entropies (for :func:`jsd_rows`),
    in chunks of positions of at most ``chunk_elements`` entries (the loop passes
    :data:`hf_illusions.evaluation.JSD_CHUNK_ELEMENTS`); cached when the whole batch is one chunk
    (small vocabularies), else recomputed per proxy from the original's logits.
    Attention: the same per layer, cut into chunks of :data:`ATTENTION_CHUNK` query positions
    that keep only the keys up to the chunk's last query. A causal LM puts exactly zero weight on
    later keys (the mask adds the dtype's minimum before the softmax), so those entries add
    nothing to any row's JSD; skipping them roughly halves the O(batch · T²) work that dominated the
    evaluation. Padded query rows are dropped by ``valid``.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        scored: torch.Tensor,
        full: torch.Tensor,
        attentions: Sequence[torch.Tensor] | None,
        mask: torch.Tensor,
        chunk_elements: int,
    ) -> None:
        self.logits = logits
        self.scored, self.full = scored, full
        vocab = logits.shape[-1]
        self.rows_per_chunk = max(1, chunk_elements // vocab)
        n_rows = logits.shape[0] * logits.shape[1]
        self.cached = [self._chunk(0, n_rows)] if n_rows <= self.rows_per_chunk else None
        width = mask.shape[1]
        self.attention: list[list[AttentionChunk]] = []
        for weights in attentions or ():
            chunks = []
            for start in range(0, width, ATTENTION_CHUNK):
                stop = min(start + ATTENTION_CHUNK, width)
                rows = normalize_rows(weights[:, :, start:stop, :stop].double())
                valid = mask[:, None, start:stop].bool().expand(rows.shape[:-1])
                chunks.append(
                    AttentionChunk(
                        slice(start, stop),
                        rows,
                        entropy_rows(rows),
                        valid,
                        rows.argmax(-1),
                        valid.sum((1, 2)),
                    )
                )
            self.attention.append(chunks)

    def _chunk(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        flat = self.logits.reshape(-1, self.logits.shape[-1])[start:stop]
        probs = normalize_rows(flat.float().softmax(-1).double())
        return probs, entropy_rows(probs)

    def jsd(self, proxy_logits: torch.Tensor) -> torch.Tensor:
        """Per-position JSD ``(batch, T-1)`` between the proxy's and the original's distributions."""
        flat = proxy_logits.reshape(-1, proxy_logits.shape[-1])
        out = torch.empty(flat.shape[0], dtype=torch.float64, device=flat.device)
        for i, start in enumerate(range(0, flat.shape[0], self.rows_per_chunk)):
            stop = min(start + self.rows_per_chunk, flat.shape[0])
            probs, entropy = self.cached[i] if self.cached is not None else self._chunk(start, stop)
            out[start:stop] = jsd_rows(flat[start:stop].float().softmax(-1).double(), probs, entropy)
        return out.view(proxy_logits.shape[:-1])


class AttentionChunk(NamedTuple):
    """The original's attention rows for one chunk of query positions, and what every proxy reuses."""

    rows: slice
    original: torch.Tensor  # normalised float64 rows (batch, heads, queries, keys up to rows.stop)
    entropy: torch.Tensor
    valid: torch.Tensor  # real (non-pad) query rows
    argmax: torch.Tensor  # the original's most-attended key per row
    n_valid: torch.Tensor  # real rows per sentence


def attention_sums(proxy_weights: torch.Tensor, chunks: Sequence[AttentionChunk]) -> dict[str, torch.Tensor]:
    """Per-sentence sums over heads and real query positions of one layer: rows, JSD, argmax agreement."""
    batch = proxy_weights.shape[0]
    out = {
        k: torch.zeros(batch, dtype=torch.float64, device=proxy_weights.device)
        for k in ("n", "jsd", "agreement")
    }
    for rows, original, entropy, valid, original_argmax, n_valid in chunks:
        proxy = proxy_weights[:, :, rows, : rows.stop].double()
        values = jsd_rows(proxy, original, entropy)
        same = proxy.argmax(-1) == original_argmax
        out["n"] += n_valid.double()
        out["jsd"] += (values * valid).sum((1, 2))
        out["agreement"] += (same & valid).sum((1, 2)).double()
    return out

"""Length-bucketed, padded batches: one implementation for training, evaluation and fitting.

Dyck lengths are heavy-tailed (median 14 brackets, p99 ≈ 370), so batches of randomly mixed
lengths would be mostly padding. Batches here hold sentences of similar length under a budget of
*padded* tokens, which keeps the cost per step roughly constant.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from hf_illusions.data.dyck_language import PAD_ID


def token_budget_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int = 4096
) -> list[list[int]]:
    """Group indices sorted by length so that ``len(batch) * longest <= max_batch_tokens``.

    A single sequence longer than the budget still gets a batch of its own (never dropped).
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted ascending: the newcomer is the longest
        if current and ((len(current) + 1) * longest > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def shuffled_epoch_batches(
    lengths: Sequence[int], max_batch_tokens: int, seed: int, epoch: int, pool_size: int = 8192
) -> list[list[int]]:
    """Training order for one epoch: shuffle, bucket by length within pools, shuffle the batches.

    A pure function of ``(seed, epoch)``: resuming at step ``s`` re-derives exactly the batches
    an uninterrupted run would have seen, with no data-loader state to save.
    """
    rng = random.Random(f"batches/{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        pool = order[start : start + pool_size]
        for local in token_budget_batches([lengths[i] for i in pool], max_batch_tokens):
            batches.append([pool[j] for j in local])
    rng.shuffle(batches)
    return batches


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(input_ids, attention_mask)`` long tensors."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def iter_padded(
    sequences: Sequence[Sequence[int]], max_batch_tokens: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Deterministic evaluation batches: ``(indices, input_ids, attention_mask)``."""
    for idx in token_budget_batches([len(s) for s in sequences], max_batch_tokens):
        ids, mask = pad_batch([sequences[i] for i in idx])
        yield idx, ids, mask


class StepBatches:
    """Global step → batch of indices, epoch after epoch of :func:`shuffled_epoch_batches`.

    Epochs need not have the same number of batches (the bucketing depends on the shuffle), so
    epoch boundaries are accumulated rather than assumed; only the current epoch is kept.
    """

    def __init__(self, lengths: Sequence[int], max_batch_tokens: int, seed: int):
        self.lengths, self.max_batch_tokens, self.seed = lengths, max_batch_tokens, seed
        self.epoch, self.start = 0, 0
        self.batches = shuffled_epoch_batches(lengths, max_batch_tokens, seed, 0)

    def __getitem__(self, step: int) -> list[int]:
        if step < self.start:  # going back: start over from epoch 0
            self.__init__(self.lengths, self.max_batch_tokens, self.seed)
        while step >= self.start + len(self.batches):
            self.start += len(self.batches)
            self.epoch += 1
            self.batches = shuffled_epoch_batches(self.lengths, self.max_batch_tokens, self.seed, self.epoch)
        return self.batches[step - self.start]

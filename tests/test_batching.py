"""Length-bucketed batching: budgets respected, nothing dropped, steps map to batches purely."""

from __future__ import annotations

import random

import torch

from hf_illusions.data.batching import StepBatches, pad_batch, shuffled_epoch_batches, token_budget_batches


def heavy_tailed_lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [min(510, int(rng.paretovariate(1.2) * 6)) for _ in range(n)]


def test_token_budget_is_respected_and_every_index_appears_once():
    lengths = heavy_tailed_lengths(5000)
    batches = token_budget_batches(lengths, 2048)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 2048


def test_step_batches_cross_epochs_of_different_sizes():
    lengths = heavy_tailed_lengths(20000, seed=2)  # several bucketing pools: epoch sizes vary
    epochs = [shuffled_epoch_batches(lengths, 1024, seed=0, epoch=e) for e in range(3)]
    assert len({len(e) for e in epochs}) > 1, "this data should give epochs of different sizes"
    flat = [b for e in epochs for b in e]
    steps = StepBatches(lengths, 1024, seed=0)
    assert [steps[s] for s in range(len(flat))] == flat
    assert steps[5] == flat[5]  # going back re-derives the same batches


def test_pad_batch_right_pads_with_a_mask():
    ids, mask = pad_batch([[1, 5, 6], [1, 7]])
    assert torch.equal(ids, torch.tensor([[1, 5, 6], [1, 7, 0]]))
    assert torch.equal(mask, torch.tensor([[1, 1, 1], [1, 1, 0]]))

"""Which attention head copies? Induction and previous-token scores on repeated random text.

The code task's largest gaps are expected on repeated identifiers (Friedman et al. 2024, §5),
which a model predicts by copying: a *previous-token* head in layer 0 marks each position with
the character before it, and an *induction* head in a later layer attends from the current
character to the position just **after** its previous occurrence and copies what comes next
(Olsson et al. 2022). The standard probe isolates this from everything else a head does: a
random string repeated twice can only be continued by copying, so on the second copy the
induction head's attention sits on ``position - L + 1`` (``L`` = length of one copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_illusions.errors import SettingsError


@torch.no_grad()
def head_scores(
    model: torch.nn.Module,
    token_ids: Sequence[int],
    bos_id: int,
    n_sequences: int = 32,
    copy_length: int | None = None,
    seed: int = 0,
) -> dict:
    """Mean induction and previous-token attention of every head on ``<bos> x x`` sequences.

    ``x`` is ``copy_length`` tokens drawn uniformly (seeded) from ``token_ids``; the default fills
    the model's context. Returns ``{"induction": [[score per head] per layer], "previous_token":
    …, "copy_head": {"layer", "head", "induction_score"}, "settings": …}``; the copy head is the
    head with the highest induction score outside layer 0 (an induction head needs the
    previous-token information a layer below it).
    """
    config = model.config
    if copy_length is None:
        copy_length = (config.n_positions - 1) // 2
    if copy_length < 2 or 2 * copy_length + 1 > config.n_positions:
        raise SettingsError(
            f"copy_length must be in [2, {(config.n_positions - 1) // 2}] for n_positions="
            f"{config.n_positions}, got {copy_length}"
        )
    if n_sequences < 1 or not token_ids:
        raise SettingsError("n_sequences must be >= 1 and token_ids non-empty")
    generator = torch.Generator().manual_seed(seed)
    pool = torch.as_tensor(list(token_ids), dtype=torch.long)
    half = pool[torch.randint(len(pool), (n_sequences, copy_length), generator=generator)]
    ids = torch.cat([torch.full((n_sequences, 1), bos_id), half, half], dim=1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        attentions = model(ids.to(device), output_attentions=True, use_cache=False).attentions
    finally:
        model.train(was_training)
    queries = torch.arange(copy_length + 1, 2 * copy_length + 1)  # every position of the second copy
    induction, previous = [], []
    for attn in attentions:  # (batch, head, query, key)
        attn = attn.float().cpu()
        induction.append(attn[:, :, queries, queries - copy_length + 1].mean(dim=(0, 2)).tolist())
        rows = torch.arange(1, ids.shape[1])
        previous.append(attn[:, :, rows, rows - 1].mean(dim=(0, 2)).tolist())
    candidates = [
        (s, layer, h) for layer, row in enumerate(induction) if layer > 0 for h, s in enumerate(row)
    ]
    if not candidates:  # a 1-layer model: the best head anywhere
        candidates = [(s, layer, h) for layer, row in enumerate(induction) for h, s in enumerate(row)]
    score, layer, head = max(candidates)
    return {
        "induction": induction,
        "previous_token": previous,
        "copy_head": {"layer": layer, "head": head, "induction_score": score},
        "settings": {"n_sequences": n_sequences, "copy_length": copy_length, "seed": seed},
    }


__all__ = ["head_scores"]

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


@torch.no_grad()
def copy_scores_on_data(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[Sequence[bool]] | None = None,
    max_batch_tokens: int = 16384,
) -> dict:
    """Per head, the attention mass on *induction targets* in real text, against chance.

    For a query position ``t`` whose last two tokens ``x[t-1], x[t]`` occurred earlier as
    ``x[j-1], x[j]`` (``j < t``), the induction targets are those ``j + 1``: the tokens that
    followed the earlier occurrences, which a copying head attends to in order to predict
    ``x[t+1]``. Only such positions are scored, and only those flagged in ``positions`` (e.g. the
    positions predicting a repeated identifier; ``positions[i][t]`` refers to the prediction
    made at ``t``); ``chance`` is the mass uniform attention would put on the same targets.
    Returns ``{"mass": [[per head] per layer], "chance": float, "n_positions": int}``.
    """
    from hf_illusions.data.batching import iter_padded

    config = model.config
    totals = torch.zeros(config.n_layer, config.n_head, dtype=torch.float64)
    chance, count = 0.0, 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for idx, ids, mask in iter_padded(sequences, max_batch_tokens):
            targets = torch.zeros(ids.shape[0], ids.shape[1], ids.shape[1], dtype=torch.bool)
            for row, i in enumerate(idx):
                seq = list(sequences[i])
                seen: dict[tuple[int, int], list[int]] = {}
                for t in range(1, len(seq)):
                    key = (seq[t - 1], seq[t])
                    wanted = positions is None or (t < len(positions[i]) and positions[i][t])
                    if wanted and key in seen:
                        targets[row, t, [j + 1 for j in seen[key]]] = True
                    seen.setdefault(key, []).append(t)
            rows = targets.any(-1)
            if not rows.any():
                continue
            attentions = model(
                ids.to(device), attention_mask=mask.to(device), output_attentions=True
            ).attentions
            for layer, attn in enumerate(attentions):  # (batch, head, query, key)
                mass = (attn.float().cpu() * targets[:, None]).sum(-1)  # (batch, head, query)
                totals[layer] += mass.permute(1, 0, 2)[:, rows].sum(-1).double()
            n_keys = torch.arange(1, ids.shape[1] + 1, dtype=torch.float64)
            chance += float((targets.sum(-1) / n_keys)[rows].sum())
            count += int(rows.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise SettingsError("no scored position repeats an earlier bigram: nothing to measure copying on")
    return {"mass": (totals / count).tolist(), "chance": chance / count, "n_positions": count}


__all__ = ["copy_scores_on_data", "head_scores"]

"""What is scored on Dyck and how (Murty et al. 2023's evaluation, used by Friedman et al. 2024).

At every position whose *next* token is a closing bracket the model is right if its argmax over the
closing-bracket tokens is the correct close (``restricted``); we also keep the unrestricted argmax
over the whole vocabulary. ``long_distance`` closes are those whose matching open is at least
``long_threshold`` tokens earlier — the ones that need real structure, not the previous token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hf_illusions.data.dyck_language import N_SPECIAL, DyckVocab, matching_open_positions

LONG_THRESHOLD = 10


def position_groups(
    input_ids: Sequence[int], n_types: int, long_threshold: int = LONG_THRESHOLD
) -> dict[str, np.ndarray]:
    """Boolean masks over the ``len(input_ids) - 1`` prediction positions of one sentence.

    Position ``t`` predicts token ``t + 1``. Groups: ``all`` (every position, the LM view),
    ``close`` (next token is a closing bracket) and ``long_distance`` (a close whose opener is
    ``>= long_threshold`` tokens back).
    """
    ids = np.asarray(input_ids)
    codes = ids[1:-1] - N_SPECIAL  # brackets between <bos> and <eos>
    opener = np.asarray(matching_open_positions(codes.tolist(), n_types), dtype=np.int64)
    n_pred = len(ids) - 1
    close = np.zeros(n_pred, dtype=bool)
    long = np.zeros(n_pred, dtype=bool)
    is_close = codes >= n_types
    # bracket j sits at token position j + 1 and is predicted from position j
    close[: len(codes)] = is_close
    distance = np.arange(len(codes)) - opener
    long[: len(codes)] = is_close & (distance >= long_threshold)
    return {"all": np.ones(n_pred, dtype=bool), "close": close, "long_distance": long}


def closing_bracket_logits(logits: torch.Tensor, vocab: DyckVocab) -> torch.Tensor:
    """Restrict the last dimension to the closing-bracket tokens (the scoring's candidate set)."""
    return logits[..., vocab.close_ids.start : vocab.close_ids.stop]


def restricted_predictions(logits: torch.Tensor, vocab: DyckVocab) -> torch.Tensor:
    """Argmax among closing brackets, as a full-vocabulary token id."""
    return closing_bracket_logits(logits, vocab).argmax(-1) + vocab.close_ids.start


class DyckTask:
    """The Dyck scoring as the evaluation loop sees it: position groups + the scored prediction."""

    name = "dyck"

    def __init__(self, n_types: int = 20, long_threshold: int = LONG_THRESHOLD):
        self.vocab = DyckVocab(n_types)
        self.long_threshold = long_threshold

    def groups(self, input_ids: Sequence[int]) -> dict[str, np.ndarray]:
        return position_groups(input_ids, self.vocab.n_types, self.long_threshold)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return restricted_predictions(logits, self.vocab)

    #: groups whose accuracy is the task's headline number (others are reported too)
    headline_groups = ("close", "long_distance")

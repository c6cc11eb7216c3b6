"""What is scored on Dyck and how (Murty et al. 2023's evaluation, used by Friedman et al. 2024).

At every position whose *next* token is a closing bracket the model is right if its argmax over the
closing-bracket tokens is the correct close (``restricted``); we also keep the unrestricted argmax
over the whole vocabulary. ``long_distance`` closes are those whose matching open is at least
``long_threshold`` tokens earlier — the ones that need real structure, not the previous token.
"""

from __future__ import annotations

import itertools
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


#: depth buckets of a closing bracket: 1 … 15 (the unseen-depth split's bound); deeper ones go in 15
MAX_DEPTH_BUCKET = 15
#: distance (close index − opener index, in brackets) and position buckets: powers of two
DISTANCE_EDGES = (1, 2, 4, 8, 16, 32, 64, 128)
POSITION_EDGES = (0, 16, 32, 64, 128, 256)


def _bucket_names(edges: Sequence[int]) -> list[str]:
    names = [f"{lo}-{hi - 1}" if hi - 1 > lo else str(lo) for lo, hi in itertools.pairwise(edges)]
    return [*names, f"{edges[-1]}+"]


DISTANCE_BUCKETS = _bucket_names(DISTANCE_EDGES)
POSITION_BUCKETS = _bucket_names(POSITION_EDGES)


def close_features(input_ids: Sequence[int], n_types: int) -> dict[str, np.ndarray]:
    """Per prediction position whose next token closes a bracket: depth, distance, position (-1 elsewhere).

    ``depth`` is the nesting depth of the closed pair (1 = top level: the stack size just before
    the close), ``distance`` how many brackets back its opener is, ``position`` the close's index
    among the sentence's brackets (0-based). Position ``t`` predicts bracket ``t``.
    """
    ids = np.asarray(input_ids)
    codes = (ids[1:-1] - N_SPECIAL).tolist()
    n_pred = len(ids) - 1
    depth = np.full(n_pred, -1, dtype=np.int64)
    distance = np.full(n_pred, -1, dtype=np.int64)
    position = np.full(n_pred, -1, dtype=np.int64)
    stack: list[int] = []
    for j, c in enumerate(codes):
        if c < n_types:
            stack.append(j)
        else:
            depth[j], distance[j], position[j] = len(stack), j - stack.pop(), j
    return {"depth": depth, "distance": distance, "position": position}


def close_cells(input_ids: Sequence[int], n_types: int) -> dict[str, np.ndarray]:
    """Cell indices of every close: ``depth_distance`` (depth bucket × distance bucket) and ``position``."""
    f = close_features(input_ids, n_types)
    is_close = f["depth"] >= 0
    depth_bucket = np.minimum(f["depth"], MAX_DEPTH_BUCKET) - 1
    dist_bucket = np.searchsorted(DISTANCE_EDGES, np.maximum(f["distance"], 1), side="right") - 1
    pos_bucket = np.searchsorted(POSITION_EDGES, np.maximum(f["position"], 0), side="right") - 1
    return {
        "depth_distance": np.where(is_close, depth_bucket * len(DISTANCE_EDGES) + dist_bucket, -1),
        "position": np.where(is_close, pos_bucket, -1),
    }


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

    #: cell families the evaluation loop keeps per-sentence sums for (see :func:`close_cells`)
    cell_names = {
        "depth_distance": [f"d{d}/{b}" for d in range(1, MAX_DEPTH_BUCKET + 1) for b in DISTANCE_BUCKETS],
        "position": POSITION_BUCKETS,
    }

    def cells(self, input_ids: Sequence[int]) -> dict[str, np.ndarray]:
        return close_cells(input_ids, self.vocab.n_types)

    #: groups whose accuracy is the task's headline number (others are reported too)
    headline_groups = ("close", "long_distance")

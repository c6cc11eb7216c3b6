"""Short hashes of what a result was computed from: the exact token ids, the exact weights.

Training records the hash of its train split (``training_data.json``); ``reproduce`` checks it and
keys cached results by both; the Space matches a shipped report to its model. Kept low in the
dependency order so that each of them hashes the same way without importing the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def sequences_hash(sequences: Sequence[Sequence[int]]) -> str:
    """Hash of the exact token ids evaluated/fitted: a rebuilt but identical dataset still matches."""
    digest = hashlib.sha256()
    for seq in sequences:
        digest.update(b",".join(str(int(i)).encode() for i in seq) + b";")
    return digest.hexdigest()[:16]


def weights_hash(model: torch.nn.Module) -> str:
    """Hash of the state dict, so a retrained checkpoint in the same folder invalidates old results."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]

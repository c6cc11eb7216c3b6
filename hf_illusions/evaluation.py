"""The one evaluation loop: original model and any number of proxies over the same batches.

Used by training (accuracy only), ``hf-illusions evaluate``/``reproduce``, the Space and the
benchmarks. Each batch is run through the original once; every proxy is compared with that
cached output (Friedman et al. 2024, §3: faithfulness = JSD and same-prediction agreement with the
original's next-token distributions, plus each model's accuracy; attention JSD per patched layer).

Results per model and position group (``all``, ``close``, ``long_distance`` on Dyck)::

    {"n": …, "accuracy": …, "accuracy_full": …,           # every model
     "jsd": …, "agreement": …}                            # proxies, against the original
    plus per proxy "attention_jsd": {"<layer>": …}        # mean over heads and query positions
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_illusions.data.batching import iter_padded
from hf_illusions.metrics import entropy_rows, jsd_rows, normalize_rows

ORIGINAL = "original"


class Task(Protocol):
    """What a task tells the loop: which positions form which groups, and the scored prediction."""

    name: str

    def groups(self, input_ids: Sequence[int]) -> dict[str, np.ndarray]: ...

    def predict(self, logits: torch.Tensor) -> torch.Tensor: ...


class _Accumulator:
    """Running sums for one model and one position group."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.sums[key] += float(value)

    def result(self) -> dict[str, float]:
        n = self.sums.get("n", 0.0)
        out = {"n": int(n)}
        for key, value in self.sums.items():
            if key != "n":
                out[key] = value / n if n else float("nan")
        return out


def batch_group_masks(task: Task, sequences: Sequence[Sequence[int]], width: int) -> dict[str, torch.Tensor]:
    """Stack per-sentence group masks into ``(batch, width - 1)`` bool tensors (False on padding)."""
    per_sentence = [task.groups(seq) for seq in sequences]
    out = {}
    for name in per_sentence[0]:
        mask = torch.zeros((len(sequences), width - 1), dtype=torch.bool)
        for row, groups in enumerate(per_sentence):
            mask[row, : len(groups[name])] = torch.from_numpy(groups[name])
        out[name] = mask
    return out


@torch.no_grad()
def evaluate_models(
    original: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    task: Task,
    proxies: Mapping[str, torch.nn.Module] | None = None,
    max_batch_tokens: int = 16384,
    attention: bool = True,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, dict]:
    """Accuracy of ``original`` and faithfulness of each proxy on ``sequences`` (lists of token ids).

    Cost: one forward pass per model and batch; what the proxies are compared with (the
    original's normalised float64 distributions and their entropies) is computed once per batch
    and shared, so each proxy adds its forward pass and one JSD pass over its own outputs.
    """
    proxies = dict(proxies or {})
    if not sequences:
        raise ValueError("sequences is empty: nothing to evaluate")
    want_attention = attention and bool(proxies)
    models = {ORIGINAL: original, **proxies}
    for model in models.values():
        model.eval()
    acc: dict[str, dict[str, _Accumulator]] = defaultdict(lambda: defaultdict(_Accumulator))
    attn_acc: dict[str, dict[str, _Accumulator]] = defaultdict(lambda: defaultdict(_Accumulator))
    device = next(original.parameters()).device
    batches = list(iter_padded(sequences, max_batch_tokens))
    for idx, ids, mask in tqdm(batches, desc=desc, disable=not progress, leave=False):
        ids, mask = ids.to(device), mask.to(device)
        groups = {
            g: m.to(device)
            for g, m in batch_group_masks(task, [sequences[i] for i in idx], ids.shape[1]).items()
        }
        targets = ids[:, 1:]
        reference: _Reference | None = None
        for name, model in models.items():
            out = model(ids, attention_mask=mask, output_attentions=want_attention)
            logits = out.logits[:, :-1].float()
            probs = logits.softmax(-1).double()
            scored = task.predict(logits)
            full = logits.argmax(-1)
            if reference is None:  # the original comes first
                reference = _Reference(probs, full, out.attentions if want_attention else None, mask)
            else:
                row_jsd = jsd_rows(probs, reference.probs, reference.entropy)
                _check_finite(row_jsd[mask[:, 1:].bool()].sum(), name, "next-token distributions")
                agree = full == reference.full
            for group, gmask in groups.items():
                values = {
                    "n": gmask.sum(),
                    "accuracy": ((scored == targets) & gmask).sum(),
                    "accuracy_full": ((full == targets) & gmask).sum(),
                }
                if name != ORIGINAL:
                    values["jsd"] = row_jsd[gmask].sum()
                    values["agreement"] = (agree & gmask).sum()
                acc[name][group].add(**values)
            if name != ORIGINAL and want_attention:
                for layer, chunks in enumerate(reference.attention):
                    jsd_sum, n = _attention_jsd_sum(out.attentions[layer], chunks)
                    _check_finite(jsd_sum, name, f"attention in layer {layer}")
                    attn_acc[name][str(layer)].add(n=n, jsd=jsd_sum)
    results: dict[str, dict] = {}
    for name in models:
        results[name] = {group: a.result() for group, a in acc[name].items()}
        if name in attn_acc:
            results[name]["attention_jsd"] = {layer: a.result()["jsd"] for layer, a in attn_acc[name].items()}
    return results


def _check_finite(value: float | torch.Tensor, name: str, what: str) -> None:
    """Fail loudly on NaN/inf: the trusted JSD path skips validation, so a broken proxy shows here."""
    if not torch.isfinite(torch.as_tensor(value)):
        raise ValueError(f"proxy {name!r} produced non-finite {what} (NaN or inf); its JSD is undefined")


#: query positions per attention chunk; see :class:`_Reference`.
ATTENTION_CHUNK = 64


class _Reference:
    """What every proxy of one batch is compared with, computed once from the original's outputs.

    Next-token distributions: normalised float64 rows and their entropies (for :func:`jsd_rows`).
    Attention: the same per layer, cut into chunks of :data:`ATTENTION_CHUNK` query positions
    that keep only the keys up to the chunk's last query. A causal LM puts exactly zero weight on
    later keys (the mask adds the dtype's minimum before the softmax), so those entries add
    nothing to any row's JSD; skipping them roughly halves the O(batch · T²) work that dominated the
    evaluation. Padded query rows are dropped by ``valid``.
    """

    def __init__(
        self,
        probs: torch.Tensor,
        full: torch.Tensor,
        attentions: Sequence[torch.Tensor] | None,
        mask: torch.Tensor,
    ) -> None:
        self.probs = normalize_rows(probs)
        self.entropy = entropy_rows(self.probs)
        self.full = full
        width = mask.shape[1]
        self.attention: list[list[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]] = []
        for weights in attentions or ():
            chunks = []
            for start in range(0, width, ATTENTION_CHUNK):
                stop = min(start + ATTENTION_CHUNK, width)
                rows = normalize_rows(weights[:, :, start:stop, :stop].double())
                valid = mask[:, None, start:stop].bool().expand(rows.shape[:-1])
                chunks.append((slice(start, stop), rows, entropy_rows(rows), valid))
            self.attention.append(chunks)


def _attention_jsd_sum(
    proxy_weights: torch.Tensor, chunks: Sequence[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]
) -> tuple[float, int]:
    """Sum and count of the attention JSD over heads and real query positions of one layer."""
    total, n = 0.0, 0
    for rows, original, entropy, valid in chunks:
        values = jsd_rows(proxy_weights[:, :, rows, : rows.stop].double(), original, entropy)
        total += float(values[valid].sum())
        n += int(valid.sum())
    return total, n


def accuracy_table(
    results: Mapping[str, Mapping[str, dict]], model: str = ORIGINAL, group: str = "close"
) -> dict:
    """``{split: accuracy}`` for one model and group, from ``{split: evaluate_models(...)}``."""
    return {split: res[model][group]["accuracy"] for split, res in results.items()}

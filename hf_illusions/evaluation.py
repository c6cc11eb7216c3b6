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
from hf_illusions.metrics import jsd_per_row

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
    """Accuracy of ``original`` and faithfulness of each proxy on ``sequences`` (lists of token ids)."""
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
        groups = batch_group_masks(task, [sequences[i] for i in idx], ids.shape[1])
        targets = ids[:, 1:]
        reference = None
        for name, model in models.items():
            out = model(ids, attention_mask=mask, output_attentions=want_attention)
            logits = out.logits[:, :-1].float()
            probs = logits.softmax(-1)
            scored = task.predict(logits)
            full = logits.argmax(-1)
            if name == ORIGINAL:
                reference = (probs, full, out.attentions)
            else:
                row_jsd = torch.from_numpy(jsd_per_row(probs.cpu().numpy(), reference[0].cpu().numpy()))
                agree = full == reference[1]
            for group, gmask in groups.items():
                gmask = gmask.to(device)
                values = {
                    "n": gmask.sum(),
                    "accuracy": ((scored == targets) & gmask).sum(),
                    "accuracy_full": ((full == targets) & gmask).sum(),
                }
                if name != ORIGINAL:
                    values["jsd"] = row_jsd[gmask.cpu()].sum()
                    values["agreement"] = (agree & gmask).sum()
                acc[name][group].add(**values)
            if name != ORIGINAL and want_attention:
                _add_attention_jsd(attn_acc[name], out.attentions, reference[2], mask)
    results: dict[str, dict] = {}
    for name in models:
        results[name] = {group: a.result() for group, a in acc[name].items()}
        if name in attn_acc:
            results[name]["attention_jsd"] = {layer: a.result()["jsd"] for layer, a in attn_acc[name].items()}
    return results


def _add_attention_jsd(
    accs: dict[str, _Accumulator],
    proxy_attn: Sequence[torch.Tensor],
    original_attn: Sequence[torch.Tensor],
    mask: torch.Tensor,
) -> None:
    """Attention-distribution JSD per layer over heads and real (non-pad) query positions."""
    valid = mask.bool()
    for layer, (p, q) in enumerate(zip(proxy_attn, original_attn, strict=True)):
        rows_p = p.permute(0, 2, 1, 3)[valid].float().cpu().numpy()  # (n_query, heads, keys)
        rows_q = q.permute(0, 2, 1, 3)[valid].float().cpu().numpy()
        values = jsd_per_row(rows_p, rows_q)
        accs[str(layer)].add(n=values.size, jsd=values.sum())


def accuracy_table(
    results: Mapping[str, Mapping[str, dict]], model: str = ORIGINAL, group: str = "close"
) -> dict:
    """``{split: accuracy}`` for one model and group, from ``{split: evaluate_models(...)}``."""
    return {split: res[model][group]["accuracy"] for split, res in results.items()}

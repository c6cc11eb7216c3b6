"""The one evaluation loop: original model and any number of proxies over the same batches.

Used by training (accuracy only), ``hf-illusions evaluate``/``reproduce``, the Space and the
benchmarks. Each batch is run through the original once; every proxy is compared with that
cached output (Friedman et al. 2024, §3: faithfulness = JSD and same-prediction agreement with the
original's next-token distributions, plus each model's accuracy; attention JSD per patched layer).

The loop keeps **per-sentence sums** (:class:`SentenceSums`), not only running totals: every
number it reports is a ratio of sums over sentences, so bootstrap intervals over sentences
(:mod:`hf_illusions.statistics`) and re-weighted comparisons (same depth, same length) come from
these sums without another forward pass. What each batch's proxies are compared with, the
original's outputs prepared once in memory-bounded chunks, is
:class:`~hf_illusions.batch_reference.BatchReference`. :func:`evaluate_models` returns the means::

    {"n": …, "accuracy": …, "accuracy_full": …,                          # every model
     "jsd": …, "agreement": …, "agreement_full": …}                      # proxies, vs the original
    plus per proxy "attention_jsd" / "attention_agreement": {"<layer>": …}

``accuracy`` and ``agreement`` use the task's scored prediction (on Dyck the argmax over closing
brackets, Murty et al.'s scoring), so they are comparable; ``accuracy_full`` / ``agreement_full``
use the argmax over the whole vocabulary. Attention agreement is the fraction of (head, query)
rows whose most-attended key is the same in proxy and original.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_illusions.batch_reference import BatchReference, attention_sums
from hf_illusions.data.batching import iter_padded

ORIGINAL = "original"
#: per-position quantities summed per sentence; the original has only the accuracies
QUANTITIES = ("accuracy", "accuracy_full", "jsd", "agreement", "agreement_full")
ORIGINAL_QUANTITIES = ("accuracy", "accuracy_full")
#: quantities kept per cell (e.g. per depth × distance bucket of a closing bracket)
CELL_QUANTITIES = ("accuracy", "jsd", "agreement")
#: keys of a model's results that are not position groups
NON_GROUP_KEYS = ("attention_jsd", "attention_agreement", "attention_ci")
#: most float64 entries of one softmax chunk (rows × vocabulary): bounds the JSD's memory
JSD_CHUNK_ELEMENTS = 2**24


class Task(Protocol):
    """What a task tells the loop: which positions form which groups, and the scored prediction.

    A task may also define ``cells(input_ids) -> {family: int array}`` (a cell index per
    prediction position, -1 for none) with ``cell_names: {family: [names]}``; the loop then keeps
    per-sentence sums per cell (used for the Dyck depth / distance / position buckets).
    """

    name: str

    def groups(self, input_ids: Sequence[int]) -> dict[str, np.ndarray]: ...

    def predict(self, logits: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SentenceSums:
    """Per-sentence sums of every quantity, per model and position group (and cell).

    ``n[g, i]`` counts the positions of group ``g`` in sentence ``i``; ``models[m][q][g, i]`` sums
    quantity ``q`` of model ``m`` over them. Cells: ``cell_n[f]`` and ``cells[m][f][q]`` are
    ``(n_sentences, n_cells)``. Attention: ``attention[m][layer]`` holds per-sentence ``n`` (head ×
    query rows), ``jsd`` and ``agreement`` sums.
    """

    n_sentences: int
    groups: list[str]
    n: np.ndarray
    models: dict[str, dict[str, np.ndarray]]
    cell_names: dict[str, list[str]] = field(default_factory=dict)
    cell_n: dict[str, np.ndarray] = field(default_factory=dict)
    cells: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    attention: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    #: tokens per sentence (for length-matched comparisons)
    lengths: np.ndarray | None = None

    def proxies(self) -> list[str]:
        return [m for m in self.models if m != ORIGINAL]

    def means(self) -> dict[str, dict]:
        """The loop's classic output: ``{model: {group: {"n", metric: mean}}, …}``."""
        results: dict[str, dict] = {}
        for name, sums in self.models.items():
            res: dict = {}
            for g, group in enumerate(self.groups):
                total = float(self.n[g].sum())
                res[group] = {"n": int(total)}
                for q, values in sums.items():
                    res[group][q] = float(values[g].sum()) / total if total else float("nan")
            for layer, att in self.attention.get(name, {}).items():
                total = float(att["n"].sum())
                for q in ("jsd", "agreement"):
                    res.setdefault(f"attention_{q}", {})[layer] = (
                        float(att[q].sum()) / total if total else float("nan")
                    )
            results[name] = res
        return results

    # ---- persistence: one compressed npz per split, so intervals survive a resumed run

    def save(self, path: str | Path) -> None:
        """Every sum in float64, as computed: a resumed run's gaps and findings are then the very
        bytes of a fresh run's (float32 files changed them in the 8th digit)."""
        arrays: dict[str, np.ndarray] = {"n": self.n, "groups": np.array(self.groups)}
        if self.lengths is not None:
            arrays["lengths"] = np.asarray(self.lengths, dtype=np.int64)
        for name, sums in self.models.items():
            for q, values in sums.items():
                arrays[f"m/{name}/{q}"] = values.astype(np.float64)
        for fam, names in self.cell_names.items():
            arrays[f"cellnames/{fam}"] = np.array(names)
            arrays[f"celln/{fam}"] = self.cell_n[fam].astype(np.int32)
        for name, fams in self.cells.items():
            for fam, qs in fams.items():
                for q, values in qs.items():
                    arrays[f"c/{name}/{fam}/{q}"] = values.astype(np.float64)
        for name, layers in self.attention.items():
            for layer, qs in layers.items():
                for q, values in qs.items():
                    arrays[f"a/{name}/{layer}/{q}"] = values.astype(np.float64)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> SentenceSums:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        groups = [str(g) for g in arrays.pop("groups")]
        n = arrays.pop("n").astype(np.float64)
        out = cls(n_sentences=n.shape[1], groups=groups, n=n, models={}, lengths=arrays.pop("lengths", None))
        for key, values in arrays.items():
            kind, *parts = key.split("/")
            values = values.astype(np.float64) if values.dtype.kind == "f" else values
            if kind == "m":
                out.models.setdefault(parts[0], {})[parts[1]] = values
            elif kind == "cellnames":
                out.cell_names[parts[0]] = [str(v) for v in values]
            elif kind == "celln":
                out.cell_n[parts[0]] = values.astype(np.float64)
            elif kind == "c":
                out.cells.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = values
            elif kind == "a":
                out.attention.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = values
        return out


def batch_group_masks(task: Task, sequences: Sequence[Sequence[int]], width: int) -> dict[str, torch.Tensor]:
    """Stack per-sentence group masks into ``(batch, width - 1)`` bool tensors (False on padding)."""
    return _stack_rows([task.groups(seq) for seq in sequences], width, False, torch.bool)


def _stack_rows(per_sentence: Sequence[Mapping[str, np.ndarray]], width: int, fill, dtype) -> dict:
    out = {}
    for name in per_sentence[0]:
        rows = torch.full((len(per_sentence), width - 1), fill, dtype=dtype)
        for row, values in enumerate(per_sentence):
            rows[row, : len(values[name])] = torch.from_numpy(np.asarray(values[name]))
        out[name] = rows
    return out


def evaluate_models(
    original: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    task: Task,
    proxies: Mapping[str, torch.nn.Module] | None = None,
    **options: Any,
) -> dict[str, dict]:
    """Accuracy of ``original`` and faithfulness of each proxy on ``sequences`` (lists of token ids).

    The means of :func:`sentence_sums`, which takes the same arguments (``max_batch_tokens``,
    ``attention``, ``progress``, ``desc``) and says what it costs.
    """
    return sentence_sums(original, sequences, task, proxies, **options).means()


@torch.no_grad()
def sentence_sums(
    original: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    task: Task,
    proxies: Mapping[str, torch.nn.Module] | None = None,
    max_batch_tokens: int = 16384,
    attention: bool | Collection[str] = True,
    progress: bool = False,
    desc: str = "evaluate",
) -> SentenceSums:
    """Per-sentence sums of accuracy (every model) and faithfulness (every proxy) on ``sequences``.

    ``attention``: attention JSD / argmax agreement for every proxy (``True``), none (``False``),
    or only the proxies named (a collection of names; unknown names are ignored). Every other
    number is the same either way (the forward passes are the same arithmetic).

    Cost: one forward pass per model and batch; what the proxies are compared with (the
    original's normalised float64 distributions and their entropies) is computed once per batch
    and shared when it fits in :data:`JSD_CHUNK_ELEMENTS`, and otherwise recomputed chunk by chunk
    over positions, so a 50k-token vocabulary never materialises a full-batch float64 softmax.
    The attention metrics are float64 over every (head, query, key) entry of every layer, about
    as costly as the forward passes themselves on long sequences: ask only for those you report.
    """
    proxies = dict(proxies or {})
    if not sequences:
        raise ValueError("sequences is empty: nothing to evaluate")
    if isinstance(attention, str):
        attention = [attention]
    if isinstance(attention, bool):
        attention_for = set(proxies) if attention else set()
    else:
        attention_for = set(proxies) & set(attention)
    want_attention = bool(attention_for)
    models = {ORIGINAL: original, **proxies}
    for model in models.values():
        model.eval()
    n_seq = len(sequences)
    group_names = list(task.groups(sequences[0]))
    cell_names: dict[str, list[str]] = dict(getattr(task, "cell_names", {}) or {})
    has_cells = bool(cell_names) and hasattr(task, "cells")
    n = torch.zeros(len(group_names), n_seq, dtype=torch.float64)
    sums = {
        name: {
            q: torch.zeros(len(group_names), n_seq, dtype=torch.float64)
            for q in (ORIGINAL_QUANTITIES if name == ORIGINAL else QUANTITIES)
        }
        for name in models
    }
    cell_n = {f: torch.zeros(n_seq, len(c), dtype=torch.float64) for f, c in cell_names.items()}
    cells = {
        name: {
            f: {
                q: torch.zeros(n_seq, len(c), dtype=torch.float64)
                for q in (("accuracy",) if name == ORIGINAL else CELL_QUANTITIES)
            }
            for f, c in cell_names.items()
        }
        for name in models
    } if has_cells else {}  # fmt: skip
    att_sums: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    device = next(original.parameters()).device
    for idx, ids, mask in tqdm(
        list(iter_padded(sequences, max_batch_tokens)), desc=desc, disable=not progress, leave=False
    ):
        rows = torch.tensor(idx)
        ids, mask = ids.to(device), mask.to(device)
        batch_seqs = [sequences[i] for i in idx]
        gmask = torch.stack([m for m in batch_group_masks(task, batch_seqs, ids.shape[1]).values()]).to(
            device
        )  # (G, B, T-1)
        n.index_add_(1, rows, gmask.sum(-1).double().cpu())
        batch_cells = {}
        if has_cells:
            stacked = _stack_rows([task.cells(s) for s in batch_seqs], ids.shape[1], -1, torch.long)
            batch_cells = {f: c.to(device) for f, c in stacked.items()}
        for f, cell_ids in batch_cells.items():
            cell_n[f].index_add_(
                0,
                rows,
                _cell_sums(cell_ids, torch.ones_like(cell_ids, dtype=torch.float64), len(cell_names[f])),
            )
        targets = ids[:, 1:]
        reference: BatchReference | None = None
        for name, model in models.items():
            with_weights = want_attention and (name == ORIGINAL or name in attention_for)
            out = model(ids, attention_mask=mask, output_attentions=with_weights)
            logits = out.logits[:, :-1]
            scored = task.predict(logits)
            full = logits.argmax(-1)
            values = {"accuracy": scored == targets, "accuracy_full": full == targets}
            if reference is None:  # the original comes first
                reference = BatchReference(
                    logits,
                    scored,
                    full,
                    out.attentions if want_attention else None,
                    mask,
                    JSD_CHUNK_ELEMENTS,  # looked up per call, so a test may lower it
                )
            else:
                row_jsd = reference.jsd(logits)
                _check_finite(row_jsd[mask[:, 1:].bool()].sum(), name, "next-token distributions")
                values.update(
                    jsd=row_jsd, agreement=scored == reference.scored, agreement_full=full == reference.full
                )
            for q, v in values.items():
                per_group = torch.einsum("gbt,bt->gb", gmask.double(), v.double())
                sums[name][q].index_add_(1, rows, per_group.cpu())
            for f, cell_ids in batch_cells.items():
                for q, cell_sum in cells[name][f].items():
                    cell_sum.index_add_(
                        0, rows, _cell_sums(cell_ids, values[q].double(), len(cell_names[f])).cpu()
                    )
            if name != ORIGINAL and name in attention_for:
                layers = att_sums.setdefault(name, {})
                for layer, chunks in enumerate(reference.attention):
                    per_row = attention_sums(out.attentions[layer], chunks)
                    _check_finite(per_row["jsd"].sum(), name, f"attention in layer {layer}")
                    acc = layers.setdefault(
                        str(layer), {k: torch.zeros(n_seq, dtype=torch.float64) for k in per_row}
                    )
                    for k, v in per_row.items():
                        acc[k].index_add_(0, rows, v.cpu())
    return SentenceSums(
        n_sentences=n_seq,
        groups=group_names,
        n=n.numpy(),
        models={m: {q: v.numpy() for q, v in qs.items()} for m, qs in sums.items()},
        cell_names=cell_names if has_cells else {},
        cell_n={f: v.numpy() for f, v in cell_n.items()} if has_cells else {},
        cells={
            m: {f: {q: v.numpy() for q, v in qs.items()} for f, qs in fs.items()} for m, fs in cells.items()
        },
        attention={
            m: {ly: {k: v.numpy() for k, v in d.items()} for ly, d in ls.items()}
            for m, ls in att_sums.items()
        },
        lengths=np.array([len(seq) for seq in sequences], dtype=np.int64),
    )


def _cell_sums(cell_ids: torch.Tensor, values: torch.Tensor, n_cells: int) -> torch.Tensor:
    """``(batch, n_cells)`` sums of ``values`` over the positions of each cell (-1 = no cell)."""
    batch = cell_ids.shape[0]
    valid = cell_ids >= 0
    flat = (torch.arange(batch, device=cell_ids.device)[:, None] * n_cells + cell_ids)[valid]
    out = torch.zeros(batch * n_cells, dtype=torch.float64, device=cell_ids.device)
    out.index_add_(0, flat, values[valid].double())
    return out.view(batch, n_cells)


def _check_finite(value: float | torch.Tensor, name: str, what: str) -> None:
    """Fail loudly on NaN/inf: the trusted JSD path skips validation, so a broken proxy shows here."""
    if not torch.isfinite(torch.as_tensor(value)):
        raise ValueError(f"proxy {name!r} produced non-finite {what} (NaN or inf); its JSD is undefined")


def accuracy_table(
    results: Mapping[str, Mapping[str, dict]], model: str = ORIGINAL, group: str = "close"
) -> dict:
    """``{split: accuracy}`` for one model and group, from ``{split: evaluate_models(...)}``."""
    return {split: res[model][group]["accuracy"] for split, res in results.items()}

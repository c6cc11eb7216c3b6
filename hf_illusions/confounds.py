"""Depth apart from length: per-bucket results and matched comparisons on Dyck.

The Dyck test splits differ in more than their names say. Sentences of the unseen-depth split are
~3.5× longer than IID ones (mean ≈ 224 vs 63 brackets), and the seen-structure and short
unseen-structure splits are shorter (≈ 13 and 27), so a gap between splits may come from depth,
from long sentences and late positions, or from new structure. From the per-sentence, per-cell
sums of the evaluation loop (each close's depth × distance-to-opener bucket, and its position
bucket; :func:`hf_illusions.tasks.dyck.close_cells`) this module gives:

* :func:`bucket_results` — JSD / agreement / accuracy per depth (1 … 15), distance and position
  bucket, with bootstrap intervals over sentences;
* :func:`depth_decomposition` — the unseen-depth gap at closing brackets split exactly into
  three parts, each with an interval (both splits resampled independently):

  - *deeper than training*: ``share(depth > 10) × (mean(depth > 10) − mean(depth ≤ 10))``,
  - *depth / distance mix*: IID closes re-weighted to the unseen-depth split's mix of (depth,
    distance) cells at depth ≤ 10, minus plain IID,
  - *same depth and distance, other context*: unseen-depth closes at depth ≤ 10 minus those
    re-weighted IID closes — what remains once depth and distance are matched: longer
    sentences, later positions and new structure together;

* :func:`length_decomposition` — for any OOD split, IID sentences re-weighted to the split's
  mix of sentence lengths (bins of powers of two): ``gap = (split − IID at the same lengths)``
  (*structure*, for the structure splits) ``+ (IID at the same lengths − IID)`` (*length*).

Cells the IID sample never reaches are left out of the re-weighting; ``coverage`` says which
share of the OOD closes was matched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_illusions.evaluation import ORIGINAL, SentenceSums
from hf_illusions.intervals import split_counts
from hf_illusions.statistics import percentile_interval
from hf_illusions.tasks.dyck import DISTANCE_BUCKETS, MAX_DEPTH_BUCKET, POSITION_BUCKETS

TRAIN_DEPTH = 10
#: sentence-length bins (brackets): [4, 8), [8, 16), …, [256, 512), [512, ∞)
LENGTH_EDGES = (0, 8, 16, 32, 64, 128, 256, 512)
CLOSE = "close"


def _cell_arrays(sums: SentenceSums, model: str, quantity: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sentence sums and counts over the ``depth_distance`` cells, ``(n_sentences, 15, 8)`` each."""
    shape = (sums.n_sentences, MAX_DEPTH_BUCKET, len(DISTANCE_BUCKETS))
    counts = sums.cell_n["depth_distance"].reshape(shape)
    if quantity == "accuracy_diff":
        acc = (
            sums.cells[model]["depth_distance"]["accuracy"]
            - sums.cells[ORIGINAL]["depth_distance"]["accuracy"]
        )
        return acc.reshape(shape), counts
    return sums.cells[model]["depth_distance"][quantity].reshape(shape), counts


def _summary(point: float, replicates: np.ndarray) -> dict:
    return {"value": float(point), "ci": percentile_interval(replicates)}


def _weighted(counts: np.ndarray, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Count-weighted sums over sentences, prefixed by the full sample (row 0)."""
    out = []
    for a in arrays:
        flat = a.reshape(a.shape[0], -1)
        full = flat.sum(0, keepdims=True)
        out.append(np.concatenate([full, counts @ flat]).reshape(-1, *a.shape[1:]))
    return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bucket_results(sums: SentenceSums, split: str, quantities: Sequence[str] = ("jsd", "agreement")) -> dict:
    """``{model: {"depth"|"distance"|"position": {"buckets", "n", metric: [..], metric_ci: [..]}}}``.

    Proxies get ``quantities`` and ``accuracy``; the original its ``accuracy``. Buckets with no
    closes have ``None``.
    """
    counts = split_counts(split, sums.n_sentences)
    shape = (sums.n_sentences, MAX_DEPTH_BUCKET, len(DISTANCE_BUCKETS))
    n_dd = sums.cell_n["depth_distance"].reshape(shape)
    views = {
        "depth": (lambda a: a.reshape(shape).sum(2), [str(d) for d in range(1, MAX_DEPTH_BUCKET + 1)]),
        "distance": (lambda a: a.reshape(shape).sum(1), list(DISTANCE_BUCKETS)),
    }
    out: dict[str, dict] = {}
    for model, families in sums.cells.items():
        wanted = ["accuracy"] if model == ORIGINAL else ["accuracy", *quantities]
        res: dict = {}
        for view, (reduce, names) in views.items():
            n = reduce(n_dd.reshape(sums.n_sentences, -1))
            res[view] = _bucket_view(
                names, n, {q: reduce(families["depth_distance"][q]) for q in wanted}, counts
            )
        res["position"] = _bucket_view(
            list(POSITION_BUCKETS),
            sums.cell_n["position"],
            {q: families["position"][q] for q in wanted},
            counts,
        )
        out[model] = res
    return out


def _bucket_view(names: list[str], n: np.ndarray, values: dict[str, np.ndarray], counts: np.ndarray) -> dict:
    total = n.sum(0)
    view: dict = {"buckets": names, "n": [int(x) for x in total]}
    rep_n = counts @ n
    for q, v in values.items():
        point = _safe_div(v.sum(0), total)
        reps = _safe_div(counts @ v, rep_n)
        view[q] = [None if not np.isfinite(x) else float(x) for x in point]
        view[f"{q}_ci"] = [
            percentile_interval(reps[:, j]) if total[j] > 0 else None for j in range(len(names))
        ]
    return view


def depth_decomposition(
    iid: SentenceSums, iid_split: str, deep: SentenceSums, deep_split: str, model: str, quantity: str = "jsd"
) -> dict:
    """The unseen-depth − IID gap at closes, split into the three parts of the module docstring."""
    s_i, n_i = _cell_arrays(iid, model, quantity)
    s_d, n_d = _cell_arrays(deep, model, quantity)
    s_i, n_i = _weighted(split_counts(iid_split, iid.n_sentences), [s_i, n_i])
    s_d, n_d = _weighted(split_counts(deep_split, deep.n_sentences), [s_d, n_d])
    shallow = slice(0, TRAIN_DEPTH)  # depth buckets 1 … 10
    iid_mean = _safe_div(s_i.sum((1, 2)), n_i.sum((1, 2)))
    deep_mean = _safe_div(s_d.sum((1, 2)), n_d.sum((1, 2)))
    n_shallow = n_d[:, shallow].sum((1, 2))
    n_deep = n_d[:, TRAIN_DEPTH:].sum((1, 2))
    shallow_mean = _safe_div(s_d[:, shallow].sum((1, 2)), n_shallow)
    beyond_mean = _safe_div(s_d[:, TRAIN_DEPTH:].sum((1, 2)), n_deep)
    # IID re-weighted to the deep split's (depth, distance) mix at depth ≤ 10, on cells IID reaches
    cell_iid = _safe_div(s_i[:, shallow], n_i[:, shallow])
    weights = n_d[:, shallow] * np.isfinite(cell_iid)
    matched = np.nansum(np.nan_to_num(cell_iid) * weights, (1, 2)) / np.maximum(weights.sum((1, 2)), 1e-300)
    coverage = weights[0].sum() / max(n_shallow[0], 1)
    share_deep = _safe_div(n_deep, n_shallow + n_deep)
    parts = {
        "total": deep_mean - iid_mean,
        "deeper_than_training": share_deep * (beyond_mean - shallow_mean),
        "depth_distance_mix": matched - iid_mean,
        "same_depth_distance_other_context": shallow_mean - matched,
    }
    means = {
        "iid": iid_mean,
        "iid_matched_depth_distance": matched,
        "ood_depth_le_10": shallow_mean,
        "ood_depth_gt_10": beyond_mean,
        "ood": deep_mean,
    }
    return {
        "quantity": quantity,
        "coverage": float(coverage),
        "share_deeper_than_training": float(share_deep[0]),
        "means": {k: _summary(v[0], v[1:]) for k, v in means.items()},
        "parts": {k: _summary(v[0], v[1:]) for k, v in parts.items()},
    }


def length_bins(lengths_tokens: np.ndarray) -> np.ndarray:
    """Length bin of each sentence (brackets = tokens − 2 for ``<bos>`` and ``<eos>``)."""
    return np.searchsorted(LENGTH_EDGES, np.asarray(lengths_tokens) - 2, side="right") - 1


def _by_length(sums: SentenceSums, model: str, quantity: str) -> tuple[np.ndarray, np.ndarray]:
    g = sums.groups.index(CLOSE)
    if quantity == "accuracy_diff":
        values = sums.models[model]["accuracy"][g] - sums.models[ORIGINAL]["accuracy"][g]
    else:
        values = sums.models[model][quantity][g]
    onehot = np.eye(len(LENGTH_EDGES))[length_bins(sums.lengths)]
    return values[:, None] * onehot, sums.n[g][:, None] * onehot


def length_decomposition(
    iid: SentenceSums, iid_split: str, ood: SentenceSums, ood_split: str, model: str, quantity: str = "jsd"
) -> dict:
    """``gap = (OOD − IID at the same sentence lengths) + (IID at the same lengths − IID)``, at closes."""
    s_i, n_i = _weighted(split_counts(iid_split, iid.n_sentences), _by_length(iid, model, quantity))
    s_o, n_o = _weighted(split_counts(ood_split, ood.n_sentences), _by_length(ood, model, quantity))
    iid_mean = _safe_div(s_i.sum(1), n_i.sum(1))
    ood_mean = _safe_div(s_o.sum(1), n_o.sum(1))
    bin_iid = _safe_div(s_i, n_i)
    weights = n_o * np.isfinite(bin_iid)
    matched = (np.nan_to_num(bin_iid) * weights).sum(1) / np.maximum(weights.sum(1), 1e-300)
    matched_ood = _safe_div((s_o * (weights > 0)).sum(1), (n_o * (weights > 0)).sum(1))
    parts = {
        "total": ood_mean - iid_mean,
        "length": matched - iid_mean,
        "same_length_other_sentences": ood_mean - matched,
        "same_length_matched_only": matched_ood - matched,
    }
    means = {"iid": iid_mean, "iid_matched_length": matched, "ood": ood_mean}
    return {
        "quantity": quantity,
        "coverage": float(weights[0].sum() / max(n_o[0].sum(), 1)),
        "length_bins": [
            f"{lo}+" if i == len(LENGTH_EDGES) - 1 else f"{lo}-{LENGTH_EDGES[i + 1] - 1}"
            for i, lo in enumerate(LENGTH_EDGES)
        ],
        "ood_close_share_per_bin": [float(x) for x in n_o[0] / max(n_o[0].sum(), 1)],
        "means": {k: _summary(v[0], v[1:]) for k, v in means.items()},
        "parts": {k: _summary(v[0], v[1:]) for k, v in parts.items()},
    }


def confound_analyses(
    sums_by_split: dict[str, SentenceSums],
    models: Sequence[str],
    iid_split: str = "test_iid",
    depth_split: str = "test_unseen_depth",
    quantities: Sequence[str] = ("jsd",),
) -> dict:
    """Everything above for every proxy in ``models``: buckets per split, and both decompositions."""
    out: dict = {"buckets": {}, "depth": {}, "length": {}}
    for split, sums in sums_by_split.items():
        if sums.cells:
            out["buckets"][split] = bucket_results(sums, split)
    iid = sums_by_split.get(iid_split)
    if iid is None or not iid.cells:
        return out
    for model in models:
        for q in quantities:
            key = model if q == "jsd" else f"{model}/{q}"
            if depth_split in sums_by_split:
                out["depth"][key] = depth_decomposition(
                    iid, iid_split, sums_by_split[depth_split], depth_split, model, q
                )
            out["length"][key] = {
                split: length_decomposition(iid, iid_split, sums, split, model, q)
                for split, sums in sums_by_split.items()
                if split != iid_split and sums.lengths is not None
            }
    return out


__all__ = [
    "LENGTH_EDGES",
    "TRAIN_DEPTH",
    "bucket_results",
    "confound_analyses",
    "depth_decomposition",
    "length_bins",
    "length_decomposition",
]

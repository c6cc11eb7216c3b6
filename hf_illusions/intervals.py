"""Bootstrap intervals for the numbers a reproduction reports, from its per-sentence sums.

:func:`split_intervals` attaches to one split's results a 95 % interval of every JSD, agreement
and accuracy (resampling sentences), and for each proxy the **paired** interval of its accuracy
minus the original's on the same sentences (``accuracy_diff``), which is what "under-" or
"over-generalizes" rests on. :func:`gap` gives the OOD − IID difference of a proxy's faithfulness,
resampling both splits independently. See :mod:`hf_illusions.statistics` for the scheme.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hf_illusions.evaluation import ORIGINAL, SentenceSums
from hf_illusions.statistics import (
    BOOTSTRAP_SEED,
    N_RESAMPLES,
    bootstrap_counts,
    paired_difference_interval,
    percentile_interval,
    ratio,
    ratio_interval,
    replicate_ratios,
    split_seed,
)


@lru_cache(maxsize=32)
def split_counts(split: str, n_sentences: int, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """The split's bootstrap count matrix (cached: every quantity of a split shares it)."""
    counts = bootstrap_counts(n_sentences, n_resamples, split_seed(split, seed))
    counts.flags.writeable = False
    return counts


def split_intervals(
    sums: SentenceSums, split: str, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, dict]:
    """``{model: {group: {"ci": {metric: [lo, hi]}, "accuracy_diff": …}, "attention_ci": …}}``."""
    counts = split_counts(split, sums.n_sentences, n_resamples, seed)
    original = sums.models[ORIGINAL]["accuracy"]
    out: dict[str, dict] = {}
    for name, quantities in sums.models.items():
        res: dict = {}
        for g, group in enumerate(sums.groups):
            entry: dict = {"ci": {q: ratio_interval(v[g], sums.n[g], counts) for q, v in quantities.items()}}
            if name != ORIGINAL:
                acc = quantities["accuracy"][g]
                entry["accuracy_diff"] = ratio(acc - original[g], sums.n[g])
                entry["ci"]["accuracy_diff"] = paired_difference_interval(acc, original[g], sums.n[g], counts)
            res[group] = entry
        attention = sums.attention.get(name, {})
        if attention:
            res["attention_ci"] = {
                layer: {q: ratio_interval(v[q], v["n"], counts) for q in ("jsd", "agreement")}
                for layer, v in attention.items()
            }
        out[name] = res
    return out


def merge_intervals(means: dict, intervals: dict) -> dict:
    """``means`` (from :meth:`SentenceSums.means`) with each group's interval fields added."""
    out = {}
    for name, res in means.items():
        merged = dict(res)
        for group, extra in intervals.get(name, {}).items():
            if group == "attention_ci":
                merged[group] = extra
            else:
                merged[group] = {**res[group], **extra}
        out[name] = merged
    return out


def gap_replicates(
    ood: SentenceSums,
    ood_split: str,
    iid: SentenceSums,
    iid_split: str,
    model: str,
    group: str,
    quantity: str,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, np.ndarray]:
    """OOD − IID of one quantity and its bootstrap replicates, the splits resampled independently.

    ``quantity`` is a summed quantity (``jsd``, ``agreement``, ``accuracy``, …) or
    ``accuracy_diff`` (proxy − original accuracy, paired within each split). The replicates let a
    caller compare two gaps (e.g. one split's against another's) without resampling again.
    """

    def parts(sums: SentenceSums) -> tuple[np.ndarray, np.ndarray]:
        g = sums.groups.index(group)
        if quantity == "accuracy_diff":
            return sums.models[model]["accuracy"][g] - sums.models[ORIGINAL]["accuracy"][g], sums.n[g]
        return sums.models[model][quantity][g], sums.n[g]

    (num_o, den_o), (num_i, den_i) = parts(ood), parts(iid)
    rep_o = replicate_ratios(num_o, den_o, split_counts(ood_split, ood.n_sentences, n_resamples, seed))
    rep_i = replicate_ratios(num_i, den_i, split_counts(iid_split, iid.n_sentences, n_resamples, seed))
    return ratio(num_o, den_o) - ratio(num_i, den_i), rep_o - rep_i


def gap(*args, **kwargs) -> dict:
    """``{"value": OOD − IID, "ci": [lo, hi]}``; arguments as :func:`gap_replicates`."""
    value, replicates = gap_replicates(*args, **kwargs)
    return {"value": value, "ci": percentile_interval(replicates)}


__all__ = ["gap", "gap_replicates", "merge_intervals", "split_counts", "split_intervals"]

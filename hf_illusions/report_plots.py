"""The report's figures, built as matplotlib ``Figure`` objects and then saved as PNGs.

Each ``*_figure`` function reads only ``results.json`` (see :mod:`hf_illusions.report`) and
returns the figure, so a test can check its layout (every legend inside the figure) before
:func:`save_figure` writes it. Legends go under the panels with ``loc="outside lower center"``
under constrained layout, which reserves their room; :func:`legend_below` wraps the entries into
as many rows as it takes for the legend to fit the figure's width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_illusions.report import (
    FAMILY_TITLES,
    IID_SPLIT,
    ORIGINAL,
    TYPE_GAP_MIN_IID_AGREEMENT,
    _fmt,
    families,
    generalization_gap,
    headline,
    ood_splits,
    representative_proxies,
    splits_of,
    type_gap_proxies,
    type_groups_of,
    value,
)

Figure = Any  # matplotlib.figure.Figure, imported lazily (matplotlib is slow to import)
#: a legend may take at most this share of the figure's width before it wraps into another row
LEGEND_WIDTH = 0.98


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (reports are written headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(ncols: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """One row of panels under constrained layout, which keeps titles, labels and the legend inside."""
    return pyplot().subplots(1, ncols, figsize=figsize, layout="constrained", **kwargs)


def legend_below(fig: Figure, ax: Any) -> None:
    """One legend for the figure, under the panels, so it never hides a bar or a line.

    The columns are as many as fit the figure's width (at most 5): long labels wrap into rows
    instead of running past the figure's edges.
    """
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    renderer = fig.canvas.get_renderer()
    for ncol in range(min(len(labels), 5), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=9, frameon=False)
        if ncol == 1 or legend.get_window_extent(renderer).width <= LEGEND_WIDTH * fig.bbox.width:
            return
        legend.remove()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG and close it."""
    path = Path(path)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def iid_label(results: Mapping, name: str) -> str:
    """Legend entry that shows the IID agreement the representative was chosen by (it may fall short)."""
    if name == ORIGINAL:
        return name
    agreement = value(results, IID_SPLIT, name, headline(results)[0], "agreement")
    return f"{name} (IID agreement {_fmt(agreement)})"


def _grouped_bars(ax: Any, categories: Sequence[str], series: Mapping[str, Sequence[float]]) -> None:
    """One group of bars per category, one bar per series (NaN drawn as an empty slot)."""
    width = 0.8 / max(len(series), 1)
    for i, (label, ys) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(categories))]
        ax.bar(xs, [0 if math.isnan(y) else y for y in ys], width, label=label)
    ticks = [j + width * (len(series) - 1) / 2 for j in range(len(categories))]
    ax.set_xticks(ticks, [c.removeprefix("test_") for c in categories], rotation=20)
    ax.grid(axis="y", alpha=0.3)


def metric_vs_setting_figure(results: Mapping, metric: str = "jsd", group: str | None = None) -> Figure:
    """Output ``metric`` vs SVD rank (left) and vs k-means k (right), one line per split, log₂ x."""
    group = group or headline(results)[0]
    fams = families(results)
    fig, axes = subplots(2, (11, 4.2), sharey=True)
    label = {"jsd": "output JSD (base 2)", "agreement": "agreement with original"}.get(metric, metric)
    for ax, (family, param) in zip(axes, (("svd", "rank"), ("kmeans", "k")), strict=True):
        names = fams.get(family, [])
        xs = [results["proxies"][n]["param"] for n in names]
        for split in splits_of(results):
            ax.plot(xs, [value(results, split, n, group, metric) for n in names], marker="o", label=split)
        if not names:
            ax.text(0.5, 0.5, "not swept", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_title(f"{FAMILY_TITLES[family]}")
        ax.set_xlabel(param)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{label} — {group} positions")
    legend_below(fig, axes[0])
    fig.suptitle(f"{label} vs simplification strength, per split")
    return fig


def accuracy_per_split_figure(results: Mapping, min_iid_agreement: float = 0.9) -> Figure:
    """Grouped bars: the original vs one representative setting of each family, per split."""
    models = [ORIGINAL, *representative_proxies(results, min_iid_agreement).values()]
    splits = splits_of(results)
    groups = headline(results)
    fig, axes = subplots(len(groups), (12, 4.5), sharey=True)
    for ax, group in zip(axes, groups, strict=True):
        series = {
            iid_label(results, m): [value(results, s, m, group, "accuracy") for s in splits] for m in models
        }
        _grouped_bars(ax, splits, series)
        ax.set_title(f"accuracy — {group} positions")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel(
        "accuracy (closing-bracket argmax)" if results.get("task", "dyck") == "dyck" else "accuracy"
    )
    legend_below(fig, axes[0])
    fig.suptitle(
        f"Original vs proxies: per family, the smallest setting with IID agreement ≥ {min_iid_agreement}"
        " (else the largest)"
    )
    return fig


def gap_figure(results: Mapping, group: str | None = None, min_iid_agreement: float = 0.9) -> Figure:
    """Generalization gap per OOD split for the representative proxies: ΔJSD and Δagreement."""
    group = group or headline(results)[0]
    reps = representative_proxies(results, min_iid_agreement).values()
    gaps, ood = generalization_gap(results, group), ood_splits(results)
    fig, axes = subplots(2, (12, 4.5))
    for ax, metric in zip(axes, ("jsd", "agreement"), strict=True):
        _grouped_bars(ax, ood, {iid_label(results, n): [gaps[n][s][metric] for s in ood] for n in reps})
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel(f"{metric}(split) − {metric}({IID_SPLIT})")
        ax.set_title(f"{'output JSD' if metric == 'jsd' else 'agreement'} gap — {group} positions")
    legend_below(fig, axes[0])
    fig.suptitle("Generalization gap: OOD minus IID faithfulness (settings as in accuracy_per_split.png)")
    return fig


def jsd_per_type_figure(results: Mapping, min_iid_agreement: float = 0.9) -> Figure:
    """Code: output JSD per prediction type, one panel per split, one bar per representative proxy."""
    types, splits = type_groups_of(results), splits_of(results)
    reps = representative_proxies(results, min_iid_agreement).values()
    fig, axes = subplots(len(splits), (5 * len(splits), 4.5), sharey=True, squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        series = {iid_label(results, n): [value(results, split, n, t, "jsd") for t in types] for n in reps}
        _grouped_bars(ax, types, series)
        ax.set_title(split)
    axes[0][0].set_ylabel("output JSD (base 2)")
    legend_below(fig, axes[0][0])
    fig.suptitle("Output JSD per prediction type and split (representative proxies)")
    return fig


def gap_per_type_figure(results: Mapping) -> Figure:
    """Code: per OOD split, each ranked proxy's output-JSD gap per prediction type (see type_gap_proxies)."""
    types, ood, names = type_groups_of(results), ood_splits(results), type_gap_proxies(results)
    fig, axes = subplots(len(ood), (6 * len(ood), 4.5), sharey=True, squeeze=False)
    for ax, split in zip(axes[0], ood, strict=True):
        series = {
            iid_label(results, n): [
                value(results, split, n, t, "jsd") - value(results, IID_SPLIT, n, t, "jsd") for t in types
            ]
            for n in names
        }
        _grouped_bars(ax, types, series)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(split)
    axes[0][0].set_ylabel(f"JSD(split) − JSD({IID_SPLIT})")
    legend_below(fig, axes[0][0])
    fig.suptitle(
        f"Output-JSD gap per prediction type (proxies with IID agreement ≥ {TYPE_GAP_MIN_IID_AGREEMENT})"
    )
    return fig


def report_figures(results: Mapping) -> dict[str, Callable[[], Figure]]:
    """``{file name: builder}`` of every figure the report of ``results`` shows, in reading order."""
    figures: dict[str, Callable[[], Figure]] = {
        "jsd_vs_rank.png": lambda: metric_vs_setting_figure(results, "jsd"),
        "agreement_vs_rank.png": lambda: metric_vs_setting_figure(results, "agreement"),
        "accuracy_per_split.png": lambda: accuracy_per_split_figure(results),
        "gap.png": lambda: gap_figure(results),
    }
    if results.get("task") == "code":
        figures["jsd_per_type.png"] = lambda: jsd_per_type_figure(results)
        figures["gap_per_type.png"] = lambda: gap_per_type_figure(results)
    return figures


__all__ = [
    "accuracy_per_split_figure",
    "gap_figure",
    "gap_per_type_figure",
    "iid_label",
    "jsd_per_type_figure",
    "legend_below",
    "metric_vs_setting_figure",
    "pyplot",
    "report_figures",
    "save_figure",
    "subplots",
]

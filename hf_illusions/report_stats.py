"""Report sections whose claims rest on intervals: findings, gaps, accuracy differences, confounds.

Reads only ``results.json`` (what :mod:`hf_illusions.findings`, :mod:`hf_illusions.intervals` and
:mod:`hf_illusions.confounds` put there), so a report can be regenerated without the model.
Every number a claim rests on is printed with its 95 % bootstrap interval over sentences
(``value [low, high]``); words such as "under-generalizes" appear only when the interval
excludes zero, and "within noise" otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_illusions.findings import CLAIMS, FAITHFUL_AGREEMENT
from hf_illusions.report import ACCURACY_VERDICTS, fmt, with_ci
from hf_illusions.statistics import verdict

IID_SPLIT = "test_iid"
DEPTH_SPLIT = "test_unseen_depth"
ORIGINAL = "original"
#: buckets with fewer closes are left out of the plots (their intervals span decades)
MIN_BUCKET_CLOSES = 20


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


# ---------------------------------------------------------------- findings


#: header of every findings table: the report's, and per seed in the README and reports/findings
FINDING_COLUMNS = ["finding", "verdict", "number it rests on", "value [95 % interval]"]


def finding_cells(key: str, finding: Mapping) -> list[str]:
    """One paper finding as table cells: the claim, its verdict, the number it rests on and its interval.

    A finding that could not be tested names why in place of the number.
    """
    number = finding.get("key") or {}
    what = number.get("what") or finding.get("why") or ""
    return [f"{key}. {CLAIMS[key]}", f"**{finding['verdict']}**", what, with_ci(number, 4) if number else "–"]


def accuracy_verdict_table(results: Mapping, group: str) -> str:
    """Proxy − original accuracy on each OOD split, one row per proxy faithful in distribution.

    Only faithful proxies are judged: a proxy already far from the model in distribution is less
    accurate everywhere, which says nothing about generalization. Each cell is a verdict and the
    paired difference it rests on.
    """
    names = faithful_representatives(results, group, every_setting=True)
    splits = [s for s in results["splits"] if s != IID_SPLIT]
    rows = []
    for name in names:
        cells = []
        for split in splits:
            entry = (results["splits"][split].get(name) or {}).get(group) or {}
            ci = (entry.get("ci") or {}).get("accuracy_diff")
            number = with_ci({"value": entry.get("accuracy_diff"), "ci": ci}, 4)
            cells.append(f"{ACCURACY_VERDICTS[verdict(ci, 'over', 'under')]} {number}")
        rows.append([f"`{name}`", *cells])
    if not rows:
        return ""
    return (
        f"### Proxy − original accuracy off distribution (`{group}` positions)\n\n"
        "Per proxy faithful in distribution (every setting) and OOD split: verdict, then proxy − "
        "original accuracy [95 % paired interval]. **over** / **under**: the proxy over-generalizes "
        "(more accurate than the original) / under-generalizes (less accurate), the interval excluding "
        "zero.\n\n" + _table(["proxy", *splits], rows)
    )


def findings_section(results: Mapping) -> str:
    """The report's findings: a table with one row per paper finding, then the accuracy verdicts."""
    rows = [finding_cells(key, f) for key, f in (results.get("findings") or {}).items()]
    group = (results.get("evaluation") or {}).get("headline_groups", ["close"])[0]
    parts = [
        "## Findings\n\nEach claim is tested with 95 % bootstrap intervals over sentences (1,000 "
        "resamples; paired for proxy − original accuracy; both splits resampled for gaps). "
        f"*Faithful in distribution* means agreement ≥ {FAITHFUL_AGREEMENT} on `{IID_SPLIT}`.",
        _table(FINDING_COLUMNS, rows) if rows else "",
        accuracy_verdict_table(results, group),
    ]
    return "\n\n".join(p for p in parts if p) if rows or parts[2] else ""


# ---------------------------------------------------------------- gaps


def gap_table(results: Mapping, group: str, quantity: str = "jsd") -> str:
    gaps = results.get("gaps") or {}
    if not gaps:
        return ""
    splits = list(next(iter(gaps.values())).keys())
    rows = []
    for name, per_split in gaps.items():
        cells = [with_ci((per_split[s].get(group) or {}).get(quantity), 4) for s in splits]
        rows.append([f"`{name}`", *cells])
    title = {"jsd": "output JSD", "agreement": "agreement", "accuracy_diff": "proxy − original accuracy"}
    return (
        f"### Generalization gap with intervals — {title[quantity]}, `{group}` positions\n\n"
        f"Each cell: {title[quantity]}(split) − {title[quantity]}({IID_SPLIT}) [95 % interval].\n\n"
        + _table(["proxy", *splits], rows)
    )


# ---------------------------------------------------------------- confounds


PART_TITLES = {
    "deeper_than_training": "depth > 10",
    "depth_distance_mix": "depth/distance mix (≤ 10)",
    "same_depth_distance_other_context": "same depth & distance: length, position, structure",
    "length": "sentence length",
    "same_length_other_sentences": "same length: structure",
}


def depth_decomposition_table(results: Mapping, names: Sequence[str]) -> str:
    depth = ((results.get("confounds") or {}).get("depth")) or {}
    rows = []
    for name in names:
        d = depth.get(name)
        if not d:
            continue
        p = d["parts"]
        rows.append(
            [
                f"`{name}`",
                with_ci(p["total"], 4),
                *(with_ci(p[k], 4) for k in ("deeper_than_training", "depth_distance_mix",
                                              "same_depth_distance_other_context")),
                fmt(d["coverage"], 2),
            ]
        )  # fmt: skip
    if not rows:
        return ""
    return (
        f"### Where the unseen-depth gap comes from (output JSD at closes)\n\n"
        f"`{DEPTH_SPLIT}` − `{IID_SPLIT}` = (depth > 10) + (depth/distance mix at depth ≤ 10) + (same "
        "depth and distance bucket, other context). The last compares the split's closes at depth ≤ 10 "
        "with IID closes re-weighted to the same (depth, distance-to-opener) cells: what remains is "
        "longer sentences, later positions and new structure together. Coverage: share of the split's "
        "depth-≤ 10 closes whose cell the IID sample has.\n\n"
        + _table(["proxy", "total gap", "depth > 10", "depth/distance mix", "same cell, other context",
                  "coverage"], rows)
    )  # fmt: skip


def length_decomposition_table(results: Mapping, names: Sequence[str]) -> str:
    length = ((results.get("confounds") or {}).get("length")) or {}
    rows = []
    for name in names:
        for split, d in (length.get(name) or {}).items():
            p = d["parts"]
            rows.append(
                [f"`{name}`", f"`{split}`", with_ci(p["total"], 4), with_ci(p["length"], 4),
                 with_ci(p["same_length_other_sentences"], 4), fmt(d["coverage"], 2)]
            )  # fmt: skip
    if not rows:
        return ""
    return (
        "### Length-matched comparisons (output JSD at closes)\n\n"
        "IID sentences re-weighted to each split's mix of sentence lengths (bins 0–7, 8–15, …, 512+ "
        "brackets): gap = (length) + (same length: what differs besides length — structure for the "
        "structure splits; depth and structure for unseen depth).\n\n"
        + _table(["proxy", "split", "total gap", "length", "same length", "coverage"], rows)
    )


def bucket_table(results: Mapping, name: str, view: str, metric: str = "jsd") -> str:
    buckets = ((results.get("confounds") or {}).get("buckets")) or {}
    if not buckets:
        return ""
    splits = list(buckets)
    names = buckets[splits[0]][name][view]["buckets"]
    rows = []
    for j, bucket in enumerate(names):
        cells = []
        for split in splits:
            v = buckets[split][name][view]
            entry = {"value": v[metric][j], "ci": v[f"{metric}_ci"][j]} if v["n"][j] else None
            cells.append(f"{with_ci(entry, 4, signed=False)} (n={v['n'][j]})" if entry else "–")
        rows.append([bucket, *cells])
    return f"#### `{name}`: {metric} per {view} bucket\n\n" + _table([view, *splits], rows)


def bucket_figure(results: Mapping, names: Sequence[str], view: str) -> Any:
    """Output JSD against depth (or position) of the close: one panel per proxy, one line per split.

    ``None`` when the results have no per-bucket numbers or no proxy is named.
    """
    buckets = ((results.get("confounds") or {}).get("buckets")) or {}
    if not buckets or not names:
        return None
    from hf_illusions.report_plots import legend_below, subplots

    fig, axes = subplots(len(names), (4.6 * len(names), 4.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        for split, per_model in buckets.items():
            v = per_model[name][view]
            xs = [i for i, n in enumerate(v["n"]) if n >= MIN_BUCKET_CLOSES]
            ys = [v["jsd"][i] for i in xs]
            lo = [v["jsd_ci"][i][0] for i in xs]
            hi = [v["jsd_ci"][i][1] for i in xs]
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=split.removeprefix("test_"))
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
        labels = per_model[name][view]["buckets"]
        ax.set_xticks(range(len(labels)), labels, rotation=45 if view != "depth" else 0, fontsize=8)
        ax.set_title(f"{name}")
        ax.set_xlabel(f"{view} of the closing bracket")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if view == "depth":
            ax.axvline(9.5, color="grey", linestyle="--", linewidth=0.8)  # training depth bound
    axes[0][0].set_ylabel("output JSD at closes (95 % interval)")
    legend_below(fig, axes[0][0])
    fig.suptitle(f"Output JSD against {view}, per split")
    return fig


def faithful_representatives(
    results: Mapping, group: str = "close", every_setting: bool = False
) -> list[str]:
    """Proxies that look faithful: IID agreement ≥ the threshold and not exact (JSD > 1e-6).

    Per family the smallest such setting, or with ``every_setting`` all of them.
    """
    from hf_illusions.report import families, value

    out = []
    for names in families(results).values():
        good = [
            n
            for n in names
            if value(results, IID_SPLIT, n, group, "agreement") >= FAITHFUL_AGREEMENT
            and value(results, IID_SPLIT, n, group, "jsd") > 1e-6
        ]
        out += good if every_setting else good[:1]
    return out


def confound_sections(results: Mapping, out_dir: Path) -> tuple[str, str]:
    """Markdown and figure links for the Dyck confound analyses (empty for tasks without them)."""
    if not results.get("confounds"):
        return "", ""
    from hf_illusions.report_plots import save_figure

    names = faithful_representatives(results)[:4]
    figures = []
    for view in ("depth", "position"):
        file = f"jsd_vs_{view}.png"
        fig = bucket_figure(results, names, view)
        if fig is not None:
            save_figure(fig, out_dir / file)
            figures.append(f"![output JSD vs {view}]({file})")
    parts = [
        "## Depth apart from length and position",
        "Proxies shown: per family, the smallest setting faithful in distribution "
        f"(IID agreement ≥ {FAITHFUL_AGREEMENT}).",
        depth_decomposition_table(results, names),
        length_decomposition_table(results, names),
        *(bucket_table(results, n, "depth") for n in names[:2]),
        *(bucket_table(results, n, "position") for n in names[:2]),
    ]
    return "\n\n".join(p for p in parts if p), "\n\n".join(figures)


__all__ = [
    "FINDING_COLUMNS",
    "accuracy_verdict_table",
    "bucket_figure",
    "confound_sections",
    "depth_decomposition_table",
    "faithful_representatives",
    "finding_cells",
    "findings_section",
    "gap_table",
    "length_decomposition_table",
    "with_ci",
]

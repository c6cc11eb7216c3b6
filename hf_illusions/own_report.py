"""README.md tables and PNG plots for :func:`hf_illusions.own_data.evaluate_own_model` results.

Reads only ``results.json`` (``results["splits"][split][model][group]`` with ``"ci"`` intervals,
``results["gaps"][proxy][split][group][quantity]``), so a report can be rebuilt from the file.
Number formatting and the plot plumbing are the Dyck report's (:mod:`hf_illusions.report_stats`,
:mod:`hf_illusions.report`); what differs is the layout: one user-chosen reference split
instead of ``test_iid``, and the group ``all`` (plus one group per label) instead of closes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hf_illusions.report_plots import legend_below, save_figure, subplots
from hf_illusions.report_stats import with_ci
from hf_illusions.statistics import verdict

ORIGINAL = "original"
PLOTS = ("faithfulness_per_split.png", "gap.png")
RESULTS_NAME = "results.json"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _cell(entry: Mapping, metric: str, digits: int = 3) -> str:
    """``0.123 [0.110, 0.137]`` from a merged group entry (value and its ``ci``)."""
    return with_ci({"value": entry.get(metric), "ci": (entry.get("ci") or {}).get(metric)}, digits, False)


def split_table(results: Mapping, proxy: str, group: str) -> str:
    """Per split: positions, both models' accuracy, the proxy's JSD and agreement, 95 % intervals."""
    rows = []
    for split, res in results["splits"].items():
        orig, prox = res[ORIGINAL][group], res[proxy][group]
        rows.append(
            [
                f"`{split}`" + (" (reference)" if split == results["settings"]["reference_split"] else ""),
                str(orig["n"]),
                _cell(orig, "accuracy"),
                _cell(prox, "accuracy"),
                _cell(prox, "jsd", 4),
                _cell(prox, "agreement"),
            ]
        )
    header = ["split", "positions", "original accuracy", "proxy accuracy", "output JSD", "agreement"]
    return f"### `{proxy}` — `{group}` positions\n\n" + _table(header, rows)


def gap_table(results: Mapping, proxy: str, group: str) -> str:
    """Per non-reference split: JSD, agreement and accuracy-difference gaps with intervals and verdicts."""
    gaps = (results.get("gaps") or {}).get(proxy) or {}
    if not gaps:
        return ""
    ref = results["settings"]["reference_split"]
    rows = []
    for split, per_group in gaps.items():
        g = per_group.get(group) or {}
        jsd = g.get("jsd") or {}
        rows.append(
            [
                f"`{split}`",
                with_ci(jsd, 4),
                with_ci(g.get("agreement"), 3),
                with_ci(g.get("accuracy_diff"), 3),
                verdict(jsd.get("ci"), "less faithful", "more faithful"),
            ]
        )
    header = ["split", "Δ output JSD", "Δ agreement", "Δ (proxy − original accuracy)", "JSD verdict"]
    return (
        f"### Gaps against `{ref}` — `{proxy}`, `{group}` positions\n\n"
        f"Each cell: value(split) − value(`{ref}`) [95 % interval, both splits resampled]. "
        "A split is called less/more faithful only when the JSD interval excludes zero.\n\n"
        + _table(header, rows)
    )


def _header(results: Mapping) -> str:
    s = results["settings"]
    sizes = ", ".join(
        f"`{split}` {w['n_windows']}/{w['n_available']} windows" for split, w in results["windows"].items()
    )
    bos = "BOS + " if s["bos_token_id"] is not None else ""
    return "\n".join(
        [
            f"# Faithfulness of a `{s['simplifier']}` proxy of `{results['model']}` on `{results['data']}`",
            "",
            f"- Model type `{results['model_type']}`; simplified layers {s['layers'] or 'all'}, "
            f"heads {s['heads'] or 'all'}; settings {s['simplifier_settings']}.",
            f"- Windows of {s['window']} tokens ({bos}text; seed {s['seed']}); fitted on "
            f"{results['fit']['n_windows']} `{s['fit_split']}` windows; scored: {sizes}.",
            "- Every next-token position is scored with the full-vocabulary argmax; intervals are 95 % "
            f"bootstrap over windows ({s['n_resamples']} resamples).",
        ]
    )


def _points(ax, labels: list[str], series: Mapping[str, list[Mapping]]) -> None:
    """One marker per label and series with its 95 % interval as an error bar (missing: no marker)."""
    for i, (name, entries) in enumerate(series.items()):
        nan = float("nan")
        ys = [e.get("value") if e.get("value") is not None else nan for e in entries]
        cis = [e.get("ci") or [y, y] for e, y in zip(entries, ys, strict=True)]
        err = [
            [y - c[0] for y, c in zip(ys, cis, strict=True)],
            [c[1] - y for y, c in zip(ys, cis, strict=True)],
        ]
        xs = [x + 0.1 * i for x in range(len(labels))]
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=4, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.grid(alpha=0.3)


def faithfulness_figure(results: Mapping, group: str = "all") -> Any:
    """Output JSD and agreement of every proxy per split, with 95 % interval error bars."""
    splits = list(results["splits"])
    fig, axes = subplots(2, (11, 4.2))
    for ax, metric in zip(axes, ("jsd", "agreement"), strict=True):
        series = {}
        for proxy in results["proxies"]:
            entries = [results["splits"][s][proxy][group] for s in splits]
            series[proxy] = [{"value": e.get(metric), "ci": (e.get("ci") or {}).get(metric)} for e in entries]
        _points(ax, splits, series)
        ax.set_title(f"{'output JSD (base 2)' if metric == 'jsd' else 'agreement'} — {group} positions")
    legend_below(fig, axes[0])
    fig.suptitle("Proxy vs original per split (95 % intervals)")
    return fig


def gaps_figure(results: Mapping, group: str = "all") -> Any:
    """JSD and agreement gap of every non-reference split against the reference, with intervals."""
    gaps = results.get("gaps") or {}
    ood = list(next(iter(gaps.values()), {}))
    fig, axes = subplots(2, (11, 4.2))
    for ax, metric in zip(axes, ("jsd", "agreement"), strict=True):
        series = {p: [(per[s].get(group) or {}).get(metric) or {} for s in ood] for p, per in gaps.items()}
        _points(ax, ood, series)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(f"{metric}(split) − {metric}({results['settings']['reference_split']})")
    legend_below(fig, axes[0])
    fig.suptitle(f"Generalization gap — {group} positions (95 % intervals)")
    return fig


def own_figures(results: Mapping) -> dict[str, Callable[[], Any]]:
    """``{file name: builder}`` of the report's figures (:data:`PLOTS`)."""
    return {PLOTS[0]: lambda: faithfulness_figure(results), PLOTS[1]: lambda: gaps_figure(results)}


def write_outputs(results: dict, sums: dict, out: str | Path) -> Path:
    """``results.json``, per-split sums (``sums/<split>.npz``) and the report; returns README.md's path."""
    out = Path(out)
    (out / "sums").mkdir(parents=True, exist_ok=True)
    for split, values in sums.items():
        values.save(out / "sums" / f"{split}.npz")
    tmp = out / (RESULTS_NAME + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out / RESULTS_NAME)
    return write_own_report(results, out)


def write_own_report(results: Mapping, out_dir: str | Path) -> Path:
    """Write ``README.md`` and the plots into ``out_dir``; returns the README path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in own_figures(results).items():
        save_figure(figure(), out_dir / name)
    groups = results["evaluation"]["groups"]
    parts = [_header(results), "![faithfulness per split](faithfulness_per_split.png)\n\n![gap](gap.png)"]
    for proxy in results["proxies"]:
        for group in groups:
            parts += [split_table(results, proxy, group), gap_table(results, proxy, group)]
    timings = results.get("timings") or {}
    if timings:
        parts.append(f"Fit {timings['fit_seconds']:.2f} s, evaluation {timings['evaluate_seconds']:.2f} s.")
    readme = out_dir / "README.md"
    readme.write_text("\n\n".join(p for p in parts if p) + "\n")
    return readme


__all__ = [
    "PLOTS",
    "RESULTS_NAME",
    "faithfulness_figure",
    "gap_table",
    "gaps_figure",
    "own_figures",
    "split_table",
    "write_outputs",
    "write_own_report",
]

"""Markdown tables, computed findings and PNG plots from a reproduction's ``results.json``.

Everything here reads the results dict written by :func:`hf_illusions.reproduce.reproduce_dyck`
(``results["splits"][split][model][group][metric]``, ``results["proxies"][name]["family"|"param"]``)
and nothing else, so a report can be regenerated from a results file alone. The "generalization
gap" is the paper's central quantity (Friedman et al. 2024, §4): a proxy's faithfulness on an OOD
split minus its faithfulness on ``test_iid``; positive JSD gaps / negative agreement gaps mean the
proxy is less faithful off distribution than the in-distribution numbers suggest.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

ORIGINAL = "original"
IID_SPLIT = "test_iid"
HEADLINE_GROUPS = ("close", "long_distance")
FAMILY_TITLES = {
    "svd": "SVD (low-rank keys/queries)",
    "kmeans": "k-means (clustered keys/queries)",
    "interaction_basis": "interaction basis (residual stream, Bushnaq et al. 2024)",
    "onehot": "one-hot attention",
    "onehot_layer": "one-hot attention in one layer",
}
PLOTS = ("jsd_vs_rank.png", "agreement_vs_rank.png", "accuracy_per_split.png", "gap.png")


# ---------------------------------------------------------------- reading the results dict


def value(results: Mapping, split: str, model: str, group: str, metric: str) -> float:
    """One number, NaN when absent or ``null`` (e.g. a group with no positions on a small split)."""
    try:
        v = results["splits"][split][model][group][metric]
    except (KeyError, TypeError):
        return math.nan
    return math.nan if v is None else float(v)


def splits_of(results: Mapping) -> list[str]:
    return list(results["splits"])


def ood_splits(results: Mapping, reference: str = IID_SPLIT) -> list[str]:
    return [s for s in splits_of(results) if s != reference]


def families(results: Mapping) -> dict[str, list[str]]:
    """``{family: [proxy names sorted by the swept parameter]}`` in first-seen family order."""
    out: dict[str, list[str]] = {}
    for name, rec in results["proxies"].items():
        out.setdefault(rec["family"], []).append(name)
    for names in out.values():
        names.sort(key=lambda n: results["proxies"][n].get("param") or 0)
    return out


def representative_proxies(
    results: Mapping, min_iid_agreement: float = 0.9, group: str = "close"
) -> dict[str, str]:
    """Per family, the smallest setting whose IID agreement reaches ``min_iid_agreement``.

    That is the proxy a reader would accept as "faithful" in distribution — exactly the one whose
    OOD behaviour the paper asks about. If no setting gets there, the largest one is used.
    """
    out = {}
    for family, names in families(results).items():
        good = [n for n in names if value(results, IID_SPLIT, n, group, "agreement") >= min_iid_agreement]
        out[family] = good[0] if good else names[-1]
    return out


def generalization_gap(
    results: Mapping, group: str = "close", reference: str = IID_SPLIT
) -> dict[str, dict[str, dict[str, float]]]:
    """``{proxy: {ood_split: {"jsd": JSD_ood − JSD_iid, "agreement": agr_ood − agr_iid}}}``."""
    gaps: dict[str, dict[str, dict[str, float]]] = {}
    for name in results["proxies"]:
        iid = {m: value(results, reference, name, group, m) for m in ("jsd", "agreement")}
        gaps[name] = {
            split: {m: value(results, split, name, group, m) - iid[m] for m in ("jsd", "agreement")}
            for split in ood_splits(results, reference)
        }
    return gaps


def layers_of(results: Mapping) -> list[str]:
    layers = {
        layer
        for split in results["splits"].values()
        for name, res in split.items()
        if name != ORIGINAL
        for layer in res.get("attention_jsd") or {}
    }
    return sorted(layers, key=int)


# ---------------------------------------------------------------- markdown


def _fmt(x: float | None, digits: int = 3, signed: bool = False, fixed: bool = True) -> str:
    """Fixed decimals for rates in [0, 1]; 3 significant digits (``fixed=False``) for JSDs, which
    span orders of magnitude (1e-9 at full rank, 1e-1 for a crude proxy)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    spec = f".{digits}f" if fixed else f".{digits}g"
    return format(x, ("+" if signed else "") + spec)


def _jsd(x: float | None, signed: bool = False) -> str:
    return _fmt(x, 3, signed=signed, fixed=False)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _faithfulness_cell(results: Mapping, split: str, name: str, group: str) -> str:
    """``JSD / agreement / accuracy``; the original has only an accuracy."""
    acc = _fmt(value(results, split, name, group, "accuracy"))
    if name == ORIGINAL:
        return f"– / – / {acc}"
    jsd, agreement = (value(results, split, name, group, m) for m in ("jsd", "agreement"))
    return f"{_jsd(jsd)} / {_fmt(agreement)} / {acc}"


def markdown_tables(results: Mapping) -> str:
    """Sections of the report: original accuracy, faithfulness per family, attention JSD, gaps."""
    splits, ood = splits_of(results), ood_splits(results)
    parts = [
        "## Original model accuracy",
        "Accuracy of the argmax among closing brackets (Murty et al.'s scoring).",
    ]
    rows = [
        [
            s,
            *(
                f"{_fmt(value(results, s, ORIGINAL, g, 'accuracy'))} (n={_n(results, s, g)})"
                for g in HEADLINE_GROUPS
            ),
        ]
        for s in splits
    ]
    parts.append(_table(["split", *HEADLINE_GROUPS], rows))

    parts.append(
        "## Output faithfulness per simplifier\n\nEach cell: output JSD / agreement with the "
        "original's argmax / proxy accuracy. The `original` row gives the original's accuracy."
    )
    for family, names in families(results).items():
        for group in HEADLINE_GROUPS:
            rows = [
                [f"`{n}`", *(_faithfulness_cell(results, s, n, group) for s in splits)]
                for n in [ORIGINAL, *names]
            ]
            parts += [
                f"### {FAMILY_TITLES.get(family, family)} — `{group}` positions",
                _table(["setting", *splits], rows),
            ]

    parts.append(
        "## Attention JSD per layer\n\nMean JSD between the proxy's and the original's attention "
        "distributions over heads and real query positions."
    )
    for layer in layers_of(results):
        rows = [
            [f"`{n}`", *(_jsd(_attention(results, s, n, layer)) for s in splits)] for n in results["proxies"]
        ]
        parts += [f"### Layer {layer}", _table(["proxy", *splits], rows)]

    for group in HEADLINE_GROUPS:
        parts.append(
            f"## Generalization gap — `{group}` positions\n\nEach cell: JSD(split) − JSD({IID_SPLIT}) / "
            f"agreement(split) − agreement({IID_SPLIT}). Positive JSD gaps and negative agreement gaps "
            "mean the proxy is less faithful off distribution."
        )
        rows = [
            [f"`{n}`", *(f"{_jsd(g[s]['jsd'], True)} / {_fmt(g[s]['agreement'], signed=True)}" for s in ood)]
            for n, g in generalization_gap(results, group).items()
        ]
        parts.append(_table(["proxy", *ood], rows))
    return "\n\n".join(parts) + "\n"


def _n(results: Mapping, split: str, group: str) -> int:
    n = value(results, split, ORIGINAL, group, "n")
    return 0 if math.isnan(n) else int(n)


def _attention(results: Mapping, split: str, name: str, layer: str) -> float:
    v = ((results["splits"].get(split, {}).get(name) or {}).get("attention_jsd") or {}).get(layer)
    return math.nan if v is None else float(v)


def _monotone(xs: Sequence[float], decreasing: bool, tol: float = 1e-9) -> bool:
    xs = [x for x in xs if not math.isnan(x)]
    return all((b <= a + tol) if decreasing else (b >= a - tol) for a, b in itertools.pairwise(xs))


def findings(results: Mapping, group: str = "close") -> list[str]:
    """Measured statements for the report's findings paragraph — computed, never asserted a priori."""
    out = []
    ood = ood_splits(results)
    gaps = generalization_gap(results, group)
    if ood and gaps and IID_SPLIT in results["splits"]:
        mean_gap = {s: _mean([g[s]["jsd"] for g in gaps.values()]) for s in ood}
        worst = max(mean_gap, key=lambda s: -math.inf if math.isnan(mean_gap[s]) else mean_gap[s])
        pairs = [g[s]["jsd"] for g in gaps.values() for s in ood if not math.isnan(g[s]["jsd"])]
        out.append(
            f"Averaged over {len(gaps)} {'proxy' if len(gaps) == 1 else 'proxies'}, the largest "
            f"output-JSD gap over `{IID_SPLIT}` "
            f"(`{group}` positions) is on `{worst}` ({_jsd(mean_gap[worst], signed=True)}); "
            f"{sum(x > 0 for x in pairs)} of {len(pairs)} proxy × OOD-split pairs are less faithful "
            "(higher JSD) than in distribution."
        )
    fams = families(results)
    for family, param in (("svd", "rank"), ("kmeans", "k")):
        names = fams.get(family, [])
        if len(names) < 2:
            continue
        mono = [
            s
            for s in splits_of(results)
            if _monotone([value(results, s, n, group, "jsd") for n in names], decreasing=True)
        ]
        others = [s for s in splits_of(results) if s not in mono]
        tail = f" (not on {', '.join(f'`{s}`' for s in others)})" if others else ""
        out.append(
            f"{FAMILY_TITLES[family].split(' (')[0]} output JSD decreases monotonically with {param} on "
            f"{len(mono)} of {len(splits_of(results))} splits{tail}."
        )
    depth = "test_unseen_depth"
    if "onehot" in results["proxies"] and depth in results["splits"]:
        for g in HEADLINE_GROUPS:
            a_p, a_o = (value(results, depth, m, g, "accuracy") for m in ("onehot", ORIGINAL))
            if math.isnan(a_p) or math.isnan(a_o):
                continue
            verb = "exceeds" if a_p > a_o else ("equals" if a_p == a_o else "does not exceed")
            out.append(
                f"On `{depth}` (`{g}`), the one-hot proxy's accuracy ({_fmt(a_p)}) {verb} the "
                f"original's ({_fmt(a_o)})."
            )
    return out


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _header(results: Mapping) -> str:
    m, d = results.get("model", {}), results.get("dataset", {})
    timing = results.get("timing", {})
    lines = [
        "# Dyck reproduction: faithfulness of simplified models per split",
        "",
        "Friedman et al., *Interpretability Illusions in the Generalization of Simplified Models* "
        "(ICML 2024). Generated by `hf_illusions.report` from `results.json`; every number is measured.",
        "",
        f"- model: `{results.get('model_dir')}` — {m.get('n_layer')} layers, {m.get('n_head')} head(s), "
        f"d_model={m.get('d_model')}, d_head={m.get('d_head')}, d_mlp={m.get('d_mlp')}, "
        f"{m.get('n_parameters')} parameters",
        f"- data: `{d.get('dir')}` (config `{d.get('config')}`), sentences per split: "
        + ", ".join(f"{s}={n}" for s, n in (d.get("n_sentences") or {}).items()),
        f"- simplifiers fitted on the first {d.get('n_fit_sequences')} training sequences; "
        f"proxies: {', '.join(f'`{n}`' for n in results['proxies'])}",
        f"- wall time: {_fmt(timing.get('total_s'), 1)} s; splits reused from a previous run: "
        + (", ".join(s for s, r in (results.get("resumed") or {}).items() if r) or "none"),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in (results.get("versions") or {}).items()),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_vs_setting(
    results: Mapping, path: str | Path, metric: str = "jsd", group: str = "close"
) -> Path:
    """Output ``metric`` vs SVD rank (left) and vs k-means k (right), one line per split, log₂ x."""
    fams = families(results)
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4.2), sharey=True)
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
    _legend_below(fig, axes[0])
    fig.suptitle(f"{label} vs simplification strength, per split")
    return _save(fig, path)


def _grouped_bars(ax, categories: Sequence[str], series: Mapping[str, Sequence[float]]) -> None:
    """One group of bars per category, one bar per series (NaN drawn as an empty slot)."""
    width = 0.8 / max(len(series), 1)
    for i, (label, ys) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(categories))]
        ax.bar(xs, [0 if math.isnan(y) else y for y in ys], width, label=label)
    ticks = [j + width * (len(series) - 1) / 2 for j in range(len(categories))]
    ax.set_xticks(ticks, [c.removeprefix("test_") for c in categories], rotation=20)
    ax.grid(axis="y", alpha=0.3)


def plot_accuracy_per_split(results: Mapping, path: str | Path, min_iid_agreement: float = 0.9) -> Path:
    """Grouped bars: the original vs one representative setting of each family, per split."""
    models = [ORIGINAL, *representative_proxies(results, min_iid_agreement).values()]
    splits = splits_of(results)
    fig, axes = _pyplot().subplots(1, len(HEADLINE_GROUPS), figsize=(12, 4.5), sharey=True)
    for ax, group in zip(axes, HEADLINE_GROUPS, strict=True):
        series = {
            _iid_label(results, m): [value(results, s, m, group, "accuracy") for s in splits] for m in models
        }
        _grouped_bars(ax, splits, series)
        ax.set_title(f"accuracy — {group} positions")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("accuracy (argmax among closing brackets)")
    _legend_below(fig, axes[0])
    fig.suptitle(
        f"Original vs proxies: per family, the smallest setting with IID agreement ≥ {min_iid_agreement}"
        " (else the largest)"
    )
    return _save(fig, path)


def plot_gap(
    results: Mapping, path: str | Path, group: str = "close", min_iid_agreement: float = 0.9
) -> Path:
    """Generalization gap per OOD split for the representative proxies: ΔJSD and Δagreement."""
    reps = representative_proxies(results, min_iid_agreement).values()
    gaps, ood = generalization_gap(results, group), ood_splits(results)
    fig, axes = _pyplot().subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("jsd", "agreement"), strict=True):
        _grouped_bars(ax, ood, {_iid_label(results, n): [gaps[n][s][metric] for s in ood] for n in reps})
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel(f"{metric}(split) − {metric}({IID_SPLIT})")
        ax.set_title(f"{'output JSD' if metric == 'jsd' else 'agreement'} gap — {group} positions")
    _legend_below(fig, axes[0])
    fig.suptitle("Generalization gap: OOD minus IID faithfulness (settings as in accuracy_per_split.png)")
    return _save(fig, path)


def _iid_label(results: Mapping, name: str) -> str:
    """Legend entry that shows the IID agreement the representative was chosen by (it may fall short)."""
    if name == ORIGINAL:
        return name
    return f"{name} (IID agreement {_fmt(value(results, IID_SPLIT, name, 'close', 'agreement'))})"


def _legend_below(fig, ax) -> None:
    """One legend for the figure, under the panels, so it never hides a bar or a line."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9, frameon=False)
        fig.subplots_adjust(bottom=0.3)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def write_report(results: dict, out_dir: str | Path) -> Path:
    """Write ``README.md`` and the four PNGs into ``out_dir``; returns the README path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_metric_vs_setting(results, out_dir / "jsd_vs_rank.png", "jsd")
    plot_metric_vs_setting(results, out_dir / "agreement_vs_rank.png", "agreement")
    plot_accuracy_per_split(results, out_dir / "accuracy_per_split.png")
    plot_gap(results, out_dir / "gap.png")
    facts = findings(results)
    text = "\n\n".join(
        [
            _header(results),
            "## Findings (computed from the numbers below)\n\n"
            + (" ".join(facts) or "No comparisons available."),
            "![output JSD vs rank](jsd_vs_rank.png)\n\n![agreement vs rank](agreement_vs_rank.png)\n\n"
            "![accuracy per split](accuracy_per_split.png)\n\n![generalization gap](gap.png)",
            markdown_tables(results),
        ]
    )
    readme = out_dir / "README.md"
    readme.write_text(text)
    return readme

"""Markdown tables, computed findings and PNG plots from a reproduction's ``results.json``.

Everything here reads the results dict written by :func:`hf_illusions.reproduction.reproduce_dyck`
(``results["splits"][split][model][group][metric]``, ``results["proxies"][name]["family"|"param"]``)
and nothing else, so a report can be regenerated from a results file alone. The "generalization
gap" is the paper's central quantity (Friedman et al. 2024, §4): a proxy's faithfulness on an OOD
split minus its faithfulness on ``test_iid``; positive JSD gaps / negative agreement gaps mean the
proxy is less faithful off distribution than the in-distribution numbers suggest.

The tables are here (:func:`markdown_tables`, :func:`code_tables`, :func:`circuit_table`); the
measured facts are :mod:`hf_illusions.report_facts` and what both share, reading the results dict
and formatting numbers, is :mod:`hf_illusions.report_common`. Both are re-exported: import from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hf_illusions.report_common import (
    ACCURACY_VERDICTS,
    FAMILY_TITLES,
    HEADLINE_GROUPS,
    IID_SPLIT,
    NON_GROUP_KEYS,
    ORIGINAL,
    _fmt,
    _jsd,
    _n,
    _table,
    families,
    fmt,
    generalization_gap,
    headline,
    layers_of,
    ood_splits,
    representative_proxies,
    splits_of,
    type_groups_of,
    value,
    with_ci,
)
from hf_illusions.report_facts import (
    EXACT_JSD,
    MIN_TYPE_POSITIONS,
    TYPE_GAP_MIN_IID_AGREEMENT,
    facts_table,
    findings,
    type_findings,
    type_gap_proxies,
    type_gaps,
    type_gaps_level,
)

PLOTS = ("jsd_vs_rank.png", "agreement_vs_rank.png", "accuracy_per_split.png", "gap.png")
CODE_PLOTS = ("jsd_per_type.png", "gap_per_type.png")
#: alt text of each plot in the report's README
FIGURE_TITLES = {
    "jsd_vs_rank.png": "output JSD vs rank",
    "agreement_vs_rank.png": "agreement vs rank",
    "accuracy_per_split.png": "accuracy per split",
    "gap.png": "generalization gap",
    "jsd_per_type.png": "JSD per type",
    "gap_per_type.png": "gap per type",
}
SCORING = {
    "dyck": "Accuracy of the argmax among closing brackets (Murty et al.'s scoring).",
    "code": "Accuracy of the full-vocabulary argmax for the next character, per prediction type.",
}


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
    groups = headline(results)
    parts = ["## Original model accuracy", SCORING.get(results.get("task"), "")]
    rows = [
        [s, *(f"{_fmt(value(results, s, ORIGINAL, g, 'accuracy'))} (n={_n(results, s, g)})" for g in groups)]
        for s in splits
    ]
    parts.append(_table(["split", *groups], rows))

    parts.append(
        "## Output faithfulness per simplifier\n\nEach cell: output JSD / agreement with the "
        "original's argmax / proxy accuracy. The `original` row gives the original's accuracy."
    )
    for family, names in families(results).items():
        for group in groups:
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
        "distributions over heads and real query positions"
        + (
            " (`hf-illusions reproduce` measures it for the representative settings of the full "
            "sweep only, listed in `evaluation.attention_metrics` of results.json"
            + (")." if results["evaluation"]["attention_metrics"] else "; none in this run).")
            if "attention_metrics" in results.get("evaluation", {})
            else "."
        )
    )
    measured = [
        n
        for n in results["proxies"]
        if any((split.get(n) or {}).get("attention_jsd") for split in results["splits"].values())
    ]
    for layer in layers_of(results):
        rows = [[f"`{n}`", *(_jsd(_attention(results, s, n, layer)) for s in splits)] for n in measured]
        parts += [f"### Layer {layer}", _table(["proxy", *splits], rows)]

    for group in groups:
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


def code_tables(results: Mapping) -> str:
    """Code: per split × prediction type, the original's accuracy and representative proxies' faithfulness."""
    types, reps = type_groups_of(results), representative_proxies(results)
    parts = [
        "## Faithfulness per prediction type\n\nPer split, the original's accuracy and, for the "
        "representative setting of each family (as in the plots), output JSD / agreement, for the "
        "characters of each prediction type."
    ]
    for split in splits_of(results):
        rows = [["n", *(str(_n(results, split, t)) for t in types)]]
        rows.append(
            ["`original` accuracy", *(_fmt(value(results, split, ORIGINAL, t, "accuracy")) for t in types)]
        )
        rows += [
            [
                f"`{name}`",
                *(
                    f"{_jsd(value(results, split, name, t, 'jsd'))} / "
                    f"{_fmt(value(results, split, name, t, 'agreement'))}"
                    for t in types
                ),
            ]
            for name in reps.values()
        ]
        parts += [f"### `{split}`", _table(["", *types], rows)]
    rows = []
    for name in type_gap_proxies(results):
        cells = []
        for split in ood_splits(results):
            gaps = type_gaps(results, name, split)
            if not gaps:
                cells.append("–")
                continue
            top = next(iter(gaps))
            rank = list(gaps).index("identifier_repeat") + 1 if "identifier_repeat" in gaps else None
            cells.append(
                f"`{top}` ({_jsd(gaps[top], True)}); repeat: "
                + (f"#{rank} ({_jsd(gaps['identifier_repeat'], True)})" if rank else "–")
            )
        rows.append([f"`{name}`", *cells])
    parts += [
        f"### Which type's faithfulness drops most off distribution\n\nPer proxy that is faithful but "
        f"not exact in distribution (IID agreement ≥ {TYPE_GAP_MIN_IID_AGREEMENT}), and OOD split: the "
        f"type with the largest output-JSD gap over `{IID_SPLIT}` (types with ≥ {MIN_TYPE_POSITIONS} "
        "characters in both splits), and the rank and gap of `identifier_repeat`.",
        _table(["proxy", *ood_splits(results)], rows) if rows else "No proxy qualifies.",
    ]
    heads = (results.get("analyses") or {}).get("heads")
    if heads:
        copy = heads["copy_head"]
        on_data = (heads.get("on_data") or {}).get("mass")
        rows = [
            [
                str(layer),
                *(
                    f"{ind:.3f} / {prev:.3f}" + (f" / {on_data[layer][h]:.3f}" if on_data else "")
                    for h, (ind, prev) in enumerate(zip(ind_row, prev_row, strict=True))
                ),
            ]
            for layer, (ind_row, prev_row) in enumerate(
                zip(heads["induction"], heads["previous_token"], strict=True)
            )
        ]
        data_text = (
            " / attention on induction targets in the fitting windows, at the "
            f"{heads['on_data']['n_positions']} positions that predict a repeated identifier after a "
            f"repeated bigram (uniform attention would give {heads['on_data']['chance']:.3f})"
            if on_data
            else ""
        )
        parts += [
            "## The copying head\n\nPer head: induction / previous-token attention score on a random "
            f"string repeated twice ({heads['settings']['n_sequences']} strings of "
            f"{heads['settings']['copy_length']} characters){data_text}. Copying head: **layer "
            f"{copy['layer']}, head {copy['head']}**"
            + (f" (selected by {copy['selected_by']})." if copy.get("selected_by") else "."),
            _table(["layer", *(f"head {h}" for h in range(len(heads["induction"][0])))], rows),
        ]
        copy_proxies = [n for n, r in results["proxies"].items() if r["family"].startswith("copy_head")]
        if copy_proxies:
            rows = [
                [f"`{n}`", *(f"{_faithfulness_cell(results, sp, n, 'identifier_repeat')} ‖ "
                             f"{_faithfulness_cell(results, sp, n, 'all')}" for sp in splits_of(results))]
                for n in copy_proxies
            ]  # fmt: skip
            parts += [
                "### Proxies of the copying head alone: `identifier_repeat` ‖ `all` characters\n\n"
                "Each side: output JSD / agreement / accuracy.",
                _table(["proxy", *splits_of(results)], rows),
            ]
    return "\n\n".join(parts) + "\n"


def circuit_table(results: Mapping) -> str:
    """Pruned circuits: target, kept nodes and edges (the size the faithfulness numbers are paid with)."""
    rows = []
    for name, rec in results["proxies"].items():
        fitted = rec.get("fitted") or {}
        size = fitted.get("circuit_size")
        if not size:
            continue
        kinds = size.get("by_kind") or {}
        rows.append(
            [
                f"`{name}`",
                _fmt(fitted.get("full_loss"), 4),
                _fmt(rec["settings"].get("target_loss"), 4),
                _fmt(fitted.get("circuit_loss"), 4),
                f"{size['kept_nodes']} / {size['total_nodes']}",
                " / ".join(str(kinds[k]["kept_nodes"]) for k in kinds),
                f"{size['kept_edges']} / {size['total_edges']}",
            ]
        )
    if not rows:
        return ""
    return (
        "## Pruned circuits\n\nNode masks learned on the training distribution (mean ablation of "
        "pruned nodes); the smallest circuit whose loss stays under the target.\n\n"
        + _table(
            [
                "circuit",
                "model loss",
                "target loss",
                "circuit loss",
                "nodes kept / total",
                f"kept {' / '.join(_node_kinds(results))}",
                "edges kept / total",
            ],
            rows,
        )
        + "\n"
    )


def _node_kinds(results: Mapping) -> list[str]:
    for rec in results["proxies"].values():
        kinds = ((rec.get("fitted") or {}).get("circuit_size") or {}).get("by_kind")
        if kinds:
            return list(kinds)
    return []


def _attention(results: Mapping, split: str, name: str, layer: str) -> float:
    v = ((results["splits"].get(split, {}).get(name) or {}).get("attention_jsd") or {}).get(layer)
    return math.nan if v is None else float(v)


__all__ = [
    "ACCURACY_VERDICTS",
    "CODE_PLOTS",
    "EXACT_JSD",
    "FAMILY_TITLES",
    "FIGURE_TITLES",
    "HEADLINE_GROUPS",
    "IID_SPLIT",
    "MIN_TYPE_POSITIONS",
    "NON_GROUP_KEYS",
    "ORIGINAL",
    "PLOTS",
    "SCORING",
    "TYPE_GAP_MIN_IID_AGREEMENT",
    "circuit_table",
    "code_tables",
    "facts_table",
    "families",
    "findings",
    "fmt",
    "generalization_gap",
    "headline",
    "layers_of",
    "markdown_tables",
    "ood_splits",
    "representative_proxies",
    "splits_of",
    "type_findings",
    "type_gap_proxies",
    "type_gaps",
    "type_gaps_level",
    "type_groups_of",
    "value",
    "with_ci",
]

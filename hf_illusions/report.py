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

from hf_illusions.statistics import verdict

ORIGINAL = "original"
IID_SPLIT = "test_iid"
#: keys of a model's per-split results that are not position groups
NON_GROUP_KEYS = ("attention_jsd", "attention_agreement", "attention_ci")
HEADLINE_GROUPS = ("close", "long_distance")  # Dyck; results.json says which groups a task scores
FAMILY_TITLES = {
    "svd": "SVD (low-rank keys/queries)",
    "kmeans": "k-means (clustered keys/queries)",
    "interaction_basis": "interaction basis (residual stream, Bushnaq et al. 2024)",
    "sparse_circuit": "pruned circuit (node masks, mean ablation; Gao et al. 2025)",
    "onehot": "one-hot attention",
    "onehot_layer": "one-hot attention in one layer",
    "copy_head_svd": "SVD of the copying head only",
    "copy_head_onehot": "one-hot attention in the copying head only",
}
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


def headline(results: Mapping) -> tuple[str, str]:
    """The two groups a task's numbers are headlined by (Dyck: close / long_distance)."""
    groups = (results.get("evaluation") or {}).get("headline_groups") or HEADLINE_GROUPS
    first, second = tuple(groups)[:2]
    return first, second


def type_groups_of(results: Mapping) -> list[str]:
    """Code: the prediction types present in the results (every group except ``all``), in order."""
    first = next(iter(results["splits"].values()), {}).get(ORIGINAL, {})
    return [g for g in first if g not in ("all", *NON_GROUP_KEYS) and isinstance(first[g], Mapping)]


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
    results: Mapping, min_iid_agreement: float = 0.9, group: str | None = None
) -> dict[str, str]:
    """Per family, the smallest setting whose IID agreement reaches ``min_iid_agreement``.

    That is the proxy a reader would accept as "faithful" in distribution — exactly the one whose
    OOD behaviour the paper asks about. If no setting gets there, the largest one is used.
    """
    group = group or headline(results)[0]
    out = {}
    for family, names in families(results).items():
        good = [n for n in names if value(results, IID_SPLIT, n, group, "agreement") >= min_iid_agreement]
        out[family] = good[0] if good else names[-1]
    return out


def generalization_gap(
    results: Mapping, group: str | None = None, reference: str = IID_SPLIT
) -> dict[str, dict[str, dict[str, float]]]:
    """``{proxy: {ood_split: {"jsd": JSD_ood − JSD_iid, "agreement": agr_ood − agr_iid}}}``."""
    group = group or headline(results)[0]
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


def fmt(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) < 10 ** (-digits) and x != 0:
        return f"{x:+.2e}" if signed else f"{x:.2e}"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def with_ci(entry: Mapping | None, digits: int = 3, signed: bool = True) -> str:
    """``+0.012 [+0.010, +0.014]`` from ``{"value", "ci"}``."""
    if not entry:
        return "–"
    ci = entry.get("ci")
    bounds = f" [{fmt(ci[0], digits, signed)}, {fmt(ci[1], digits, signed)}]" if ci else ""
    return f"{fmt(entry.get('value'), digits, signed)}{bounds}"


#: cell words of the accuracy verdicts: over-/under-generalizes, or neither
ACCURACY_VERDICTS = {"over": "**over**", "under": "**under**", "within noise": "within noise"}


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


def _n(results: Mapping, split: str, group: str) -> int:
    n = value(results, split, ORIGINAL, group, "n")
    return 0 if math.isnan(n) else int(n)


def _attention(results: Mapping, split: str, name: str, layer: str) -> float:
    v = ((results["splits"].get(split, {}).get(name) or {}).get("attention_jsd") or {}).get(layer)
    return math.nan if v is None else float(v)


def _monotone(xs: Sequence[float], decreasing: bool, tol: float = 1e-9) -> bool:
    xs = [x for x in xs if not math.isnan(x)]
    return all((b <= a + tol) if decreasing else (b >= a - tol) for a, b in itertools.pairwise(xs))


def findings(results: Mapping, group: str | None = None) -> list[tuple[str, str]]:
    """Measured facts beside the paper's findings, as ``(fact, value)`` rows — computed, never asserted.

    These rest on point estimates (means over proxies, counts of splits), so they carry no verdict;
    the claims that need one are in :func:`hf_illusions.report_stats.findings_section`.
    """
    group = group or headline(results)[0]
    out = []
    ood = ood_splits(results)
    gaps = generalization_gap(results, group)
    if ood and gaps and IID_SPLIT in results["splits"]:
        mean_gap = {s: _mean([g[s]["jsd"] for g in gaps.values()]) for s in ood}
        worst = max(mean_gap, key=lambda s: -math.inf if math.isnan(mean_gap[s]) else mean_gap[s])
        pairs = [g[s]["jsd"] for g in gaps.values() for s in ood if not math.isnan(g[s]["jsd"])]
        n = f"{len(gaps)} {'proxy' if len(gaps) == 1 else 'proxies'}"
        out += [
            (
                f"OOD split with the largest output-JSD gap over `{IID_SPLIT}` (`{group}`, mean over {n})",
                f"`{worst}` ({_jsd(mean_gap[worst], signed=True)})",
            ),
            (
                "proxy × OOD-split pairs less faithful (higher JSD) than in distribution",
                f"{sum(x > 0 for x in pairs)} of {len(pairs)}",
            ),
        ]
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
            (
                f"splits where {FAMILY_TITLES[family].split(' (')[0]} output JSD decreases monotonically "
                f"with {param}",
                f"{len(mono)} of {len(splits_of(results))}{tail}",
            )
        )
    if results.get("task") == "code":
        out += type_findings(results)
    return out


def facts_table(facts: Sequence[tuple[str, str]]) -> str:
    """``## Other measured facts``: one row per fact from :func:`findings`."""
    return "## Other measured facts\n\n" + (_table(["measured fact", "value"], facts) if facts else "None.")


#: a type is ranked only where it has at least this many characters in both splits compared
MIN_TYPE_POSITIONS = 1000
#: proxies ranked per type: roughly faithful in distribution, but not exact (an exact proxy's "gap"
#: is float noise), and not saturated (a JSD near its 1-bit ceiling cannot grow off distribution)
TYPE_GAP_MIN_IID_AGREEMENT = 0.8
EXACT_JSD = 1e-6


def type_gap_proxies(results: Mapping) -> list[str]:
    """Proxies whose per-type gaps are ranked: IID agreement ≥ 0.8 and IID JSD > 1e-6 (``all`` characters)."""
    return [
        n
        for n in results["proxies"]
        if value(results, IID_SPLIT, n, "all", "agreement") >= TYPE_GAP_MIN_IID_AGREEMENT
        and value(results, IID_SPLIT, n, "all", "jsd") > EXACT_JSD
    ]


def type_gaps(results: Mapping, name: str, split: str) -> dict[str, float]:
    """Code: ``{type: JSD(split) − JSD(test_iid)}`` of one proxy, for well-populated types, largest first."""
    gaps = {}
    for group in type_groups_of(results):
        if min(_n(results, IID_SPLIT, group), _n(results, split, group)) < MIN_TYPE_POSITIONS:
            continue
        gap = value(results, split, name, group, "jsd") - value(results, IID_SPLIT, name, group, "jsd")
        if not math.isnan(gap):
            gaps[group] = gap
    return dict(sorted(gaps.items(), key=lambda item: -item[1]))


def type_findings(results: Mapping) -> list[tuple[str, str]]:
    """Does ``identifier_repeat`` show the largest gap (the paper's code finding)? Counted, not assumed."""
    out = []
    names, ood = type_gap_proxies(results), ood_splits(results)
    pairs = [(n, s, type_gaps(results, n, s)) for n in names for s in ood]
    pairs = [(n, s, g) for n, s, g in pairs if "identifier_repeat" in g]
    if pairs:
        first = [(n, s) for n, s, g in pairs if next(iter(g)) == "identifier_repeat"]
        by_split = {s: sum(1 for _, t in first if t == s) for s in ood}
        out.append(
            (
                f"proxy × OOD-split pairs where `identifier_repeat` has the largest output-JSD gap of the "
                f"types with ≥ {MIN_TYPE_POSITIONS} characters ({len(names)} proxies faithful but not exact "
                f"in distribution: IID agreement ≥ {TYPE_GAP_MIN_IID_AGREEMENT})",
                f"{len(first)} of {len(pairs)} ("
                + ", ".join(f"`{s}`: {k} of {len(names)}" for s, k in by_split.items())
                + ")",
            )
        )
        level = [
            n
            for n in names
            if max(type_gaps_level(results, n), key=type_gaps_level(results, n).get) == "identifier_repeat"
        ]
        out.append(
            (
                "of those proxies, `identifier_repeat` is the least faithful type in distribution "
                "(highest JSD)",
                f"{len(level)} of {len(names)}",
            )
        )
    copy = (results.get("analyses") or {}).get("heads", {}).get("copy_head")
    if copy:
        on_data = (
            f"; {_fmt(copy['induction_mass_on_data'])} of its attention on induction targets where a "
            f"repeated identifier is predicted (uniform attention: {_fmt(copy['chance_on_data'])})"
            if "induction_mass_on_data" in copy
            else ""
        )
        out.append(
            (
                "copying head",
                f"layer {copy['layer']} head {copy['head']}: induction score "
                f"{_fmt(copy['induction_score'])} on repeated random text{on_data}",
            )
        )
    for name, rec in results["proxies"].items():
        if not rec["family"].startswith("copy_head"):
            continue
        for split in ood_splits(results):
            entry = results["splits"][split].get(name, {}).get("identifier_repeat") or {}
            ci = (entry.get("ci") or {}).get("accuracy_diff")
            if ci is None:
                continue
            out.append(
                (
                    f"`{name}` on `identifier_repeat` of `{split}`: accuracy − original's",
                    f"{ACCURACY_VERDICTS[verdict(ci, 'over', 'under')]} "
                    f"{with_ci({'value': entry['accuracy_diff'], 'ci': ci}, 4)}",
                )
            )
    return out


def type_gaps_level(results: Mapping, name: str) -> dict[str, float]:
    """``{type: JSD(test_iid)}`` of one proxy for the well-populated types."""
    return {
        g: value(results, IID_SPLIT, name, g, "jsd")
        for g in type_groups_of(results)
        if _n(results, IID_SPLIT, g) >= MIN_TYPE_POSITIONS
    }


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan

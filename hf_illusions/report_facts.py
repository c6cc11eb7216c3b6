"""Measured facts beside the paper's findings, computed from ``results.json``, never asserted.

:func:`findings` counts what the tables show (which OOD split has the largest gap, how many proxy ×
split pairs are less faithful off distribution, where JSD falls monotonically with rank or k); on a
code report, :func:`type_findings` ranks the prediction types by their gap to count whether
``identifier_repeat`` (the paper's code finding) drops most. Kept apart from the tables
(:mod:`hf_illusions.report`, which re-exports every name here): the tables show the numbers, this
module counts what they say; the code tables and the figures (:mod:`hf_illusions.report_plots`)
use its per-type ranking and thresholds. These facts rest on point estimates; the claims that need
intervals are :mod:`hf_illusions.report_stats`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from hf_illusions.report_common import (
    ACCURACY_VERDICTS,
    FAMILY_TITLES,
    IID_SPLIT,
    _fmt,
    _jsd,
    _n,
    _table,
    families,
    generalization_gap,
    headline,
    ood_splits,
    splits_of,
    type_groups_of,
    value,
    with_ci,
)
from hf_illusions.statistics import verdict


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

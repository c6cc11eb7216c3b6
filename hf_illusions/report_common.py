"""What every section of a reproduction's report shares: reading ``results.json``, writing cells.

Everything here reads the results dict written by :func:`hf_illusions.reproduction.reproduce_dyck`
(``results["splits"][split][model][group][metric]``, ``results["proxies"][name]["family"|"param"]``)
and nothing else, so a report can be regenerated from a results file alone. Kept apart from the
tables (:mod:`hf_illusions.report`) and the measured facts (:mod:`hf_illusions.report_facts`) so
that both import it, and :mod:`hf_illusions.report` re-exports it all, without an import cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def _n(results: Mapping, split: str, group: str) -> int:
    n = value(results, split, ORIGINAL, group, "n")
    return 0 if math.isnan(n) else int(n)

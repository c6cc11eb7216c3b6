"""The card of a fitted proxy: its faithfulness to the original per split, and the generalization gap.

Results come from ``hf-illusions evaluate`` / ``reproduce`` output (:func:`proxy_results`) or a
fresh measurement (:func:`evaluate_proxy`); :func:`write_proxy_card` renders them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_illusions.cards.common import HUB_REPO_IDS, IID_SPLIT, TAGS, TEMPLATES, _evaluate_splits
from hf_illusions.data import dyck
from hf_illusions.errors import IllusionsError
from hf_illusions.hub import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from hf_illusions.paths import portable_path, portable_text
from hf_illusions.tasks.dyck import LONG_THRESHOLD

FAMILY_TITLES = {
    "svd": "low-rank (SVD) keys and queries",
    "kmeans": "k-means clustered keys and queries",
    "onehot": "one-hot attention",
    "interaction_basis": "interaction-basis residual stream",
    "sparse_circuit": "pruned circuit",
}
FITTED_STATE = {
    "svd": "per-head projection bases and means",
    "kmeans": "per-head query and key centroids",
    "onehot": "none: one-hot attention is data-independent",
    "interaction_basis": "per-layer mean, kept basis directions and their duals",
    "sparse_circuit": "per-node keep masks and training means",
}
PROXY_MODEL_TYPES = ("illusion-proxy", "illusion-circuit")
SWEPT_SETTING = {"svd": "rank", "kmeans": "k", "interaction_basis": "k", "sparse_circuit": "target_loss"}


def simplified_part(config: Mapping[str, Any]) -> str:
    """What the proxy changed, in words, for the card's first paragraph (it differs by simplifier kind)."""
    simplifier = config["simplifier"]
    settings = config.get("simplifier_settings") or {}
    settings_text = ", ".join(f"{k}={v}" for k, v in settings.items()) or "no settings"
    if simplifier == "sparse_circuit":
        size = config.get("circuit_size") or {}
        return (
            f"pruned to a **circuit** of {size.get('kept_nodes', '?')} of its {size.get('total_nodes', '?')} "
            "nodes (query, key and value channels and MLP neurons; "
            f"{size.get('kept_edges', '?')} of {size.get('total_edges', '?')} nonzero weights touch a kept "
            "node), every pruned node replaced by its mean over training data "
            f"({settings_text}), the weights untouched"
        )
    if simplifier == "interaction_basis":
        layers = ", ".join(str(x) for x in config.get("simplified_residuals") or [])
        return (
            f"the residual stream entering layer(s) {layers} projected onto its top "
            f"{settings.get('k', '?')} **interaction-basis** directions, the rest mean-ablated "
            f"({settings_text}), everything else untouched"
        )
    heads = config.get("simplified_heads") or {}
    heads_text = " and ".join(
        f"layer {layer} ({'head' if len(hs) == 1 else 'heads'} {', '.join(map(str, hs))})"
        for layer, hs in heads.items()
    )
    title = FAMILY_TITLES.get(simplifier, simplifier)
    return (
        f"the attention of {heads_text} replaced by **{title}** ({settings_text}), everything else untouched"
    )


def proxy_results(results: Mapping[str, Any], name: str) -> dict[str, dict]:
    """``{split: {"original": …, "proxy": …}}`` from ``evaluate`` output or a ``reproduce`` results.json."""
    splits = results.get("splits", results)
    out = {}
    for split, res in splits.items():
        if not isinstance(res, Mapping) or "original" not in res:
            continue
        if name not in res:
            available = sorted(k for k in res if k not in ("original", "sentences"))
            raise IllusionsError(
                f"results have no proxy named {name!r} (pass --name; available: {available})"
            )
        out[split] = {"original": res["original"], "proxy": res[name]}
    if not out:
        raise IllusionsError(
            "results hold no split with an 'original' entry; expected evaluate/reproduce output"
        )
    return out


def evaluate_proxy(
    proxy: Any, original: Any, dataset_dir: str | Path, splits: Sequence[str] = dyck.TEST_SPLITS, **kw: Any
) -> dict[str, dict]:
    """Measure ``proxy`` against ``original`` on each split (the input :func:`write_proxy_card` takes)."""
    results = _evaluate_splits(original, dataset_dir, splits, {"proxy": proxy}, **kw)
    return proxy_results(results, "proxy")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def write_proxy_card(
    proxy_dir: str | Path,
    results: Mapping[str, Mapping[str, Any]],
    base_model: str = HUB_REPO_IDS["model"],
    dataset_id: str = HUB_REPO_IDS["dataset"],
    results_source: str = "a fresh evaluation",
    repo_id: str | None = None,
) -> Path:
    """Render ``proxy_dir/README.md`` from ``{split: {"original": …, "proxy": …}}`` (:func:`proxy_results`).

    The ``model-index`` holds, per split, the proxy's JSD and agreement with the original and its
    accuracy (closing-bracket positions): the numbers that show an illusion if there is one.
    ``repo_id`` is the Hub id the usage snippet names (default: ``base_model``'s namespace/folder name).
    """
    from hf_illusions.report import generalization_gap

    proxy_dir = Path(proxy_dir)
    base_model = portable_path(base_model, proxy_dir)
    results_source = portable_text(results_source, proxy_dir)
    if (proxy_dir / ADAPTER_CONFIG).is_file():  # a stock model's proxy: the adapter card
        flat = {split: _flat_metrics(res.get("proxy", res)) for split, res in results.items()}
        return write_adapter_card(proxy_dir, flat, repo_id=repo_id, results_source=results_source)
    config = json.loads((proxy_dir / "config.json").read_text())
    if config.get("model_type") not in PROXY_MODEL_TYPES:
        raise IllusionsError(
            f"{str(proxy_dir)!r} is not a proxy folder (model_type {config.get('model_type')!r})"
        )
    simplifier, settings = config["simplifier"], config.get("simplifier_settings") or {}
    name = proxy_dir.name
    metrics = (
        ("jsd", "output JSD vs original"),
        ("agreement", "agreement with original"),
        ("accuracy", "accuracy"),
    )
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Faithfulness to the original model",
            dataset_type=dataset_id,
            dataset_name="dyck-illusions",
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{label} (closing brackets)",
            metric_value=round(float(res["proxy"]["close"][metric]), 6),
        )
        for split, res in results.items()
        for metric, label in metrics
        if res["proxy"]["close"].get(metric) is not None
    ]
    card_data = ModelCardData(
        model_name=name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="text-generation",
        base_model=base_model,
        datasets=[dataset_id],
        tags=[*TAGS, "illusion-proxy", f"simplifier-{simplifier}"],
        eval_results=eval_results,
    )

    def cell(res: Mapping, group: str, metric: str) -> str:
        return _fmt((res.get(group) or {}).get(metric))

    rows = [
        {
            "split": split,
            "n": res["original"]["close"]["n"],
            "jsd": cell(res["proxy"], "close", "jsd"),
            "agreement": cell(res["proxy"], "close", "agreement"),
            "acc_proxy": cell(res["proxy"], "close", "accuracy"),
            "acc_original": cell(res["original"], "close", "accuracy"),
            "jsd_long": cell(res["proxy"], "long_distance", "jsd"),
            "agreement_long": cell(res["proxy"], "long_distance", "agreement"),
        }
        for split, res in results.items()
    ]
    gaps = []
    if IID_SPLIT in results and len(results) > 1:
        as_report = {"splits": {s: {name: r["proxy"]} for s, r in results.items()}, "proxies": {name: {}}}
        gap = generalization_gap(as_report)[name]
        gaps = [
            {"split": s, "jsd": f"{g['jsd']:+.4f}", "agreement": f"{g['agreement']:+.4f}"}
            for s, g in gap.items()
        ]
    setting_key = SWEPT_SETTING.get(simplifier)
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "proxy_model_card.md"),
        proxy_name=name,
        title=FAMILY_TITLES.get(simplifier, simplifier),
        simplifier=simplifier,
        base_model=base_model,
        repo_path=repo_id or f"{base_model.split('/')[0]}/{name}",  # where `push proxy` would put it
        simplified_part=simplified_part(config),
        proxy_class=(config.get("architectures") or ["IllusionProxyForCausalLM"])[0],
        fitted_text=FITTED_STATE.get(simplifier, "see config.json"),
        cli_settings=f" --{setting_key} {settings[setting_key]}" if setting_key else "",
        n_sequences=settings.get("n_sequences", "–"),
        seed=settings.get("seed", "–"),
        long_threshold=LONG_THRESHOLD,
        rows=rows,
        gaps=gaps,
        iid_split=IID_SPLIT,
        results_source=results_source,
    )
    card.save(proxy_dir / "README.md")
    return proxy_dir / "README.md"


ADAPTER_TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

A simplified proxy of [`{{ base_model }}`](https://huggingface.co/{{ base_model }}) ({{ base_class }}):
{{ simplified_part }}. Fitted with hf-illusions
(Friedman et al., 2024, *Interpretability Illusions in the Generalization of Simplified Models*)
on queries and keys as the model's attention sees them (after rotary embeddings / q-k norms).

This repository holds only the simplification — `simplification_config.json` and the fitted
buffers in `simplification.safetensors` ({{ adapter_kb }} kB: {{ fitted_text }}) — not a copy of
the base model. Loading fetches the base and checks that its weights hash to
`{{ sha }}` (the weights the proxy was fitted on):

```python
from hf_illusions import load_proxy
proxy = load_proxy("{{ repo_path }}")          # loads {{ base_model }} too
out = proxy(input_ids, attention_mask=mask, output_attentions=True)
```

| setting | value |
|---|---|
{% for k, v in settings %}| {{ k }} | {{ v }} |
{% endfor %}
{% if rows %}
## Faithfulness to the base model ({{ results_source }})

| split | {% for m in metric_names %}{{ m }} | {% endfor %}
|---|{% for m in metric_names %}---|{% endfor %}
{% for row in rows %}| {{ row.split }} | {% for v in row["values"] %}{{ v }} | {% endfor %}
{% endfor %}
{% else %}
No faithfulness results were recorded with this card; measure them with `hf-illusions evaluate`.
{% endif %}
"""


def _flat_metrics(res: Mapping[str, Any]) -> dict[str, Any]:
    """One split's proxy metrics as ``{metric: value}`` (Dyck results nest them per position group)."""
    for group in ("all", "close"):
        if isinstance(res.get(group), Mapping):
            return dict(res[group])
    return {k: v for k, v in res.items() if not isinstance(v, Mapping)}


def write_adapter_card(
    proxy_dir: str | Path,
    results: Mapping[str, Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    results_source: str = "a fresh evaluation",
) -> Path:
    """Render ``README.md`` of a stock model's proxy adapter (``proxy.save_pretrained`` output).

    ``results`` (optional): ``{split: {"jsd": …, "agreement": …, …}}`` of the proxy against its
    base; they also go into the card's ``model-index``.
    """
    proxy_dir = Path(proxy_dir)
    config = json.loads((proxy_dir / ADAPTER_CONFIG).read_text())
    base_model = portable_path(config.get("base_model_name_or_path") or "unknown", proxy_dir)
    results_source = portable_text(results_source, proxy_dir)
    simplifier, settings = config["simplifier"], config.get("simplifier_settings") or {}
    results = results or {}
    metric_names = sorted(
        {m for res in results.values() for m, v in res.items() if isinstance(v, int | float)}
    )
    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Faithfulness to the base model",
            dataset_type=split,
            dataset_name=split,
            metric_type=metric,
            metric_name=metric,
            metric_value=round(float(res[metric]), 6),
        )
        for split, res in results.items()
        for metric in metric_names
        if isinstance(res.get(metric), int | float) and not isinstance(res.get(metric), bool)
    ]
    card_data = ModelCardData(
        model_name=proxy_dir.name,
        library_name="hf-illusions",
        license="apache-2.0",
        pipeline_tag="text-generation",
        base_model=base_model if base_model != "unknown" else None,
        tags=["hf-illusions", "interpretability", "illusion-proxy", f"simplifier-{simplifier}"],
        eval_results=eval_results or None,
    )
    heads = {k: v for k, v in (config.get("simplified_heads") or {}).items()}
    card = ModelCard.from_template(
        card_data,
        template_str=ADAPTER_TEMPLATE,
        name=proxy_dir.name,
        base_model=base_model,
        base_class=config.get("base_model_class") or config.get("base_model_type"),
        simplified_part=simplified_part({**config, "simplified_heads": heads}),
        adapter_kb=f"{(proxy_dir / ADAPTER_WEIGHTS).stat().st_size / 1000:.1f}",
        fitted_text=FITTED_STATE.get(simplifier, "see simplification_config.json"),
        sha=config.get("base_weights_sha256") or "–",
        repo_path=repo_id or f"<namespace>/{proxy_dir.name}",
        settings=sorted(settings.items()),
        rows=[{"split": s, "values": [_fmt(r.get(m)) for m in metric_names]} for s, r in results.items()],
        metric_names=metric_names,
        results_source=results_source,
    )
    card.save(proxy_dir / "README.md")
    return proxy_dir / "README.md"

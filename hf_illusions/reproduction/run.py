"""The loop every reproduction shares: fit lazily, score each split (resumable), write results.json.

Each split's result is written to ``<out>/results/<split>.json`` (and its per-sentence sums to
``<split>.npz``) as soon as it finishes, tagged with a fingerprint of everything that determines it
(model weights, the exact evaluated and fitting sequences, simplifier settings, scoring settings).
A re-run resumes: a split whose fingerprint matches is reused, one whose fingerprint differs is
recomputed, and if every split is reused nothing is fitted at all.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_illusions.config import ReproductionConfig
from hf_illusions.evaluation import ORIGINAL, SentenceSums, sentence_sums
from hf_illusions.fingerprints import sequences_hash, weights_hash
from hf_illusions.intervals import merge_intervals, split_intervals
from hf_illusions.jsonio import jsonable, read_json, write_json
from hf_illusions.paths import portable_path
from hf_illusions.reproduction.specs import ProxySpec, attention_proxies
from hf_illusions.reproduction.tasks import Workload
from hf_illusions.version import __version__

SCHEMA_VERSION = 2  # 2: per-sentence sums, intervals, sampled rows, scored-set agreement
IID_SPLIT = "test_iid"
#: quantities whose OOD − IID gap results.json gives (with intervals)
GAP_QUANTITIES = ("jsd", "agreement", "accuracy_diff")
#: keys of results.json that differ between two runs of the same config: dates, wall-clock times,
#: and the folders' own paths (relative to the report folder)
VOLATILE_FIELDS = frozenset({"created", "finished", "timing", "wall_time_s", "dir", "model_dir"})


def stable_results(obj: Any, ignore: frozenset[str] | set[str] = frozenset()) -> Any:
    """``results.json`` without :data:`VOLATILE_FIELDS` (or ``ignore``d keys), at any depth: what two
    runs of one config must agree on to the byte."""
    if isinstance(obj, dict):
        return {k: stable_results(v, ignore) for k, v in obj.items() if k not in VOLATILE_FIELDS | ignore}
    if isinstance(obj, list):
        return [stable_results(v, ignore) for v in obj]
    return obj


def fingerprint(payload: Any) -> str:
    """Stable short hash of a JSON-able payload (key order does not matter)."""
    text = json.dumps(jsonable(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_reproduction(
    config: ReproductionConfig,
    model: torch.nn.Module,
    workload: Workload,
    specs: Sequence[ProxySpec],
    timing: dict[str, Any],
    start: float,
) -> Path:
    """Fit every spec (only if a split must be computed), score every split, write the report."""
    from hf_illusions.report_readme import write_report

    task, fit_rows, split_sequences = workload.task, workload.fit_rows, workload.split_sequences
    out_dir, layers = Path(config.out), config.sweep.layers
    attention = attention_proxies(config.sweep.attention_metrics, [spec.name for spec in specs])
    settings = {  # everything a split's numbers depend on: its fingerprint
        "schema_version": SCHEMA_VERSION,
        "hf_illusions_version": __version__,
        "task": task.name,
        **workload.settings,
        "model_weights": weights_hash(model),
        "fit_sequences": sequences_hash(fit_rows["input_ids"]),
        "n_fit_sequences": config.sample.n_fit_sequences,
        "max_eval_sentences": config.sample.max_eval_sentences,
        "layers": list(layers) if layers is not None else None,
        "proxies": {spec.name: spec.record() for spec in specs},
        "attention_metrics": attention,
    }

    results_dir = out_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    proxies: dict[str, torch.nn.Module] | None = None
    timing["fit_s"], timing["evaluate_s"] = {}, {}
    splits_out: dict[str, dict] = {}
    resumed: dict[str, bool] = {}
    proxy_info: dict[str, dict] = read_json(results_dir / "proxy_info.json") or {}
    sums_by_split: dict[str, SentenceSums] = {}
    for split in tqdm(list(split_sequences), desc="splits", disable=not config.progress):
        sequences = split_sequences[split]
        split_fp = fingerprint({**settings, "split": split, "sequences": sequences_hash(sequences)})
        path, sums_path = results_dir / f"{split}.json", results_dir / f"{split}.npz"
        previous = read_json(path) if config.resume else None
        if previous is not None and previous.get("fingerprint") == split_fp and sums_path.is_file():
            try:
                sums_by_split[split] = SentenceSums.load(sums_path)
                splits_out[split], resumed[split] = previous["results"], True
                timing["evaluate_s"][split] = previous.get("wall_time_s")
                continue
            except (OSError, ValueError, KeyError):  # a damaged sums file: evaluate the split again
                pass
        if proxies is None:  # fit lazily: a fully resumed run never pays for fitting
            timing["fitting_pass_s"] = {}
            proxies = fit_all(
                specs, model, fit_rows, timing["fit_s"], config.progress, timing["fitting_pass_s"]
            )
            proxy_info = {name: _proxy_info(proxy) for name, proxy in proxies.items()}
            write_json(results_dir / "proxy_info.json", proxy_info)
            if config.save_proxies:
                for name, proxy in proxies.items():
                    proxy.save_pretrained(out_dir / "proxies" / name)
        tick = time.perf_counter()
        sums = sentence_sums(
            model,
            sequences,
            task,
            proxies=proxies,
            max_batch_tokens=config.max_batch_tokens,
            attention=attention,
            progress=config.progress,
            desc=split,
        )
        result = jsonable(merge_intervals(sums.means(), split_intervals(sums, split)))
        wall = time.perf_counter() - tick
        record = {
            "split": split,
            "fingerprint": split_fp,
            "n_sentences": len(sequences),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_time_s": wall,
            "results": result,
        }
        sums.save(sums_path)  # the sums first: a JSON without them is not taken as finished
        write_json(path, record)
        sums_by_split[split], splits_out[split], resumed[split] = sums, result, False
        timing["evaluate_s"][split] = wall
    tick = time.perf_counter()
    cross_split = _cross_split_analyses(
        sums_by_split, task, [spec.name for spec in specs], (splits_out, settings["proxies"])
    )
    timing["intervals_s"] = time.perf_counter() - tick
    timing["total_s"] = time.perf_counter() - start

    proxies_record = {
        name: {**rec, **({"fitted": proxy_info[name]} if proxy_info.get(name) else {})}
        for name, rec in settings["proxies"].items()
    }
    results = {
        "schema_version": SCHEMA_VERSION,
        "task": task.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(relative_to=out_dir),  # how to make this report again
        "model_dir": portable_path(config.model, out_dir),
        "model": _model_summary(model, settings["model_weights"]),
        "dataset": {
            **workload.dataset,
            "n_sentences": {split: len(seqs) for split, seqs in split_sequences.items()},
            "n_fit_sequences": len(fit_rows),
            "sample": workload.sample,
        },
        "evaluation": {
            "reference_model": ORIGINAL,
            "iid_split": IID_SPLIT,
            "headline_groups": list(task.headline_groups),
            **workload.settings,
            "max_eval_sentences": config.sample.max_eval_sentences,
            "layers": settings["layers"],
            "attention_metrics": attention,
        },
        "proxies": proxies_record,
        "analyses": workload.analyses,
        "splits": splits_out,
        **cross_split,
        "resumed": resumed,
        "timing": timing,
        "versions": _versions(),
    }
    write_json(out_dir / "results.json", results)
    return write_report(results, out_dir)


def fit_all(
    specs: Sequence[ProxySpec],
    model: torch.nn.Module,
    fit_rows: Any,
    fit_times: dict,
    progress: bool,
    pass_times: dict | None = None,
) -> dict[str, torch.nn.Module]:
    """Fit every setting on the same training rows; returns ``{proxy name: proxy model}``.

    Attention simplifiers that collect the same queries and keys (same heads, fitting sequences
    and batching: every SVD rank and k-means k of a sweep) share one fitting pass over the data
    (:func:`~hf_illusions.simplify.collect.fit_attention`, bit-identical to fitting each alone);
    ``fit_times`` then holds each setting's own fitting time and ``pass_times`` the shared passes'.
    """
    from hf_illusions.simplify.collect import fit_attention
    from hf_illusions.simplify.proxy import build_proxy
    from hf_illusions.simplify.simplifier import Simplifier

    groups: dict[str, list[tuple[ProxySpec, dict]]] = {}
    for spec in specs:
        simplifier = spec.simplifier
        if type(simplifier).fit is Simplifier.fit and simplifier.needs_data:
            chosen = simplifier.resolve(model)
            key = json.dumps(
                [chosen, simplifier.n_sequences, simplifier.batch_size, simplifier.max_batch_tokens]
            )
            groups.setdefault(key, []).append((spec, chosen))
    shared = {spec.name: key for key, members in groups.items() if len(members) > 1 for spec, _ in members}
    proxies = {}
    for spec in tqdm(specs, desc="fit simplifiers", disable=not progress):
        if spec.name in proxies:
            continue
        tick = time.perf_counter()
        if spec.name not in shared:
            proxies[spec.name] = spec.simplifier.fit(model, fit_rows).eval()
            fit_times[spec.name] = time.perf_counter() - tick
            continue
        members = groups[shared[spec.name]]
        first = members[0][0].simplifier
        own: list[float] = []
        states = fit_attention(
            model, fit_rows, [m.simplifier for m, _ in members], members[0][1], first.n_sequences,
            first.batch_size, first.max_batch_tokens, fit_times=own,
        )  # fmt: skip
        for (member, chosen), state, seconds in zip(members, states, own, strict=True):
            build = time.perf_counter()
            s = member.simplifier
            proxies[member.name] = build_proxy(model, s.name, chosen, s.settings(), state).eval()
            fit_times[member.name] = seconds + time.perf_counter() - build
        if pass_times is not None:
            pass_times["+".join(m.name for m, _ in members)] = (
                time.perf_counter() - tick - sum(fit_times[m.name] for m, _ in members)
            )
    return proxies


def _cross_split_analyses(
    sums_by_split: Mapping[str, SentenceSums],
    task: Any,
    proxies: Sequence[str],
    findings_inputs: tuple[Mapping, Mapping] | None = None,
) -> dict:
    """What needs two splits: OOD − IID gaps with intervals, and (Dyck) the depth / length confounds."""
    from hf_illusions.intervals import gap

    iid = sums_by_split.get(IID_SPLIT)
    if iid is None:
        return {}
    gaps: dict = {}
    for name in proxies:
        per_split = {}
        for split, sums in sums_by_split.items():
            if split == IID_SPLIT:
                continue
            per_split[split] = {
                group: {q: gap(sums, split, iid, IID_SPLIT, name, group, q) for q in GAP_QUANTITIES}
                for group in task.headline_groups
                if group in sums.groups
            }
        gaps[name] = per_split
    out = {"gaps": jsonable(gaps)}
    if findings_inputs is not None:
        from hf_illusions.findings import paper_findings

        splits_out, proxy_records = findings_inputs
        out["findings"] = jsonable(paper_findings(sums_by_split, splits_out, proxy_records, task.name))
    if getattr(task, "cell_names", None):
        from hf_illusions.confounds import confound_analyses

        out["confounds"] = jsonable(confound_analyses(dict(sums_by_split), proxies, IID_SPLIT))
    return out


def _proxy_info(proxy: torch.nn.Module) -> dict:
    """What a fitted proxy knows about itself that its settings do not say (e.g. a circuit's size)."""
    size = getattr(proxy.config, "circuit_size", None)
    if not size:
        return {}
    return {
        "circuit_size": size,
        "circuit_loss": proxy.config.circuit_loss,
        "full_loss": proxy.config.full_loss,
    }


def _model_summary(model: torch.nn.Module, weights: str) -> dict:
    """The sizes a reader needs to place the numbers (and the weights hash used for resuming)."""
    cfg = model.config
    keys = ("model_type", "vocab_size", "n_positions", "d_model", "n_layer", "n_head", "d_head", "d_mlp")
    return {
        **{k: getattr(cfg, k, None) for k in keys},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256_16": weights,
    }


def _versions() -> dict[str, str]:
    import datasets
    import numpy
    import transformers

    return {
        "hf_illusions": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "numpy": numpy.__version__,
    }

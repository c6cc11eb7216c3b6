"""Intervention overhead: our proxy vs the same rank-r q/k projection done with nnsight and with hooks.

    python scripts/bench_intervention.py     # full sizes (~15 s); --smoke for seconds

The intervention is the SVD simplification of every layer's queries and keys,
``q ↦ μ + (q − μ) V Vᵀ`` with the fitted ``μ, V`` of one proxy, computed by the same function
(:func:`hf_illusions.simplify.svd.project`) in all three paths, so only the mechanism differs:

* ours: the proxy, an ordinary ``PreTrainedModel`` whose registered attention function projects
  q and k (transformers' attention interface, no hooks);
* nnsight: ``NNsight(model).trace(...)`` replacing each ``q_proj`` / ``k_proj`` output;
* hooks: ``register_forward_hook`` on each ``q_proj`` / ``k_proj`` returning the projected output.

The plain, unmodified forward pass is timed too, so each path's *overhead* (its time minus the
plain forward) can be compared as well as its total time. Two batch sizes: one sentence (the
interactive case: the Space, per-sentence analysis) and a full evaluation batch. Check: all three
paths give the same logits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from hf_illusions.bench import BenchReport, Stats, bench_data, bench_model, compare, first_ids, parser
from hf_illusions.data.batching import pad_batch, token_budget_batches
from hf_illusions.data.hub_folder import load_folder
from hf_illusions.simplify import SVDSimplifier
from hf_illusions.simplify.svd import project

FULL = {
    "fit_sequences": 200,
    "batch_tokens": 16384,
    "repeats": {"one sentence": 60, "one sentence, 1 thread": 60, "evaluation batch": 10},
}
SMOKE = {
    "fit_sequences": 20,
    "batch_tokens": 512,
    "repeats": {"one sentence": 3, "one sentence, 1 thread": 3, "evaluation batch": 2},
}


def projector(
    proxy: torch.nn.Module, layer: int, side: str, d_head: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(batch, seq, heads · d_head)`` → the same, projected with the proxy's fitted buffers."""
    simplification = proxy.model.layers[layer].self_attn.simplification
    mean, basis = getattr(simplification, f"{side}_mean"), getattr(simplification, f"{side}_basis")

    def apply(x: torch.Tensor) -> torch.Tensor:
        heads = x.view(*x.shape[:-1], -1, d_head).transpose(1, 2)  # (batch, heads, seq, d_head)
        return project(heads, mean, basis).transpose(1, 2).reshape(x.shape)

    return apply


def with_nnsight(model: torch.nn.Module, projections: dict) -> Callable[..., torch.Tensor]:
    from nnsight import NNsight

    traced = NNsight(model)

    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with traced.trace(ids, attention_mask=mask):
            for (layer, side), apply in projections.items():
                module = getattr(traced.model.layers[layer].self_attn, f"{side[0]}_proj")
                module.output = apply(module.output)
            logits = traced.lm_head.output.save()
        return logits

    return run


def with_hooks(model: torch.nn.Module, projections: dict) -> Callable[..., torch.Tensor]:
    """Hooks are added and removed around each call, as a one-off intervention would do."""

    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        handles = [
            getattr(model.model.layers[layer].self_attn, f"{side[0]}_proj").register_forward_hook(
                lambda _module, _args, output, apply=apply: apply(output)
            )
            for (layer, side), apply in projections.items()
        ]
        try:
            return model(ids, attention_mask=mask).logits
        finally:
            for handle in handles:
                handle.remove()

    return run


def main(argv: list[str] | None = None) -> Path:
    args = parser(__doc__).parse_args(argv)
    report = BenchReport("intervention", "Intervention overhead", "smoke" if args.smoke else "full", {})
    sizes = SMOKE if args.smoke else FULL
    repeats = {case: args.repeats or n for case, n in sizes["repeats"].items()}
    model, model_source = bench_model(args.smoke, args.model)
    config = model.config
    rank = max(1, config.d_head // 8)
    with tempfile.TemporaryDirectory(prefix="bench-intervention-") as scratch:
        ds = load_folder(bench_data(args.smoke, args.data, scratch))
    proxy = SVDSimplifier(rank=rank, n_sequences=sizes["fit_sequences"]).fit(model, ds["train"])
    projections = {
        (layer, side): projector(proxy, layer, side, config.d_head)
        for layer in range(config.n_layer)
        for side in ("query", "key")
    }
    paths = {
        "ours (proxy)": lambda ids, mask: proxy(ids, attention_mask=mask).logits,
        "nnsight": None,
        "forward hooks": with_hooks(model, projections),
        "plain forward": lambda ids, mask: model(ids, attention_mask=mask).logits,
    }
    try:
        paths["nnsight"] = with_nnsight(model, projections)
        baseline = "nnsight"
    except ImportError:  # an optional extra: the hooks are then the baseline, and the report says so
        del paths["nnsight"]
        baseline = "forward hooks"
        report.notes.append(
            "nnsight is not installed (pip install -e '.[bench]'): forward hooks are the baseline."
        )
    hooked = [name for name in ("nnsight", "forward hooks") if name in paths]
    sentences = first_ids(ds["test_iid"])
    one = max(sentences[:50], key=len)
    eval_batch = token_budget_batches([len(s) for s in sentences], sizes["batch_tokens"])[-1]
    cases = {
        "one sentence": pad_batch([one]),
        "one sentence, 1 thread": pad_batch([one]),
        "evaluation batch": pad_batch([sentences[i] for i in eval_batch]),
    }
    rows = []
    threads = torch.get_num_threads()
    with torch.no_grad():
        for case, (ids, mask) in cases.items():
            torch.set_num_threads(1 if "1 thread" in case else threads)
            outputs = {name: run(ids, mask) for name, run in paths.items()}
            for name in hooked:
                diff = float((outputs[name] - outputs["ours (proxy)"]).abs().max())
                report.check(
                    f"{name} logits equal ours ({case})", diff <= 1e-5, f"max abs difference {diff:.3g}"
                )
            result = compare(
                {name: (lambda run=run, i=ids, m=mask: run(i, m)) for name, run in paths.items()},
                repeats=repeats[case],
                warmup=2,
                reference="ours (proxy)",
            )
            times = result["times"]
            plain = times["plain forward"].samples
            overhead = {
                name: Stats.of([t - p for t, p in zip(times[name].samples, plain, strict=True)])
                for name in ("ours (proxy)", *hooked)
            }
            report.results[case] = {**result, "overhead_s": overhead}
            ours_overhead = max(overhead["ours (proxy)"].median, 1e-6)  # guard: it can be ~0
            report.target(
                f"{baseline} overhead / ours, {case}", overhead[baseline].median / ours_overhead, 2.0, ">="
            )
            for name in paths:
                rows.append(
                    [
                        case,
                        str(tuple(ids.shape)),
                        name,
                        times[name].text(1e3),
                        overhead[name].text(1e3) if name in overhead else "",
                        result["ratios"][name].text() if name in result["ratios"] else "1",
                    ]
                )
    torch.set_num_threads(threads)
    report.sizes.update(
        {
            "model": model_source,
            "intervention": f"rank-{rank} projection of q and k in all {config.n_layer} layers",
            "evaluation batch budget (padded tokens)": sizes["batch_tokens"],
            "rounds": ", ".join(f"{n} ({case})" for case, n in repeats.items()),
        }
    )
    report.table(
        "Forward pass with the intervention (no grad)",
        ["batch", "shape", "path", "ms", "overhead vs plain, ms", "time / ours"],
        rows,
    )
    report.notes.append(
        "Overhead = time minus the plain forward of the same round (median over rounds); it can be "
        "negative within noise. The target is on overhead, the cost of the intervention mechanism; "
        "total time is shown too. On a large batch the forward pass and the projection itself "
        "(identical arithmetic in every path) dominate, so totals converge to 1×."
    )
    return report.write(args.out)


if __name__ == "__main__":
    main()

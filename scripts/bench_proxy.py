"""Proxy inference: the forward pass of each simplified model vs the original's, on the same batch.

    python scripts/bench_proxy.py            # full sizes (~30 s); --smoke for seconds

A proxy is the original model with a registered attention function that transforms q/k (SVD
projection, nearest k-means centroid) or the attention weights (one-hot); everything else is
the same code. This measures what that costs at inference, on two batches that bracket the Dyck
test data: many short sentences and a few of the longest (each ~16k padded tokens). Both run
eager attention (the original's default, and what the proxies build on). Check: the full-rank
SVD proxy's logits equal the original's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hf_illusions.bench import BenchReport, bench_data, bench_model, compare, first_ids, parser
from hf_illusions.data.batching import pad_batch, token_budget_batches
from hf_illusions.data.hub_folder import load_folder
from hf_illusions.simplify import KMeansSimplifier, OneHotSimplifier, SVDSimplifier

FULL = {"fit_sequences": 200, "batch_tokens": 16384, "repeats": 9}
SMOKE = {"fit_sequences": 20, "batch_tokens": 512, "repeats": 2}


def batches(ds, budget: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation loop's own first batch of the shortest split and last batch of the longest."""
    out = {}
    for name, split, pick in (
        ("short sentences", "test_seen_struct", 0),
        ("long sentences", "test_unseen_depth", -1),
    ):
        seqs = first_ids(ds[split])
        chosen = token_budget_batches([len(s) for s in seqs], budget)[pick]
        out[name] = pad_batch([seqs[i] for i in chosen])
    return out


def main(argv: list[str] | None = None) -> Path:
    args = parser(__doc__).parse_args(argv)
    report = BenchReport("proxy", "Proxy inference", "smoke" if args.smoke else "full", {})
    sizes = SMOKE if args.smoke else FULL
    repeats = args.repeats or sizes["repeats"]
    model, model_source = bench_model(args.smoke, args.model)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as scratch:
        ds = load_folder(bench_data(args.smoke, args.data, scratch))
    fit = dict(layers=None, n_sequences=sizes["fit_sequences"])
    d_head = model.config.d_head
    proxies = {
        f"svd_r{max(1, d_head // 8)}": SVDSimplifier(rank=max(1, d_head // 8), **fit).fit(model, ds["train"]),
        "kmeans_k16": KMeansSimplifier(k=16, **fit).fit(model, ds["train"]),
        "onehot": OneHotSimplifier().fit(model),
    }
    full_rank = SVDSimplifier(rank=d_head, **fit).fit(model, ds["train"])
    rows = []
    with torch.no_grad():
        for batch_name, (ids, mask) in batches(ds, sizes["batch_tokens"]).items():
            expected = model(ids, attention_mask=mask).logits
            got = full_rank(ids, attention_mask=mask).logits
            report.check(
                f"full-rank SVD proxy logits equal the original's ({batch_name})",
                torch.allclose(got, expected, atol=1e-4, rtol=1e-4),
                f"max abs difference {float((got - expected).abs().max()):.3g}",
            )
            for name, proxy in proxies.items():
                result = compare(
                    {
                        "proxy": lambda p=proxy, i=ids, m=mask: p(i, attention_mask=m),
                        "original": lambda i=ids, m=mask: model(i, attention_mask=m),
                    },
                    repeats=repeats,
                    warmup=1,
                )
                ratio = result["ratios"]["proxy"]
                report.results[f"{batch_name}/{name}"] = result
                report.target(f"{name} / original forward, {batch_name}", ratio.median, 1.3, "<=")
                rows.append(
                    [
                        batch_name,
                        f"{tuple(ids.shape)}",
                        name,
                        result["times"]["proxy"].text(1e3),
                        result["times"]["original"].text(1e3),
                        ratio.text(),
                    ]
                )
    report.sizes.update(
        {
            "model": model_source,
            "fit sequences": sizes["fit_sequences"],
            "batch budget (padded tokens)": sizes["batch_tokens"],
            "rounds": repeats,
        }
    )
    report.table(
        "Forward pass (no grad), eager attention",
        ["batch", "shape", "proxy", "proxy ms", "original ms", "ratio"],
        rows,
    )
    return report.write(args.out)


if __name__ == "__main__":
    main()

"""Simplifying a stock transformers model: GPT-2 small's size, fitting memory and time, proxy speed.

    python scripts/bench_any_model.py         # full sizes (~5-10 min on 2 cores); --smoke for seconds

A randomly initialised ``GPT2LMHeadModel`` of GPT-2 small's shape (124M parameters, vocabulary
50,257, sdpa attention) is simplified through the attention-interface seam:

* fitting an SVD proxy (all 12 layers × 12 heads) on 16 sequences × 512 tokens: peak RSS of the
  process (the model itself included) and wall time, and the fit's time per token against a
  plain forward pass over the same tokens, interleaved round by round;
* the proxies' forward pass (SVD and k-means, which run the sdpa kernel on transformed q/k)
  against the base model's sdpa forward, same batch, same rounds;
* the adapter ``save_pretrained`` writes, against the size of the base weights.

Checks: a full-rank SVD proxy reproduces the base logits (≤ 1e-4); the adapter reloads
bit-identically onto the base.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_illusions.bench import BenchReport, compare, parser
from hf_illusions.checkpoints import load_proxy
from hf_illusions.simplify import KMeansSimplifier, SVDSimplifier
from hf_illusions.simplify.adapter import WEIGHTS_NAME

FULL = {
    "config": {},  # GPT2Config() defaults: GPT-2 small
    "fit": (16, 512),
    "forward": (4, 512),
    "kmeans_fit": (4, 512),
    "rank": 16,
    "k": 16,
    "fit_repeats": 2,
    "repeats": 5,
}
SMOKE = {
    "config": {"vocab_size": 1000, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4},
    "fit": (4, 32),
    "forward": (2, 32),
    "kmeans_fit": (2, 32),
    "rank": 4,
    "k": 4,
    "fit_repeats": 1,
    "repeats": 2,
}


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def token_rows(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g).tolist()


def main(argv: list[str] | None = None) -> Path:
    args = parser(__doc__).parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    report = BenchReport(
        "any_model", "Simplifying a stock model (GPT-2 shape)", "smoke" if args.smoke else "full", {}
    )
    repeats = args.repeats or sizes["repeats"]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**sizes["config"])).eval()
    vocab = model.config.vocab_size
    n_params = sum(p.numel() for p in model.parameters())
    rss_model = peak_rss_gb()
    fit_rows = token_rows(*sizes["fit"], vocab, seed=1)
    n_fit, fit_len = sizes["fit"]
    simplifier = SVDSimplifier(rank=sizes["rank"], n_sequences=n_fit, max_batch_tokens=n_fit * fit_len)

    start = time.perf_counter()
    proxy = simplifier.fit(model, fit_rows)
    first_fit_s = time.perf_counter() - start
    rss_fit = peak_rss_gb()
    report.results["peak RSS after building the model (GB)"] = rss_model
    report.results["peak RSS after fitting the SVD proxy (GB)"] = rss_fit
    report.results["first SVD fit (s)"] = first_fit_s
    report.target("peak RSS while fitting (model included)", rss_fit, 4.0, "<=", unit=" GB")

    fit_ids = torch.tensor(fit_rows)
    fit_mask = torch.ones_like(fit_ids)
    with torch.no_grad():
        fitting = compare(
            {
                "fit": lambda: simplifier.fit(model, fit_rows),
                "forward": lambda: model(fit_ids, attention_mask=fit_mask),
            },
            repeats=sizes["fit_repeats"],
            warmup=0,
        )
    tokens = n_fit * fit_len
    report.results["fitting vs forward"] = fitting
    ratio = fitting["ratios"]["fit"]
    report.target("SVD fit / plain forward, same tokens (time per token)", ratio.median, 1.5, "<=")
    report.table(
        f"Fitting an SVD proxy (rank {sizes['rank']}, all layers and heads) on {n_fit} × {fit_len} tokens",
        ["path", "s median [min–max]", "ms per token", "ratio to a plain forward"],
        [
            [
                "SVD fit",
                fitting["times"]["fit"].text(),
                f"{fitting['times']['fit'].median / tokens * 1e3:.3g}",
                ratio.text(),
            ],
            [
                "plain forward (sdpa, with logits)",
                fitting["times"]["forward"].text(),
                f"{fitting['times']['forward'].median / tokens * 1e3:.3g}",
                "1",
            ],
        ],
    )

    n_km, km_len = sizes["kmeans_fit"]
    kmeans = KMeansSimplifier(k=sizes["k"], n_sequences=n_km).fit(
        model, token_rows(n_km, km_len, vocab, seed=2)
    )
    ids = torch.tensor(token_rows(*sizes["forward"], vocab, seed=3))
    mask = torch.ones_like(ids)
    mask[0, ids.shape[1] // 2 :] = 0  # one padded row: the masks are part of what is timed
    rows = []
    with torch.no_grad():
        for name, candidate in ((f"svd_r{sizes['rank']}", proxy), (f"kmeans_k{sizes['k']}", kmeans)):
            result = compare(
                {
                    "proxy": lambda p=candidate: p(ids, attention_mask=mask),
                    "base": lambda: model(ids, attention_mask=mask),
                },
                repeats=repeats,
                warmup=1,
            )
            report.results[f"forward/{name}"] = result
            report.target(f"{name} proxy / base forward (sdpa)", result["ratios"]["proxy"].median, 1.15, "<=")
            rows.append(
                [
                    name,
                    result["times"]["proxy"].text(1e3),
                    result["times"]["base"].text(1e3),
                    result["ratios"]["proxy"].text(),
                ]
            )
    report.table(
        f"Forward pass of batch {tuple(ids.shape)} (no grad)", ["proxy", "proxy ms", "base ms", "ratio"], rows
    )

    check_ids, check_mask = ids[:, : min(128, ids.shape[1])], mask[:, : min(128, ids.shape[1])]
    full = SVDSimplifier(rank=model.config.n_embd // model.config.n_head, n_sequences=2).fit(
        model, fit_rows[:2]
    )
    with torch.no_grad():
        expected = model(check_ids, attention_mask=check_mask).logits
        error = float(
            (full(check_ids, attention_mask=check_mask).logits - expected)[check_mask.bool()].abs().max()
        )
    report.check(
        "full-rank SVD proxy logits equal the base model's", error <= 1e-4, f"max abs difference {error:.3g}"
    )
    report.results["full-rank max abs logit error"] = error

    with tempfile.TemporaryDirectory(prefix="bench-any-model-") as scratch:
        proxy.save_pretrained(scratch)
        adapter_bytes = (Path(scratch) / WEIGHTS_NAME).stat().st_size
        reloaded = load_proxy(scratch, base_model=model)
        with torch.no_grad():
            same = torch.equal(
                reloaded(check_ids, attention_mask=check_mask).logits,
                proxy(check_ids, attention_mask=check_mask).logits,
            )
    report.check("the adapter reloads bit-identically", same)
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report.results["adapter bytes"] = adapter_bytes
    report.results["base weights bytes"] = base_bytes
    report.results["peak RSS at the end (GB)"] = peak_rss_gb()
    report.table(
        "Sizes",
        ["what", "value"],
        [
            ["parameters", f"{n_params:,}"],
            ["base weights", f"{base_bytes / 1e6:.1f} MB"],
            [
                f"SVD adapter (rank {sizes['rank']}, 144 heads' q/k bases and means)"
                if not args.smoke
                else "SVD adapter",
                f"{adapter_bytes / 1e3:.1f} kB",
            ],
            ["peak RSS after building the model", f"{rss_model:.2f} GB"],
            ["peak RSS after fitting", f"{rss_fit:.2f} GB"],
            ["peak RSS at the end (forwards with 50,257-way logits included)", f"{peak_rss_gb():.2f} GB"],
        ],
    )
    report.sizes.update(
        {
            "model": f"GPT2LMHeadModel, random init, {n_params / 1e6:.1f}M parameters, vocab {vocab}",
            "attention": model.config._attn_implementation,
            "fit sequences × tokens": f"{n_fit} × {fit_len}",
            "forward batch": f"{tuple(ids.shape)}",
            "rounds": repeats,
        }
    )
    report.notes.append(
        "Fitting streams per-head moments (mean and scatter, float64) batch by batch, so its memory "
        "is the model plus one batch's activations; the fit skips the LM head (no logits needed)."
    )
    return report.write(args.out)


if __name__ == "__main__":
    main()

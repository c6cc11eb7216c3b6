"""Scaling: how evaluation time grows with the number of sequences and with d_model.

    python scripts/bench_scaling.py          # full sizes (~1 min); --smoke for seconds

Each point times :func:`hf_illusions.evaluation.evaluate_models` (original + one SVD proxy,
every metric including attention JSD) against the forward passes alone on the same batches,
alternating rounds. Sequences: the first n sentences of ``test_iid`` with the benchmark model;
width: random models of d_model 64/128/256 (2 layers, 1 head, d_mlp = 4·d_model; timing does
not depend on the weights) on a fixed set of sentences. The fitted exponent ``a`` in
``time ∝ size^a`` (least squares on log–log) lets users extrapolate: at most 1 in n (below 1
while more sentences still fill the length-bucketed batches better); in d_model well below 2
while per-call overheads and the O(T²·d) attention work dominate, tending to 2 (the O(T·d²)
projections and MLP) for wide models. Sentence length matters too: attention work grows with
the square of the padded length, so long-sentence splits cost more per token (see ``fit_eval``).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from hf_illusions.bench import BenchReport, bench_data, bench_model, evaluation_vs_forwards, first_ids, parser
from hf_illusions.data.hub_folder import load_folder
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.simplify import SVDSimplifier

FULL = {"n_sequences": (500, 1000, 2000), "d_models": (64, 128, 256), "width_sequences": 500, "repeats": 3}
SMOKE = {"n_sequences": (4, 8, 16), "d_models": (8, 16, 32), "width_sequences": 8, "repeats": 1}
BUDGET = 16384


def exponent(sizes: list[float], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def plot(points: dict[str, list[tuple[float, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, (label, rows) in zip(axes, points.items(), strict=True):
        xs = [r[0] for r in rows]
        ax.loglog(xs, [r[1] for r in rows], "o-", label="evaluate_models")
        ax.loglog(xs, [r[2] for r in rows], "s--", label="forward passes only")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds (median)")
        ax.set_xticks(xs, [str(int(x)) for x in xs])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Evaluation time, original + one SVD proxy", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    args = parser(__doc__).parse_args(argv)
    report = BenchReport("scaling", "Evaluation scaling", "smoke" if args.smoke else "full", {})
    sizes = SMOKE if args.smoke else FULL
    repeats = args.repeats or sizes["repeats"]
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as scratch:
        ds = load_folder(bench_data(args.smoke, args.data, scratch))
    sentences = first_ids(ds["test_iid"])
    rows, points = [], {"sentences (test_iid)": [], "d_model": []}

    def record(axis: str, value: int, model: torch.nn.Module, sequences: list[list[int]]) -> None:
        fit = ds["train"].select(range(200))
        proxy = SVDSimplifier(rank=max(1, model.config.d_head // 8), n_sequences=200).fit(model, fit)
        result = evaluation_vs_forwards(model, {"p": proxy}, {"test_iid": sequences}, repeats, 1, BUDGET)
        times = result["times"]
        tokens = sum(len(s) for s in sequences)
        report.results[f"{axis}={value}"] = {**result, "tokens": tokens, "sentences": len(sequences)}
        points[axis].append((value, times["evaluate_models"].median, times["forward passes only"].median))
        rows.append(
            [
                axis,
                value,
                model.config.d_model,
                len(sequences),
                tokens,
                times["evaluate_models"].text(),
                times["forward passes only"].text(),
                result["ratios"]["evaluate_models"].text(),
                f"{times['evaluate_models'].median / tokens * 1e6:.1f}",
            ]
        )

    model, model_source = bench_model(args.smoke, args.model)
    for n in sizes["n_sequences"]:
        record("sentences (test_iid)", n, model, sentences[:n])
    base = model.config
    for d in sizes["d_models"]:
        torch.manual_seed(0)
        config = IllusionConfig(
            vocab_size=base.vocab_size,
            n_positions=base.n_positions,
            d_model=d,
            n_layer=2,
            n_head=1,
            d_mlp=4 * d,
        )
        record("d_model", d, IllusionForCausalLM(config).eval(), sentences[: sizes["width_sequences"]])

    for axis, pts in points.items():
        report.results[f"exponent/{axis}"] = exponent([p[0] for p in pts], [p[1] for p in pts])
    report.sizes.update(
        {
            "sentences axis": f"{list(sizes['n_sequences'])} sentences of test_iid, model {model_source}",
            "d_model axis": f"{list(sizes['d_models'])}, random 2-layer 1-head models, "
            f"{sizes['width_sequences']} sentences",
            "batch budget (padded tokens)": BUDGET,
            "rounds": repeats,
        }
    )
    report.table(
        "Evaluation time (original + one SVD proxy)",
        ["axis", "value", "d_model", "sentences", "tokens", "evaluate s", "forwards s", "ratio", "µs/token"],
        rows,
    )
    report.table(
        "Fitted exponent a in time ∝ size^a",
        ["axis", "a"],
        [[axis, f"{report.results[f'exponent/{axis}']:.2f}"] for axis in points],
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(points, out / "scaling.png")
    return report.write(out)


if __name__ == "__main__":
    main()

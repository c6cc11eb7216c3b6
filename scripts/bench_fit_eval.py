"""Fitting and evaluation: simplifier fits, one proxy over every test split, the whole reproduction.

    python scripts/bench_fit_eval.py         # full sizes (~5 min, most of it the reproduction)

1. Fitting on 1,000 training sequences: SVD and k-means fits vs the baseline every fit starts
   with, collecting the queries and keys (one no-grad forward pass over the sequences).
2. Evaluation of one proxy (SVD) over all Dyck test splits with
   :func:`hf_illusions.evaluation.evaluate_models` vs the baseline of only running the original
   and the proxy over the same batches (with attention maps, which the metrics need): the ratio
   is what computing every metric costs on top of the forward passes it cannot avoid.
3. The whole Dyck reproduction — the very config ``hf-illusions reproduce dyck`` runs
   (``ReproductionConfig.for_task("dyck")``; ``--smoke`` shrinks its sweep and sample): data
   verification, every simplifier setting fitted, every split evaluated, report written — one
   cold run into a scratch folder. Target: at most 15 minutes on this machine.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from hf_illusions.bench import (
    BenchReport,
    bench_data,
    bench_model,
    compare,
    evaluation_vs_forwards,
    first_ids,
    parser,
)
from hf_illusions.data.dyck import TEST_SPLITS
from hf_illusions.data.hub_folder import load_folder
from hf_illusions.simplify import KMeansSimplifier, SVDSimplifier, collect_qk

#: "reproduce": changes to the config `hf-illusions reproduce dyck` runs (ReproductionConfig.for_task)
FULL = {"fit_sequences": 1000, "fit_repeats": 3, "eval_sentences": None, "eval_repeats": 3, "reproduce": {}}
SMOKE = {
    "fit_sequences": 50,
    "fit_repeats": 1,
    "eval_sentences": 16,
    "eval_repeats": 1,
    "reproduce": {
        "svd_ranks": (1, 4),
        "kmeans_ks": (2,),
        "interaction_basis_ks": (),
        "circuit_slacks": (),
        "n_fit_sequences": 50,
        "max_eval_sentences": 16,
    },
}


def main(argv: list[str] | None = None) -> Path:
    args = parser(__doc__).parse_args(argv)
    report = BenchReport(
        "fit_eval", "Fitting, evaluation and the reproduction", "smoke" if args.smoke else "full", {}
    )
    sizes = SMOKE if args.smoke else FULL
    model, model_source = bench_model(args.smoke, args.model)
    with tempfile.TemporaryDirectory(prefix="bench-fit-eval-") as scratch:
        data_dir = bench_data(args.smoke, args.data, scratch)
        ds = load_folder(data_dir)
        fit_rows = ds["train"].select(range(min(sizes["fit_sequences"], len(ds["train"]))))
        rank = max(1, model.config.d_head // 8)

        # 1. fitting
        n = sizes["fit_sequences"]
        fits = compare(
            {
                f"svd_r{rank}": lambda: SVDSimplifier(rank=rank, n_sequences=n).fit(model, fit_rows),
                "kmeans_k16": lambda: KMeansSimplifier(k=16, n_sequences=n).fit(model, fit_rows),
                "kmeans_k64": lambda: KMeansSimplifier(k=64, n_sequences=n).fit(model, fit_rows),
                "collect_qk": lambda: collect_qk(model, fit_rows, n),
            },
            repeats=args.repeats or sizes["fit_repeats"],
            warmup=1,
            reference="collect_qk",
        )
        report.results["fit"] = fits
        report.table(
            f"Fitting on {len(fit_rows)} training sequences (all layers)",
            ["fit", "s median [min–max]", "ratio to collecting q/k"],
            [
                [name, stats.text(), fits["ratios"][name].text() if name in fits["ratios"] else "1"]
                for name, stats in fits["times"].items()
            ],
        )

        # 2. one proxy over every test split
        proxy = SVDSimplifier(rank=rank, n_sequences=n).fit(model, fit_rows)
        splits = {s: first_ids(ds[s], sizes["eval_sentences"]) for s in TEST_SPLITS}
        budget = 16384
        evaluation = evaluation_vs_forwards(
            model,
            {"p": proxy},
            splits,
            repeats=args.repeats or sizes["eval_repeats"],
            warmup=0,  # each round is minutes of work over thousands of batches: nothing left to warm
            max_batch_tokens=budget,
        )
        report.results["evaluate_one_proxy"] = evaluation
        n_tokens = sum(len(s) for seqs in splits.values() for s in seqs)
        report.table(
            f"Evaluating svd_r{rank} over all {len(splits)} test splits ({sum(map(len, splits.values()))} "
            f"sentences, {n_tokens} tokens)",
            ["path", "s median [min–max]", "ratio to forward passes only"],
            [
                [
                    "evaluate_models (original + proxy, every metric)",
                    evaluation["times"]["evaluate_models"].text(),
                    evaluation["ratios"]["evaluate_models"].text(),
                ],
                ["forward passes only", evaluation["times"]["forward passes only"].text(), "1"],
            ],
        )

        # 3. the whole reproduction, one cold run
        from hf_illusions.config import ReproductionConfig
        from hf_illusions.reproduction import reproduce

        model_dir = Path(scratch) / "model"
        model.save_pretrained(model_dir)
        out_dir = Path(scratch) / "report"
        start = time.perf_counter()
        config = ReproductionConfig.for_task(
            "dyck", model=model_dir, data=data_dir, out=out_dir, progress=False, **sizes["reproduce"]
        )
        reproduce(config)
        wall = time.perf_counter() - start
        timing = json.loads((out_dir / "results.json").read_text())["timing"]
    report.results["reproduce"] = {"wall_time_s": wall, "timing": timing}
    report.target("whole reproduction (hf-illusions reproduce dyck)", wall / 60, 15.0, "<=", unit=" min")
    fit_total = sum(timing["fit_s"].values())
    eval_total = sum(v for v in timing["evaluate_s"].values() if v is not None)
    n_proxies, n_splits = len(timing["fit_s"]), len(timing["evaluate_s"])
    report.table(
        f"Reproduction ({n_proxies} proxies × {n_splits} test splits, one cold run)",
        ["stage", "s"],
        [
            ["load model", f"{timing['load_model_s']:.1f}"],
            ["verify + load data", f"{timing['load_data_s']:.1f}"],
            ["fit every simplifier setting", f"{fit_total:.1f}"],
            *[[f"evaluate {split}", f"{seconds:.1f}"] for split, seconds in timing["evaluate_s"].items()],
            ["report (tables, plots)", f"{wall - timing['total_s']:.1f}"],
            ["total", f"{wall:.1f}"],
        ],
    )
    report.sizes.update(
        {
            "model": model_source,
            "data": str(data_dir),
            "fit sequences": sizes["fit_sequences"],
            "eval sentences per split": sizes["eval_sentences"] or "all",
            "eval batch budget (padded tokens)": budget,
            # the run's sweep and sample (its paths were a scratch folder)
            "reproduction": {"sweep": config.to_dict()["sweep"], "sample": config.to_dict()["sample"]},
        }
    )
    report.results["eval_seconds_total_in_reproduction"] = eval_total
    return report.write(args.out)


if __name__ == "__main__":
    main()

"""How far k-means gets on Dyck: IID agreement at closes against k, until the fit is out of reach.

An illusion needs a proxy that looks faithful in distribution; the reproduction's k-means sweep
(k ≤ 256) never gets there on the shipped Dyck model. This script extends it — k up to 1024, on
both layers and on layer 1 alone — on the reproduction's own fitting rows (a seeded sample of 1,000
training sentences) and a seeded sample of ``test_iid``, and records agreement and JSD at closes
with 95 % bootstrap intervals, the fit time, and the number of fitting vectors (k can never exceed
it). Writes ``reports/summary/kmeans_ceiling.json``.

    python scripts/kmeans_ceiling.py [--model checkpoints/dyck] [--ks 64,256,1024] [--n_eval 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hf_illusions.checkpoints import load_checkpoint
from hf_illusions.data.hub_folder import load_folder
from hf_illusions.evaluation import sentence_sums
from hf_illusions.intervals import merge_intervals, split_intervals
from hf_illusions.reproduction import sample_split
from hf_illusions.simplify import KMeansSimplifier
from hf_illusions.tasks.dyck import DyckTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/dyck")
    parser.add_argument("--data", default="dyck-illusions")
    parser.add_argument("--ks", default="64,256,1024", help="comma-separated k values")
    parser.add_argument("--n_fit", type=int, default=1000)
    parser.add_argument("--n_eval", type=int, default=500)
    parser.add_argument("--out", default="reports/summary/kmeans_ceiling.json")
    args = parser.parse_args()

    model, ds = load_checkpoint(args.model), load_folder(args.data)
    fit_rows = sample_split(ds["train"], args.n_fit, "train")
    fit = ds["train"].select(fit_rows)
    eval_rows = sample_split(ds["test_iid"], args.n_eval, "test_iid")
    sequences = [list(x) for x in ds["test_iid"].select(eval_rows)["input_ids"]]
    n_vectors = sum(len(x) for x in fit["input_ids"])
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    runs = list(previous.get("runs", []))  # resumable: finished (k, layers) runs are kept
    done = {(r["k"], tuple(r["layers"])) for r in runs}
    for k in (int(v) for v in args.ks.split(",")):
        for layers in ([0, 1], [1]):
            if (k, tuple(layers)) in done:
                continue
            tick = time.perf_counter()
            proxy = KMeansSimplifier(k=k, layers=layers, n_sequences=args.n_fit).fit(model, fit)
            fit_s = time.perf_counter() - tick
            sums = sentence_sums(model, sequences, DyckTask(), {"kmeans": proxy}, attention=False)
            close = merge_intervals(sums.means(), split_intervals(sums, "test_iid"))["kmeans"]["close"]
            runs.append(
                {
                    "k": k,
                    "layers": layers,
                    "fit_s": round(fit_s, 1),
                    "agreement": {"value": close["agreement"], "ci": close["ci"]["agreement"]},
                    "jsd": {"value": close["jsd"], "ci": close["ci"]["jsd"]},
                }
            )
            print(json.dumps(runs[-1]), flush=True)
            write(out, args, n_vectors, len(sequences), runs, previous.get("notes"))
    print(f"wrote {out}")


def write(out: Path, args: argparse.Namespace, n_vectors: int, n_eval: int, runs: list, notes) -> None:
    """Written after every run, so an interrupted sweep keeps what it measured."""
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": args.model,
        "fit_rows": "seeded sample of train (reproduce.sample_split), as in the reproduction",
        "n_fit_sequences": args.n_fit,
        "n_fit_vectors_per_head_and_side": n_vectors,
        "n_eval_sentences": n_eval,
        "runs": sorted(runs, key=lambda r: (r["k"], -len(r["layers"]))),
        **({"notes": notes} if notes else {}),
    }
    out.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()

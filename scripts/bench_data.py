"""Data: Dyck generation (200k training sentences + every split) and the Hub-folder build.

    python scripts/bench_data.py             # full preset (~1 min); --smoke: the tiny preset

Three measurements, alternated round by round:

* baseline — the sampler alone: ``n_train`` calls of ``sample_sentence`` (the irreducible cost of
  drawing the training set from the pushdown process);
* generation — :func:`hf_illusions.data.dyck.generate_splits`: the training draws plus every
  test split by rejection sampling against the training skeletons;
* build — :func:`hf_illusions.data.hub_folder.write_dyck_folder`: generation, the ``datasets``
  builder, parquet files and the dataset card (what ``hf-illusions data build dyck`` runs).

Target: the full build in at most 60 s.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hf_illusions.bench import BenchReport, compare, parser
from hf_illusions.data import dyck
from hf_illusions.data import dyck_language as dl
from hf_illusions.data.hub_folder import write_dyck_folder

FULL = {"preset": "dyck-20-10", "repeats": 2}
SMOKE = {"preset": "tiny", "repeats": 1}


def sample_only(settings: dyck.DyckSettings) -> None:
    rng = dyck.stream_rng(settings, dyck.TRAIN_SPLIT)
    for _ in range(settings.n_train):
        dl.sample_sentence(
            rng,
            n_types=settings.n_types,
            max_depth=settings.train_depth,
            min_length=settings.min_length,
            max_length=settings.max_brackets,
        )


def main(argv: list[str] | None = None) -> Path:
    args = parser(__doc__).parse_args(argv)
    report = BenchReport("data", "Dyck data generation and build", "smoke" if args.smoke else "full", {})
    sizes = SMOKE if args.smoke else FULL
    repeats = args.repeats or sizes["repeats"]
    settings = dyck.PRESETS[sizes["preset"]]
    n_eval = sum(settings.eval_sizes.values())
    with tempfile.TemporaryDirectory(prefix="bench-data-") as scratch:
        folder = Path(scratch) / "dyck-illusions"

        def build() -> None:
            shutil.rmtree(folder, ignore_errors=True)
            write_dyck_folder(folder, config_name=sizes["preset"])

        result = compare(
            {
                "build": build,
                "generation": lambda: dyck.generate_splits(settings),
                "sampler": lambda: sample_only(settings),
            },
            repeats=repeats,
            warmup=0,  # the sampler and builder have no caches to warm; a cold build is the real one
            reference="sampler",
        )
        files = {p.name: p.stat().st_size for p in sorted((folder / "data").glob("*.parquet"))}
    times = result["times"]
    n_total = settings.n_train + n_eval
    report.sizes.update(
        {
            "preset": sizes["preset"],
            "train sentences": settings.n_train,
            "other splits": n_eval,
            "rounds": repeats,
        }
    )
    report.results = {
        **result,
        "sentences_per_s": {
            "sampler (train draws)": settings.n_train / times["sampler"].median,
            "generation (all splits)": n_total / times["generation"].median,
            "build (all splits)": n_total / times["build"].median,
        },
        "parquet_bytes": files,
    }
    report.target("full Hub-folder build", times["build"].median, 60.0, "<=", unit=" s")
    report.table(
        "Time (s) and sentences/s",
        ["step", "s median [min–max]", "sentences/s", "ratio to the sampler alone"],
        [
            [
                "sampler alone (train draws)",
                times["sampler"].text(),
                f"{settings.n_train / times['sampler'].median:.0f}",
                "1",
            ],
            [
                "generate_splits (all splits)",
                times["generation"].text(),
                f"{n_total / times['generation'].median:.0f}",
                result["ratios"]["generation"].text(),
            ],
            [
                "write_dyck_folder (build)",
                times["build"].text(),
                f"{n_total / times['build'].median:.0f}",
                result["ratios"]["build"].text(),
            ],
        ],
    )
    report.notes.append(
        "The sampler is kept a plain Python loop over one seeded random.Random stream per split: the "
        "dataset's bytes (tested by hash) depend on that exact order of draws, and the build meets "
        "its target without vectorising it."
    )
    return report.write(args.out)


if __name__ == "__main__":
    main()

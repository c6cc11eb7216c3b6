"""What every ``scripts/bench_*.py`` shares: interleaved timing, the report format, default inputs.

The machine these run on has 2 cores shared with other jobs, so an absolute time says little.
Every benchmark therefore times the project's path *and* a baseline in the same process,
alternating them round by round (after warm-up), and reports the per-round ratio: load from
other processes slows both sides of a round alike. Each number comes with its median and
spread (min, max, quartiles) over the rounds.

A benchmark builds a :class:`BenchReport` — sizes, results, tables, targets, correctness checks
— and :meth:`BenchReport.write` saves ``<out>/<name>.json`` and regenerates ``<out>/README.md``,
the markdown summary of every JSON in the folder. Targets are reported, never enforced: a
missed speed target is a finding, not a failure. A failed correctness check (e.g. the
intervention outputs differ) raises :class:`BenchCheckError`.

``--smoke`` runs a benchmark at tiny sizes in seconds; ``make test`` does that to keep them working.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from hf_illusions.bench_inputs import (  # every benchmark's inputs, with the timing here
    SHIPPED_SIZES,
    SMOKE_SIZES,
    bench_data,
    bench_model,
    find_model_dir,
    first_ids,
    parser,
)
from hf_illusions.version import __version__


class BenchCheckError(AssertionError):
    """A benchmark's correctness check failed: the compared paths do not compute the same thing."""


# --------------------------------------------------------------------------- timing


@dataclass
class Stats:
    """Median and spread of repeated measurements (seconds, or a unitless ratio)."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    n: int
    samples: list[float] = field(repr=False)

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        values = sorted(float(s) for s in samples)
        if not values:
            raise ValueError("samples is empty: nothing was measured")
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
        return cls(statistics.median(values), values[0], values[-1], q1, q3, len(values), values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, scale: float = 1.0, digits: int = 3) -> str:
        """``median [min–max]``, e.g. ``12.3 [11.9–13.0]`` with ``scale=1e3`` for milliseconds."""
        median, low, high = (f"{v * scale:.{digits}g}" for v in (self.median, self.min, self.max))
        return f"{median} [{low}–{high}]"


def timed(fn: Callable[[], Any]) -> float:
    """Wall time of one call in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    candidates: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    reference: str | None = None,
) -> dict[str, dict[str, Stats]]:
    """Time every candidate ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    The order within a round rotates, so no candidate always runs first (right after another
    one's cache pollution, or right as a neighbour's job starts). Returns
    ``{"times": {name: Stats}, "ratios": {name: Stats}}`` where a ratio is ``name``'s time over
    ``reference``'s time *in the same round* (``reference`` defaults to the last candidate).
    """
    names = list(candidates)
    reference = reference or names[-1]
    if reference not in candidates:
        raise ValueError(f"reference must be one of {names}, got {reference!r}")
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(timed(candidates[name]))
    times = {name: Stats.of(s) for name, s in samples.items()}
    ratios = {
        name: Stats.of([a / b for a, b in zip(samples[name], samples[reference], strict=True)])
        for name in names
        if name != reference
    }
    return {"times": times, "ratios": ratios}


def evaluation_vs_forwards(
    model: torch.nn.Module,
    proxies: Mapping[str, torch.nn.Module],
    splits: Mapping[str, list[list[int]]],
    repeats: int,
    warmup: int = 1,
    max_batch_tokens: int = 16384,
) -> dict[str, dict[str, Stats]]:
    """:func:`compare` of the evaluation loop with the forward passes it cannot avoid.

    Both go split by split over the same padded batches; the baseline runs the original and
    every proxy with attention maps on (the attention metrics need them) and computes nothing
    else, so the ratio is what all the metrics cost on top.
    """
    from hf_illusions.data.batching import iter_padded
    from hf_illusions.evaluation import evaluate_models
    from hf_illusions.tasks.dyck import DyckTask

    task = DyckTask()
    models = [model, *proxies.values()]

    def evaluate() -> None:
        for sequences in splits.values():
            evaluate_models(model, sequences, task, proxies, max_batch_tokens=max_batch_tokens)

    @torch.no_grad()
    def forwards() -> None:
        for sequences in splits.values():
            for _, ids, mask in iter_padded(sequences, max_batch_tokens):
                for m in models:
                    m(ids, attention_mask=mask, output_attentions=True)

    return compare({"evaluate_models": evaluate, "forward passes only": forwards}, repeats, warmup)


def matmul_peak(size: int = 2048, repeats: int = 5) -> Stats:
    """This machine's achieved float32 FLOP/s on a large square matmul (the practical peak).

    Measured in the same run as what it is compared with, under the same load and threads.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up: thread pool and allocator
    flops = 2 * size**3
    return Stats.of([flops / timed(lambda: torch.matmul(a, b)) for _ in range(repeats)])


# --------------------------------------------------------------------------- reports


@dataclass
class Target:
    """A speed target: ``value`` (a ratio, seconds, …) against ``target`` with ``comparison``."""

    name: str
    value: float
    target: float
    comparison: str  # "<=" or ">="
    unit: str = "×"
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.comparison == "<=" else self.value >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass
class BenchReport:
    """Everything one benchmark run found; ``write`` saves it and refreshes the summary."""

    name: str
    title: str
    mode: str
    sizes: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def target(self, name: str, value: float, target: float, comparison: str, **kwargs: Any) -> Target:
        if comparison not in ("<=", ">="):
            raise ValueError(f"comparison must be '<=' or '>=', got {comparison!r}")
        found = Target(name, float(value), float(target), comparison, **kwargs)
        self.targets.append(found)
        return found

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record a correctness check; a failure raises right away (numbers from wrong code are void)."""
        self.checks[name] = bool(ok)
        if not ok:
            raise BenchCheckError(f"{self.name}: check {name!r} failed {detail}".rstrip())

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.tables.append({"title": title, "columns": list(columns), "rows": [list(r) for r in rows]})

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "mode": self.mode,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_time_s": time.perf_counter() - self.started,
            "sizes": self.sizes,
            "environment": environment(),
            "results": _plain(self.results),
            "tables": _plain(self.tables),
            "targets": [t.as_dict() for t in self.targets],
            "checks": self.checks,
            "notes": self.notes,
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<name>.json`` and regenerate ``<out_dir>/README.md``; returns the JSON path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        write_summary(out)
        return path


def environment() -> dict[str, Any]:
    """What a reader needs to place the numbers: cores, threads, load, versions."""
    import transformers

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_1m": load[0] if load else None,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hf_illusions": __version__,
    }


def _plain(obj: Any) -> Any:
    """JSON-ready copy: Stats become dicts, tensors/numpy scalars plain numbers."""
    if isinstance(obj, Stats):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_summary(out_dir: str | Path) -> Path:
    """``README.md`` of a bench folder: every target, then each benchmark's sizes and tables."""
    out = Path(out_dir)
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`scripts/bench_*.py`); do not edit by hand. Every ratio compares the",
        "project's path with a baseline timed *in the same process*, alternating round by round after",
        "warm-up; values are `median [min–max]` over the rounds. Targets are reported, never enforced.",
        "",
        "## Targets",
        "",
        "| benchmark | what | value | target | met |",
        "|---|---|---|---|---|",
    ]
    for rep in reports:
        for t in rep["targets"]:
            lines.append(
                f"| {rep['benchmark']} | {t['name']} | {_cell(t['value'])}{t['unit']} "
                f"| {t['comparison']} {_cell(t['target'])}{t['unit']} | {_cell(t['met'])} |"
            )
    for rep in reports:
        env = rep["environment"]
        lines += [
            "",
            f"## {rep['title']} (`{rep['benchmark']}`, {rep['mode']} mode)",
            "",
            f"{env['cpu_count']} cores, {env['torch_threads']} torch threads, load average "
            f"{_cell(env['load_average_1m'])} at the end, torch {env['torch']}; "
            f"benchmark wall time {rep['wall_time_s']:.0f} s; written {rep['created']}.",
            "",
            "Sizes: " + ", ".join(f"{k} = {v}" for k, v in rep["sizes"].items()) + ".",
        ]
        if rep["checks"]:
            lines += ["", "Checks: " + ", ".join(f"{k}: {_cell(v)}" for k, v in rep["checks"].items()) + "."]
        for table in rep["tables"]:
            lines += ["", f"**{table['title']}**", "", "| " + " | ".join(table["columns"]) + " |"]
            lines.append("|" + "---|" * len(table["columns"]))
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table["rows"]]
        for png in sorted(out.glob(f"{rep['benchmark']}*.png")):
            lines += ["", f"![{png.stem}]({png.name})"]
        if rep["notes"]:
            lines += [""] + [f"- {note}" for note in rep["notes"]]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = [
    "SHIPPED_SIZES",
    "SMOKE_SIZES",
    "BenchCheckError",
    "BenchReport",
    "Stats",
    "Target",
    "bench_data",
    "bench_model",
    "compare",
    "environment",
    "evaluation_vs_forwards",
    "find_model_dir",
    "first_ids",
    "matmul_peak",
    "parser",
    "timed",
    "write_summary",
]

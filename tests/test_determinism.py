"""Same seed, same bytes: the tiny pipeline (data → training → reproduction) run twice, compared by hash.

A reader of a report must be able to regenerate every number in it. This runs the whole chain
twice into different folders, the second time in a fresh interpreter with another string-hash
seed — ``hf-illusions data build``, ``hf-illusions train`` (a few CPU steps, one thread),
:func:`~hf_illusions.reproduction.reproduce_dyck` on the trained model with a small sweep — and
requires identical dataset files, identical trained weights and identical report numbers
(everything in ``results.json`` except wall-clock times, dates and the folders' own paths).
Other seeds must give other data and other weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from hf_illusions.cli import main
from hf_illusions.data import dyck
from hf_illusions.data.hub_folder import write_dyck_folder
from hf_illusions.reproduction import reproduce_dyck
from hf_illusions.reproduction.run import stable_results


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def numbers_hash(results_json: Path) -> str:
    payload = json.dumps(stable_results(json.loads(results_json.read_text())), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_flags(data: Path, out: Path, seed: int) -> list[str]:
    return [
        "train", "--dataset_dir", str(data), "--output_dir", str(out), "--seed", str(seed),
        "--max_steps", "10", "--d_model", "16", "--d_mlp", "32", "--n_positions", "128",
        "--max_batch_tokens", "2048", "--warmup_steps", "2", "--save_every", "5", "--eval_every", "10",
        "--eval_sentences", "8", "--report_to", "none",
    ]  # fmt: skip


def run_pipeline(root: Path, seed: int = 0) -> dict[str, str]:
    """data → 10 training steps → reproduction; returns the hash of each stage's output."""
    data, run, report = root / "dyck-illusions", root / "run", root / "report"
    assert main(["data", "build", "dyck", "--config", "tiny", "--out", str(data)]) == 0
    assert main(train_flags(data, run, seed)) == 0
    reproduce_dyck(
        run / "final",
        data,
        report,
        data_config="tiny",
        svd_ranks=(1, 16),
        kmeans_ks=(2,),
        n_fit_sequences=32,
        max_eval_sentences=16,
        progress=False,
    )
    return {
        "dataset": folder_hash(data),
        "weights": hashlib.sha256((run / "final/model.safetensors").read_bytes()).hexdigest()[:16],
        "results": numbers_hash(report / "results.json"),
    }


def run_pipeline_in_a_new_process(root: Path) -> dict[str, str]:
    """The same pipeline in a fresh interpreter with another string-hash seed (set/dict order traps)."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from pathlib import Path; from test_determinism import run_pipeline; "
        "print(json.dumps(run_pipeline(Path(sys.argv[1]))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}  # one thread, as here
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_tiny_pipeline_twice_gives_identical_hashes(tmp_path):
    first = run_pipeline(tmp_path / "first")
    second = run_pipeline_in_a_new_process(tmp_path / "second")
    print(f"\npipeline hashes: {first}")
    assert first == second
    results = json.loads((tmp_path / "first/report/results.json").read_text())
    assert results["splits"]["test_iid"]["svd_r16"]["all"]["jsd"] < 1e-6  # the numbers are real ones


def test_other_seeds_give_other_data_and_other_weights(tmp_path, tiny_dyck_dir):
    settings = dyck.DyckSettings(**{**dyck.settings_dict(dyck.PRESETS["tiny"]), "seed": 1})
    other = write_dyck_folder(tmp_path / "seed1", settings=settings, config_name="tiny")
    assert folder_hash(other / "data") != folder_hash(tiny_dyck_dir / "data")
    for split in dyck.SPLITS:
        assert (other / f"data/{split}.parquet").read_bytes() != (
            tiny_dyck_dir / f"data/{split}.parquet"
        ).read_bytes()
    weights = {}
    for seed in (0, 1):
        assert main(train_flags(tiny_dyck_dir, tmp_path / f"run{seed}", seed)) == 0
        weights[seed] = (tmp_path / f"run{seed}/final/model.safetensors").read_bytes()
    assert weights[0] != weights[1]

"""What a reproduction starts from, checked before any number is computed: the model, the data
folder (built if missing, verified, holding the train split the model was trained on) and the
seeded samples of rows that are fitted on and scored."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_illusions.config import ReproductionConfig
from hf_illusions.data.sampling import STRATA_COLUMN, sample_split_rows
from hf_illusions.errors import SettingsError, SplitError
from hf_illusions.fingerprints import sequences_hash
from hf_illusions.jsonio import read_json, write_json
from hf_illusions.paths import check_output_path
from hf_illusions.simplify.seam import expose_attention_weights
from hf_illusions.version import __version__

#: seed of the row samples (fitting rows and scored rows) unless a config says otherwise
SAMPLE_SEED = 0


@dataclass
class DataFolder:
    """How a task's dataset folder is made and checked, and which of its splits are scored."""

    presets: Mapping[str, Any]
    write: Any  # write_folder(path, config_name=…)
    verify: Any  # verify_folder(path) -> {"ok": …, "violations": […]}
    required_tests: Sequence[str]
    test_splits: Sequence[str]


@dataclass
class Inputs:
    """The loaded model and data of a reproduction, with what results.json records about them."""

    model: torch.nn.Module
    ds: Any  # the DatasetDict
    built: bool  # the data folder was built by this run
    training_data: dict  # check_training_data's record
    fit_rows: Any  # a datasets.Dataset with input_ids (the sample the simplifiers fit on)
    split_sequences: dict[str, list[list[int]]]  # the scored sample of each test split
    timing: dict[str, Any]
    sample: dict  # seed, strata column, fitting rows and scored rows per split (dataset indices)


def load_inputs(config: ReproductionConfig, folder: DataFolder) -> Inputs:
    """The model first (a bad checkpoint fails in a second, before a long data build); then the data
    folder, built with preset ``config.data_config`` when missing, verified from its stored tokens,
    with ``train`` and ``folder.required_tests`` present and a train split the model was trained on
    (:func:`check_training_data`)."""
    from hf_illusions.checkpoints import load_checkpoint
    from hf_illusions.data.hub_folder import load_folder

    if config.data_config not in folder.presets:
        raise SettingsError(
            f"data_config must be one of {sorted(folder.presets)}, got {config.data_config!r}"
        )
    check_output_path(config.out, arg="out_dir", reuse=True)  # an existing report folder is resumed
    timing: dict[str, Any] = {}
    tick = time.perf_counter()
    # the attention metrics compare the original's attention weights with each proxy's
    model = expose_attention_weights(load_checkpoint(config.model))
    timing["load_model_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    dataset_dir = Path(config.data)
    built = not dataset_dir.exists()
    if built:
        folder.write(dataset_dir, config_name=config.data_config)
    verification = verified(dataset_dir, folder.verify)
    if not verification["ok"]:
        raise SplitError(
            f"dataset {str(dataset_dir)!r} fails verification: {verification['violations'][:3]} "
            f"(run `hf-illusions data verify {dataset_dir}` for the full report)"
        )
    ds = load_folder(dataset_dir)
    missing = [s for s in ("train", *folder.required_tests) if s not in ds]
    if missing:
        raise SplitError(
            f"dataset {str(dataset_dir)!r} lacks splits {missing} (has {list(ds)}); rebuild it with "
            "`hf-illusions data build`"
        )
    training_data = check_training_data(
        config.model, ds["train"].data.column("input_ids").to_pylist(), config.allow_other_training_data
    )
    seed, n_eval = config.sample.seed, config.sample.max_eval_sentences
    fit_indices = sample_split(ds["train"], config.sample.n_fit_sequences, "train", seed)
    fit_rows = ds["train"].select(fit_indices)
    rows = {s: sample_split(ds[s], n_eval, s, seed) for s in folder.test_splits if s in ds}
    split_sequences = {s: [list(ids) for ids in ds[s].select(r)["input_ids"]] for s, r in rows.items()}
    timing["load_data_s"] = time.perf_counter() - tick
    column = STRATA_COLUMN if STRATA_COLUMN in ds["train"].column_names else None
    sample = {"seed": seed, "stratified_by": column, "fit_rows": fit_indices, "rows": rows}
    if column:  # what each sample holds of each stratum (e.g. both held-out packages)
        sample["strata"] = {
            s: dict(sorted(Counter(ds[s].select(r)[column]).items()))
            for s, r in {"train": fit_indices, **rows}.items()
        }
    return Inputs(model, ds, built, training_data, fit_rows, split_sequences, timing, sample)


def check_training_data(model_dir: str | Path, train_ids: Sequence[Sequence[int]], allow_other: bool) -> dict:
    """Compare the model's ``training_data.json`` (written by training) with the data's train split.

    A different train split means the test splits may hold text the model was trained on (the code
    corpus is read from installed packages, so other package versions give other splits): that
    raises :class:`SplitError` unless ``allow_other``. Returns what results.json records.
    """
    from hf_illusions.train import TRAINING_DATA_FILE

    file = Path(model_dir) / TRAINING_DATA_FILE
    if not file.is_file():
        return {"recorded": False}
    recorded = read_json(file)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("train_sha256_16"), str):
        raise SplitError(
            f"{str(file)!r} is corrupt (no train_sha256_16); delete it or restore it from the checkpoint"
        )
    expected = recorded["train_sha256_16"]
    found = sequences_hash(train_ids)
    if found != expected and not allow_other:
        raise SplitError(
            f"the model in {str(model_dir)!r} was trained on another 'train' split than this dataset "
            f"holds (sha256 {expected} vs {found}; {recorded.get('n_train')} vs {len(train_ids)} "
            "sequences), so its test splits may contain the model's training text. Rebuild the data as "
            f"recorded in {str(file)!r} (source_versions: {recorded.get('source_versions')}) or pass "
            "allow_other_training_data=True (--allow_other_training_data) to evaluate anyway"
        )
    return {"recorded": True, "matches": found == expected, "train_sha256_16": found}


def sample_split(split: Any, n: int | None, name: str, seed: int = SAMPLE_SEED) -> list[int]:
    """Row indices of a seeded sample of ``split`` (all rows when ``n`` is None or ≥ its size).

    Stratified by ``package`` where the split has that column (code: the builder orders windows
    by file path, so a prefix would come from one or two packages); a plain seeded draw otherwise
    (Dyck splits are i.i.d. draws, so any sample is fair, and the seeded one keeps it so).
    """
    return sample_split_rows(split, n, name, seed)


def folder_hash(folder: Path) -> str:
    """SHA-256 of every file under a dataset folder (names and bytes): what verification vouched for."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def verified(dataset_dir: Path, verify_folder: Any) -> dict:
    """``verify_folder(dataset_dir)``, remembered by the folder's content hash.

    Verifying re-derives every split property from the tokens (~30 s for the 200k-sentence Dyck
    folder); the reports of ``make reproduce`` read two folders, so a passing verification is
    cached in ``$HF_ILLUSIONS_CACHE`` (default ``~/.cache/hf_illusions``) under the hash of every
    byte of the folder: any change to the data triggers a new verification.
    """
    cache = Path(os.environ.get("HF_ILLUSIONS_CACHE", Path.home() / ".cache" / "hf_illusions")) / "verified"
    entry = cache / f"{folder_hash(dataset_dir)}.json"
    previous = read_json(entry)
    if previous and previous.get("ok") and previous.get("hf_illusions_version") == __version__:
        return previous
    report = verify_folder(dataset_dir)
    if report["ok"]:
        with contextlib.suppress(OSError):  # a read-only home: verify every time
            write_json(entry, {**report, "hf_illusions_version": __version__})
    return report


def preset_name(data_settings: dict, presets: Mapping[str, Any], settings_dict: Any) -> str:
    """The preset a dataset folder was built with, or "custom" (or "unknown" without its settings file)."""
    if not data_settings:
        return "unknown"
    return next((name for name, s in presets.items() if settings_dict(s) == data_settings), "custom")

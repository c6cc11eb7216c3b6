"""What differs between the Dyck and the code reproductions, and nothing else.

Each task turns a config and its loaded :class:`~hf_illusions.reproduction.inputs.Inputs` into a
:class:`Workload` (how positions are scored, what results.json records about the data) and the
:class:`~hf_illusions.reproduction.specs.ProxySpec` list of its sweep. Dyck (Friedman et al. 2024, §4)
adds the beyond-the-paper families where the model has our seams; code (§5) finds the copying
(induction) head and simplifies it alone besides the whole-model sweeps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_illusions.config import ReproductionConfig
from hf_illusions.errors import SettingsError
from hf_illusions.jsonio import read_json
from hf_illusions.paths import portable_path
from hf_illusions.presets import CODE_FAMILIES, FAMILIES
from hf_illusions.reproduction.inputs import DataFolder, Inputs, preset_name
from hf_illusions.reproduction.specs import (
    ProxySpec,
    circuit_specs,
    copy_head_specs,
    own_model_families,
    sweep_specs,
)
from hf_illusions.simplify.geometry import model_geometry


@dataclass
class Workload:
    """What a task hands the shared reproduction loop: scoring, fitting rows, splits, bookkeeping."""

    task: Any
    fit_rows: Any  # a datasets.Dataset with input_ids (the training sample the simplifiers fit on)
    split_sequences: dict[str, list[list[int]]]
    dataset: dict  # results["dataset"]
    sample: dict  # seed, strata column, fitting rows and scored rows per split (dataset indices)
    settings: dict = field(default_factory=dict)  # task settings that determine the numbers
    analyses: dict = field(default_factory=dict)  # extra measured facts for the report (e.g. heads)


def data_folder(task: str) -> DataFolder:
    """How the task's dataset folder is built and verified, and which of its splits are scored."""
    if task == "dyck":
        from hf_illusions.data.dyck import PRESETS, TEST_SPLITS
        from hf_illusions.data.hub_folder import write_dyck_folder
        from hf_illusions.data.verify import verify_dyck_folder

        return DataFolder(PRESETS, write_dyck_folder, verify_dyck_folder, TEST_SPLITS, TEST_SPLITS)
    from hf_illusions.data import code
    from hf_illusions.data.code_folder import verify_code_folder, write_code_folder

    tests = ("test_iid", *code.OOD_SPLITS)
    return DataFolder(code.PRESETS, write_code_folder, verify_code_folder, ("test_iid",), tests)


def dyck_workload(config: ReproductionConfig, inputs: Inputs) -> tuple[Workload, list[ProxySpec]]:
    """Dyck: closing brackets scored by depth and distance; every family the model supports."""
    from hf_illusions.data.dyck import PRESETS, settings_dict
    from hf_illusions.tasks.dyck import LONG_THRESHOLD, DyckTask

    dataset_dir = Path(config.data)
    data_settings = read_json(dataset_dir / "dyck_settings.json") or {}
    task = DyckTask(n_types=int(data_settings.get("n_types", 20)), long_threshold=LONG_THRESHOLD)
    _check_fits(inputs, task.vocab.size, dataset_dir)
    workload = _workload(
        config, inputs, task, data_settings, preset_name(data_settings, PRESETS, settings_dict)
    )
    workload.settings = {"long_threshold": task.long_threshold}
    families = list(config.sweep.families or FAMILIES)
    if config.sweep.families is None:  # a family that needs our own model's seams is left out, said so
        skipped = own_model_families(inputs.model)
        families = [f for f in families if f not in skipped]
        if skipped:
            workload.settings["skipped_families"] = skipped
            print(
                f"{type(inputs.model).__name__}: skipping {sorted(skipped)} (they need IllusionForCausalLM)"
            )
    n_fit = config.sample.n_fit_sequences
    # ours, or a transformers model (Llama, GPT-2, …) alike
    specs = sweep_specs(config.sweep, families, model_geometry(inputs.model), n_fit)
    if "sparse_circuit" in families:
        specs += circuit_specs(
            inputs.model, inputs.fit_rows, config.sweep.circuit_slacks, n_fit, config.sweep.fit_seed
        )
    return workload, specs


def code_workload(config: ReproductionConfig, inputs: Inputs) -> tuple[Workload, list[ProxySpec]]:
    """Code: faithfulness per split × prediction type; the copying head is also simplified alone.

    Before fitting, the copying (induction) head is found on the fitting windows with
    :func:`hf_illusions.tasks.copying.copy_scores_on_data` (the probe on repeated random text,
    :func:`~hf_illusions.tasks.copying.head_scores`, is reported next to it); besides the
    whole-model sweeps, that head alone is simplified (SVD at ``copy_head_ranks``, one-hot), so
    its proxies' faithfulness on ``identifier_repeat`` can be read separately.
    """
    import time

    from hf_illusions.data import code
    from hf_illusions.tasks.code import CodeTask

    dataset_dir = Path(config.data)
    task = CodeTask.from_dataset({s: inputs.ds[s] for s in inputs.split_sequences})
    _check_fits(inputs, code.VOCAB_SIZE, dataset_dir)
    tick = time.perf_counter()
    heads = copy_head(inputs.model, inputs.fit_rows)
    copy_layer, copy_head_index = heads["copy_head"]["layer"], heads["copy_head"]["head"]
    inputs.timing["head_scores_s"] = time.perf_counter() - tick
    data_settings = read_json(dataset_dir / "code_settings.json") or {}
    workload = _workload(
        config, inputs, task, data_settings, preset_name(data_settings, code.PRESETS, code.settings_dict)
    )
    workload.dataset["source_versions"] = (read_json(dataset_dir / "manifest.json") or {}).get(
        "source_versions"
    )
    workload.settings = {"copy_head": [copy_layer, copy_head_index]}
    workload.analyses = {"heads": heads}
    families = list(config.sweep.families or CODE_FAMILIES)
    geometry, n_fit = model_geometry(inputs.model), config.sample.n_fit_sequences
    specs = sweep_specs(config.sweep, families, geometry, n_fit)
    specs += copy_head_specs(config.sweep, families, geometry.d_head, copy_layer, copy_head_index, n_fit)
    return workload, specs


def copy_head(model: Any, fit_rows: Any) -> dict:
    """Copying-head scores, with ``copy_head`` = the head chosen on real code.

    Where the next character repeats an identifier, it is the head whose attention sits most on
    the successors of earlier occurrences of the context; without any repeat in the fitting
    windows, the head with the best induction score on repeated random text.
    """
    from hf_illusions.data import code
    from hf_illusions.data.code_labels import PREDICTION_TYPES
    from hf_illusions.tasks.copying import copy_scores_on_data, head_scores

    heads = head_scores(model, range(len(code.SPECIALS), code.VOCAB_SIZE), code.BOS_ID)
    repeat = PREDICTION_TYPES.index("identifier_repeat")
    try:
        on_data = copy_scores_on_data(
            model, fit_rows["input_ids"], [[t == repeat for t in row] for row in fit_rows["prediction_types"]]
        )
    except SettingsError:  # a handful of fitting windows may hold no repeated identifier at all
        on_data = None
    if on_data is None:
        heads["copy_head"]["selected_by"] = (
            "induction score on repeated random text (no repeat in the fit data)"
        )
        return heads
    heads["on_data"] = on_data
    mass, layer, head = max(
        (m, layer, h) for layer, row in enumerate(on_data["mass"]) for h, m in enumerate(row)
    )
    heads["copy_head"] = {
        "layer": layer,
        "head": head,
        "induction_mass_on_data": mass,
        "chance_on_data": on_data["chance"],
        "induction_score": heads["induction"][layer][head],
        "selected_by": "attention on induction targets at identifier_repeat positions of the fit windows",
    }
    return heads


def _check_fits(inputs: Inputs, vocab_size: int, dataset_dir: Path) -> None:
    from hf_illusions.checkpoints import check_model_fits

    rows = itertools.chain(inputs.fit_rows["input_ids"], *inputs.split_sequences.values())
    check_model_fits(inputs.model, vocab_size, max(len(s) for s in rows), f"the data in {str(dataset_dir)!r}")


def _workload(
    config: ReproductionConfig, inputs: Inputs, task: Any, data_settings: dict, preset: str
) -> Workload:
    dataset = {
        "dir": portable_path(config.data, config.out),
        "config": preset,
        "built_now": inputs.built,
        "settings": data_settings,
        "training_data": inputs.training_data,
    }
    return Workload(task, inputs.fit_rows, inputs.split_sequences, dataset, inputs.sample)

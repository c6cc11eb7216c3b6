"""A whole reproduction: data → model → simplifiers → faithfulness per split → report.

This is the pipeline behind ``hf-illusions reproduce`` (Friedman et al. 2024: §4 on Dyck, §5 on
code). One :class:`~hf_illusions.config.ReproductionConfig` says what to run; :func:`reproduce`
runs it in four steps, one module each:

1. :mod:`~hf_illusions.reproduction.inputs` loads the model and the data folder (built if missing,
   verified, checked against the model's training split) and draws the seeded samples of rows;
2. :mod:`~hf_illusions.reproduction.tasks` makes the task's workload (how positions are scored) and
   its sweep, one :class:`~hf_illusions.reproduction.specs.ProxySpec` per simplifier setting;
3. :mod:`~hf_illusions.reproduction.run` fits every setting on the same training rows, scores the
   original and every proxy on each test split with the one evaluation loop
   (:func:`hf_illusions.evaluation.sentence_sums`), resumably, and writes ``results.json``
   (with the config under ``"config"``);
4. :func:`hf_illusions.report_readme.write_report` turns ``results.json`` into the report's
   README.md, tables and plots.

Fitted proxies are not kept unless ``save_proxies=True`` (then ``<out>/proxies/<name>/``,
reloadable with ``from_pretrained``): for the shipped models they are cheap to refit, and the
report only needs the numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hf_illusions.config import ReproductionConfig
from hf_illusions.fingerprints import sequences_hash, weights_hash
from hf_illusions.presets import FUNCTION_DEFAULTS
from hf_illusions.reproduction.inputs import check_training_data, load_inputs, sample_split, verified
from hf_illusions.reproduction.run import fit_all, run_reproduction
from hf_illusions.reproduction.specs import ProxySpec, own_model_families, proxy_specs
from hf_illusions.reproduction.tasks import code_workload, data_folder, dyck_workload


def reproduce(config: ReproductionConfig) -> Path:
    """Run the reproduction ``config`` describes and return the path of the report's README.md.

    >>> import hf_illusions as hi
    >>> config = hi.ReproductionConfig.for_task("dyck", quick=True, out="reports/dyck-quick")
    >>> hi.reproduce(config)  # doctest: +SKIP
    PosixPath('reports/dyck-quick/README.md')
    """
    start = time.perf_counter()
    inputs = load_inputs(config, data_folder(config.task))
    workload, specs = (dyck_workload if config.task == "dyck" else code_workload)(config, inputs)
    return run_reproduction(config, inputs.model, workload, specs, inputs.timing, start)


def reproduce_dyck(
    model_dir: str | Path,
    dataset_dir: str | Path = "dyck-illusions",
    out_dir: str | Path = "reports/dyck",
    **settings: Any,
) -> Path:
    """The Dyck reproduction with the paper's sweep (:data:`~hf_illusions.presets.FUNCTION_DEFAULTS`):
    :func:`reproduce` of ``ReproductionConfig.create("dyck", …)``.

    ``settings`` are the config's fields, flat (``svd_ranks``, ``kmeans_ks``, ``n_fit_sequences``,
    ``max_eval_sentences``, ``data_config``, ``progress``, …; ``simplifiers`` = ``families``).
    ``dataset_dir`` is built with preset ``data_config`` if missing. Beyond the paper,
    ``interaction_basis_ks`` adds interaction-basis proxies and ``circuit_slacks`` pruned circuits
    (target loss = the model's loss + slack) — neither by default here; ``hf-illusions reproduce``
    (:meth:`ReproductionConfig.for_task`) adds both.
    """
    return reproduce(_config("dyck", model_dir, dataset_dir, out_dir, settings))


def reproduce_code(
    model_dir: str | Path,
    dataset_dir: str | Path = "code-illusions",
    out_dir: str | Path = "reports/code",
    **settings: Any,
) -> Path:
    """The code reproduction (faithfulness per split × prediction type; 250 fitting windows of 256
    characters ≈ 64k fitting vectors per head by default), with the copying head also simplified
    alone (SVD at ``copy_head_ranks``, one-hot). ``settings`` as for :func:`reproduce_dyck`."""
    return reproduce(_config("code", model_dir, dataset_dir, out_dir, settings))


def _config(
    task: str, model: str | Path, data: str | Path, out: str | Path, settings: dict
) -> ReproductionConfig:
    settings = dict(settings)
    if "simplifiers" in settings:  # the keyword these functions have always taken for `families`
        settings["families"] = settings.pop("simplifiers")
    return ReproductionConfig.create(
        task, model=model, data=data, out=out, **{**FUNCTION_DEFAULTS[task], **settings}
    )


__all__ = [
    "ProxySpec",
    "ReproductionConfig",
    "check_training_data",
    "fit_all",
    "own_model_families",
    "proxy_specs",
    "reproduce",
    "reproduce_code",
    "reproduce_dyck",
    "sample_split",
    "sequences_hash",
    "verified",
    "weights_hash",
]

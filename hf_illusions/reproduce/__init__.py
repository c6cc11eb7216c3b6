"""A whole reproduction: data → model → simplifiers → faithfulness per split → report.

This is the pipeline behind ``hf-illusions reproduce`` (Friedman et al. 2024: §4 on Dyck, §5 on
code). One :class:`~hf_illusions.config.ReproductionConfig` says what to run; :func:`reproduce`
runs it in four steps, one module each:

1. :mod:`~hf_illusions.reproduce.inputs` loads the model and the data folder (built if missing,
   verified, checked against the model's training split) and draws the seeded samples of rows;
2. :mod:`~hf_illusions.reproduce.tasks` makes the task's workload (how positions are scored) and
   its sweep, one :class:`~hf_illusions.reproduce.specs.ProxySpec` per simplifier setting;
3. :mod:`~hf_illusions.reproduce.run` fits every setting on the same training rows, scores the
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
from collections.abc import Sequence
from pathlib import Path

from hf_illusions.config import ReproductionConfig, check_families
from hf_illusions.fingerprints import sequences_hash, weights_hash
from hf_illusions.presets import (
    ATTENTION_PROXIES,
    CODE_KMEANS_KS,
    CODE_SVD_RANKS,
    COPY_HEAD_SVD_RANKS,
    DEFAULT_CIRCUIT_SLACKS,
    DEFAULT_IB_KS,
    DEFAULT_KMEANS_KS,
    DEFAULT_SVD_RANKS,
    EVAL_SENTENCES,
    FAMILIES,
    SEED_SWEEPS,
)
from hf_illusions.reproduce.inputs import check_training_data, load_inputs, sample_split, verified
from hf_illusions.reproduce.run import IID_SPLIT, SCHEMA_VERSION, fit_all, run_reproduction
from hf_illusions.reproduce.specs import (
    ProxySpec,
    capped_ranks,
    circuit_specs,
    own_model_families,
    proxy_specs,
)
from hf_illusions.reproduce.tasks import code_workload, data_folder, dyck_workload


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
    data_config: str = "dyck-20-10",
    svd_ranks: Sequence[int] = DEFAULT_SVD_RANKS,
    kmeans_ks: Sequence[int] = DEFAULT_KMEANS_KS,
    onehot: bool = True,
    layers: Sequence[int] | None = None,
    n_fit_sequences: int = 1000,
    max_eval_sentences: int | None = None,
    max_batch_tokens: int = 16384,
    resume: bool = True,
    progress: bool = True,
    save_proxies: bool = False,
    interaction_basis_ks: Sequence[int] = (),
    circuit_slacks: Sequence[float] = (),
    simplifiers: Sequence[str] | None = None,
    allow_other_training_data: bool = False,
    attention_metrics: bool | Sequence[str] = True,
) -> Path:
    """The Dyck reproduction with the paper's sweep; keyword arguments are the config's fields
    (:class:`~hf_illusions.config.ReproductionConfig`; ``simplifiers`` = ``families``).

    ``dataset_dir`` is built with preset ``data_config`` if missing. Beyond the paper,
    ``interaction_basis_ks`` adds interaction-basis proxies and ``circuit_slacks`` pruned circuits
    (target loss = the model's loss + slack) — neither by default here; ``hf-illusions reproduce``
    (:meth:`ReproductionConfig.for_task`) adds both.
    """
    settings = {
        k: v for k, v in locals().items() if k not in ("model_dir", "dataset_dir", "out_dir", "simplifiers")
    }
    return reproduce(
        ReproductionConfig.create(
            "dyck", model=model_dir, data=dataset_dir, out=out_dir, families=simplifiers, **settings
        )
    )


def reproduce_code(
    model_dir: str | Path,
    dataset_dir: str | Path = "code-illusions",
    out_dir: str | Path = "reports/code",
    data_config: str = "code-py",
    svd_ranks: Sequence[int] = CODE_SVD_RANKS,
    kmeans_ks: Sequence[int] = CODE_KMEANS_KS,
    onehot: bool = True,
    copy_head_ranks: Sequence[int] = COPY_HEAD_SVD_RANKS,
    n_fit_sequences: int = 250,
    max_eval_sentences: int | None = 600,
    max_batch_tokens: int = 16384,
    resume: bool = True,
    progress: bool = True,
    save_proxies: bool = False,
    simplifiers: Sequence[str] | None = None,
    allow_other_training_data: bool = False,
    attention_metrics: bool | Sequence[str] = True,
) -> Path:
    """The code reproduction (faithfulness per split × prediction type; ``n_fit_sequences`` windows
    of 256 characters ≈ 64k fitting vectors per head), with the copying head also simplified alone
    (SVD at ``copy_head_ranks``, one-hot). Keyword arguments are the config's fields."""
    settings = {
        k: v for k, v in locals().items() if k not in ("model_dir", "dataset_dir", "out_dir", "simplifiers")
    }
    return reproduce(
        ReproductionConfig.create(
            "code", model=model_dir, data=dataset_dir, out=out_dir, families=simplifiers, **settings
        )
    )


__all__ = [
    "ATTENTION_PROXIES",
    "DEFAULT_CIRCUIT_SLACKS",
    "DEFAULT_IB_KS",
    "DEFAULT_KMEANS_KS",
    "DEFAULT_SVD_RANKS",
    "EVAL_SENTENCES",
    "FAMILIES",
    "IID_SPLIT",
    "SCHEMA_VERSION",
    "SEED_SWEEPS",
    "ProxySpec",
    "ReproductionConfig",
    "capped_ranks",
    "check_families",
    "check_training_data",
    "circuit_specs",
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

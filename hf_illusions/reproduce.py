"""The Dyck reproduction: data → model → simplifiers → faithfulness per split → report.

This is the pipeline behind ``hf-illusions reproduce dyck`` (Friedman et al. 2024, §4 on Dyck):
fit every simplifier setting (SVD ranks, k-means k, one-hot) on the first training sequences,
then score the original and every proxy on each *test* split with the one evaluation loop
(:func:`hf_illusions.evaluation.evaluate_models`), which runs the original once per batch and
compares every proxy with that cached output.

Each split's result is written to ``<out_dir>/results/<split>.json`` as soon as it finishes,
tagged with a fingerprint of everything that determines it (model weights, the exact evaluated
and fitting sequences, simplifier settings, scoring settings). A re-run with ``resume=True``
reuses a split whose fingerprint matches and recomputes one whose fingerprint differs; if every
split is reused, nothing is fitted at all. Fitted proxies are not kept unless
``save_proxies=True`` (then ``<out_dir>/proxies/<name>/``, reloadable with ``from_pretrained``):
for the shipped models they are cheap to refit, and the report only needs the numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import platform
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_illusions.data.sampling import STRATA_COLUMN, sample_split_rows
from hf_illusions.errors import SettingsError, SimplifierError, SplitError
from hf_illusions.evaluation import ORIGINAL, SentenceSums, sentence_sums
from hf_illusions.fingerprints import sequences_hash, weights_hash
from hf_illusions.intervals import merge_intervals, split_intervals
from hf_illusions.paths import check_output_path, portable_path
from hf_illusions.simplify.geometry import model_geometry
from hf_illusions.simplify.seam import expose_attention_weights
from hf_illusions.tasks.dyck import LONG_THRESHOLD, DyckTask
from hf_illusions.version import __version__

#: full rank (d_head = 64 on the shipped Dyck models) is left out: a centered projection onto every
#: principal direction is the identity, exact by construction (tested in tests/test_simplify.py)
DEFAULT_SVD_RANKS = (1, 2, 4, 8, 16, 32)
#: k-means never looks faithful on Dyck (IID agreement at closes 0.80 at k = 64, 0.83 at k = 256, 0.86
#: at k = 1024, 0.88 at k = 4096, measured by scripts/kmeans_ceiling.py into
#: reports/summary/kmeans_ceiling.json); k = 256 is the largest setting a full reproduction can afford.
#: Every other power of 4 between: k = 8 and 32 added two more unfaithful points to the same
#: monotone curve (finding 1 compares the smallest with the largest k, which stay).
DEFAULT_KMEANS_KS = (2, 4, 16, 64, 256)
#: extra training seeds are evaluated on each family's representative settings only (≥ 2 settings
#: per swept family, so finding 1 can still be tested), on half the main seed's sentences per split
#: (a seeded sample; results.json records the rows; intervals are ~√2 wider) and without attention
#: metrics (no finding uses them); ``--sweep seed`` on the command line
SEED_SWEEPS = {
    "dyck": {
        "svd_ranks": (4, 8, 16),
        "kmeans_ks": (64, 256),
        "interaction_basis_ks": (32,),
        "circuit_slacks": (),
        "max_eval_sentences": 1000,
        "attention_metrics": False,
    },
    "code": {
        "svd_ranks": (8, 16, 32),
        "kmeans_ks": (16, 64),
        "copy_head_ranks": (4, 8),
        "max_eval_sentences": 400,
        "attention_metrics": False,
    },
}
#: sentences (windows) scored per test split by ``hf-illusions reproduce`` (and so ``make
#: reproduce``), full sweep and seed sweep alike: every report of a task scores the same seeded rows,
#: so seeds are compared on the same sentences. Half of each 2,000-sentence Dyck split and two thirds
#: of the 600 code windows the first code reports scored: the intervals are ~1.4x (~1.2x) wider, and
#: every shipped model fits a 20-minute reproduction on 2 cores. ``--max_eval_sentences`` overrides.
EVAL_SENTENCES = {"dyck": 1000, "code": 400}
#: the proxies whose attention JSD / argmax agreement the full sweep measures (the report's
#: "Attention JSD per layer" table): the representative settings the README and the findings show,
#: plus whole-model one-hot. Attention metrics are float64 over every (head, query, key) entry and
#: cost about one more forward pass per proxy; no finding uses them.
ATTENTION_PROXIES = {
    "dyck": ("svd_r8", "svd_r16", "onehot", "onehot_l1", "ib_k32", "circuit_0p01"),
    "code": ("svd_r16", "onehot", "copy_svd_r8", "copy_onehot"),
}
SCHEMA_VERSION = 2  # 2: per-sentence sums, intervals, sampled rows, scored-set agreement
IID_SPLIT = "test_iid"


@dataclass
class ProxySpec:
    """One simplifier setting: its report name, family, swept parameter and the simplifier object."""

    name: str
    family: str
    param_name: str | None
    param: int | None
    simplifier: Any = field(repr=False)

    def record(self) -> dict:
        """What results.json stores about this proxy (enough to refit it)."""
        return {
            "family": self.family,
            "param_name": self.param_name,
            "param": self.param,
            "settings": _jsonable(self.simplifier.settings()),
        }


def capped_ranks(ranks: Sequence[int], d_head: int) -> list[int]:
    """Ranks above ``d_head`` mean "full rank": cap them there and drop the duplicates."""
    return sorted({min(int(r), d_head) for r in ranks})


def proxy_specs(
    d_head: int,
    svd_ranks: Sequence[int] = DEFAULT_SVD_RANKS,
    kmeans_ks: Sequence[int] = DEFAULT_KMEANS_KS,
    onehot: bool = True,
    layers: Sequence[int] | None = None,
    n_fit_sequences: int = 1000,
    n_layer: int | None = None,
    interaction_basis_ks: Sequence[int] = (),
) -> list[ProxySpec]:
    """The sweep of the paper: SVD over ranks, k-means over k, and data-independent one-hot.

    Beyond the paper, ``interaction_basis_ks`` adds the interaction-basis simplifier (Bushnaq et
    al. 2024) for each ``k`` (family ``interaction_basis``; none by default).

    With ``n_layer`` given (and no ``layers`` restriction), one-hot attention is also applied to
    each layer alone (``onehot_l{i}``, family ``onehot_layer``): hard attention in a layer that
    counts (uniform attention) and in one that retrieves (sharp attention) fail very differently.
    """
    from hf_illusions.simplify import (
        InteractionBasisSimplifier,
        KMeansSimplifier,
        OneHotSimplifier,
        SVDSimplifier,
    )

    layers = list(layers) if layers is not None else None
    specs = [
        ProxySpec(
            f"svd_r{r}", "svd", "rank", r, SVDSimplifier(rank=r, layers=layers, n_sequences=n_fit_sequences)
        )
        for r in capped_ranks(svd_ranks, d_head)
    ]
    specs += [
        ProxySpec(
            f"kmeans_k{k}",
            "kmeans",
            "k",
            k,
            KMeansSimplifier(k=k, layers=layers, n_sequences=n_fit_sequences),
        )
        for k in sorted(set(kmeans_ks))
    ]
    if onehot:
        specs.append(ProxySpec("onehot", "onehot", None, None, OneHotSimplifier(layers=layers)))
        if layers is None and n_layer is not None and n_layer > 1:
            specs += [
                ProxySpec(f"onehot_l{i}", "onehot_layer", "layer", i, OneHotSimplifier(layers=[i]))
                for i in range(n_layer)
            ]
    specs += [
        ProxySpec(
            f"ib_k{k}",
            "interaction_basis",
            "k",
            k,
            InteractionBasisSimplifier(k=k, layers=layers, n_sequences=n_fit_sequences),
        )
        for k in sorted(set(interaction_basis_ks))
    ]
    return specs


def fingerprint(payload: Any) -> str:
    """Stable short hash of a JSON-able payload (key order does not matter)."""
    text = json.dumps(_jsonable(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


FAMILIES = ("svd", "kmeans", "onehot", "interaction_basis", "sparse_circuit")
#: the beyond-the-paper sweeps ``hf-illusions reproduce dyck`` (and so ``make reproduce``) adds;
#: the Python functions add them only when asked (``interaction_basis_ks``, ``circuit_slacks``)
DEFAULT_IB_KS = (8, 16, 32)
#: circuit targets, as allowed next-token loss increase (nats) over the model's own loss
DEFAULT_CIRCUIT_SLACKS = (0.01, 0.05, 0.2)
#: sequences the circuit pruner fits on (each of its ~110 steps is a pass over all of them)
CIRCUIT_FIT_SEQUENCES = 256


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
    try:
        recorded = json.loads(file.read_text())
        expected = recorded["train_sha256_16"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SplitError(
            f"{str(file)!r} is corrupt ({err!r}); delete it or restore it from the checkpoint"
        ) from None
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


def own_model_families(model: Any) -> dict[str, str]:
    """Family → why it cannot simplify ``model``, for the families that need our own model's seams."""
    from hf_illusions.modeling import IllusionForCausalLM
    from hf_illusions.simplify import InteractionBasisSimplifier
    from hf_illusions.sparse.circuit import SparseCircuitPruner

    if isinstance(model, IllusionForCausalLM):
        return {}
    return {
        "interaction_basis": InteractionBasisSimplifier.requires_own_model,
        "sparse_circuit": SparseCircuitPruner.requires_own_model,
    }


def check_families(simplifiers: Sequence[str]) -> list[str]:
    """The simplifier families asked for, checked against :data:`FAMILIES` (order kept)."""
    chosen = [s.strip() for s in simplifiers if s.strip()]
    unknown = [s for s in chosen if s not in FAMILIES]
    if unknown or not chosen:
        raise SettingsError(
            f"simplifiers must be a non-empty subset of {list(FAMILIES)}, got {list(simplifiers)}"
        )
    return list(dict.fromkeys(chosen))


@dataclass
class Workload:
    """What a task hands the shared reproduction loop: scoring, fitting rows, splits, bookkeeping."""

    task: Any
    fit_rows: Any  # a datasets.Dataset with input_ids (the training prefix the simplifiers fit on)
    split_sequences: dict[str, list[list[int]]]
    dataset: dict  # results["dataset"]
    sample: dict  # seed, strata column, fitting rows and scored rows per split (dataset indices)
    settings: dict = field(default_factory=dict)  # task settings that determine the numbers
    analyses: dict = field(default_factory=dict)  # extra measured facts for the report (e.g. heads)


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
    """Run the whole Dyck reproduction and return the path of the report's README.md.

    ``dataset_dir`` is built with preset ``data_config`` if missing. SVD ranks above the model's
    ``d_head`` are capped at ``d_head``. ``max_eval_sentences`` keeps the first sentences of each
    test split (``None`` = all); ``max_batch_tokens`` only trades memory for speed and is not
    part of the resume fingerprint. Beyond the paper, ``interaction_basis_ks`` adds
    interaction-basis proxies and ``circuit_slacks`` pruned circuits (target loss = the model's
    loss + slack); ``simplifiers`` keeps only the named families (``None`` = every family
    whose sweep is non-empty). ``attention_metrics``: attention JSD / agreement for every proxy
    (``True``), none (``False``) or the named proxies only (see :data:`ATTENTION_PROXIES`); no
    other number depends on it.
    """
    from hf_illusions.checkpoints import check_model_fits
    from hf_illusions.data.dyck import PRESETS, TEST_SPLITS
    from hf_illusions.data.hub_folder import write_dyck_folder
    from hf_illusions.data.verify import verify_dyck_folder

    start = time.perf_counter()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    model, _, built, training_data, fit_rows, split_sequences, timing, sample = _load_model_and_data(
        model_dir, dataset_dir, out_dir, data_config, PRESETS, write_dyck_folder, verify_dyck_folder,
        TEST_SPLITS, TEST_SPLITS, n_fit_sequences, max_eval_sentences, allow_other_training_data,
    )  # fmt: skip
    data_settings = _read_json(dataset_dir / "dyck_settings.json") or {}

    task = DyckTask(n_types=int(data_settings.get("n_types", 20)), long_threshold=LONG_THRESHOLD)
    longest = max(len(s) for s in [*fit_rows["input_ids"], *itertools.chain(*split_sequences.values())])
    check_model_fits(model, task.vocab.size, longest, f"the data in {str(dataset_dir)!r}")
    from hf_illusions.data.dyck import settings_dict

    workload = Workload(
        task=task,
        fit_rows=fit_rows,
        split_sequences=split_sequences,
        dataset={
            "dir": portable_path(dataset_dir, out_dir),
            "config": _preset_name(data_settings, PRESETS, settings_dict),
            "built_now": built,
            "settings": data_settings,
            "training_data": training_data,
        },
        sample=sample,
        settings={"long_threshold": task.long_threshold},
    )
    families = check_families(simplifiers) if simplifiers is not None else list(FAMILIES)
    geometry = model_geometry(model)  # ours, or a transformers model (Llama, GPT-2, …) alike
    if simplifiers is None:  # by default, a family that needs our own model's seams is left out, said so
        skipped = own_model_families(model)
        families = [f for f in families if f not in skipped]
        if skipped:
            workload.settings["skipped_families"] = skipped
            print(f"{type(model).__name__}: skipping {sorted(skipped)} (they need IllusionForCausalLM)")
    specs = proxy_specs(
        geometry.d_head,
        svd_ranks if "svd" in families else (),
        kmeans_ks if "kmeans" in families else (),
        onehot and "onehot" in families,
        layers,
        n_fit_sequences,
        n_layer=geometry.n_layer,
        interaction_basis_ks=interaction_basis_ks if "interaction_basis" in families else (),
    )
    if "sparse_circuit" in families:
        specs += circuit_specs(model, fit_rows, circuit_slacks, n_fit_sequences)
    return run_reproduction(
        model, model_dir, workload, specs, out_dir, n_fit_sequences, max_eval_sentences, layers,
        max_batch_tokens, resume, progress, save_proxies, timing, start, attention_metrics,
    )  # fmt: skip


CODE_SVD_RANKS = (1, 2, 4, 8, 16, 32)
CODE_KMEANS_KS = (4, 16, 64)
COPY_HEAD_SVD_RANKS = (1, 2, 4, 8)


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
    """The code reproduction (Friedman et al. 2024, §5): faithfulness per split × prediction type.

    Same loop as :func:`reproduce_dyck`, on ``code-illusions`` windows (``n_fit_sequences``
    windows of 256 characters ≈ 64k fitting vectors per head). Before fitting, the copying
    (induction) head is found on the fitting windows with
    :func:`hf_illusions.tasks.copying.copy_scores_on_data` (the probe on repeated random text,
    :func:`~hf_illusions.tasks.copying.head_scores`, is reported next to it); besides the
    whole-model sweeps, that head alone is simplified (SVD at ``copy_head_ranks``, one-hot), so
    its proxies' faithfulness on ``identifier_repeat`` can be read separately.
    """
    from hf_illusions.checkpoints import check_model_fits
    from hf_illusions.data import code
    from hf_illusions.data.code_folder import verify_code_folder, write_code_folder
    from hf_illusions.data.code_labels import PREDICTION_TYPES
    from hf_illusions.simplify import OneHotSimplifier, SVDSimplifier
    from hf_illusions.tasks.code import CodeTask
    from hf_illusions.tasks.copying import copy_scores_on_data, head_scores

    start = time.perf_counter()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    model, ds, built, training_data, fit_rows, split_sequences, timing, sample = _load_model_and_data(
        model_dir, dataset_dir, out_dir, data_config, code.PRESETS, write_code_folder, verify_code_folder,
        ("test_iid",), ("test_iid", *code.OOD_SPLITS), n_fit_sequences, max_eval_sentences,
        allow_other_training_data,
    )  # fmt: skip
    test_splits = list(split_sequences)
    task = CodeTask.from_dataset({s: ds[s] for s in test_splits})
    longest = max(len(s) for s in [*fit_rows["input_ids"], *itertools.chain(*split_sequences.values())])
    check_model_fits(model, code.VOCAB_SIZE, longest, f"the data in {str(dataset_dir)!r}")

    tick = time.perf_counter()
    heads = head_scores(model, range(len(code.SPECIALS), code.VOCAB_SIZE), code.BOS_ID)
    # The copying head is chosen on real code: where the next character repeats an identifier,
    # the head whose attention sits most on the successors of earlier occurrences of the context.
    repeat = PREDICTION_TYPES.index("identifier_repeat")
    try:
        on_data = copy_scores_on_data(
            model, fit_rows["input_ids"], [[t == repeat for t in row] for row in fit_rows["prediction_types"]]
        )
    except SettingsError:  # a handful of fitting windows may hold no repeated identifier at all
        on_data = None
    if on_data is not None:
        heads["on_data"] = on_data
        mass, copy_layer, copy_head = max(
            (m, layer, h) for layer, row in enumerate(on_data["mass"]) for h, m in enumerate(row)
        )
        heads["copy_head"] = {
            "layer": copy_layer,
            "head": copy_head,
            "induction_mass_on_data": mass,
            "chance_on_data": on_data["chance"],
            "induction_score": heads["induction"][copy_layer][copy_head],
            "selected_by": "attention on induction targets at identifier_repeat positions of the fit windows",
        }
    else:
        copy_layer, copy_head = heads["copy_head"]["layer"], heads["copy_head"]["head"]
        heads["copy_head"]["selected_by"] = (
            "induction score on repeated random text (no repeat in the fit data)"
        )
    timing["head_scores_s"] = time.perf_counter() - tick
    data_settings = _read_json(dataset_dir / "code_settings.json") or {}
    workload = Workload(
        task=task,
        fit_rows=fit_rows,
        split_sequences=split_sequences,
        dataset={
            "dir": portable_path(dataset_dir, out_dir),
            "config": _preset_name(data_settings, code.PRESETS, code.settings_dict),
            "built_now": built,
            "settings": data_settings,
            "training_data": training_data,
            "source_versions": (_read_json(dataset_dir / "manifest.json") or {}).get("source_versions"),
        },
        sample=sample,
        settings={"copy_head": [copy_layer, copy_head]},
        analyses={"heads": heads},
    )
    families = check_families(simplifiers) if simplifiers is not None else ["svd", "kmeans", "onehot"]
    geometry = model_geometry(model)
    specs = proxy_specs(
        geometry.d_head,
        svd_ranks if "svd" in families else (),
        kmeans_ks if "kmeans" in families else (),
        onehot and "onehot" in families,
        None,
        n_fit_sequences,
        n_layer=geometry.n_layer,
    )
    where = {"layers": [copy_layer], "heads": [copy_head]}
    if "svd" in families:
        specs += [
            ProxySpec(f"copy_svd_r{r}", "copy_head_svd", "rank", r,
                      SVDSimplifier(rank=r, n_sequences=n_fit_sequences, **where))
            for r in capped_ranks(copy_head_ranks, geometry.d_head)
        ]  # fmt: skip
    if onehot and "onehot" in families:
        specs.append(ProxySpec("copy_onehot", "copy_head_onehot", None, None, OneHotSimplifier(**where)))
    return run_reproduction(
        model, model_dir, workload, specs, out_dir, n_fit_sequences, max_eval_sentences, None,
        max_batch_tokens, resume, progress, save_proxies, timing, start, attention_metrics,
    )  # fmt: skip


def _load_model_and_data(
    model_dir: str | Path,
    dataset_dir: Path,
    out_dir: Path,
    data_config: str,
    presets: Mapping[str, Any],
    write_folder: Any,
    verify_folder: Any,
    required_tests: Sequence[str],
    test_splits: Sequence[str],
    n_fit_sequences: int,
    max_eval_sentences: int | None,
    allow_other_training_data: bool,
) -> tuple:
    """What every task's reproduction starts with, checked before any number is computed.

    The model first (a bad checkpoint fails in a second, before a long data build); then the data
    folder, built with preset ``data_config`` when missing, verified from its stored tokens, with
    ``train`` and ``required_tests`` present and a train split the model was trained on
    (:func:`check_training_data`). Returns ``(model, ds, built, training_data, fit_rows,
    split_sequences, timing)``; ``split_sequences`` has the ``test_splits`` the folder holds.
    """
    from hf_illusions.checkpoints import load_checkpoint
    from hf_illusions.data.hub_folder import load_folder

    _check_sizes(n_fit_sequences, max_eval_sentences)
    if data_config not in presets:
        raise SettingsError(f"data_config must be one of {sorted(presets)}, got {data_config!r}")
    check_output_path(out_dir, arg="out_dir", reuse=True)  # an existing report folder is resumed
    timing: dict[str, Any] = {}
    tick = time.perf_counter()
    # the attention metrics compare the original's attention weights with each proxy's
    model = expose_attention_weights(load_checkpoint(model_dir))
    timing["load_model_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    built = not dataset_dir.exists()
    if built:
        write_folder(dataset_dir, config_name=data_config)
    verification = verified(dataset_dir, verify_folder)
    if not verification["ok"]:
        raise SplitError(
            f"dataset {str(dataset_dir)!r} fails verification: {verification['violations'][:3]} "
            f"(run `hf-illusions data verify {dataset_dir}` for the full report)"
        )
    ds = load_folder(dataset_dir)
    missing = [s for s in ("train", *required_tests) if s not in ds]
    if missing:
        raise SplitError(
            f"dataset {str(dataset_dir)!r} lacks splits {missing} (has {list(ds)}); rebuild it with "
            "`hf-illusions data build`"
        )
    training_data = check_training_data(
        model_dir, ds["train"].data.column("input_ids").to_pylist(), allow_other_training_data
    )
    fit_indices = sample_split(ds["train"], n_fit_sequences, "train")
    fit_rows = ds["train"].select(fit_indices)
    rows = {s: sample_split(ds[s], max_eval_sentences, s) for s in test_splits if s in ds}
    split_sequences = {s: [list(ids) for ids in ds[s].select(r)["input_ids"]] for s, r in rows.items()}
    timing["load_data_s"] = time.perf_counter() - tick
    column = _strata_column(ds["train"])
    sample = {"seed": SAMPLE_SEED, "stratified_by": column, "fit_rows": fit_indices, "rows": rows}
    if column:  # what each sample holds of each stratum (e.g. both held-out packages)
        sample["strata"] = {
            s: dict(sorted(Counter(ds[s].select(r)[column]).items()))
            for s, r in {"train": fit_indices, **rows}.items()
        }
    return model, ds, built, training_data, fit_rows, split_sequences, timing, sample


#: seed of the row samples (fitting rows and scored rows); recorded in results.json
SAMPLE_SEED = 0


def _strata_column(split: Any) -> str | None:
    return STRATA_COLUMN if STRATA_COLUMN in split.column_names else None


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
    folder); the seven reports of ``make reproduce`` read two folders, so a passing verification is
    cached in ``$HF_ILLUSIONS_CACHE`` (default ``~/.cache/hf_illusions``) under the hash of every
    byte of the folder: any change to the data triggers a new verification.
    """
    import os

    cache = Path(os.environ.get("HF_ILLUSIONS_CACHE", Path.home() / ".cache" / "hf_illusions")) / "verified"
    key = folder_hash(dataset_dir)
    entry = cache / f"{key}.json"
    previous = _read_json(entry)
    if previous and previous.get("ok") and previous.get("hf_illusions_version") == __version__:
        return previous
    report = verify_folder(dataset_dir)
    if report["ok"]:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _write_json(entry, {**report, "hf_illusions_version": __version__})
        except OSError:  # a read-only home: verify every time
            pass
    return report


def circuit_specs(
    model: torch.nn.Module, fit_rows: Any, slacks: Sequence[float], n_fit_sequences: int
) -> list[ProxySpec]:
    """Pruned-circuit proxies (Gao et al. 2025) whose target loss is the model's own loss + slack.

    The model's loss is measured here on the same rows the pruner fits on, so "slack" reads as
    "how much worse than the model the circuit may be" on the training distribution.
    """
    if not slacks:
        return []
    from hf_illusions.sparse.circuit import SparseCircuitPruner

    n = min(n_fit_sequences, CIRCUIT_FIT_SEQUENCES)
    try:
        return [
            ProxySpec(
                f"circuit_{slack:g}".replace(".", "p"),
                "sparse_circuit",
                "target_slack",
                slack,
                SparseCircuitPruner.with_slack(model, fit_rows, slack, n_sequences=n),
            )
            for slack in sorted(set(slacks))
        ]
    except SimplifierError as err:
        raise SettingsError(f"circuit_slacks: {err}") from None


def attention_proxies(attention_metrics: bool | Sequence[str], names: Sequence[str]) -> list[str]:
    """The proxies whose attention JSD / agreement are measured: all, none or those named (sweep order)."""
    if isinstance(attention_metrics, bool):
        return list(names) if attention_metrics else []
    wanted = {attention_metrics} if isinstance(attention_metrics, str) else set(attention_metrics)
    return [name for name in names if name in wanted]


def run_reproduction(
    model: torch.nn.Module,
    model_dir: str | Path,
    workload: Workload,
    specs: Sequence[ProxySpec],
    out_dir: Path,
    n_fit_sequences: int,
    max_eval_sentences: int | None,
    layers: Sequence[int] | None,
    max_batch_tokens: int,
    resume: bool,
    progress: bool,
    save_proxies: bool,
    timing: dict[str, Any],
    start: float,
    attention_metrics: bool | Sequence[str] = True,
) -> Path:
    """The loop every task shares: fit lazily, evaluate each split (resumable), write the report."""
    from hf_illusions.report_readme import write_report

    task, fit_rows, split_sequences = workload.task, workload.fit_rows, workload.split_sequences
    attention = attention_proxies(attention_metrics, [spec.name for spec in specs])
    settings = {
        "schema_version": SCHEMA_VERSION,
        "hf_illusions_version": __version__,
        "task": task.name,
        **workload.settings,
        "model_weights": weights_hash(model),
        "fit_sequences": sequences_hash(fit_rows["input_ids"]),
        "n_fit_sequences": n_fit_sequences,
        "max_eval_sentences": max_eval_sentences,
        "layers": list(layers) if layers is not None else None,
        "proxies": {spec.name: spec.record() for spec in specs},
        "attention_metrics": attention,
    }

    results_dir = out_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    proxies: dict[str, torch.nn.Module] | None = None
    timing["fit_s"], timing["evaluate_s"] = {}, {}
    splits_out: dict[str, dict] = {}
    resumed: dict[str, bool] = {}
    proxy_info: dict[str, dict] = _read_json(results_dir / "proxy_info.json") or {}
    sums_by_split: dict[str, SentenceSums] = {}
    for split in tqdm(list(split_sequences), desc="splits", disable=not progress):
        sequences = split_sequences[split]
        split_fp = fingerprint({**settings, "split": split, "sequences": sequences_hash(sequences)})
        path, sums_path = results_dir / f"{split}.json", results_dir / f"{split}.npz"
        previous = _read_json(path) if resume else None
        if previous is not None and previous.get("fingerprint") == split_fp and sums_path.is_file():
            try:
                sums_by_split[split] = SentenceSums.load(sums_path)
                splits_out[split], resumed[split] = previous["results"], True
                timing["evaluate_s"][split] = previous.get("wall_time_s")
                continue
            except (OSError, ValueError, KeyError):  # a damaged sums file: evaluate the split again
                pass
        if proxies is None:  # fit lazily: a fully resumed run never pays for fitting
            timing["fitting_pass_s"] = {}
            proxies = _fit_all(specs, model, fit_rows, timing["fit_s"], progress, timing["fitting_pass_s"])
            proxy_info = {name: _proxy_info(proxy) for name, proxy in proxies.items()}
            _write_json(results_dir / "proxy_info.json", proxy_info)
            if save_proxies:
                for name, proxy in proxies.items():
                    proxy.save_pretrained(out_dir / "proxies" / name)
        tick = time.perf_counter()
        sums = sentence_sums(
            model,
            sequences,
            task,
            proxies=proxies,
            max_batch_tokens=max_batch_tokens,
            attention=attention,
            progress=progress,
            desc=split,
        )
        result = _jsonable(merge_intervals(sums.means(), split_intervals(sums, split)))
        wall = time.perf_counter() - tick
        record = {
            "split": split,
            "fingerprint": split_fp,
            "n_sentences": len(sequences),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_time_s": wall,
            "results": result,
        }
        sums.save(sums_path)  # the sums first: a JSON without them is not taken as finished
        _write_json(path, record)
        sums_by_split[split], splits_out[split], resumed[split] = sums, result, False
        timing["evaluate_s"][split] = wall
    tick = time.perf_counter()
    cross_split = _cross_split_analyses(
        sums_by_split, task, [spec.name for spec in specs], (splits_out, settings["proxies"])
    )
    timing["intervals_s"] = time.perf_counter() - tick
    timing["total_s"] = time.perf_counter() - start

    proxies_record = {
        name: {**rec, **({"fitted": proxy_info[name]} if proxy_info.get(name) else {})}
        for name, rec in settings["proxies"].items()
    }
    results = {
        "schema_version": SCHEMA_VERSION,
        "task": task.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_dir": portable_path(model_dir, out_dir),
        "model": _model_summary(model, settings["model_weights"]),
        "dataset": {
            **workload.dataset,
            "n_sentences": {split: len(seqs) for split, seqs in split_sequences.items()},
            "n_fit_sequences": len(fit_rows),
            "sample": workload.sample,
        },
        "evaluation": {
            "reference_model": ORIGINAL,
            "iid_split": IID_SPLIT,
            "headline_groups": list(task.headline_groups),
            **workload.settings,
            "max_eval_sentences": max_eval_sentences,
            "layers": settings["layers"],
            "attention_metrics": attention,
        },
        "proxies": proxies_record,
        "analyses": workload.analyses,
        "splits": splits_out,
        **cross_split,
        "resumed": resumed,
        "timing": timing,
        "versions": _versions(),
    }
    _write_json(out_dir / "results.json", results)
    return write_report(results, out_dir)


def _cross_split_analyses(
    sums_by_split: Mapping[str, SentenceSums],
    task: Any,
    proxies: Sequence[str],
    findings_inputs: tuple[Mapping, Mapping] | None = None,
) -> dict:
    """What needs two splits: OOD − IID gaps with intervals, and (Dyck) the depth / length confounds."""
    from hf_illusions.intervals import gap

    iid = sums_by_split.get(IID_SPLIT)
    if iid is None:
        return {}
    gaps: dict = {}
    for name in proxies:
        per_split = {}
        for split, sums in sums_by_split.items():
            if split == IID_SPLIT:
                continue
            per_split[split] = {
                group: {q: gap(sums, split, iid, IID_SPLIT, name, group, q) for q in GAP_QUANTITIES}
                for group in task.headline_groups
                if group in sums.groups
            }
        gaps[name] = per_split
    out = {"gaps": _jsonable(gaps)}
    if findings_inputs is not None:
        from hf_illusions.findings import paper_findings

        splits_out, proxy_records = findings_inputs
        out["findings"] = _jsonable(paper_findings(sums_by_split, splits_out, proxy_records, task.name))
    if getattr(task, "cell_names", None):
        from hf_illusions.confounds import confound_analyses

        out["confounds"] = _jsonable(confound_analyses(dict(sums_by_split), proxies, IID_SPLIT))
    return out


#: quantities whose OOD − IID gap results.json gives (with intervals)
GAP_QUANTITIES = ("jsd", "agreement", "accuracy_diff")


def _proxy_info(proxy: torch.nn.Module) -> dict:
    """What a fitted proxy knows about itself that its settings do not say (e.g. a circuit's size)."""
    size = getattr(proxy.config, "circuit_size", None)
    if not size:
        return {}
    return {
        "circuit_size": size,
        "circuit_loss": proxy.config.circuit_loss,
        "full_loss": proxy.config.full_loss,
    }


def _check_sizes(n_fit_sequences: int, max_eval_sentences: int | None) -> None:
    if n_fit_sequences < 1:
        raise SettingsError(f"n_fit_sequences must be >= 1, got {n_fit_sequences}")
    if max_eval_sentences is not None and max_eval_sentences < 1:
        raise SettingsError(f"max_eval_sentences must be >= 1 or None, got {max_eval_sentences}")


def _fit_all(
    specs: Sequence[ProxySpec],
    model: torch.nn.Module,
    fit_rows: Any,
    fit_times: dict,
    progress: bool,
    pass_times: dict | None = None,
) -> dict[str, torch.nn.Module]:
    """Fit every setting on the same training rows; returns ``{proxy name: proxy model}``.

    Attention simplifiers that collect the same queries and keys (same heads, fitting sequences
    and batching: every SVD rank and k-means k of a sweep) share one fitting pass over the data
    (:func:`~hf_illusions.simplify.collect.fit_attention`, bit-identical to fitting each alone);
    ``fit_times`` then holds each setting's own fitting time and ``pass_times`` the shared passes'.
    """
    from hf_illusions.simplify.collect import fit_attention
    from hf_illusions.simplify.proxy import build_proxy
    from hf_illusions.simplify.simplifier import Simplifier

    groups: dict[str, list[tuple[ProxySpec, dict]]] = {}
    for spec in specs:
        simplifier = spec.simplifier
        if type(simplifier).fit is Simplifier.fit and simplifier.needs_data:
            chosen = simplifier.resolve(model)
            key = json.dumps(
                [chosen, simplifier.n_sequences, simplifier.batch_size, simplifier.max_batch_tokens]
            )
            groups.setdefault(key, []).append((spec, chosen))
    shared = {spec.name: key for key, members in groups.items() if len(members) > 1 for spec, _ in members}
    proxies = {}
    for spec in tqdm(specs, desc="fit simplifiers", disable=not progress):
        if spec.name in proxies:
            continue
        tick = time.perf_counter()
        if spec.name not in shared:
            proxies[spec.name] = spec.simplifier.fit(model, fit_rows).eval()
            fit_times[spec.name] = time.perf_counter() - tick
            continue
        members = groups[shared[spec.name]]
        first = members[0][0].simplifier
        own: list[float] = []
        states = fit_attention(
            model, fit_rows, [m.simplifier for m, _ in members], members[0][1], first.n_sequences,
            first.batch_size, first.max_batch_tokens, fit_times=own,
        )  # fmt: skip
        for (member, chosen), state, seconds in zip(members, states, own, strict=True):
            build = time.perf_counter()
            s = member.simplifier
            proxies[member.name] = build_proxy(model, s.name, chosen, s.settings(), state).eval()
            fit_times[member.name] = seconds + time.perf_counter() - build
        if pass_times is not None:
            pass_times["+".join(m.name for m, _ in members)] = (
                time.perf_counter() - tick - sum(fit_times[m.name] for m, _ in members)
            )
    return proxies


def _preset_name(data_settings: dict, presets: Mapping[str, Any], settings_dict: Any) -> str:
    """The preset a dataset folder was built with, or "custom" (or "unknown" without its settings file)."""
    if not data_settings:
        return "unknown"
    return next((name for name, s in presets.items() if settings_dict(s) == data_settings), "custom")


def _model_summary(model: torch.nn.Module, weights: str) -> dict:
    """The sizes a reader needs to place the numbers (and the weights hash used for resuming)."""
    cfg = model.config
    keys = ("model_type", "vocab_size", "n_positions", "d_model", "n_layer", "n_head", "d_head", "d_mlp")
    return {
        **{k: getattr(cfg, k, None) for k in keys},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256_16": weights,
    }


def _versions() -> dict[str, str]:
    import datasets
    import numpy
    import transformers

    return {
        "hf_illusions": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "numpy": numpy.__version__,
    }


def _jsonable(obj: Any) -> Any:
    """Plain JSON types; NaN/inf (e.g. an empty ``long_distance`` group) become ``null``."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, payload: dict) -> None:
    """Write then rename, so an interrupted run never leaves a truncated file that looks finished."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    tmp.replace(path)

"""Fit a simplified proxy of the user's own causal LM on their own text and measure it per split.

``evaluate_own_model(model, data, simplifier="svd", rank=8, …)`` (and ``hf-illusions evaluate
--simplifier …``) is the Dyck reproduction for any transformers causal LM and any text dataset:
the model's own tokenizer, fixed-length windows per split (:mod:`hf_illusions.data.windows`), the
chosen simplifier fitted on ``fit_split`` windows, every next-token position scored by the one
evaluation loop (:func:`~hf_illusions.evaluation.sentence_sums` with
:class:`~hf_illusions.tasks.lm.LanguageModelTask`), bootstrap intervals over windows and the
gap of every split against a reference split (:mod:`hf_illusions.intervals`), written as
``results.json`` + ``README.md`` + plots (:mod:`hf_illusions.own_report`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_illusions.data.windows import Windows, load_text_splits, split_windows
from hf_illusions.errors import CheckpointError, SettingsError, SplitError
from hf_illusions.jsonio import jsonable
from hf_illusions.own_config import SETTING, OwnDataConfig
from hf_illusions.tasks.lm import Labeller, LanguageModelTask

#: files one of which a saved tokenizer has (fast, sentencepiece, or slow vocabularies)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
#: results keys that vary between identical runs: wall-clock times and the number of processes
#: (everything else is byte-identical per seed and process count)
VOLATILE_KEYS = ("timings",)


@dataclass
class OwnModelEvaluation:
    """What :func:`evaluate_own_model` returns: the results dict, the fitted proxy, the windows."""

    results: dict
    proxy: Any
    #: the scored windows per split, and the windows the simplifier was fitted on
    windows: dict[str, Windows] = field(repr=False)
    fit_windows: Windows = field(repr=False)
    report: Path | None = None
    #: False in the other processes of a data-parallel run (only the main one writes files)
    is_main_process: bool = True


def load_model_and_tokenizer(model: Any, tokenizer: Any = None, **load_kwargs: Any) -> tuple[Any, Any, str]:
    """``(model, tokenizer, name)`` from a folder / Hub id (or a loaded model and its tokenizer).

    Our own model types load through :func:`~hf_illusions.checkpoints.load_checkpoint` (which
    checks them), every other causal LM through ``AutoModelForCausalLM`` (safetensors only); the
    tokenizer is the one saved with the model, so windows are tokenized as the model was trained.
    ``load_kwargs`` (``device_map``, ``dtype``) go to ``from_pretrained``: a model too large for
    one device is placed while it loads, never materialised whole first.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

    from hf_illusions.checkpoints import load_checkpoint, model_classes, resolve

    if isinstance(model, PreTrainedModel):
        name = str(getattr(model, "name_or_path", "") or "")
        folder = Path(name) if name and tokenizer is None else None
        loaded = model.eval()
    else:
        name = str(model)
        folder = resolve(model)
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, json.JSONDecodeError, AttributeError):
            model_type = None  # load_checkpoint / from_pretrained say what is wrong
        if model_type in model_classes() or model_type is None:
            loaded = load_checkpoint(folder, **load_kwargs)
        else:
            try:
                loaded = AutoModelForCausalLM.from_pretrained(
                    folder, use_safetensors=True, **load_kwargs
                ).eval()
            except (OSError, ValueError) as err:
                raise CheckpointError(f"model {name!r}: AutoModelForCausalLM cannot load it: {err}") from None
    if tokenizer is None:
        if folder is None:
            raise CheckpointError("the model was passed as an object without a folder: pass tokenizer= too")
        fix = "save one next to it with tokenizer.save_pretrained(<model folder>)"
        if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise CheckpointError(f"model {name!r} has no tokenizer (none of {list(TOKENIZER_FILES)}); {fix}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise CheckpointError(
                f"model {name!r} has no tokenizer that AutoTokenizer can load ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); {fix}"
            ) from None
        if len(tokenizer) < 2:  # transformers 5 builds an empty GPT-2 tokenizer from a bare config
            raise CheckpointError(f"model {name!r} has an empty tokenizer ({len(tokenizer)} tokens); {fix}")
    vocab = int(loaded.config.vocab_size)
    if len(tokenizer) > vocab:
        raise CheckpointError(
            f"model {name!r}: its tokenizer has {len(tokenizer)} tokens but the model only {vocab} "
            "embeddings (config.vocab_size); they are not from the same model"
        )
    return loaded, tokenizer, name


#: ``device_map`` strategies of accelerate's big-model dispatch (``from_pretrained(device_map=…)``)
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(
    device_map: str | dict | None, device: str | None, model: Any, n_processes: int
) -> torch.device | None:
    """Validate ``device_map`` against the other placement options; the device it computes on first.

    ``device_map`` places the model's layers itself (over the GPUs, then CPU) as it loads, so it
    excludes ``device`` (one device for everything), a model object that is already loaded, and
    data-parallel processes (each would try to spread one copy over all devices). The returned
    device is what ``dtype`` is checked against: a GPU when the map may use one, else the CPU.
    """
    from hf_illusions.distributed import resolve_device

    if device_map is None:
        return None
    if device is not None:
        raise SettingsError(
            f"pass either device ({device!r}, --device: the whole model on one device) or device_map "
            f"({device_map!r}, --device_map: its layers spread over the devices), not both"
        )
    if hasattr(model, "config"):
        raise SettingsError(
            "device_map (--device_map) applies when the model is loaded here, from a folder or Hub id; "
            "a model object is already placed (dispatch it yourself with accelerate.dispatch_model)"
        )
    if n_processes > 1:
        raise SettingsError(
            f"device_map (--device_map) spreads one model over the devices; it cannot be combined with "
            f"{n_processes} data-parallel processes (accelerate launch): use one process, or --device"
        )
    if isinstance(device_map, dict):
        places = [v for v in device_map.values() if v not in ("cpu", "disk")]
        first = places[0] if places else "cpu"
        return resolve_device(f"cuda:{first}" if isinstance(first, int) else str(first))
    if not isinstance(device_map, str):
        raise SettingsError(f"device_map must be a string or a dict, got {type(device_map).__name__}")
    if device_map in DEVICE_MAP_STRATEGIES:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        return resolve_device(device_map)
    except SettingsError:
        raise SettingsError(
            f"device_map (--device_map) must be one of {list(DEVICE_MAP_STRATEGIES)} or a device "
            f"available here (cpu, cuda, cuda:1, …), got {device_map!r}"
        ) from None


def model_devices(model: Any) -> list[str]:
    """The devices ``model``'s weights are on, in a stable order (one entry unless dispatched)."""
    return sorted({str(p.device) for p in model.parameters()})


def max_positions(config: Any) -> int | None:
    """The longest input the model takes (``max_position_embeddings`` / ``n_positions``), if it says."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def make_own_simplifier(simplifier: Any, rank: int | None, k: int | None, layers, heads, n_fit: int):
    """``(simplifier, proxy name, {"family", "param"})`` from a name and its setting, or an instance."""
    from hf_illusions.simplify import Simplifier, make_simplifier

    if isinstance(simplifier, Simplifier):
        family = simplifier.name
        param = getattr(simplifier, SETTING.get(family) or "", None)
    else:
        if simplifier not in SETTING:
            raise SettingsError(
                f"simplifier must be one of {sorted(SETTING)} for a stock model, got {simplifier!r}"
            )
        family, key = simplifier, SETTING[simplifier]
        param = {"rank": rank, "k": k}.get(key) if key else None
        if key and param is None:
            raise SettingsError(f"the {family!r} simplifier needs --{key} (e.g. --{key} 8)")
        settings: dict[str, Any] = {"layers": layers, "heads": heads}
        if key:
            settings.update({key: param, "n_sequences": n_fit})
        simplifier = make_simplifier(family, **settings)
    name = family + {"svd": f"_r{param}", "kmeans": f"_k{param}"}.get(family, "")
    return simplifier, name, {"family": family, "param": param}


def evaluate_own_model(
    model: Any,
    data: Any,
    *,
    simplifier: Any = "svd",
    rank: int | None = None,
    k: int | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    text_column: str = "text",
    fit_split: str = "train",
    splits: Sequence[str] | None = None,
    reference: str | None = None,
    window: int = 128,
    max_windows: int | None = None,
    n_fit: int = 1000,
    seed: int = 0,
    add_bos: bool | None = None,
    tokenizer: Any = None,
    labeller: Labeller | None = None,
    labels: Sequence[str] = (),
    out: str | Path | None = None,
    overwrite: bool = False,
    n_resamples: int | None = None,
    max_batch_tokens: int = 16384,
    progress: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | dict | None = None,
) -> OwnModelEvaluation:
    """Fit ``simplifier`` on ``fit_split`` windows and score it against the model on every split.

    Args:
        model: a model folder or Hub id (or a loaded ``PreTrainedModel``; then also ``tokenizer``).
        data: a dataset folder (parquet/json/``save_to_disk``), a Hub id, or a ``DatasetDict``.
        simplifier: ``"svd"`` (with ``rank``), ``"kmeans"`` (with ``k``), ``"onehot"``, or a
            :class:`~hf_illusions.simplify.Simplifier` instance.
        splits: splits to evaluate (default: every split but ``fit_split``); ``reference`` is the
            in-distribution split the gaps are taken against (default: the first of ``splits``).
        window: tokens per window, BOS included (see :func:`~hf_illusions.data.windows.pack_windows`).
        max_windows: most windows scored per split (a seeded sample; default all); ``n_fit``: most
            windows of ``fit_split`` the simplifier is fitted on (the paper fits on ~1,000).
        labeller, labels: optional prediction types, one group per label (see :mod:`~hf_illusions.tasks.lm`).
        out: folder for ``results.json``, ``README.md``, plots and per-window sums (``sums/``).
        device, dtype: where and in what precision to run (default CPU, float32; ``bfloat16`` /
            ``float16`` only where the device has them). Under ``accelerate launch`` with several
            processes each scores a shard of every split (see :mod:`hf_illusions.distributed`).
        device_map: for a model larger than one device: ``"auto"`` (or another accelerate
            strategy, a device name, or a module → device dict) is passed to ``from_pretrained``,
            which spreads the layers over the GPUs as it loads; the proxy's fitted buffers sit on
            each layer's device. Excludes ``device`` and data-parallel processes; offloading
            (modules on ``cpu`` next to GPUs, or on ``disk``) is refused (a proxy needs every weight).
    """
    from hf_illusions.distributed import gather_sums, resolve_device, resolve_dtype, shard, world
    from hf_illusions.evaluation import sentence_sums
    from hf_illusions.intervals import gap, merge_intervals, split_intervals
    from hf_illusions.own_report import write_outputs
    from hf_illusions.paths import check_output_path, portable_path
    from hf_illusions.simplify.proxy import refuse_offloaded
    from hf_illusions.statistics import N_RESAMPLES

    config = OwnDataConfig.from_call(locals())  # checks the settings; None for objects a file cannot hold
    n_resamples = n_resamples or N_RESAMPLES
    if out is not None:
        check_output_path(out, overwrite, arg="out")
    task = LanguageModelTask(labeller, labels)
    simplifier, proxy_name, proxy_info = make_own_simplifier(simplifier, rank, k, layers, heads, n_fit)
    ds = load_text_splits(data, text_column, [fit_split], "fit_split")
    splits = list(splits) if splits else [s for s in ds if s != fit_split]
    if not splits:
        raise SplitError(f"no split to evaluate: the data has only {sorted(ds)}; pass splits")
    load_text_splits(ds, text_column, splits, "splits")
    reference = reference or splits[0]
    if reference not in splits:
        raise SplitError(f"reference {reference!r} must be one of the evaluated splits {splits}")
    rank_, n_processes = world()
    map_device = check_device_map(device_map, device, model, n_processes)
    dev = map_device or resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if device_map is not None:  # placed (and cast) while loading: never whole on one device first
        loaded, tokenizer, model_name = load_model_and_tokenizer(
            model, tokenizer, device_map=device_map, dtype=torch_dtype
        )
        refuse_offloaded(loaded)
        dev = next(loaded.parameters()).device
    else:
        loaded, tokenizer, model_name = load_model_and_tokenizer(model, tokenizer)
    if device_map is None and (
        not hasattr(model, "config") or device is not None or dtype is not None or n_processes > 1
    ):
        loaded = loaded.to(device=dev, dtype=torch_dtype)  # a model object is moved only when asked
    longest = max_positions(loaded.config)
    if longest is not None and window > longest:
        raise SettingsError(f"window {window} is longer than the model's {longest} positions")
    pack = {"window": window, "seed": seed, "add_bos": add_bos}
    fit = split_windows(ds, fit_split, tokenizer, text_column, max_windows=n_fit, **pack)
    windows = {
        s: split_windows(ds, s, tokenizer, text_column, max_windows=max_windows, **pack) for s in splits
    }
    started = time.perf_counter()
    proxy = simplifier.fit(loaded, fit.input_ids)
    fitted = time.perf_counter()
    sums = {}
    for s, w in windows.items():
        part, _ = shard(w.input_ids, rank_, n_processes)
        show = progress and rank_ == 0
        local = (
            sentence_sums(loaded, part, task, {proxy_name: proxy}, max_batch_tokens, False, show, s)
            if part
            else None
        )
        sums[s] = gather_sums(local, n_processes)
    done = time.perf_counter()
    per_split = {s: merge_intervals(v.means(), split_intervals(v, s, n_resamples)) for s, v in sums.items()}
    quantities = ("jsd", "agreement", "accuracy_diff")
    gaps = {
        proxy_name: {
            s: {
                g: {
                    q: gap(sums[s], s, sums[reference], reference, proxy_name, g, q, n_resamples)
                    for q in quantities
                }
                for g in sums[s].groups
            }
            for s in splits
            if s != reference
        }
    }
    results = jsonable(
        {
            "task": "lm",
            # how to make this report again (paths relative to it); None for objects passed in
            "config": None if config is None else config.to_dict(relative_to=out),
            "model": portable_path(model_name, out),
            "model_type": loaded.config.model_type,
            "data": portable_path(data, out) if isinstance(data, (str, Path)) else type(data).__name__,
            "settings": {
                "text_column": text_column,
                "fit_split": fit_split,
                "splits": splits,
                "reference_split": reference,
                "simplifier": proxy_info["family"],
                "simplifier_settings": simplifier.settings(),
                "layers": simplifier.layers,
                "heads": simplifier.heads,
                **fit.settings(),
                "max_windows": max_windows,
                "n_fit": n_fit,
                "n_resamples": n_resamples,
                "device": dev.type,
                "device_map": device_map,
                "devices": model_devices(loaded),
                "dtype": str(torch_dtype).removeprefix("torch."),
            },
            "evaluation": {"headline_groups": ["all"], "groups": sums[splits[0]].groups},
            "proxies": {proxy_name: proxy_info},
            "fit": fit.summary(),
            "windows": {s: w.summary() for s, w in windows.items()},
            "splits": per_split,
            "gaps": gaps,
            "timings": {
                "fit_seconds": fitted - started,
                "evaluate_seconds": done - fitted,
                "processes": n_processes,
            },
        }
    )
    report = None
    if out is not None and rank_ == 0:
        report = write_outputs(results, sums, out)
    return OwnModelEvaluation(results, proxy, windows, fit, report, rank_ == 0)


def evaluate_own(config: OwnDataConfig, overwrite: bool = False, progress: bool = True) -> OwnModelEvaluation:
    """:func:`evaluate_own_model` of a config (``hf-illusions evaluate --simplifier`` builds one;
    ``OwnDataConfig.from_results`` reads one back from a report)."""
    return evaluate_own_model(
        config.model, config.data, **config.arguments(), overwrite=overwrite, progress=progress
    )


__all__ = [
    "DEVICE_MAP_STRATEGIES",
    "OwnDataConfig",
    "OwnModelEvaluation",
    "check_device_map",
    "evaluate_own",
    "evaluate_own_model",
    "load_model_and_tokenizer",
    "max_positions",
    "model_devices",
]

"""Load a model folder — ours, a proxy, or someone else's — with a clear error for each way it can be wrong.

``AutoModelForCausalLM.from_pretrained`` is permissive by design: weights missing from the file
are initialised at random (with a log line), a GPT-2 folder loads a GPT-2, ``pytorch_model.bin``
is unpickled. In a faithfulness study each of these silently produces wrong numbers, so every
command (CLI, reproduction, cards) loads models through :func:`load_checkpoint`, which checks
the folder *before* building anything and raises :class:`~hf_illusions.errors.CheckpointError`
naming the file and what was expected. Only safetensors weights are read (no pickle).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hf_illusions.errors import CheckpointError
from hf_illusions.registry import model_classes

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from hf_illusions.simplify.adapter import SimplificationConfig

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def stock_classes(model_type: str | None) -> tuple[type, type] | None:
    """(config class, causal-LM class) of a transformers model type, or None when it has none."""
    from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING

    if model_type is None or model_type not in CONFIG_MAPPING:
        return None
    config_class = CONFIG_MAPPING[model_type]
    try:
        return config_class, MODEL_FOR_CAUSAL_LM_MAPPING[config_class]
    except KeyError:  # an encoder, a vision model, …: nothing to score next tokens with
        return None


def classes_of(model_type: str | None) -> tuple[type, type] | None:
    """(config class, model class) for ``model_type``: ours first, then transformers' causal LMs."""
    return model_classes().get(model_type) or stock_classes(model_type)


def read_config(path: Path) -> Any:
    """The folder's config as our config class; refuses other model types and invalid values."""
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"model folder {str(path)!r} has no config.json (expected a folder written by save_pretrained)"
        )
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{str(file)!r} is not valid JSON ({err}); the file is truncated or corrupt"
        ) from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    classes = classes_of(model_type)
    if classes is None:
        raise CheckpointError(
            f"{str(file)!r} has model_type={model_type!r}, which is neither one of hf-illusions' "
            f"{sorted(model_classes())} nor a causal language model transformers knows; stock models' "
            "proxies (adapters) load with hf_illusions.load_proxy"
        )
    config_class = classes[0]
    try:
        return config_class.from_pretrained(path)
    except (ValueError, TypeError, OSError) as err:
        raise CheckpointError(f"{str(file)!r} holds impossible settings: {err}") from None


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from the safetensors headers; refuses pickle-only, missing and corrupt files.

    ``safe_open`` checks that the header parses and that its offsets cover the file exactly, so a
    truncated or overwritten file is caught here without reading the tensors.
    """
    from safetensors import SafetensorError, safe_open

    index = path / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as err:
            raise CheckpointError(f"{str(index)!r} is not a valid safetensors index: {err!r}") from None
    elif (path / WEIGHTS_NAME).is_file():
        files = [WEIGHTS_NAME]
    else:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"model folder {str(path)!r} has only pickle weights {pickles}; hf-illusions loads "
                f"safetensors only (pickle can run code): re-save with save_pretrained to get {WEIGHTS_NAME}"
            )
        raise CheckpointError(f"model folder {str(path)!r} has no {WEIGHTS_NAME} (the weights are missing)")
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"weights file {str(file)!r} listed in {WEIGHTS_INDEX_NAME} is missing")
        try:
            with safe_open(file, "pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"weights file {str(file)!r} is truncated or corrupt ({err}); re-download or re-save it"
            ) from None
    return shapes


def check_state_matches(
    config: Any, model_class: type, shapes: dict[str, tuple[int, ...]], path: Path
) -> None:
    """Every tensor the config implies is in the file with the right shape, and nothing else is.

    The expected shapes come from the model built on the meta device (no memory, no init cost).
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [k for k in sorted(set(expected) & set(shapes)) if expected[k] != shapes[k]]
    if missing:
        raise CheckpointError(
            f"{str(path)!r}: {WEIGHTS_NAME} lacks {len(missing)} tensor(s) the config needs, "
            f"e.g. {missing[:3]} (they would be randomly initialised); the file is incomplete or "
            "from another model"
        )
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{str(path)!r}: tensor {k!r} has shape {list(shapes[k])} in {WEIGHTS_NAME} but config.json "
            f"implies {list(expected[k])} ({len(wrong)} tensor(s) differ); config and weights do not match"
        )
    if unexpected:
        raise CheckpointError(
            f"{str(path)!r}: {WEIGHTS_NAME} has {len(unexpected)} tensor(s) this model does not use, e.g. "
            f"{unexpected[:3]}; config and weights do not match"
        )


def check_tokenizer(path: Path, vocab_size: int) -> None:
    """A tokenizer saved next to the model must have the model's vocabulary (and the Dyck id order)."""
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return  # a bare model folder (e.g. written by a test); nothing to compare
    from transformers import AutoTokenizer

    from hf_illusions.data.dyck_language import SPECIAL_TOKENS, DyckVocab

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"the tokenizer in {str(path)!r} cannot be loaded: {err}") from None
    if len(tokenizer) != vocab_size:
        raise CheckpointError(
            f"the tokenizer in {str(path)!r} has {len(tokenizer)} tokens but config.json has "
            f"vocab_size={vocab_size}; they must come from the same model"
        )
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    brackets = set(DyckVocab(26).tokens[len(SPECIAL_TOKENS) :])
    if brackets.intersection(tokens):  # a Dyck tokenizer: ids must be exactly DyckVocab's
        n_types = (vocab_size - len(SPECIAL_TOKENS)) // 2
        expected = DyckVocab(n_types).tokens if 1 <= n_types <= 26 else []
        bad = next((i for i, t in enumerate(tokens) if i >= len(expected) or t != expected[i]), None)
        if bad is not None:
            want = repr(expected[bad]) if bad < len(expected) else "no token (the vocabulary is too long)"
            raise CheckpointError(
                f"the tokenizer in {str(path)!r} does not use the Dyck-{n_types} id order: id {bad} is "
                f"{tokens[bad]!r}, the model expects {want}"
            )


def resolve(path: str | Path) -> Path:
    """A local folder as is; otherwise a Hub id (``owner/name``) fetched without any pickle file.

    Only configs, tokenizer files, cards and safetensors are downloaded (``allow_patterns``), so a
    repository's ``pytorch_model.bin`` never reaches the disk. Offline, the local cache is used.
    """
    local = Path(path)
    if local.exists():
        return local
    text = str(path)
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text):
        raise CheckpointError(f"model folder {text!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.md"]))
    except Exception as err:  # offline, unknown repo, auth, network: all mean "cannot get it"
        raise CheckpointError(
            f"model folder {text!r} does not exist locally, and fetching it as a Hub id failed: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def load_checkpoint(path: str | Path, check_finite: bool = True, **load_kwargs: Any) -> Any:
    """Load a causal LM (ours, a proxy of ours, or a transformers model such as a Llama trained by
    ``train --architecture llama``) in eval mode, or raise :class:`CheckpointError`.

    Checks, in order: the folder exists (or the Hub id resolves, see :func:`resolve`);
    ``config.json`` parses, is one of our model types and holds possible values; the
    safetensors weights exist, are intact, and hold exactly the tensors (and shapes) the config
    implies; a saved tokenizer has the model's vocabulary; and (``check_finite``) no weight is
    NaN/inf. Pickle weights are never loaded. ``load_kwargs`` go to ``from_pretrained`` after
    the checks (e.g. ``device_map="auto"``, ``dtype``: placement, not what is loaded).
    """
    path = resolve(path)
    if not path.is_dir():
        raise CheckpointError(
            f"model path {str(path)!r} is a file; expected a folder written by save_pretrained"
        )
    config = read_config(path)
    model_class = classes_of(config.model_type)[1]
    check_state_matches(config, model_class, weight_shapes(path), path)
    check_tokenizer(path, config.vocab_size)
    try:
        model = model_class.from_pretrained(path, config=config, use_safetensors=True, **load_kwargs)
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"could not load the model in {str(path)!r}: {err}") from None
    if check_finite:
        bad = [
            k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise CheckpointError(
                f"{str(path)!r}: weights {bad[:3]} hold NaN or inf; the checkpoint is corrupt "
                "(or training diverged)"
            )
    return model.eval()


def _adapter_folder(path: str | Path) -> Path:
    """A local folder, or a Hub repo id downloaded to the cache (only the adapter files)."""
    local = Path(path)
    if local.is_dir():
        return local
    if local.exists():
        raise CheckpointError(
            f"proxy path {str(local)!r} is a file; expected a folder written by save_pretrained"
        )
    from hf_illusions.simplify.adapter import CONFIG_NAME, WEIGHTS_NAME

    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                str(path),
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "config.json", "*.safetensors", "*.json"],
            )
        )
    except Exception as err:
        raise CheckpointError(
            f"proxy {str(path)!r} is neither a local folder nor a reachable Hub repo: {err}"
        ) from None


def load_proxy(
    path: str | Path, base_model: PreTrainedModel | str | Path | None = None, **base_kwargs: Any
) -> Any:
    """Rebuild a saved proxy: a stock model's adapter on its base model, or one of our whole proxies.

    Args:
        path: folder (or Hub id) written by ``proxy.save_pretrained``.
        base_model: the base model, or its Hub id / folder; default: the one recorded at save time
            (our own proxies need none: they hold their weights).
        **base_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` when the base is loaded here.

    Raises :class:`~hf_illusions.errors.CheckpointError` when the folder is not a proxy, when no
    base is known, or when the base's weights differ from the recorded hash. The proxy is in eval
    mode and gives bit-identical logits to the one saved.
    """
    from hf_illusions.simplify import adapter

    folder = _adapter_folder(path)
    if not (folder / adapter.CONFIG_NAME).is_file():
        if (folder / "config.json").is_file():
            return load_checkpoint(folder)
        raise CheckpointError(
            f"{str(folder)!r} holds no {adapter.CONFIG_NAME} (and no config.json): not a saved proxy"
        )
    config = adapter.SimplificationConfig.from_file(folder / adapter.CONFIG_NAME)
    base = _base_model(config, base_model, base_kwargs)
    if config.base_model_class and type(base).__name__ != config.base_model_class:
        raise CheckpointError(
            f"the proxy in {str(folder)!r} was fitted on a {config.base_model_class}, "
            f"got a {type(base).__name__}"
        )
    digest = adapter.weights_sha256(base)
    if config.base_weights_sha256 and digest != config.base_weights_sha256:
        raise CheckpointError(
            f"the base model's weights (sha256 {digest[:12]}…) differ from those the proxy in "
            f"{str(folder)!r} was fitted on ({config.base_weights_sha256[:12]}…, "
            f"{config.base_model_name_or_path or 'an in-memory model'}); pass the right base_model"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hf_illusions.errors import SimplifierError
    from hf_illusions.simplify.proxy import build_stock_proxy

    try:
        fitted = load_file(folder / adapter.WEIGHTS_NAME)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(
            f"{str(folder / adapter.WEIGHTS_NAME)!r} is missing or corrupt: {err}"
        ) from None
    try:
        proxy = build_stock_proxy(base, config, fitted)
    except SimplifierError as err:
        raise CheckpointError(
            f"the buffers in {str(folder)!r} do not fit {type(base).__name__}: {err}"
        ) from None
    if config.base_model_name_or_path:
        proxy.simplification_config.base_model_name_or_path = config.base_model_name_or_path
    return proxy


def _base_model(config: SimplificationConfig, base_model: Any, kwargs: dict[str, Any]) -> PreTrainedModel:
    from transformers import PreTrainedModel

    if isinstance(base_model, PreTrainedModel):
        return base_model
    source = base_model if base_model is not None else config.base_model_name_or_path
    if not source:
        raise CheckpointError(
            "the proxy records no base model (it was fitted on a model built in memory): pass base_model="
        )
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(source), **kwargs).eval()
    except (OSError, ValueError) as err:
        raise CheckpointError(f"could not load the base model {str(source)!r}: {err}") from None


def check_model_fits(model: Any, vocab_size: int, longest: int, what: str) -> None:
    """Fail before any work if data (``vocab_size`` tokens, ``longest`` ids) cannot go through ``model``.

    The vocabulary must match exactly: a Dyck-20 model scored on Dyck-5 data would read every
    closing-bracket id as some other token and report meaningless (not failing) accuracies.
    """
    if model.config.vocab_size != vocab_size:
        raise CheckpointError(
            f"the model has vocab_size={model.config.vocab_size} but {what} uses {vocab_size} tokens; "
            "use a model trained on this dataset"
        )
    n_positions = getattr(model.config, "max_position_embeddings", None)  # every family's name for it
    if n_positions is not None and longest > n_positions:
        raise CheckpointError(
            f"{what} reaches {longest} tokens but the model has n_positions={n_positions}; "
            "build the data with a smaller max_tokens or use a model with more positions"
        )


__all__ = [
    "check_model_fits",
    "check_tokenizer",
    "load_checkpoint",
    "load_proxy",
    "read_config",
    "resolve",
    "weight_shapes",
]

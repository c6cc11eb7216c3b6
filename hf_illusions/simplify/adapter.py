"""A stock model's proxy saved like a PEFT adapter: the simplification, not a copy of the model.

A proxy of GPT-2, Llama, … differs from its base model only by the fitted buffers on the
simplified attention modules (kilobytes). ``proxy.save_pretrained(dir)`` therefore writes

* ``simplification_config.json`` — simplifier, settings, simplified heads, head shapes, and the
  base model: its Hub id or path, class, and a SHA-256 of its weights;
* ``simplification.safetensors`` — the fitted buffers only;

and :func:`load_proxy` rebuilds the proxy on the base model (given, or loaded from the recorded
id/path), refusing a base whose weights hash differs: a proxy on other weights is not the proxy.
Proxies of our own models are whole checkpoints (``AutoModelForCausalLM.from_pretrained``);
:func:`load_proxy` loads those too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from hf_illusions.errors import CheckpointError, SimplifierError

CONFIG_NAME = "simplification_config.json"
WEIGHTS_NAME = "simplification.safetensors"
FORMAT = "hf-illusions-simplification"


@dataclass
class SimplificationConfig:
    """What a stock model's proxy adds to its base model (``simplification_config.json``).

    The head shapes (``n_head``, ``n_kv_head``, ``d_head``) size the simplification buffers, as an
    :class:`~hf_illusions.simplify.proxy.IllusionProxyConfig` does for our models.
    """

    simplifier: str
    simplified_heads: dict[str, list[int]]
    simplifier_settings: dict[str, Any]
    n_layer: int
    n_head: int
    n_kv_head: int
    d_head: int
    base_model_name_or_path: str | None = None
    base_model_type: str | None = None
    base_model_class: str | None = None
    base_weights_sha256: str | None = None
    format: str = FORMAT
    format_version: int = 1
    hf_illusions_version: str = field(default_factory=lambda: _version())

    @classmethod
    def for_model(
        cls, model: PreTrainedModel, simplifier: str, heads: dict[str, list[int]], settings: dict[str, Any]
    ) -> SimplificationConfig:
        from hf_illusions.simplify.collect import model_geometry

        geometry = model_geometry(model)
        return cls(
            simplifier=simplifier,
            simplified_heads={str(k): list(v) for k, v in sorted(heads.items(), key=lambda kv: int(kv[0]))},
            simplifier_settings=dict(settings),
            n_layer=geometry.n_layer,
            n_head=geometry.n_head,
            n_kv_head=geometry.n_kv_head,
            d_head=geometry.d_head,
            base_model_name_or_path=getattr(model, "name_or_path", None) or None,
            base_model_type=model.config.model_type,
            base_model_class=getattr(type(model), "base_class", type(model)).__name__,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> SimplificationConfig:
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, not {FORMAT!r}")
            return cls(**raw)
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{str(path)!r} is not a valid simplification config: {err}") from None


def _version() -> str:
    from hf_illusions.version import __version__

    return __version__


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights: every state-dict tensor (name, dtype, shape, bytes), in name order.

    Simplification buffers are left out, so a proxy hashes as its base model does.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if "simplification." in name:
            continue
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_adapter(proxy: Any, save_directory: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write ``proxy``'s simplification config and fitted buffers (safetensors) to ``save_directory``.

    ``base_model_name_or_path`` overrides the recorded base (by default the base model's
    ``name_or_path``: its Hub id or folder, empty for a model built in memory).
    """
    from safetensors.torch import save_file

    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = proxy.simplification_config
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = str(base_model_name_or_path)
    config.base_weights_sha256 = weights_sha256(proxy)
    buffers = {
        k: v.detach().contiguous().cpu() for k, v in proxy.state_dict().items() if ".simplification." in k
    }
    # one metadata key only: safetensors writes several in arbitrary order (bytes would differ)
    save_file(buffers, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    (directory / CONFIG_NAME).write_text(config.to_json())
    return directory


def _adapter_folder(path: str | Path) -> Path:
    """A local folder, or a Hub repo id downloaded to the cache (only the adapter files)."""
    local = Path(path)
    if local.is_dir():
        return local
    if local.exists():
        raise CheckpointError(
            f"proxy path {str(local)!r} is a file; expected a folder written by save_pretrained"
        )
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
    folder = _adapter_folder(path)
    if not (folder / CONFIG_NAME).is_file():
        if (folder / "config.json").is_file():
            from hf_illusions.checkpoints import load_checkpoint

            return load_checkpoint(folder)
        raise CheckpointError(
            f"{str(folder)!r} holds no {CONFIG_NAME} (and no config.json): not a saved proxy"
        )
    config = SimplificationConfig.from_file(folder / CONFIG_NAME)
    base = _base_model(config, base_model, base_kwargs)
    if config.base_model_class and type(base).__name__ != config.base_model_class:
        raise CheckpointError(
            f"the proxy in {str(folder)!r} was fitted on a {config.base_model_class}, "
            f"got a {type(base).__name__}"
        )
    digest = weights_sha256(base)
    if config.base_weights_sha256 and digest != config.base_weights_sha256:
        raise CheckpointError(
            f"the base model's weights (sha256 {digest[:12]}…) differ from those the proxy in "
            f"{str(folder)!r} was fitted on ({config.base_weights_sha256[:12]}…, "
            f"{config.base_model_name_or_path or 'an in-memory model'}); pass the right base_model"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hf_illusions.simplify.proxy import build_stock_proxy

    try:
        fitted = load_file(folder / WEIGHTS_NAME)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{str(folder / WEIGHTS_NAME)!r} is missing or corrupt: {err}") from None
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


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "SimplificationConfig",
    "load_proxy",
    "save_adapter",
    "weights_sha256",
]

"""A stock model's proxy saved like a PEFT adapter: the simplification, not a copy of the model.

A proxy of GPT-2, Llama, … differs from its base model only by the fitted buffers on the
simplified attention modules (kilobytes). ``proxy.save_pretrained(dir)`` therefore writes

* ``simplification_config.json`` — simplifier, settings, simplified heads, head shapes, and the
  base model: its Hub id or path, class, and a SHA-256 of its weights;
* ``simplification.safetensors`` — the fitted buffers only;

and :func:`hf_illusions.checkpoints.load_proxy` rebuilds the proxy on the base model (given, or
loaded from the recorded id/path), refusing a base whose weights hash differs: a proxy on other
weights is not the proxy. Proxies of our own models are whole checkpoints
(``AutoModelForCausalLM.from_pretrained``); ``load_proxy`` loads those too. Loading lives with the
other loaders in :mod:`hf_illusions.checkpoints`, above this package in the dependency order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from hf_illusions.errors import CheckpointError

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
        from hf_illusions.simplify.geometry import model_geometry

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


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "SimplificationConfig",
    "save_adapter",
    "weights_sha256",
]

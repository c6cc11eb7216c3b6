"""The proxies a visitor of the Space can pick, fitted once for the whole sweep.

:class:`ProxyChoice` is one pick (simplifier family, rank or k, simplified layers);
:class:`ProxyBank` fits every setting of the report's sweep once per layer, from a single pass of
queries/keys over the fitting sequences, then assembles the proxy for any pick on demand, so no
request fits anything. Kept apart from :mod:`hf_illusions.analysis` (which re-exports both): this
is the slow, once-per-Space half of the explorer, and the only part that reads the report's sweep
(:mod:`hf_illusions.reproduction`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hf_illusions.errors import SimplifierError

METHODS = ("svd", "kmeans", "onehot")
SETTING_NAMES = {"svd": "rank", "kmeans": "k", "onehot": None}


@dataclass(frozen=True)
class ProxyChoice:
    """What a visitor picks: simplifier family, its setting (rank or k) and the simplified layers.

    ``layers=None`` simplifies every layer (the report's setting).
    """

    method: str
    setting: int | None = None
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SimplifierError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "onehot":
            object.__setattr__(self, "setting", None)
        elif self.setting is None or int(self.setting) < 1:
            raise SimplifierError(
                f"setting ({SETTING_NAMES[self.method]}) must be an integer >= 1 for {self.method!r}, "
                f"got {self.setting!r}"
            )
        else:
            object.__setattr__(self, "setting", int(self.setting))
        if self.layers is not None:
            layers = tuple(sorted({int(layer) for layer in self.layers}))
            if not layers:
                raise SimplifierError("layers must name at least one layer, or be None for all")
            object.__setattr__(self, "layers", layers)

    @property
    def spec_name(self) -> str:
        """The report's name of this setting (``svd_r8``, ``kmeans_k16``, ``onehot``)."""
        if self.method == "svd":
            return f"svd_r{self.setting}"
        if self.method == "kmeans":
            return f"kmeans_k{self.setting}"
        return "onehot"

    @property
    def report_name(self) -> str | None:
        """This setting's name in a ``reproduce`` report, which sweeps all layers (plus one-hot per layer)."""
        if self.layers is None:
            return self.spec_name
        if self.method == "onehot" and len(self.layers) == 1:
            return f"onehot_l{self.layers[0]}"
        return None

    @property
    def name(self) -> str:
        """``svd_r8`` (all layers) or ``svd_r8@L1`` (layer 1 only)."""
        if self.layers is None:
            return self.spec_name
        return f"{self.spec_name}@L{','.join(map(str, self.layers))}"


class ProxyBank:
    """Every setting of the report's sweep, fitted once per layer; proxies built on demand.

    Fitting a head only needs that head's queries and keys on the fitting sequences, and those come
    from the *original* model whichever layers are simplified (see
    :func:`~hf_illusions.simplify.collect.fit_attention`). So one pass feeds them for all layers,
    each (setting, layer) is fitted once, and the proxy for any set of layers is assembled from
    those fits with :func:`~hf_illusions.simplify.build_proxy` — bit-identical to
    ``SVDSimplifier(rank, layers=…).fit(model, data)`` (tested), at a fraction of the cost.

    Args:
        model: the original model: our :class:`~hf_illusions.modeling.IllusionForCausalLM` or any
            causal LM whose attention goes through transformers' attention interface (Llama, GPT-2, …).
        fit_data: a ``datasets.Dataset`` with ``input_ids`` (the training split) or id lists.
        svd_ranks / kmeans_ks: the swept settings (ranks above ``d_head`` are capped).
        n_fit_sequences: fit on the first ``n_fit_sequences`` rows, as the report does.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        fit_data: Any,
        svd_ranks: Sequence[int] | None = None,
        kmeans_ks: Sequence[int] | None = None,
        n_fit_sequences: int = 1000,
        seed: int = 0,
    ):
        from hf_illusions.presets import DEFAULT_KMEANS_KS, DEFAULT_SVD_RANKS
        from hf_illusions.reproduction import proxy_specs
        from hf_illusions.simplify.collect import fit_attention
        from hf_illusions.simplify.geometry import model_geometry
        from hf_illusions.simplify.seam import attention_layers

        start = time.perf_counter()
        self.model = model.eval()
        # head shapes and module paths from the model itself: ours, Llama, GPT-2, … alike
        self.geometry = model_geometry(model)
        paths = {layer: path for layer, (path, _) in attention_layers(model).items()}
        specs = proxy_specs(
            self.geometry.d_head,
            DEFAULT_SVD_RANKS if svd_ranks is None else svd_ranks,
            DEFAULT_KMEANS_KS if kmeans_ks is None else kmeans_ks,
            onehot=True,
            n_fit_sequences=n_fit_sequences,
            seed=seed,
        )
        self.specs = {spec.name: spec for spec in specs}
        self.heads = {layer: list(range(self.geometry.n_head)) for layer in range(self.geometry.n_layer)}
        for spec in specs:
            spec.simplifier.resolve(model)  # rejects proxies and impossible settings up front
        needs_data = [spec for spec in specs if spec.simplifier.needs_data]
        # one streamed pass feeds every setting: each fit is the one its simplifier would do alone
        simplifiers = [spec.simplifier for spec in needs_data]
        fits = fit_attention(model, fit_data, simplifiers, self.heads, n_fit_sequences) if needs_data else []
        self._fitted: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        for spec, fitted in zip(needs_data, fits, strict=True):
            for layer in self.heads:
                prefix = f"{paths[layer]}.simplification."
                self._fitted[(spec.name, layer)] = {k: v for k, v in fitted.items() if k.startswith(prefix)}
        self._proxies: dict[ProxyChoice, torch.nn.Module] = {}
        self.fit_seconds = time.perf_counter() - start

    @property
    def options(self) -> dict[str, list[int]]:
        """Settings a visitor can pick per method: ``{"svd": ranks, "kmeans": ks, "onehot": []}``."""
        out: dict[str, list[int]] = {method: [] for method in METHODS}
        for spec in self.specs.values():
            if spec.param is not None:
                out[spec.family].append(int(spec.param))
        return out

    @property
    def n_layer(self) -> int:
        return self.geometry.n_layer

    def proxy(self, choice: ProxyChoice) -> torch.nn.Module:
        """The proxy for ``choice`` (built once, then cached)."""
        from hf_illusions.simplify import build_proxy

        if choice in self._proxies:
            return self._proxies[choice]
        spec = self.specs.get(choice.spec_name)
        if spec is None:
            raise SimplifierError(
                f"{SETTING_NAMES[choice.method]}={choice.setting} was not fitted for {choice.method!r}; "
                f"choose one of {self.options[choice.method]}"
            )
        layers = list(range(self.n_layer)) if choice.layers is None else list(choice.layers)
        bad = [layer for layer in layers if layer not in self.heads]
        if bad:
            raise SimplifierError(f"layers {bad} out of range: the model has n_layer={self.n_layer}")
        state: dict[str, torch.Tensor] = {}
        if spec.simplifier.needs_data:
            for layer in layers:
                state.update(self._fitted[(spec.name, layer)])
        heads = {layer: self.heads[layer] for layer in layers}
        proxy = build_proxy(self.model, spec.simplifier.name, heads, spec.simplifier.settings(), state)
        self._proxies[choice] = proxy
        return proxy

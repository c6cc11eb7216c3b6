"""Simplifiers and the proxy models they produce (Friedman et al. 2024, §3).

```python
proxy = SVDSimplifier(rank=8, layers=[0, 1]).fit(model, ds["train"].select(range(1000)))
proxy.save_pretrained("proxy-svd8")   # reloads with AutoModelForCausalLM after `import hf_illusions`
```

``model`` may also be any transformers model whose attention goes through the attention
interface (GPT-2, GPT-NeoX, Llama, Qwen2, …); its proxy saves as a small adapter and reloads with
:func:`hf_illusions.load_proxy`. Importing this package registers the proxy attention functions (and their
mask functions, :mod:`~hf_illusions.simplify.seam`); the proxy config/model are registered with
``AutoConfig`` / ``AutoModelForCausalLM`` by :mod:`hf_illusions.registry` on ``import hf_illusions``.
"""

from typing import Any

from hf_illusions.errors import SimplifierError
from hf_illusions.simplify.adapter import SimplificationConfig
from hf_illusions.simplify.base import AttentionSimplification
from hf_illusions.simplify.collect import collect_qk
from hf_illusions.simplify.interaction_basis import InteractionBasisSimplifier
from hf_illusions.simplify.kmeans import KMeansSimplifier
from hf_illusions.simplify.onehot import OneHotSimplifier
from hf_illusions.simplify.proxy import (
    IllusionProxyConfig,
    IllusionProxyForCausalLM,
    build_proxy,
    proxy_class,
)
from hf_illusions.simplify.simplifier import Simplifier
from hf_illusions.simplify.svd import SVDSimplifier
from hf_illusions.sparse.circuit import SparseCircuitPruner

#: simplifier name → class (the names stored as ``config.simplifier``).
SIMPLIFIERS: dict[str, type[Simplifier]] = {
    cls.name: cls
    for cls in (
        SVDSimplifier,
        KMeansSimplifier,
        OneHotSimplifier,
        InteractionBasisSimplifier,
        SparseCircuitPruner,
    )
}


def make_simplifier(name: str, **settings: Any) -> Simplifier:
    """``SIMPLIFIERS[name](**settings)``, e.g. ``make_simplifier("svd", rank=8, layers=[1])``."""
    if name not in SIMPLIFIERS:
        raise SimplifierError(f"name must be one of {sorted(SIMPLIFIERS)}, got {name!r}")
    try:
        return SIMPLIFIERS[name](**settings)
    except TypeError as err:  # e.g. n_sequences for the data-free one-hot simplifier, or a typo
        raise SimplifierError(
            f"settings {sorted(settings)} do not fit the {name!r} simplifier: {err}"
        ) from None


__all__ = [
    "SIMPLIFIERS",
    "AttentionSimplification",
    "IllusionProxyConfig",
    "IllusionProxyForCausalLM",
    "InteractionBasisSimplifier",
    "KMeansSimplifier",
    "OneHotSimplifier",
    "SVDSimplifier",
    "SimplificationConfig",
    "Simplifier",
    "build_proxy",
    "collect_qk",
    "make_simplifier",
    "proxy_class",
]

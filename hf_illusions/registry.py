"""hf-illusions' model types, and their registration with transformers' Auto classes.

A folder written by ``save_pretrained`` names its ``model_type`` in ``config.json``;
``AutoModelForCausalLM.from_pretrained`` can only build it once that type is registered (no
``trust_remote_code``, no code on the Hub). ``hf_illusions/__init__`` calls
:func:`register_auto_classes`, so after ``import hf_illusions`` — or any import from the package —
every folder this package writes loads: the illusion transformer, proxies and pruned circuits.

Registration lives here, above the packages it names, so that ``modeling`` (below
``simplify`` in the dependency order) never has to import ``simplify`` to make proxies loadable.
"""

from __future__ import annotations

from functools import cache


def model_classes() -> dict[str, tuple[type, type]]:
    """``model_type`` → (config class, causal-LM class) for hf-illusions' own model types.

    Any other causal LM transformers knows (Llama, GPT-2, GPT-NeoX, Qwen2, …) loads through
    transformers' own mapping (:func:`hf_illusions.checkpoints.stock_classes`).
    """
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
    from hf_illusions.simplify.proxy import IllusionProxyConfig, IllusionProxyForCausalLM
    from hf_illusions.sparse.circuit import IllusionCircuitConfig, IllusionCircuitForCausalLM

    return {
        IllusionConfig.model_type: (IllusionConfig, IllusionForCausalLM),
        IllusionProxyConfig.model_type: (IllusionProxyConfig, IllusionProxyForCausalLM),
        IllusionCircuitConfig.model_type: (IllusionCircuitConfig, IllusionCircuitForCausalLM),
    }


@cache
def register_auto_classes() -> None:
    """Register every type of :func:`model_classes` with ``AutoConfig`` and ``AutoModelForCausalLM``.

    Also ``AutoModel`` for the illusion transformer's base model (the one type that has one).
    Idempotent (``exist_ok``, and cached so repeated calls cost nothing).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from hf_illusions.modeling import IllusionConfig, IllusionModel

    for model_type, (config_class, model_class) in model_classes().items():
        AutoConfig.register(model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
    AutoModel.register(IllusionConfig, IllusionModel, exist_ok=True)


__all__ = ["model_classes", "register_auto_classes"]

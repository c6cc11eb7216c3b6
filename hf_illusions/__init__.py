"""hf-illusions: faithfulness of simplified transformer proxies, in and out of distribution.

One namespace for everything a user needs: build the data, load or train a model, simplify its
attention (SVD, k-means, one-hot, interaction basis, pruned circuits) and measure, split by
split, how faithful the simplified proxy stays. Importing the package registers its model types
with transformers' Auto classes (:mod:`hf_illusions.registry`), so
``AutoModelForCausalLM.from_pretrained`` loads every folder it writes — models, proxies and
circuits; the rest of the API is imported on first use, keeping ``import hf_illusions`` light.

A whole study on the tiny preset (a few seconds on a CPU; ``reproduce_dyck`` runs the paper's)::

    >>> import hf_illusions as hi
    >>> from transformers import AutoModelForCausalLM
    >>> data = hi.write_dyck_folder("dyck-tiny", config_name="tiny")  # `hf-illusions data build`
    >>> ds = hi.load_folder(data)  # the seven named splits
    >>> model = hi.IllusionForCausalLM(hi.IllusionConfig(d_model=32, d_mlp=64))  # or load_checkpoint
    >>> proxy = hi.SVDSimplifier(rank=4, n_sequences=100).fit(model, ds["train"])
    >>> proxy.save_pretrained("proxy-svd4")
    >>> type(AutoModelForCausalLM.from_pretrained("proxy-svd4")).__name__
    'IllusionProxyForCausalLM'
    >>> sentences = ds["test_unseen_depth"]["input_ids"][:100]
    >>> results = hi.evaluate_models(model, sentences, hi.DyckTask(), proxies={"svd_r4": proxy})
    >>> sorted(results)
    ['original', 'svd_r4']
    >>> 0.0 <= results["svd_r4"]["close"]["jsd"] <= 1.0
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Registration needs the model classes, hence torch and transformers: the one eager import, so that
# no user has to know which submodule to import before `from_pretrained`.
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.registry import register_auto_classes
from hf_illusions.version import __version__

register_auto_classes()

#: public name → the module that defines it, imported by :func:`__getattr__` on first access
_LAZY: dict[str, str] = {
    # simplifiers and the proxies they produce
    "SIMPLIFIERS": "hf_illusions.simplify",
    "InteractionBasisSimplifier": "hf_illusions.simplify",
    "KMeansSimplifier": "hf_illusions.simplify",
    "OneHotSimplifier": "hf_illusions.simplify",
    "SVDSimplifier": "hf_illusions.simplify",
    "SparseCircuitPruner": "hf_illusions.simplify",
    "make_simplifier": "hf_illusions.simplify",
    "load_proxy": "hf_illusions.checkpoints",
    # models
    "load_checkpoint": "hf_illusions.checkpoints",
    # data
    "load_folder": "hf_illusions.data.hub_folder",
    "write_dyck_folder": "hf_illusions.data.hub_folder",
    "write_code_folder": "hf_illusions.data.code_folder",
    "verify_dyck_folder": "hf_illusions.data.verify",
    "verify_code_folder": "hf_illusions.data.code_folder",
    # tasks: which positions are scored, in which groups
    "CodeTask": "hf_illusions.tasks.code",
    "DyckTask": "hf_illusions.tasks.dyck",
    "LanguageModelTask": "hf_illusions.tasks.lm",
    # evaluation and whole studies
    "evaluate_models": "hf_illusions.evaluation",
    "evaluate_own": "hf_illusions.own_data",
    "evaluate_own_model": "hf_illusions.own_data",
    "OwnDataConfig": "hf_illusions.own_config",
    "ReproductionConfig": "hf_illusions.config",
    "SampleConfig": "hf_illusions.config",
    "SweepConfig": "hf_illusions.config",
    "reproduce": "hf_illusions.reproduction",
    "reproduce_code": "hf_illusions.reproduction",
    "reproduce_dyck": "hf_illusions.reproduction",
    # the exception every bad input raises (each also a ValueError or OSError)
    "IllusionsError": "hf_illusions.errors",
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from hf_illusions.checkpoints import load_checkpoint, load_proxy
    from hf_illusions.config import ReproductionConfig, SampleConfig, SweepConfig
    from hf_illusions.data.code_folder import verify_code_folder, write_code_folder
    from hf_illusions.data.hub_folder import load_folder, write_dyck_folder
    from hf_illusions.data.verify import verify_dyck_folder
    from hf_illusions.errors import IllusionsError
    from hf_illusions.evaluation import evaluate_models
    from hf_illusions.own_config import OwnDataConfig
    from hf_illusions.own_data import evaluate_own, evaluate_own_model
    from hf_illusions.reproduction import reproduce, reproduce_code, reproduce_dyck
    from hf_illusions.simplify import (
        SIMPLIFIERS,
        InteractionBasisSimplifier,
        KMeansSimplifier,
        OneHotSimplifier,
        SparseCircuitPruner,
        SVDSimplifier,
        make_simplifier,
    )
    from hf_illusions.tasks.code import CodeTask
    from hf_illusions.tasks.dyck import DyckTask
    from hf_illusions.tasks.lm import LanguageModelTask


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562), then cache the name here."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [  # the eager names, then every name of _LAZY (tests/test_api.py checks they agree)
    "SIMPLIFIERS",
    "CodeTask",
    "DyckTask",
    "IllusionConfig",
    "IllusionForCausalLM",
    "IllusionsError",
    "InteractionBasisSimplifier",
    "KMeansSimplifier",
    "LanguageModelTask",
    "OneHotSimplifier",
    "OwnDataConfig",
    "ReproductionConfig",
    "SVDSimplifier",
    "SampleConfig",
    "SparseCircuitPruner",
    "SweepConfig",
    "__version__",
    "evaluate_models",
    "evaluate_own",
    "evaluate_own_model",
    "load_checkpoint",
    "load_folder",
    "load_proxy",
    "make_simplifier",
    "reproduce",
    "reproduce_code",
    "reproduce_dyck",
    "verify_code_folder",
    "verify_dyck_folder",
    "write_code_folder",
    "write_dyck_folder",
]

"""hf-illusions: faithfulness of simplified transformer proxies, in and out of distribution."""

__version__ = "0.1.0"


def load_proxy(path, base_model=None, **base_kwargs):
    """Rebuild a saved proxy (see :func:`hf_illusions.simplify.adapter.load_proxy`).

    Imported lazily so ``import hf_illusions`` stays cheap (no torch/transformers).
    """
    from hf_illusions.simplify.adapter import load_proxy as _load_proxy

    return _load_proxy(path, base_model, **base_kwargs)


def evaluate_own_model(model, data, **kwargs):
    """Fit a proxy of your own causal LM on your own text and score it per split.

    See :func:`hf_illusions.own_data.evaluate_own_model`; imported lazily like :func:`load_proxy`.
    """
    from hf_illusions.own_data import evaluate_own_model as _evaluate_own_model

    return _evaluate_own_model(model, data, **kwargs)


__all__ = ["__version__", "evaluate_own_model", "load_proxy"]

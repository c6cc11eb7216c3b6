"""hf-illusions: faithfulness of simplified transformer proxies, in and out of distribution."""

__version__ = "0.1.0"


def load_proxy(path, base_model=None, **base_kwargs):
    """Rebuild a saved proxy (see :func:`hf_illusions.simplify.adapter.load_proxy`).

    Imported lazily so ``import hf_illusions`` stays cheap (no torch/transformers).
    """
    from hf_illusions.simplify.adapter import load_proxy as _load_proxy

    return _load_proxy(path, base_model, **base_kwargs)


__all__ = ["__version__", "load_proxy"]

"""The package version, in a module of its own: every layer may record it (cards, results, bench
records) without importing the public API in ``hf_illusions/__init__``, which sits above them all."""

__version__ = "0.1.0"

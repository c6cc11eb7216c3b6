"""hf-illusions: faithfulness of simplified transformer proxies, in and out of distribution."""

__version__ = "0.1.0"

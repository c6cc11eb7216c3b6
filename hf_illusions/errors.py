"""Every exception hf-illusions raises on bad input, in one place.

Each is a ``ValueError`` (or ``FileNotFoundError``) too, so callers that already catch the
builtin keep working; messages name the argument and what was expected.
"""


class IllusionsError(Exception):
    """Base class of every error hf-illusions raises on bad input."""


class DyckError(IllusionsError, ValueError):
    """A bracket string or token sequence that is not a valid Dyck sentence for this vocabulary."""


class SplitError(IllusionsError, ValueError):
    """An unknown split name, or data that breaks a split's definition."""


class SimplifierError(IllusionsError, ValueError):
    """Impossible simplifier settings: rank, k, layer/head indices, empty fitting data."""


class FaithfulnessInputError(IllusionsError, ValueError):
    """Bad inputs to the faithfulness metric (shapes, non-distributions, masks)."""


class CheckpointError(IllusionsError, ValueError):
    """A model folder that is missing, truncated, corrupt, or of another model type."""

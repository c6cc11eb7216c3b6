"""Every exception hf-illusions raises on bad input, in one place.

Each is also a builtin (``ValueError``, or ``OSError`` for paths), so callers that already catch
the builtin keep working; messages name the argument and what was expected. The CLI turns any
of them into one ``hf-illusions: error: …`` line and exit status 2 (``--debug`` re-raises).
"""


class IllusionsError(Exception):
    """Base class of every error hf-illusions raises on bad input."""


class DyckError(IllusionsError, ValueError):
    """A bracket string or token sequence that is not a valid Dyck sentence for this vocabulary."""


class DatasetError(IllusionsError, ValueError):
    """A dataset folder that is missing, unreadable (corrupt parquet, bad settings file) or lacks columns."""


class SplitError(DatasetError):
    """An unknown split name, or data that breaks a split's definition."""


class SimplifierError(IllusionsError, ValueError):
    """Impossible simplifier settings: rank, k, layer/head indices, empty fitting data."""


class FaithfulnessInputError(IllusionsError, ValueError):
    """Bad inputs to the faithfulness metric (shapes, non-distributions, masks)."""


class CheckpointError(IllusionsError, ValueError):
    """A model folder that is missing, truncated, corrupt, or of another model type."""


class SettingsError(IllusionsError, ValueError):
    """Impossible settings for a command or run: unknown task/preset, out-of-range flags (argparse's too)."""


class PathError(IllusionsError, OSError):
    """An output path that exists (without ``overwrite``) or cannot be written, or a missing input file."""

"""The illusion transformer (one file per piece, as in transformers' own models).

It is registered with the Auto classes by :mod:`hf_illusions.registry` when the package is
imported, so ``AutoModelForCausalLM.from_pretrained`` loads it without ``trust_remote_code``.
"""

from hf_illusions.modeling.configuration_illusion import IllusionConfig
from hf_illusions.modeling.modeling_illusion import (
    IllusionForCausalLM,
    IllusionModel,
    IllusionPreTrainedModel,
)

__all__ = ["IllusionConfig", "IllusionForCausalLM", "IllusionModel", "IllusionPreTrainedModel"]

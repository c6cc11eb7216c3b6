"""The illusion transformer, registered with the Auto classes on import (no trust_remote_code)."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from hf_illusions.modeling.configuration_illusion import IllusionConfig
from hf_illusions.modeling.modeling_illusion import (
    IllusionForCausalLM,
    IllusionModel,
    IllusionPreTrainedModel,
)

AutoConfig.register(IllusionConfig.model_type, IllusionConfig, exist_ok=True)
AutoModel.register(IllusionConfig, IllusionModel, exist_ok=True)
AutoModelForCausalLM.register(IllusionConfig, IllusionForCausalLM, exist_ok=True)

__all__ = ["IllusionConfig", "IllusionForCausalLM", "IllusionModel", "IllusionPreTrainedModel"]

# Proxies (fitted simplifiers) are models too: registering them here means that after
# `import hf_illusions.modeling`, AutoModelForCausalLM loads a proxy folder as well.
import hf_illusions.simplify  # noqa: E402,F401

"""A small GPT-style decoder in the shape of transformers' own modeling files.

Pre-LayerNorm blocks (residual → norm → attention → residual → norm → MLP), learned absolute
positions, untied output head. Attention goes through ``ALL_ATTENTION_FUNCTIONS`` (the seam the
simplifiers use: a proxy is this model with another registered attention function), and
attention maps, hidden states and raw queries/keys are recorded declaratively with
``_can_record_outputs`` — no user hooks needed::

    out = model(ids, output_attentions=True, output_queries=True, output_keys=True)
    out.attentions[layer]   # (batch, heads, query, key)
    out.queries[layer]      # (batch, seq, heads * d_head), before any simplification
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from hf_illusions.modeling.configuration_illusion import IllusionConfig


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ · scaling + mask) v, returning the weights too (they are what we study)."""
    attn_weights = attention_probabilities(query, key, attention_mask, scaling)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def attention_probabilities(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """softmax(q kᵀ · scaling + mask) in float32; shared with the proxies' attention function."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    return nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


class IllusionAttention(nn.Module):
    """Multi-head causal self-attention; the attention function itself is looked up by name."""

    def __init__(self, config: IllusionConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_dim = config.d_head
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        inner = config.n_head * config.d_head
        self.q_proj = nn.Linear(config.d_model, inner)
        self.k_proj = nn.Linear(config.d_model, inner)
        self.v_proj = nn.Linear(config.d_model, inner)
        self.o_proj = nn.Linear(inner, config.d_model)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = self.o_proj(attn_output.reshape(*input_shape, -1).contiguous())
        return attn_output, attn_weights


class IllusionMLP(nn.Module):
    def __init__(self, config: IllusionConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.d_mlp)
        self.act = nn.GELU()
        self.down_proj = nn.Linear(config.d_mlp, config.d_model)
        # Seam for neuron-level simplifications (e.g. circuit node masks): a proxy sets a module here
        # that maps the post-activation hidden units; None (the default) is not in state_dict.
        self.neuron_simplification: nn.Module | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.up_proj(hidden_states))
        if self.neuron_simplification is not None:
            hidden = self.neuron_simplification(hidden)
        return self.down_proj(hidden)


class IllusionDecoderLayer(nn.Module):
    """Pre-LN block; with ``d_mlp == 0`` the MLP half is absent (attention-only transformer)."""

    def __init__(self, config: IllusionConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.self_attn = IllusionAttention(config, layer_idx)
        self.has_mlp = config.d_mlp > 0
        if self.has_mlp:
            self.mlp_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            self.mlp = IllusionMLP(config)
        self.dropout = nn.Dropout(config.dropout)
        # Seam for residual-stream simplifications (e.g. the interaction basis): a proxy sets a
        # module here that maps the block's input stream; None (the default) is not in state_dict.
        self.residual_simplification: nn.Module | None = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if self.residual_simplification is not None:
            hidden_states = self.residual_simplification(hidden_states)
        attn_output, _ = self.self_attn(self.attn_norm(hidden_states), attention_mask, cache, **kwargs)
        hidden_states = hidden_states + self.dropout(attn_output)
        if self.has_mlp:
            hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        return hidden_states


@dataclass
class IllusionModelOutput(BaseModelOutputWithPast):
    """Adds the raw per-layer queries and keys (``output_queries`` / ``output_keys``)."""

    queries: tuple[torch.Tensor, ...] | None = None
    keys: tuple[torch.Tensor, ...] | None = None


@dataclass
class IllusionCausalLMOutput(CausalLMOutputWithPast):
    queries: tuple[torch.Tensor, ...] | None = None
    keys: tuple[torch.Tensor, ...] | None = None


class IllusionPreTrainedModel(PreTrainedModel):
    config_class = IllusionConfig
    config: IllusionConfig
    base_model_prefix = "model"
    _no_split_modules = ["IllusionDecoderLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": IllusionDecoderLayer,
        "attentions": OutputRecorder(IllusionAttention, index=1),
        "queries": OutputRecorder(nn.Linear, layer_name="q_proj"),
        "keys": OutputRecorder(nn.Linear, layer_name="k_proj"),
    }

    def _check_and_adjust_attn_implementation(self, attn_implementation: str | None, *args, **kwargs) -> str:
        # Eager unless asked otherwise: these models are tiny (sdpa buys little on CPU) and
        # `output_attentions=True` must return real maps, which sdpa does not compute.
        return super()._check_and_adjust_attn_implementation(attn_implementation or "eager", *args, **kwargs)


class IllusionModel(IllusionPreTrainedModel):
    def __init__(self, config: IllusionConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_positions = nn.Embedding(config.n_positions, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([IllusionDecoderLayer(config, i) for i in range(config.n_layer)])
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> IllusionModelOutput:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_seen = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (
                torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0) + past_seen
            )
        if int(position_ids.max()) >= self.config.n_positions:
            raise ValueError(
                f"sequence reaches position {int(position_ids.max())} but the model has n_positions="
                f"{self.config.n_positions}; shorten the input to at most {self.config.n_positions} tokens"
            )

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        hidden_states = self.dropout(inputs_embeds + self.embed_positions(position_ids))
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=causal_mask, cache=cache, **kwargs)
        hidden_states = self.norm(hidden_states)
        return IllusionModelOutput(last_hidden_state=hidden_states, cache=cache)


class IllusionForCausalLM(IllusionPreTrainedModel, GenerationMixin):
    """Next-token LM head over :class:`IllusionModel`; loads with ``AutoModelForCausalLM``."""

    def __init__(self, config: IllusionConfig):
        super().__init__(config)
        self.model = IllusionModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> IllusionCausalLMOutput:
        r"""``labels`` are the input ids themselves (shifted inside the loss); ``-100`` is ignored."""
        outputs: IllusionModelOutput = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return IllusionCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            queries=outputs.queries,
            keys=outputs.keys,
        )


__all__ = ["IllusionForCausalLM", "IllusionModel", "IllusionPreTrainedModel"]

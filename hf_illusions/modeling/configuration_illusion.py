"""Configuration of the small GPT-style decoder used throughout hf-illusions."""

from __future__ import annotations

from transformers import PreTrainedConfig


class IllusionConfig(PreTrainedConfig):
    r"""Sizes and switches of :class:`IllusionForCausalLM`.

    Defaults follow the paper's setting for Dyck-(20,10): two layers, one attention head per
    layer (so every head can be simplified and inspected on its own), learned absolute positions.

    Args:
        vocab_size: number of tokens (43 for Dyck-20: 3 specials + 20 opens + 20 closes).
        n_positions: longest sequence the position table covers.
        d_model: width of the residual stream.
        n_layer: number of decoder blocks.
        n_head: attention heads per block.
        d_head: width of one head's queries/keys/values (default ``d_model // n_head``).
        d_mlp: hidden width of each block's MLP; ``0`` makes the blocks attention-only.
        layer_norm_eps: epsilon of the pre-LayerNorms.
        dropout: dropout on embeddings, attention weights and residual branches (0 for the paper's runs).
        initializer_range: std of the normal initialization.

    Example:

    ```python
    >>> from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
    >>> config = IllusionConfig(d_model=32, n_layer=2)
    >>> model = IllusionForCausalLM(config)
    >>> model.config.d_head
    32
    ```
    """

    model_type = "illusion-transformer"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "n_positions",
        "head_dim": "d_head",
    }

    vocab_size: int = 43
    n_positions: int = 512
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 1
    d_head: int | None = None
    d_mlp: int = 512
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.d_head is None:
            if self.d_model % self.n_head:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}) "
                    "when d_head is not given"
                )
            self.d_head = self.d_model // self.n_head
        for name in ("vocab_size", "n_positions", "d_model", "n_layer", "n_head", "d_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_mlp < 0:
            raise ValueError(f"d_mlp must be >= 0 (0 = attention-only), got {self.d_mlp}")
        super().__post_init__(**kwargs)


__all__ = ["IllusionConfig"]

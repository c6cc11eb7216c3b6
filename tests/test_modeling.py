"""IllusionForCausalLM: Auto classes, save/load, attention backends, recorded outputs, generate."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM


def batch(seed: int = 0, shape=(3, 12)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 43, shape, generator=g)


def test_save_then_auto_from_pretrained_gives_identical_logits(tiny_model, tmp_path):
    ids = batch()
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")), "only safetensors weights are written"
    assert AutoConfig.from_pretrained(tmp_path).model_type == "illusion-transformer"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is IllusionForCausalLM
    assert torch.equal(loaded(ids).logits, tiny_model(ids).logits)


def test_eager_and_sdpa_agree_with_and_without_padding(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    eager = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    sdpa = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa")
    ids = batch()
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # right padding on one row
    # float32 kernels differ in summation order only: 1e-5 absolute is far above that noise
    torch.testing.assert_close(eager(ids).logits, sdpa(ids).logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        eager(ids, attention_mask=mask).logits[:, :8],
        sdpa(ids, attention_mask=mask).logits[:, :8],
        atol=1e-5,
        rtol=0,
    )


def test_default_attention_is_eager_so_attention_maps_are_real(tiny_model):
    assert tiny_model.config._attn_implementation == "eager"
    out = tiny_model(
        batch(), output_attentions=True, output_queries=True, output_keys=True, output_hidden_states=True
    )
    assert len(out.attentions) == 2
    attn = out.attentions[0]
    assert attn.shape == (3, 2, 12, 12)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 2, 12))
    assert torch.all(attn.triu(diagonal=1) == 0), "causal: no weight on future keys"
    assert out.queries[1].shape == (3, 12, 16) and out.keys[1].shape == (3, 12, 16)  # n_head * d_head
    assert len(out.hidden_states) == 3


def test_queries_are_the_q_projection_of_the_normed_residual(tiny_model):
    ids = batch()
    out = tiny_model(ids, output_queries=True, output_hidden_states=True)
    layer = tiny_model.model.layers[1]
    expected = layer.self_attn.q_proj(layer.attn_norm(out.hidden_states[1]))
    torch.testing.assert_close(out.queries[1], expected)


def test_padding_does_not_change_real_positions(tiny_model):
    ids = batch(shape=(1, 10))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 5)], dim=1).long()
    torch.testing.assert_close(tiny_model(padded, attention_mask=mask).logits[:, :10], tiny_model(ids).logits)


def test_generate_matches_greedy_full_forward(tiny_model):
    prompt = torch.tensor([[1, 3, 4]])
    out = tiny_model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 9)
    greedy = tiny_model(out).logits.argmax(-1)[0, 2:-1]
    assert torch.equal(greedy, out[0, 3:])


def test_attention_only_blocks(tmp_path):
    model = IllusionForCausalLM(IllusionConfig(d_model=16, d_mlp=0, n_layer=1))
    assert not hasattr(model.model.layers[0], "mlp")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = batch()
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_over_long_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="n_positions=128"):
        tiny_model(torch.ones(1, 129, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"d_model": 10, "n_head": 3}, "divisible"), ({"n_layer": 0}, "n_layer"), ({"d_mlp": -1}, "d_mlp")],
)
def test_impossible_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IllusionConfig(**kwargs)

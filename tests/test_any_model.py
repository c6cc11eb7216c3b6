"""Simplifiers on transformers' own architectures: GPT-2, GPT-NeoX, Llama, Qwen2 (grouped-query).

Tiny random configs built here (no downloads). Query/key projections are scaled up so attention is
peaked and a low-rank projection visibly moves the logits. The reference computations are written
in this file: queries/keys recorded by a test-local attention function, numpy PCA, and the model
run with a hand-written attention function that projects q/k with the fitted basis.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from transformers import (
    AttentionInterface,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from hf_illusions import load_proxy
from hf_illusions.errors import CheckpointError, SimplifierError
from hf_illusions.simplify import (
    InteractionBasisSimplifier,
    KMeansSimplifier,
    OneHotSimplifier,
    SVDSimplifier,
)
from hf_illusions.simplify.adapter import CONFIG_NAME, WEIGHTS_NAME
from hf_illusions.sparse.circuit import SparseCircuitPruner

VOCAB, HIDDEN, LAYERS, HEADS, D_HEAD, SCALE = 64, 32, 2, 4, 8, 16.0
SIZES = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
}
ROPE = {"max_position_embeddings": 64, "intermediate_size": 64}


def _peaked(model: torch.nn.Module) -> torch.nn.Module:
    """Scale every query/key projection by SCALE, so attention is peaked."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "k_proj")):
                module.weight.mul_(SCALE)
            elif name.endswith("attn.c_attn"):  # GPT-2 Conv1D: (in, 3·hidden) = [q | k | v]
                module.weight[:, : 2 * HIDDEN].mul_(SCALE)
            elif name.endswith("query_key_value"):  # GPT-NeoX: per head [q | k | v] rows
                module.weight.view(HEADS, 3, D_HEAD, HIDDEN)[:, :2].mul_(SCALE)
    return model.eval()


FAMILIES = {
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_positions=64,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            bos_token_id=1,
            eos_token_id=2,
        )
    ),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**SIZES, **ROPE)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**SIZES, **ROPE)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**SIZES, **ROPE, num_key_value_heads=2)),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    return request.param, _peaked(FAMILIES[request.param]())


@pytest.fixture(scope="module")
def data() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [
        torch.randint(3, VOCAB, (int(n),), generator=g).tolist()
        for n in torch.randint(6, 24, (24,), generator=g)
    ]


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (3, 14), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    mask[2, 5:] = 0
    return ids, mask


def logits(m, ids, mask=None) -> torch.Tensor:
    with torch.no_grad():
        return m(ids, attention_mask=mask).logits


# --- test-local references: recorded q/k, and attention with projected q/k, by hand ---

_RECORDED: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
_PROJECTION: dict[int, dict[str, torch.Tensor]] = {}


def _hand_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Plain softmax attention (additive mask), q/k projected when _PROJECTION has the layer."""
    _RECORDED.setdefault(module.layer_idx, []).append((query, key))
    fitted = _PROJECTION.get(module.layer_idx)
    if fitted is not None:

        def proj(x, mean, basis):  # mean + (x - mean) B Bᵀ, per head
            centered = x - mean[None, :, None]
            return mean[None, :, None] + torch.einsum("bhsd,hdr,her->bhse", centered, basis, basis)

        query = proj(query, fitted["query_mean"], fitted["query_basis"])
        key = proj(key, fitted["key_mean"], fitted["key_basis"])
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = query @ key.transpose(-1, -2) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    weights = torch.softmax(scores + attention_mask, dim=-1)
    return (weights @ value).transpose(1, 2).contiguous(), weights


AttentionInterface.register("test_hand", _hand_attention)
AttentionMaskInterface.register("test_hand", eager_mask)


def _hand_model(model):
    hand = copy.deepcopy(model)
    hand.set_attn_implementation("test_hand")
    return hand


def _simplification(proxy, layer):
    modules = [
        m for m in proxy.modules() if getattr(m, "layer_idx", None) == layer and hasattr(m, "simplification")
    ]
    return modules[0].simplification


# --- (a) full rank is the model; (b) rank r is the hand computation; the fit is PCA ---


def test_the_test_models_attend_peakedly(family, batch):
    """The premise of the tests below: attention concentrates (uniform over ~8 keys would be ~0.15)."""
    _, model = family
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = eager(batch[0], output_attentions=True).attentions
    peak = torch.stack([a[..., 4:, :].max(-1).values.mean() for a in attentions]).mean()
    assert peak > 0.5


def test_full_rank_svd_reproduces_the_model(family, data, batch):
    _, model = family
    ids, mask = batch
    proxy = SVDSimplifier(rank=D_HEAD).fit(model, data)
    real = mask.bool()
    error = (logits(proxy, ids, mask) - logits(model, ids, mask))[real].abs().max().item()
    assert error <= 1e-4


def test_rank_r_proxy_equals_attention_with_projected_qk_by_hand(family, data, batch):
    name, model = family
    ids, mask = batch
    proxy = SVDSimplifier(rank=2).fit(model, data)
    hand = _hand_model(model)
    _PROJECTION.clear()
    for layer in range(LAYERS):
        s = _simplification(proxy, layer)
        _PROJECTION[layer] = {
            k: getattr(s, k) for k in ("query_mean", "query_basis", "key_mean", "key_basis")
        }
    try:
        expected = logits(hand, ids, mask)
    finally:
        _PROJECTION.clear()
    real = mask.bool()
    got = logits(proxy, ids, mask)
    assert (got - expected)[real].abs().max().item() <= 1e-4
    assert (got - logits(model, ids, mask))[real].abs().max().item() > 5e-2  # the projection matters
    if name == "qwen2":  # grouped-query attention: keys fitted per key/value head
        assert _simplification(proxy, 0).key_basis.shape == (2, D_HEAD, 2)


def test_fitted_basis_is_the_pca_of_qk_as_attention_sees_them(family, data):
    """Queries/keys recorded by the test's own attention function (after rotary), PCA in numpy."""
    _, model = family
    rank, layer = 3, 1
    proxy = SVDSimplifier(rank=rank, layers=[layer]).fit(model, data)
    hand = _hand_model(model)
    _RECORDED.clear()
    with torch.no_grad():
        for seq in data:
            hand(torch.tensor([seq]))
    for side, index in (("query", 0), ("key", 1)):
        x = torch.cat([qk[index][0].transpose(0, 1) for qk in _RECORDED[layer]]).double().numpy()
        s = _simplification(proxy, layer)
        for head in range(x.shape[1]):
            mean = x[:, head].mean(axis=0)
            _, _, vh = np.linalg.svd(x[:, head] - mean, full_matrices=False)
            basis = getattr(s, f"{side}_basis")[head].double().numpy()
            np.testing.assert_allclose(basis @ basis.T, vh[:rank].T @ vh[:rank], atol=1e-4)
            np.testing.assert_allclose(getattr(s, f"{side}_mean")[head].double().numpy(), mean, atol=1e-5)


# --- (c) masks: padding, causality, sliding windows; output_attentions ---


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_and_causal_masks_are_respected(family, data, batch, attn):
    _, model = family
    base = copy.deepcopy(model)
    base.set_attn_implementation(attn)
    proxy = SVDSimplifier(rank=2).fit(base, data)
    ids, mask = batch
    padded = logits(proxy, ids, mask)
    for row in range(len(ids)):
        n = int(mask[row].sum())
        alone = logits(proxy, ids[row : row + 1, :n])
        torch.testing.assert_close(padded[row, :n], alone[0], atol=1e-5, rtol=0)
    changed = ids.clone()
    changed[1, 7] = (changed[1, 7] + 1) % VOCAB
    after = logits(proxy, changed, mask)
    torch.testing.assert_close(after[1, :7], padded[1, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(after[1, 7:], padded[1, 7:])


def test_output_attentions_returns_the_weights_used(family, data, batch):
    _, model = family
    ids, mask = batch
    proxy = SVDSimplifier(rank=2).fit(model, data)
    with torch.no_grad():
        out = proxy(ids, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == LAYERS and out.attentions[0].shape == (3, HEADS, 14, 14)
    torch.testing.assert_close(out.logits, logits(proxy, ids, mask), atol=1e-5, rtol=0)
    real = mask.bool()
    torch.testing.assert_close(
        out.attentions[1].sum(-1)[real[:, None].expand(-1, HEADS, -1)], torch.ones(real.sum() * HEADS)
    )
    assert torch.triu(out.attentions[1], diagonal=1).abs().max() == 0  # causal


def test_sliding_window_is_kept():
    torch.manual_seed(0)
    config = MistralConfig(**SIZES, **ROPE, num_key_value_heads=2, sliding_window=4)
    model = _peaked(MistralForCausalLM(config))
    g = torch.Generator().manual_seed(3)
    data = [torch.randint(3, VOCAB, (16,), generator=g).tolist() for _ in range(8)]
    ids = torch.randint(3, VOCAB, (2, 16), generator=g)
    full_context = copy.deepcopy(model)
    full_context.config.sliding_window = None
    assert not torch.allclose(logits(full_context, ids)[:, 8:], logits(model, ids)[:, 8:], atol=1e-3)
    proxy = SVDSimplifier(rank=D_HEAD).fit(model, data)
    assert (logits(proxy, ids) - logits(model, ids)).abs().max().item() <= 1e-4


# --- k-means and one-hot on every family ---


def test_kmeans_with_every_vector_a_centroid_reproduces_the_model(family, data, batch):
    _, model = family
    ids, mask = batch
    fit = [ids[row, : int(mask[row].sum())].tolist() for row in range(len(ids))]
    proxy = KMeansSimplifier(k=int(mask.sum())).fit(model, fit)
    real = mask.bool()
    assert (logits(proxy, ids, mask) - logits(model, ids, mask))[real].abs().max().item() <= 1e-4
    coarse = KMeansSimplifier(k=3).fit(model, data)
    assert (logits(coarse, ids, mask) - logits(model, ids, mask))[real].abs().max().item() > 1e-2


def test_onehot_attention_is_one_hot_at_the_original_argmax(family, batch):
    _, model = family
    ids, mask = batch
    proxy = OneHotSimplifier(layers=[0]).fit(model)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        original = eager(ids, attention_mask=mask, output_attentions=True).attentions[0]
        simplified = proxy(ids, attention_mask=mask, output_attentions=True).attentions[0]
    expected = torch.nn.functional.one_hot(original.argmax(-1), ids.shape[1]).to(simplified.dtype)
    real = mask.bool()[:, None, :].expand(-1, HEADS, -1)
    torch.testing.assert_close(simplified[real], expected[real], atol=0, rtol=0)


# --- (d) adapters: small, bitwise reload, wrong base refused; determinism ---


def test_adapter_is_small_and_reloads_bitwise(family, data, batch, tmp_path):
    _, model = family
    model.save_pretrained(tmp_path / "base")
    base = type(model).from_pretrained(tmp_path / "base").eval()
    proxy = SVDSimplifier(rank=2, layers=[1]).fit(base, data)
    proxy.save_pretrained(tmp_path / "proxy")
    files = sorted(p.name for p in (tmp_path / "proxy").iterdir())
    assert files == [WEIGHTS_NAME, CONFIG_NAME]
    saved = json.loads((tmp_path / "proxy" / CONFIG_NAME).read_text())
    assert saved["simplifier"] == "svd" and saved["simplifier_settings"]["rank"] == 2
    assert saved["base_model_name_or_path"] == str(tmp_path / "base")
    assert saved["base_model_type"] == model.config.model_type and len(saved["base_weights_sha256"]) == 64
    adapter_bytes = (tmp_path / "proxy" / WEIGHTS_NAME).stat().st_size
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert adapter_bytes < 8_000 and adapter_bytes < base_bytes / 20
    ids, mask = batch
    expected = logits(proxy, ids, mask)
    reloaded = load_proxy(tmp_path / "proxy")  # the base is loaded from the recorded path
    assert type(reloaded).__name__ == f"Simplified{type(model).__name__}"
    assert torch.equal(logits(reloaded, ids, mask), expected)
    assert torch.equal(logits(load_proxy(tmp_path / "proxy", base_model=base), ids, mask), expected)
    wrong = copy.deepcopy(base)
    with torch.no_grad():
        next(wrong.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(CheckpointError, match="differ from those the proxy"):
        load_proxy(tmp_path / "proxy", base_model=wrong)


def test_fits_are_deterministic(family, data, tmp_path):
    _, model = family
    for i in range(2):
        SVDSimplifier(rank=3).fit(model, data).save_pretrained(tmp_path / f"svd{i}")
        KMeansSimplifier(k=4, max_vectors=50).fit(model, data).save_pretrained(tmp_path / f"km{i}")
    for kind in ("svd", "km"):
        first, second = ((tmp_path / f"{kind}{i}" / WEIGHTS_NAME).read_bytes() for i in range(2))
        assert first == second


def test_the_fit_leaves_the_model_alone(family, data):
    _, model = family
    before = {k: v.clone() for k, v in model.state_dict().items()}
    implementation = model.config._attn_implementation
    SVDSimplifier(rank=2).fit(model, data)
    assert model.config._attn_implementation == implementation
    assert not any(hasattr(m, "simplification") or hasattr(m, "qk_recorder") for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# --- (e) what cannot be honoured is refused, naming the model type ---


def test_partial_key_value_groups_are_refused():
    torch.manual_seed(0)
    model = FAMILIES["qwen2"]().eval()
    with pytest.raises(SimplifierError, match=r"split key/value group.*heads \[0, 1\]"):
        SVDSimplifier(rank=2, heads=[0]).fit(model, [[3, 4, 5]])
    OneHotSimplifier(heads=[0]).fit(model)  # one-hot leaves keys alone: any heads


def _refused_models():
    from transformers import (
        BloomConfig,
        BloomForCausalLM,
        Gemma2Config,
        Gemma2ForCausalLM,
        GptOssConfig,
        GptOssForCausalLM,
    )

    small = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": HEADS}
    return {
        "bloom": (
            lambda: BloomForCausalLM(
                BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=1, n_head=HEADS)
            ),
            "computes attention itself",
        ),
        "gemma2": (
            lambda: Gemma2ForCausalLM(
                Gemma2Config(
                    **small,
                    intermediate_size=64,
                    head_dim=D_HEAD,
                    num_key_value_heads=HEADS,
                    attn_logit_softcapping=50.0,
                )
            ),
            "softcapping",
        ),
        "gpt_oss": (
            lambda: GptOssForCausalLM(
                GptOssConfig(
                    **small,
                    intermediate_size=32,
                    head_dim=D_HEAD,
                    num_key_value_heads=HEADS,
                    num_local_experts=2,
                    num_experts_per_tok=1,
                )
            ),
            "attention sinks",
        ),
    }


@pytest.mark.parametrize("name", ["bloom", "gemma2", "gpt_oss"])
def test_families_the_proxy_cannot_honour_are_refused(name):
    make, match = _refused_models()[name]
    model = make().eval()
    for simplifier in (SVDSimplifier(rank=2), OneHotSimplifier()):
        with pytest.raises(SimplifierError, match=match) as err:
            simplifier.fit(model, [[3, 4, 5, 6]])
        assert model.config.model_type in str(err.value)


def test_residual_and_circuit_simplifiers_refuse_stock_models(family, data):
    _, model = family
    for simplifier in (InteractionBasisSimplifier(k=2), SparseCircuitPruner(target_loss=10.0)):
        with pytest.raises(
            SimplifierError, match=rf"works only on IllusionForCausalLM.*{type(model).__name__}"
        ):
            simplifier.fit(model, data)


# --- the CLI on a stock model folder ---


def test_cli_simplify_fits_a_stock_model_folder_into_an_adapter(data, batch, tmp_path):
    import datasets

    from hf_illusions.cli import main

    torch.manual_seed(0)
    model = _peaked(FAMILIES["llama"]())
    model.save_pretrained(tmp_path / "llama")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"input_ids": data})}).save_to_disk(
        tmp_path / "ds"
    )
    argv = ["simplify", "svd", "--model", str(tmp_path / "llama"), "--data", str(tmp_path / "ds")]
    argv += [
        "--rank",
        "2",
        "--layers",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--base_model",
        "someone/tiny-llama",
    ]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())
    assert saved["base_model_name_or_path"] == "someone/tiny-llama" and saved["simplified_heads"] == {
        "1": [0, 1, 2, 3]
    }
    proxy = load_proxy(tmp_path / "out", base_model=tmp_path / "llama")
    ids, mask = batch
    direct = SVDSimplifier(rank=2, layers=[1]).fit(model, data)
    assert torch.equal(logits(proxy, ids, mask), logits(direct, ids, mask))


@pytest.mark.parametrize("name", ["gpt2", "qwen2"])
def test_cached_generation_matches_recomputing_the_whole_prefix(name, data):
    """With a KV cache, attention sees cached raw keys; the proxy must simplify them as before."""
    torch.manual_seed(0)
    model = _peaked(FAMILIES[name]())
    proxy = SVDSimplifier(rank=2).fit(model, data)
    prompt = torch.tensor([data[0][:5]])
    generated = proxy.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    ids = prompt
    for _ in range(6):  # greedy without a cache: the whole prefix every step
        next_id = logits(proxy, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    assert torch.equal(generated, ids)


def test_load_proxy_also_loads_our_own_whole_proxies(tmp_path, data, batch):
    from transformers import AutoModelForCausalLM

    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
    from hf_illusions.simplify import IllusionProxyForCausalLM

    torch.manual_seed(0)
    own = IllusionForCausalLM(
        IllusionConfig(d_model=16, n_head=2, d_mlp=32, vocab_size=VOCAB, n_positions=64)
    )
    proxy = SVDSimplifier(rank=2).fit(own.eval(), data)
    proxy.save_pretrained(tmp_path / "own")
    assert (tmp_path / "own" / "model.safetensors").is_file()  # a whole checkpoint, as before
    ids, mask = batch
    for loaded in (load_proxy(tmp_path / "own"), AutoModelForCausalLM.from_pretrained(tmp_path / "own")):
        assert type(loaded) is IllusionProxyForCausalLM
        assert torch.equal(logits(loaded, ids, mask), logits(proxy, ids, mask))

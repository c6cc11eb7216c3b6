"""Simplifiers and their proxies: exactness at full capacity, the math, locality, saving, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from hf_illusions.errors import CheckpointError, SimplifierError
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.simplify import (
    SIMPLIFIERS,
    IllusionProxyForCausalLM,
    KMeansSimplifier,
    OneHotSimplifier,
    SVDSimplifier,
    build_proxy,
    collect_qk,
    make_simplifier,
)
from hf_illusions.simplify.kmeans import count_distinct_rows, nearest_centroid
from hf_illusions.simplify.proxy import ATTN_IMPLEMENTATION
from hf_illusions.simplify.svd import project

D_HEAD = 8


@pytest.fixture(scope="module")
def model() -> IllusionForCausalLM:
    torch.manual_seed(0)
    config = IllusionConfig(d_model=16, n_head=2, d_mlp=32, n_layer=2, vocab_size=43, n_positions=64)
    return IllusionForCausalLM(config).eval()


@pytest.fixture(scope="module")
def proxies(model, data) -> dict[str, IllusionProxyForCausalLM]:
    return {
        "identity": build_proxy(model, "identity", {0: [0, 1], 1: [0, 1]}, {}, {}),
        "svd": SVDSimplifier(rank=2).fit(model, data),
        "kmeans": KMeansSimplifier(k=5, layers=[0], heads=[1]).fit(model, data),
        "onehot": OneHotSimplifier(layers=[1], heads=[0]).fit(model),
    }


def logits(m: IllusionForCausalLM, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return m(ids, attention_mask=mask).logits


def n_tokens(data: list[list[int]]) -> int:
    return sum(len(s) for s in data)


# --- exactness at full capacity (and the causal/padding mask survives the custom attention) ---


def test_mask_function_is_registered_for_the_proxy_attention():
    assert ALL_MASK_ATTENTION_FUNCTIONS[ATTN_IMPLEMENTATION] is eager_mask


def test_identity_proxy_matches_model_on_padded_batch(model, proxies, batch):
    ids, mask = batch
    assert proxies["identity"].config._attn_implementation == ATTN_IMPLEMENTATION
    torch.testing.assert_close(
        logits(proxies["identity"], ids, mask), logits(model, ids, mask), atol=1e-6, rtol=0
    )


def test_full_rank_svd_reproduces_logits_on_padded_batch(model, data, batch):
    ids, mask = batch
    proxy = SVDSimplifier(rank=D_HEAD).fit(model, data)
    torch.testing.assert_close(logits(proxy, ids, mask), logits(model, ids, mask), atol=1e-5, rtol=0)


def test_kmeans_with_k_at_least_distinct_vectors_reproduces_logits(model, data, batch):
    ids, mask = batch
    fit_data = data[:6]  # the batch's own sequences: every query/key is a fitted vector
    proxy = KMeansSimplifier(k=n_tokens(fit_data)).fit(model, fit_data)
    real = mask.bool()  # pad positions' queries were not fitted, so only real tokens must agree
    torch.testing.assert_close(
        logits(proxy, ids, mask)[real], logits(model, ids, mask)[real], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", ["identity", "svd", "kmeans", "onehot"])
def test_future_tokens_do_not_change_earlier_logits(proxies, name):
    ids = torch.tensor([[1, 3, 5, 25, 23, 2]])
    changed = ids.clone()
    changed[0, 4] = 7
    before, after = logits(proxies[name], ids), logits(proxies[name], changed)
    torch.testing.assert_close(before[:, :4], after[:, :4], atol=0, rtol=0)
    assert not torch.equal(before[:, 4:], after[:, 4:])


# --- the math, against independent computations ---


def test_svd_projection_matches_numpy(model, data):
    rank, layer = 3, 1
    proxy = SVDSimplifier(rank=rank, layers=[layer]).fit(model, data)
    simplification = proxy.model.layers[layer].self_attn.simplification
    with torch.no_grad():  # queries collected independently: one unpadded sequence at a time
        q = np.concatenate(
            [model(torch.tensor([s]), output_queries=True).queries[layer][0].numpy() for s in data]
        )
    q = q.reshape(len(q), 2, D_HEAD).astype(np.float64)
    for head in range(2):
        mean = q[:, head].mean(axis=0)
        _, _, vh = np.linalg.svd(q[:, head] - mean, full_matrices=False)
        expected = vh[:rank].T @ vh[:rank]  # the projector is sign- and rotation-free
        basis = simplification.query_basis[head].double().numpy()
        np.testing.assert_allclose(basis @ basis.T, expected, atol=1e-5)
        np.testing.assert_allclose(simplification.query_mean[head].numpy(), mean, atol=1e-5)
        x = torch.randn(1, 1, 4, D_HEAD, dtype=torch.float64)
        projected = project(x, torch.from_numpy(mean)[None], torch.from_numpy(vh[:rank].T)[None])
        np.testing.assert_allclose(
            projected[0, 0].numpy(), mean + (x[0, 0].numpy() - mean) @ expected, atol=1e-12
        )


def test_nearest_centroid_is_the_closest_and_breaks_ties_low():
    torch.manual_seed(1)
    x = torch.randn(3, 2, 7, 4)
    centroids = torch.randn(2, 5, 4)
    centroids[:, 3] = centroids[:, 1]  # duplicate: index 1 must win over 3
    x[0, :, 0] = centroids[:, 1]
    index = nearest_centroid(x, centroids)
    distances = ((x.double()[..., None, :] - centroids.double()[None, :, None]) ** 2).sum(-1)
    assert torch.equal(index, distances.argmin(-1))
    assert (index[0, :, 0] == 1).all()


def test_kmeans_proxy_snaps_queries_to_their_nearest_centroid(model, proxies, data):
    simplification = proxies["kmeans"].model.layers[0].self_attn.simplification
    q = collect_qk(model, data, layers=[0])[0][0]  # (n, heads, d_head)
    snapped = simplification.transform_query(q.transpose(0, 1)[None])[0]
    centroids = simplification.query_centroids[1]
    nearest = torch.cdist(q[:, 1].double(), centroids.double()).argmin(-1)
    torch.testing.assert_close(snapped[1], centroids[nearest], atol=0, rtol=0)
    torch.testing.assert_close(snapped[0], q[:, 0], atol=0, rtol=0)  # head 0 not simplified
    assert len(torch.unique(snapped[1], dim=0)) <= 5


def test_onehot_rows_are_one_hot_at_the_original_argmax(model, proxies, batch):
    ids, mask = batch
    with torch.no_grad():
        original = model(ids, attention_mask=mask, output_attentions=True).attentions
        simplified = proxies["onehot"](ids, attention_mask=mask, output_attentions=True).attentions
    expected = torch.nn.functional.one_hot(original[1][:, 0].argmax(-1), ids.shape[1]).float()
    torch.testing.assert_close(simplified[1][:, 0], expected, atol=0, rtol=0)
    torch.testing.assert_close(simplified[1][:, 1], original[1][:, 1], atol=0, rtol=0)  # head 1 untouched
    torch.testing.assert_close(simplified[0], original[0], atol=0, rtol=0)  # layer 0 untouched


def test_simplifying_layer_one_leaves_layer_zero_outputs_identical(model, data, batch):
    ids, mask = batch
    proxy = SVDSimplifier(rank=1, layers=[1]).fit(model, data)
    assert not hasattr(proxy.model.layers[0].self_attn, "simplification")
    with torch.no_grad():
        original = model(ids, attention_mask=mask, output_hidden_states=True)
        simplified = proxy(ids, attention_mask=mask, output_hidden_states=True)
    assert torch.equal(simplified.hidden_states[1], original.hidden_states[1])
    assert not torch.allclose(simplified.logits, original.logits)


# --- fitting data, the original model, the proxy object ---


def test_fit_uses_the_first_n_sequences_of_a_dataset_or_list(model, data):
    import datasets

    ds = datasets.Dataset.from_dict({"input_ids": data})
    from_dataset = collect_qk(model, ds, n_sequences=3)
    from_list = collect_qk(model, data[:3])
    assert from_dataset[1][0].shape == (n_tokens(data[:3]), 2, D_HEAD)
    for layer in (0, 1):
        for a, b in zip(from_dataset[layer], from_list[layer], strict=True):
            torch.testing.assert_close(a, b)


def test_fitting_leaves_the_original_model_alone(model, data):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    proxy = SVDSimplifier(rank=2).fit(model, data)
    assert model.config._attn_implementation == "eager"
    assert not any(hasattr(layer.self_attn, "simplification") for layer in model.model.layers)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not proxy.training
    assert next(proxy.parameters()).dtype == next(model.parameters()).dtype


def test_make_simplifier_rebuilds_from_saved_settings(proxies):
    config = proxies["kmeans"].config
    rebuilt = make_simplifier(config.simplifier, **config.simplifier_settings)
    assert isinstance(rebuilt, KMeansSimplifier)
    assert rebuilt.settings() == config.simplifier_settings
    assert set(SIMPLIFIERS) == {"svd", "kmeans", "onehot", "interaction_basis", "sparse_circuit"}
    assert repr(SVDSimplifier(rank=3, layers=[1])).startswith("SVDSimplifier(rank=3, center=True")


# --- save / load ---


@pytest.mark.parametrize("name", ["svd", "kmeans", "onehot"])
def test_proxy_round_trips_through_auto_model(proxies, batch, tmp_path, name):
    proxy = proxies[name]
    proxy.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["simplifier"] == name
    assert saved["simplifier_settings"] == proxy.config.simplifier_settings
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is IllusionProxyForCausalLM
    assert loaded.config._attn_implementation == ATTN_IMPLEMENTATION
    buffers = {k: v for k, v in proxy.state_dict().items() if ".simplification." in k}
    assert buffers  # head_mask at least
    for key, value in buffers.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ids, mask = batch
    assert torch.equal(logits(loaded, ids, mask), logits(proxy, ids, mask))


def test_loading_a_proxy_without_its_fitted_buffers_fails(proxies, tmp_path):
    proxies["svd"].save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.1.self_attn.simplification.key_basis"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="key_basis"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


# --- errors name the argument ---


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SVDSimplifier(rank=0), "rank must be between 1 and d_head"),
        (lambda: SVDSimplifier(rank=D_HEAD + 1), f"rank must be between 1 and d_head={D_HEAD}"),
        (lambda: KMeansSimplifier(k=0), "k must be >= 1"),
        (lambda: KMeansSimplifier(k=10_000), r"k=10000 exceeds the number of fitted vectors \(\d+ "),
        (lambda: SVDSimplifier(rank=2, layers=[2]), r"layers \[2\] out of range.*n_layer=2"),
        (lambda: SVDSimplifier(rank=2, heads=[0, 5]), r"heads \[5\] out of range.*n_head=2"),
        (lambda: SVDSimplifier(rank=2, layers=[]), "layers must name at least one"),
        (lambda: SVDSimplifier(rank=2, n_sequences=0), "n_sequences must be >= 1"),
        (lambda: make_simplifier("pca", rank=2), "name must be one of"),
    ],
)
def test_bad_settings_raise_simplifier_error(model, data, make, match):
    with pytest.raises(SimplifierError, match=match):
        make().fit(model, data)


def test_empty_data_raises(model):
    import datasets

    with pytest.raises(SimplifierError, match="data holds no sequences"):
        SVDSimplifier(rank=2).fit(model, [])
    with pytest.raises(SimplifierError, match="data holds no sequences"):
        SVDSimplifier(rank=2).fit(model, datasets.Dataset.from_dict({"input_ids": []}))
    with pytest.raises(SimplifierError, match="data is required"):
        SVDSimplifier(rank=2).fit(model)


def test_proxy_config_is_checked(model):
    with pytest.raises(SimplifierError, match="simplified_heads layers"):
        build_proxy(model, "onehot", {3: [0]}, {}, {})
    with pytest.raises(SimplifierError, match="simplifier_settings must give 'rank'"):
        build_proxy(model, "svd", {0: [0]}, {}, {})


def test_only_transformers_models_can_be_simplified(model, proxies, data):
    with pytest.raises(SimplifierError, match="model must be a transformers PreTrainedModel"):
        SVDSimplifier(rank=2).fit(torch.nn.Linear(2, 2), data)
    with pytest.raises(SimplifierError, match="model is already a simplified proxy"):
        SVDSimplifier(rank=2).fit(proxies["svd"], data)


def test_distinct_row_count_matches_numpy_unique_and_merges_signed_zeros():
    rng = np.random.default_rng(0)
    rows = rng.integers(-1, 2, size=(500, 3)).astype(np.float64) * 0.5
    rows[0] = [-0.0, 0.5, 0.0]
    rows[1] = [0.0, 0.5, -0.0]
    assert count_distinct_rows(rows) == len(np.unique(rows, axis=0))
    assert count_distinct_rows(np.array([[1.0, 2.0]])) == 1

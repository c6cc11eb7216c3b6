"""The interaction-basis simplifier (Bushnaq et al. 2024): exactness, invariance, the math, saving, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_illusions.errors import CheckpointError, SimplifierError
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.simplify import IllusionProxyForCausalLM, InteractionBasisSimplifier, build_proxy
from hf_illusions.simplify.interaction_basis import fit_interaction_bases, interaction_basis, jacobian_gram

D_MODEL = 16


@pytest.fixture(scope="module")
def model() -> IllusionForCausalLM:
    torch.manual_seed(0)
    config = IllusionConfig(d_model=D_MODEL, n_head=2, d_mlp=32, n_layer=2, vocab_size=43, n_positions=64)
    return IllusionForCausalLM(config).eval()


@pytest.fixture(scope="module")
def proxy(model, data) -> IllusionProxyForCausalLM:
    return InteractionBasisSimplifier(k=4, layers=[1]).fit(model, data)


def logits(m: IllusionForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(ids, attention_mask=mask).logits


# --- exactness at full k, locality ---


def test_full_k_reproduces_logits_on_padded_batch(model, data, batch):
    ids, mask = batch
    full = InteractionBasisSimplifier(k=D_MODEL).fit(model, data)
    torch.testing.assert_close(logits(full, ids, mask), logits(model, ids, mask), atol=1e-5, rtol=0)


def test_small_k_changes_only_the_chosen_layer_onwards(model, proxy, batch):
    ids, mask = batch
    with torch.no_grad():
        original = model(ids, attention_mask=mask, output_hidden_states=True)
        simplified = proxy(ids, attention_mask=mask, output_hidden_states=True)
    assert torch.equal(simplified.hidden_states[1], original.hidden_states[1])  # input to layer 1
    assert not torch.allclose(simplified.logits, original.logits, atol=1e-3)


def test_plain_model_has_no_residual_simplification_state(model):
    assert all(layer.residual_simplification is None for layer in model.model.layers)
    assert not any("simplification" in key for key in model.state_dict())


# --- the math ---


def test_hand_checkable_linear_case_matches_numpy():
    """3-d activations read by a linear next layer f(x) = W x: every step by hand in numpy."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4, 3)) @ np.array([[2.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 0.2]])
    w = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, 4.0]])
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    gram = jacobian_gram(lambda h: h @ wt.T, xt, torch.ones(5, 4), None, torch.Generator())
    np.testing.assert_allclose(gram.numpy() / 20, w.T @ w, atol=1e-12)  # exact mode: Σ_t WᵀW
    node = interaction_basis(xt.reshape(-1, 3), gram / 20)

    flat = x.reshape(-1, 3)
    centered = flat - flat.mean(axis=0)
    d, u = np.linalg.eigh(centered.T @ centered / len(flat))
    z_to_x = u * np.sqrt(d)  # x − μ = U D^{1/2} z
    sigma, v = np.linalg.eigh(z_to_x.T @ w.T @ w @ z_to_x)
    sigma, v = sigma[::-1], v[:, ::-1]
    expected = np.sqrt(np.clip(sigma, 0, None))[:, None] * (v.T @ (u / np.sqrt(d)).T)
    np.testing.assert_allclose(node.strengths.numpy(), np.clip(sigma, 0, None), atol=1e-10)
    signs = np.sign((node.transform.numpy() * expected).sum(axis=1))
    # row 3 has Σ ≈ 0: √Σ of rounding noise (~1e-8) is clamped to 0 in one and not the other
    np.testing.assert_allclose(node.transform.numpy() * signs[:, None], expected, atol=1e-7)
    assert sigma[-1] < 1e-10  # W has rank 2: one direction does not matter downstream
    np.testing.assert_allclose(node.basis.numpy() @ node.dual.numpy(), np.eye(3), atol=1e-10)


def test_dropped_gram_directions_come_last_and_keep_the_basis_complete():
    torch.manual_seed(0)
    x = torch.randn(50, 2).double() @ torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]).double()
    node = interaction_basis(x, torch.eye(3, dtype=torch.float64))
    assert node.transform.shape == (2, 3)
    assert node.strengths[-1] == 0
    torch.testing.assert_close(node.basis @ node.dual, torch.eye(3, dtype=torch.float64))


def test_basis_and_projection_are_invariant_to_invertible_reparameterization():
    """x' = A x + c read by f'(x') = f(A⁻¹(x' − c)) is the same network: same coordinates, same proxy.

    LayerNorm is not invariant under a general A, so the check runs on a toy next layer (an MLP
    per position plus a linear read of the previous position, standing in for attention) where the
    reparameterization is exact; the random ±1 probes are shared, so even the estimate agrees.
    """
    torch.manual_seed(0)
    d = 4
    w1, w2, w3 = torch.randn(8, d).double(), torch.randn(3, 8).double(), torch.randn(3, d).double()
    a, c = torch.randn(d, d).double() + 2 * torch.eye(d).double(), torch.randn(d).double()
    x = torch.randn(6, 5, d).double() * torch.tensor([3.0, 1.0, 0.5, 0.2]).double()
    mask = torch.ones(6, 5)

    def f(h: torch.Tensor) -> torch.Tensor:
        previous = torch.nn.functional.pad(h, (0, 0, 1, 0))[:, :-1]
        return torch.tanh(h @ w1.T) @ w2.T + previous @ w3.T

    def f_reparameterized(h: torch.Tensor) -> torch.Tensor:
        return f((h - c) @ torch.linalg.inv(a).T)

    x_re = x @ a.T + c
    nodes = []
    for fn, acts in ((f, x), (f_reparameterized, x_re)):
        gram = jacobian_gram(fn, acts, mask, 16, torch.Generator().manual_seed(1))
        nodes.append(interaction_basis(acts.reshape(-1, d), gram / mask.sum()))
    node, node_re = nodes
    torch.testing.assert_close(node.strengths, node_re.strengths)
    coords = (x.reshape(-1, d) - node.mean) @ node.transform.T
    coords_re = (x_re.reshape(-1, d) - node_re.mean) @ node_re.transform.T
    signs = torch.sign((coords * coords_re).sum(0))
    torch.testing.assert_close(coords * signs, coords_re)
    for k in (1, 2, 3):
        projector = node.basis[:, :k] @ node.dual[:k]
        projector_re = node_re.basis[:, :k] @ node_re.dual[:k]
        torch.testing.assert_close(projector_re, a @ projector @ torch.linalg.inv(a))


def test_fit_on_the_model_matches_full_jacobians_computed_directly(model):
    """Exact mode on one sentence vs ``autograd.functional.jacobian`` of the whole chain.

    Node 2 (final residual) reads centered logits; node 1 reads node 2's coordinates through
    block 1, with every output position's dependence on every input position (attention).
    """
    sequence = [1, 3, 5, 25, 23, 2]
    bases = fit_interaction_bases(model, [sequence], lowest_layer=1, n_random_projections=None)
    n = len(sequence)
    causal = torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]
    # the residual streams by hand, not from ``hidden_states`` (whose last entry is post-norm)
    with torch.no_grad():
        ids = torch.tensor([sequence])
        streams = [model.model.embed_tokens(ids) + model.model.embed_positions(torch.arange(n)[None])]
        for block in model.model.layers:
            streams.append(block(streams[-1], attention_mask=causal))
        final = model.lm_head(model.model.norm(streams[-1]))
        torch.testing.assert_close(final, model(ids).logits)  # the hand-built chain is the model

    def centered_logits(x: torch.Tensor) -> torch.Tensor:
        out = model.lm_head(model.model.norm(x))
        return out - out.mean(-1, keepdim=True)

    def next_coordinates(x: torch.Tensor) -> torch.Tensor:
        node = bases[2]
        y = model.model.layers[1](x[None], attention_mask=causal)[0]
        return (y.double() - node.mean) @ node.transform.T

    for layer, fn in ((2, centered_logits), (1, next_coordinates)):
        x = streams[layer][0]
        jac = torch.autograd.functional.jacobian(fn, x).double()  # (out pos, out, in pos, d)
        gram = torch.einsum("aobi,aobj->ij", jac, jac) / n
        expected = interaction_basis(x, gram)
        torch.testing.assert_close(bases[layer].strengths, expected.strengths, rtol=1e-4, atol=1e-8)
        for k in (1, 3):
            torch.testing.assert_close(
                bases[layer].basis[:, :k] @ bases[layer].dual[:k],
                expected.basis[:, :k] @ expected.dual[:k],
                rtol=0,
                atol=1e-3,
            )


def test_random_projections_estimate_the_exact_jacobian_gram():
    torch.manual_seed(0)
    w = torch.randn(5, 3).double()
    x, mask = torch.randn(4, 6, 3).double(), torch.ones(4, 6)
    exact = jacobian_gram(lambda h: h @ w.T, x, mask, None, torch.Generator())
    estimate = jacobian_gram(lambda h: h @ w.T, x, mask, 400, torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate, exact, rtol=0.15, atol=0.15 * exact.abs().max().item())


# --- save / load ---


def test_proxy_round_trips_through_auto_model(proxy, batch, tmp_path):
    proxy.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["simplifier"] == "interaction_basis"
    assert saved["simplified_residuals"] == [1]
    assert saved["simplifier_settings"]["k"] == 4
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is IllusionProxyForCausalLM
    buffers = {k: v for k, v in proxy.state_dict().items() if "residual_simplification" in k}
    assert len(buffers) == 4
    for key, value in buffers.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ids, mask = batch
    assert torch.equal(logits(loaded, ids, mask), logits(proxy, ids, mask))


def test_loading_without_the_fitted_basis_fails(proxy, tmp_path):
    proxy.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.1.residual_simplification.basis"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"residual_simplification\.basis"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


# --- errors ---


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: InteractionBasisSimplifier(k=0), "k must be between 1 and d_model"),
        (lambda: InteractionBasisSimplifier(k=D_MODEL + 1), f"k must be between 1 and d_model={D_MODEL}"),
        (lambda: InteractionBasisSimplifier(k=2, layers=[2]), r"layers \[2\] out of range.*n_layer=2"),
        (lambda: InteractionBasisSimplifier(k=2, n_random_projections=0), "n_random_projections must be"),
    ],
)
def test_bad_settings_raise_simplifier_error(model, data, make, match):
    with pytest.raises(SimplifierError, match=match):
        make().fit(model, data)


def test_proxy_config_keeps_residual_and_attention_simplifiers_apart(model):
    with pytest.raises(SimplifierError, match="give it only simplified_residuals"):
        build_proxy(model, "interaction_basis", {0: [0]}, {"k": 2}, {})
    with pytest.raises(SimplifierError, match="give it only simplified_heads"):
        build_proxy(model, "onehot", {}, {}, {}, residual_layers=[0])
    with pytest.raises(SimplifierError, match="simplified_residuals layers"):
        build_proxy(model, "interaction_basis", {}, {"k": 2}, {}, residual_layers=[5])


# --- in the reproduction (opt-in) ---


def test_reproduction_sweeps_interaction_basis_when_asked(tmp_path, tiny_dyck_dir):
    from hf_illusions.reproduction import proxy_specs, reproduce_dyck

    assert not any(s.family == "interaction_basis" for s in proxy_specs(8))  # default unchanged
    torch.manual_seed(0)
    IllusionForCausalLM(IllusionConfig(d_model=D_MODEL, n_head=1, d_mlp=32, n_layer=2)).save_pretrained(
        tmp_path / "model"
    )
    readme = reproduce_dyck(
        tmp_path / "model",
        tiny_dyck_dir,
        tmp_path / "report",
        data_config="tiny",
        svd_ranks=(),
        kmeans_ks=(),
        onehot=False,
        interaction_basis_ks=(2, D_MODEL),
        n_fit_sequences=20,
        max_eval_sentences=16,
        progress=False,
    )
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {"ib_k2", f"ib_k{D_MODEL}"} <= set(results["proxies"])
    iid = results["splits"]["test_iid"][f"ib_k{D_MODEL}"]["close"]
    assert iid["agreement"] == 1.0  # full k is the model
    assert "interaction basis" in readme.read_text()


def test_a_sweep_over_k_reuses_the_bases_until_the_weights_change(model, data):
    from hf_illusions.simplify import interaction_basis as ib

    def basis(proxy, layer=1):
        return proxy.state_dict()[f"model.layers.{layer}.residual_simplification.basis"]

    small = InteractionBasisSimplifier(k=2, layers=[1], n_sequences=8).fit(model, data)
    cached = next(iter(ib._BASES_CACHE[model].values()))
    large = InteractionBasisSimplifier(k=4, layers=[1], n_sequences=8).fit(model, data)
    assert next(iter(ib._BASES_CACHE[model].values())) is cached  # same fit reused
    torch.testing.assert_close(basis(large)[:, :2], basis(small), rtol=0, atol=0)
    with torch.no_grad():  # an in-place weight update must invalidate the cached bases
        model.model.layers[1].mlp.up_proj.weight.mul_(2)
    try:
        changed = InteractionBasisSimplifier(k=2, layers=[1], n_sequences=8).fit(model, data)
        assert next(iter(ib._BASES_CACHE[model].values())) is not cached
        assert not torch.equal(basis(changed), basis(small))
    finally:
        with torch.no_grad():
            model.model.layers[1].mlp.up_proj.weight.div_(2)

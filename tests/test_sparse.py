"""Weight sparsity (the projection and the training flags) and circuit pruning by learned node masks."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_illusions.data.batching import pad_batch
from hf_illusions.data.hub_folder import load_folder
from hf_illusions.errors import CheckpointError, SettingsError, SimplifierError
from hf_illusions.evaluation import evaluate_models
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.simplify import SVDSimplifier
from hf_illusions.sparse import (
    IllusionCircuitForCausalLM,
    SparseCircuitPruner,
    build_circuit,
    circuit_size,
    keep_fraction,
    next_token_loss,
    sparse_matrices,
    sparsify_,
    sparsify_model_,
    weight_density,
)
from hf_illusions.sparse.circuit import _loss_sum, fitting_batches
from hf_illusions.tasks.dyck import DyckTask
from hf_illusions.train import main as train_main

# --------------------------------------------------------------------------- weights.py: the projection


def test_sparsify_keeps_exactly_the_largest_ceil_keep_numel_entries():
    torch.manual_seed(0)
    weight = torch.randn(8, 32)
    original = weight.clone()
    keep = 0.3
    n_keep = math.ceil(keep * weight.numel())
    top = original.abs().flatten().topk(n_keep).indices
    in_top = torch.zeros(weight.numel(), dtype=torch.bool)
    in_top[top] = True
    assert in_top.view_as(weight).any(dim=1).all()  # the row floor of 1 does not bind here
    mask = sparsify_(weight, keep, min_per_row=1)
    assert int(mask.sum()) == int((weight != 0).sum()) == n_keep
    assert torch.equal(mask.flatten(), in_top)
    assert original.abs()[mask].min() > original.abs()[~mask].max()  # largest magnitudes kept
    assert torch.equal(weight[mask], original[mask])  # kept entries are untouched
    assert (weight[~mask] == 0).all()


def test_row_floor_keeps_each_rows_largest_entries():
    torch.manual_seed(1)
    weight = torch.randn(6, 20)
    weight[2] *= 1e-3  # this row would lose every entry to the global cut
    original = weight.clone()
    mask = sparsify_(weight, 0.1, min_per_row=3)
    per_row = mask.sum(dim=1)
    assert (per_row >= 3).all()
    assert int(per_row[2]) == 3
    assert torch.equal(
        mask[2], torch.zeros(20, dtype=torch.bool).index_fill_(0, original[2].abs().topk(3).indices, True)
    )
    assert int(mask.sum()) <= math.ceil(0.1 * weight.numel()) + 3 * weight.shape[0]


def test_sparsify_is_idempotent_and_deterministic():
    torch.manual_seed(2)
    weight = torch.randn(16, 16)
    a, b = weight.clone(), weight.clone()
    mask_a = sparsify_(a, 0.25, min_per_row=2)
    mask_b = sparsify_(b, 0.25, min_per_row=2)
    assert torch.equal(mask_a, mask_b) and torch.equal(a, b)
    again = a.clone()
    assert torch.equal(sparsify_(again, 0.25, min_per_row=2), mask_a)
    assert torch.equal(again, a)


def test_sparsify_rejects_bad_inputs():
    with pytest.raises(SettingsError, match="2-D weight matrix"):
        sparsify_(torch.ones(4), 0.5)
    with pytest.raises(SettingsError, match=r"keep must be in \(0, 1\]"):
        sparsify_(torch.ones(2, 2), 0.0)


def test_keep_fraction_anneals_linearly_between_its_endpoints():
    assert keep_fraction(0, 0.9, 100) == 1.0
    assert keep_fraction(50, 0.9, 100) == pytest.approx(0.55)
    assert keep_fraction(100, 0.9, 100) == pytest.approx(0.1)
    assert keep_fraction(10_000, 0.9, 100) == pytest.approx(0.1)
    assert keep_fraction(0, 0.9, 0) == pytest.approx(0.1)  # no anneal: sparse from the first step
    with pytest.raises(SettingsError, match="target_sparsity"):
        keep_fraction(0, 1.0, 10)


def test_sparsify_model_touches_only_block_matrices(tiny_model):
    model = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    density = sparsify_model_(model, 0.25, min_per_row=1)
    assert set(density) == set(sparse_matrices(model)) and len(density) == 12  # 6 per layer
    for name, value in model.state_dict().items():
        if name in density:
            assert density[name] == pytest.approx(0.25, abs=0.02), name
        else:
            assert torch.equal(value, before[name]), name  # embeddings, norms, biases, head
    assert weight_density(model) == pytest.approx(0.25, abs=0.02)


# --------------------------------------------------------------------------- weights.py: in training


def sparse_train_args(data_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    # constant learning rate after warmup and a fixed anneal length: nothing depends on max_steps,
    # so a short run continued to 2N steps must equal a straight 2N-step run
    return [
        "--dataset_dir", str(data_dir), "--data_config", "tiny", "--output_dir", str(out),
        "--max_steps", str(steps), "--d_model", "16", "--d_mlp", "32", "--n_positions", "128",
        "--max_batch_tokens", "1024", "--warmup_steps", "1", "--min_lr_ratio", "1", "--eval_every", "1000",
        "--save_every", "4", "--log_every", "4", "--eval_sentences", "4", "--report_to", "none",
        "--weight_sparsity", "0.8", "--sparsity_anneal_steps", "4", "--min_nonzero_per_row", "1", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sparse_runs(tiny_dyck_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sparse-train")
    straight = Path(train_main(sparse_train_args(tiny_dyck_dir, root / "straight", 8)))
    train_main(sparse_train_args(tiny_dyck_dir, root / "resumed", 4))
    resumed = Path(
        train_main(
            sparse_train_args(tiny_dyck_dir, root / "resumed", 8, "--resume_from_checkpoint", "latest")
        )
    )
    return {"straight": straight, "resumed": resumed, "run": root / "straight"}


def test_weight_sparse_training_reaches_the_target_density(sparse_runs):
    model = AutoModelForCausalLM.from_pretrained(sparse_runs["straight"])
    density = weight_density(model)
    # ceil(0.2 · numel) per matrix plus at most one floor entry per row that the cut missed
    assert 0.2 <= density <= 0.23, density
    for name, param in sparse_matrices(model).items():
        assert (param != 0).sum(dim=1).min() >= 1, name  # the row floor holds
    logged = [json.loads(line) for line in (sparse_runs["run"] / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1].get("weight_density", logged[-2].get("weight_density")) == pytest.approx(density)


def test_resuming_a_weight_sparse_run_is_bitwise_equal_to_a_straight_run(sparse_runs):
    a = load_file(sparse_runs["straight"] / "model.safetensors")
    b = load_file(sparse_runs["resumed"] / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------------------- circuits


@pytest.fixture(scope="module")
def fit_data(tiny_dyck_dir) -> list[list[int]]:
    return load_folder(tiny_dyck_dir)["train"].select(range(48))["input_ids"]


@pytest.fixture(scope="module")
def trained(fit_data) -> IllusionForCausalLM:
    """A tiny model trained for a few seconds, so that its nodes matter unequally."""
    torch.manual_seed(0)
    config = IllusionConfig(d_model=16, n_head=2, d_mlp=32, n_layer=2, vocab_size=43, n_positions=128)
    model = IllusionForCausalLM(config)
    ids, mask = pad_batch(fit_data)
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def losses(trained, fit_data) -> dict[str, float]:
    batches, n_targets = fitting_batches(fit_data, torch.device("cpu"), 64, 2048)
    return {"full": next_token_loss(trained, batches, n_targets)}


@pytest.fixture(scope="module")
def circuit(trained, fit_data, losses) -> IllusionCircuitForCausalLM:
    return SparseCircuitPruner(target_loss=losses["full"] + 0.1, steps=40).fit(trained, fit_data)


def masks(model: IllusionCircuitForCausalLM) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith(".mask")}


def logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def test_plain_model_has_no_neuron_simplification_state(trained):
    assert all(layer.mlp.neuron_simplification is None for layer in trained.model.layers)
    assert not any("simplification" in key for key in trained.state_dict())


def test_all_kept_circuit_reproduces_the_model_exactly(trained, circuit, batch):
    ids, mask = batch
    full = copy.deepcopy(circuit)
    for key, value in masks(full).items():
        full.get_buffer(key).fill_(True)
        assert value.dtype == torch.bool
    assert any(v.abs().sum() > 0 for k, v in full.state_dict().items() if k.endswith(".mean"))
    assert torch.equal(logits(full, ids, mask), logits(trained, ids, mask))
    fresh = build_circuit(trained)  # all kept, zero means
    assert torch.equal(logits(fresh, ids, mask), logits(trained, ids, mask))


def test_gated_forward_used_in_fitting_equals_the_hard_mask_forward(circuit, fit_data):
    """The fit's gates (x·g + mean·(1 − g) with g exactly 0/1, carrying surrogate gradients) evaluate
    the hard circuit value for value, so every training step's loss is the circuit's exact loss."""
    batches, n_targets = fitting_batches(fit_data, torch.device("cpu"), 64, 2048)
    hard, gated = copy.deepcopy(circuit), copy.deepcopy(circuit)
    logits_ = torch.randn(160, generator=torch.Generator().manual_seed(0), requires_grad=True)
    surrogate = torch.sigmoid(logits_)
    gates = (logits_.detach() > 0).float() + (surrogate - surrogate.detach())
    start = 0
    for node, same in zip(gated.node_masks().values(), hard.node_masks().values(), strict=True):
        part = gates[start : start + node.mask.numel()].view(node.mask.shape)
        node.gate = part
        same.mask.copy_(part.detach() > 0)  # the same mask, through the `where` path
        start += node.mask.numel()
    assert 0 < int(sum(m.mask.sum() for m in hard.node_masks().values())) < 160
    assert next_token_loss(gated, batches, n_targets) == next_token_loss(hard, batches, n_targets)
    loss = sum(_loss_sum(gated, ids, mask) for ids, mask in batches)
    loss.backward()
    assert logits_.grad is not None and logits_.grad.abs().sum() > 0  # surrogate gradients flow


def test_means_are_the_original_activations_averaged_over_real_positions(trained, circuit, fit_data):
    ids, mask = pad_batch(fit_data)
    with torch.no_grad():
        streams = trained(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        layer = trained.model.layers[1]
        values = layer.self_attn.v_proj(layer.attn_norm(streams[1]))[mask.bool()]
    expected = values.double().mean(dim=0).float().view(2, 8)
    torch.testing.assert_close(circuit.model.layers[1].self_attn.simplification.value.mean, expected)


@pytest.mark.parametrize(
    ("kind", "channel"), [("value", 5), ("query", 11), ("key", 0), ("mlp", 7)], ids=["v", "q", "k", "mlp"]
)
def test_ablating_one_node_equals_replacing_its_channel_by_its_mean(trained, circuit, batch, kind, channel):
    """Manually: a channel that is constantly its mean is a linear unit with zero weights and bias = mean."""
    ids, mask = batch
    one = copy.deepcopy(circuit)
    for key in masks(one):
        one.get_buffer(key).fill_(True)
    layer = 1
    if kind == "mlp":
        node = one.model.layers[layer].mlp.neuron_simplification
    else:
        node = getattr(one.model.layers[layer].self_attn.simplification, kind)
    node.mask.view(-1)[channel] = False
    mean = float(node.mean.view(-1)[channel])

    manual = copy.deepcopy(trained)
    with torch.no_grad():
        if kind == "mlp":
            down = manual.model.layers[layer].mlp.down_proj
            down.bias += down.weight[:, channel] * mean
            down.weight[:, channel] = 0
        else:
            proj = getattr(manual.model.layers[layer].self_attn, f"{kind[0]}_proj")
            proj.weight[channel] = 0
            proj.bias[channel] = mean
    ablated, expected = logits(one, ids, mask), logits(manual, ids, mask)
    torch.testing.assert_close(ablated, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(ablated, logits(trained, ids, mask), atol=1e-5)  # the node did matter


def test_pruned_circuit_meets_the_target_with_fewer_nodes(circuit, losses, fit_data):
    target = losses["full"] + 0.1
    batches, n_targets = fitting_batches(fit_data, torch.device("cpu"), 64, 2048)
    loss = next_token_loss(circuit, batches, n_targets)
    assert loss == circuit.config.circuit_loss
    assert loss <= target
    size = circuit.config.circuit_size
    assert size == circuit_size(circuit)
    total = 2 * (3 * 16 + 32)
    assert size["total_nodes"] == total
    assert 0 < size["kept_nodes"] < total
    assert size["kept_nodes"] == sum(int(m.sum()) for m in masks(circuit).values())
    assert size["kept_edges"] < size["total_edges"]
    assert circuit.config.full_loss == pytest.approx(losses["full"])
    assert circuit.config.simplifier_settings["target_loss"] == target


def test_tighter_target_keeps_at_least_as_many_nodes(trained, fit_data, losses, circuit):
    tight = SparseCircuitPruner(target_loss=losses["full"] + 0.01, steps=40).fit(trained, fit_data)
    assert tight.config.circuit_loss <= losses["full"] + 0.01
    assert tight.config.circuit_size["kept_nodes"] >= circuit.config.circuit_size["kept_nodes"]


def test_same_seed_same_masks(trained, fit_data, losses, circuit):
    again = SparseCircuitPruner(target_loss=losses["full"] + 0.1, steps=40).fit(trained, fit_data)
    first, second = masks(circuit), masks(again)
    assert first.keys() == second.keys() and len(first) == 8  # q, k, v, mlp × 2 layers
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_circuit_size_counts_edges_of_kept_nodes(trained, circuit):
    plain = circuit_size(trained)
    assert plain["kept_nodes"] == plain["total_nodes"] == 160
    assert plain["total_edges"] == sum(p.numel() for p in sparse_matrices(trained).values())
    sparse = copy.deepcopy(trained)
    sparsify_model_(sparse, 0.2, min_per_row=1)
    assert circuit_size(sparse)["total_edges"] == sum(
        int((p != 0).sum()) for p in sparse_matrices(sparse).values()
    )
    # by hand for layer 0's value channels and MLP neurons
    attention, mlp = circuit.model.layers[0].self_attn, circuit.model.layers[0].mlp
    kept_v = attention.simplification.value.mask.flatten()
    kept_n = mlp.neuron_simplification.mask
    v_edges = (attention.v_proj.weight[kept_v] != 0).sum() + (attention.o_proj.weight[:, kept_v] != 0).sum()
    n_edges = (mlp.up_proj.weight[kept_n] != 0).sum() + (mlp.down_proj.weight[:, kept_n] != 0).sum()
    layer0 = circuit.config.circuit_size["by_layer"]["0"]
    by_kind = circuit_size(circuit)["by_kind"]
    assert int(v_edges) == 32 * int(kept_v.sum())  # dense: 16 reads + 16 writes each
    assert int(n_edges) == 32 * int(kept_n.sum())
    assert layer0["kept_nodes"] == sum(
        int(getattr(attention.simplification, k).mask.sum()) for k in ("query", "key", "value")
    ) + int(kept_n.sum())
    assert sum(group["kept_edges"] for group in by_kind.values()) == circuit.config.circuit_size["kept_edges"]


def test_circuit_round_trips_through_auto_model(circuit, batch, tmp_path):
    circuit.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "illusion-circuit"
    assert saved["circuit_size"] == circuit.config.circuit_size
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is IllusionCircuitForCausalLM
    for key, value in circuit.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ids, mask = batch
    assert torch.equal(logits(loaded, ids, mask), logits(circuit, ids, mask))


@pytest.mark.parametrize(
    "key",
    [
        "model.layers.1.mlp.neuron_simplification.mask",
        "model.layers.0.self_attn.simplification.value.mean",
    ],
)
def test_loading_without_the_node_buffers_fails(circuit, tmp_path, key):
    circuit.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state[key]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_circuit_runs_in_the_evaluation_loop(trained, circuit, fit_data):
    full = build_circuit(trained)
    sequences = fit_data[:16]
    results = evaluate_models(trained, sequences, DyckTask(), proxies={"circuit": circuit, "full": full})
    assert results["full"]["close"]["agreement"] == 1.0
    assert results["full"]["close"]["jsd"] == pytest.approx(0.0, abs=1e-6)
    assert set(results["circuit"]["attention_jsd"]) == {"0", "1"}
    assert 0.0 <= results["circuit"]["close"]["agreement"] <= 1.0


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"target_loss": 0.0}, "target_loss must be a finite number > 0"),
        ({"target_loss": -1.0}, "target_loss must be a finite number > 0"),
        ({"target_loss": float("nan")}, "target_loss must be a finite number > 0"),
        ({"target_loss": float("inf")}, "target_loss must be a finite number > 0"),
        ({"target_loss": "3"}, "target_loss must be a finite number > 0"),
        ({"target_loss": 3.0, "n_sequences": 0}, "n_sequences must be >= 1"),
        ({"target_loss": 3.0, "steps": 0}, "steps must be an integer >= 1"),
        ({"target_loss": 3.0, "steps": 2.5}, "steps must be an integer >= 1"),
        ({"target_loss": 3.0, "lr": 0.0}, "lr must be a finite number > 0"),
        ({"target_loss": 3.0, "init_logit": -1.0}, "init_logit must be a finite number > 0"),
        ({"target_loss": 3.0, "penalty_rate": float("inf")}, "penalty_rate must be a finite number > 0"),
    ],
)
def test_bad_settings_raise_simplifier_error(settings, match):
    with pytest.raises(SimplifierError, match=match):
        SparseCircuitPruner(**settings)


def test_unreachable_target_names_the_full_models_loss(trained, fit_data, losses):
    with pytest.raises(SimplifierError, match=rf"below the full model's loss {losses['full']:.6g}"):
        SparseCircuitPruner(target_loss=losses["full"] - 0.05, steps=1).fit(trained, fit_data)


def test_bad_model_or_data_raise_simplifier_error(trained, fit_data, circuit):
    pruner = SparseCircuitPruner(target_loss=10.0, steps=1)
    with pytest.raises(SimplifierError, match="already a simplified proxy"):
        pruner.fit(circuit, fit_data)
    proxy = SVDSimplifier(rank=2, n_sequences=4).fit(trained, fit_data)
    with pytest.raises(SimplifierError, match="already a simplified proxy"):
        pruner.fit(proxy, fit_data)
    with pytest.raises(SimplifierError, match="data is required"):
        pruner.fit(trained)
    with pytest.raises(SimplifierError, match="no next token"):
        pruner.fit(trained, [[1], [1]])


def test_settings_are_json_safe_and_rebuild_the_pruner(losses):
    pruner = SparseCircuitPruner(target_loss=losses["full"] + 0.1, steps=40)
    settings = json.loads(json.dumps(pruner.settings()))
    assert SparseCircuitPruner(**settings).settings() == pruner.settings()
    assert SparseCircuitPruner.name == "sparse_circuit" and SparseCircuitPruner.needs_data


def test_reproduction_adds_circuits_with_their_size_to_results_and_report(tmp_path, tiny_dyck_dir):
    from hf_illusions.reproduction import reproduce_dyck

    torch.manual_seed(0)
    model = IllusionForCausalLM(IllusionConfig(d_model=16, n_head=1, d_mlp=32, n_layer=2))
    model.save_pretrained(tmp_path / "model")
    readme = reproduce_dyck(
        tmp_path / "model", tiny_dyck_dir, tmp_path / "report", data_config="tiny", svd_ranks=(4,),
        n_fit_sequences=24, max_eval_sentences=16, progress=False, circuit_slacks=(0.05, 0.5),
        simplifiers=["svd", "sparse_circuit"],
    )  # fmt: skip
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["proxies"]) == {"svd_r4", "circuit_0p05", "circuit_0p5"}
    loose, tight = (results["proxies"][n]["fitted"] for n in ("circuit_0p5", "circuit_0p05"))
    for fitted, slack in ((loose, 0.5), (tight, 0.05)):
        assert fitted["circuit_loss"] <= fitted["full_loss"] + slack + 1e-6
        assert fitted["circuit_size"]["kept_nodes"] <= fitted["circuit_size"]["total_nodes"]
    assert loose["circuit_size"]["kept_nodes"] <= tight["circuit_size"]["kept_nodes"]
    for split in results["splits"].values():
        assert 0 <= split["circuit_0p5"]["close"]["agreement"] <= 1
    text = readme.read_text()
    assert "## Pruned circuits" in text and "| `circuit_0p5` |" in text
    with pytest.raises(SettingsError, match="simplifiers must be a non-empty subset"):
        reproduce_dyck(tmp_path / "model", tiny_dyck_dir, tmp_path / "r2", simplifiers=["lasso"])


def test_with_slack_targets_the_models_own_loss_plus_slack(tiny_dyck_dir):
    from hf_illusions.sparse import SparseCircuitPruner

    torch.manual_seed(0)
    model = IllusionForCausalLM(IllusionConfig(d_model=16, n_head=1, d_mlp=32, n_layer=2)).eval()
    rows = load_folder(tiny_dyck_dir)["train"]
    probe = SparseCircuitPruner(target_loss=1.0, n_sequences=16)
    base = probe.model_loss(model, rows)
    pruner = SparseCircuitPruner.with_slack(model, rows, 0.25, n_sequences=16, steps=5)
    assert base + 0.25 <= pruner.target_loss <= base + 0.25 + 1e-6
    assert pruner.settings()["steps"] == 5 and pruner.n_sequences == 16
    circuit = pruner.fit(model, rows)
    assert circuit.config.full_loss == pytest.approx(base, abs=1e-9)
    for slack in (0, -1, math.nan):
        with pytest.raises(SimplifierError, match="slack must be a finite number > 0"):
            SparseCircuitPruner.with_slack(model, rows, slack)


def test_cli_reproduce_with_only_the_new_families(tmp_path, tiny_dyck_dir):
    from hf_illusions.cli import main

    torch.manual_seed(0)
    IllusionForCausalLM(IllusionConfig(d_model=16, n_head=1, d_mlp=32, n_layer=2)).save_pretrained(
        tmp_path / "m"
    )
    argv = ["reproduce", "dyck", "--model", str(tmp_path / "m"), "--data", str(tiny_dyck_dir)]
    argv += ["--data_config", "tiny", "--out", str(tmp_path / "rep"), "--quick"]
    assert main([*argv, "--simplifiers", "interaction_basis,sparse_circuit"]) == 0
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert {r["family"] for r in results["proxies"].values()} == {"interaction_basis", "sparse_circuit"}
    assert "## Pruned circuits" in (tmp_path / "rep" / "README.md").read_text()

"""A Dyck model of transformers' own Llama class goes through the same reproduction as ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_illusions.errors import SimplifierError
from hf_illusions.reproduction import reproduce_dyck
from hf_illusions.train import main as train_main


@pytest.fixture(scope="module")
def llama_dyck(tiny_dyck_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llama") / "run"
    argv = [
        "--architecture", "llama", "--dataset_dir", str(tiny_dyck_dir), "--data_config", "tiny",
        "--output_dir", str(out), "--max_steps", "10", "--d_model", "16", "--d_mlp", "32",
        "--n_positions", "128", "--max_batch_tokens", "2048", "--warmup_steps", "2",
        "--eval_every", "1000", "--save_every", "10", "--log_every", "5", "--eval_sentences", "8",
        "--report_to", "none",
    ]  # fmt: skip
    return Path(train_main(argv))


def test_reproduction_of_a_llama_dyck_model_leaves_out_own_model_families_and_says_so(
    llama_dyck, tiny_dyck_dir, tmp_path
):
    readme = reproduce_dyck(
        llama_dyck, tiny_dyck_dir, tmp_path / "report", data_config="tiny", svd_ranks=(2, 64),
        kmeans_ks=(2,), interaction_basis_ks=(4,), circuit_slacks=(0.1,), n_fit_sequences=30,
        max_eval_sentences=8, progress=False,
    )  # fmt: skip
    results = json.loads((readme.parent / "results.json").read_text())
    proxies = set(results["proxies"])
    # ranks are capped at the Llama's head width (16 here): full rank is svd_r16
    assert {"svd_r2", "svd_r16", "kmeans_k2", "onehot", "onehot_l0", "onehot_l1"} <= proxies
    assert not any(p.startswith(("ib_", "circuit_")) for p in proxies), proxies
    skipped = results["evaluation"]["skipped_families"]
    assert set(skipped) == {"interaction_basis", "sparse_circuit"}
    from hf_illusions.simplify import InteractionBasisSimplifier
    from hf_illusions.sparse.circuit import SparseCircuitPruner

    assert skipped == {  # the reason each family gives when asked directly
        "interaction_basis": InteractionBasisSimplifier.requires_own_model,
        "sparse_circuit": SparseCircuitPruner.requires_own_model,
    }
    # a full-rank (centered, all directions) SVD proxy of a Llama is the model itself
    full = results["splits"]["test_iid"]["svd_r16"]
    assert full["close"]["jsd"] < 1e-6, full["close"]
    assert full["close"]["agreement"] == 1.0
    # the original ran eager attention, so attention metrics exist: per layer, ~identical at full rank
    assert set(full["attention_jsd"]) == {"0", "1"}, full
    assert max(full["attention_jsd"].values()) < 1e-6
    low = results["splits"]["test_iid"]["onehot"]
    assert min(low["attention_jsd"].values()) > 1e-3  # and a real simplification moves attention


def test_asking_a_llama_for_an_own_model_family_fails_clearly(llama_dyck, tiny_dyck_dir, tmp_path):
    with pytest.raises(
        SimplifierError, match=r"works only on IllusionForCausalLM models, got LlamaForCausalLM"
    ):
        reproduce_dyck(
            llama_dyck, tiny_dyck_dir, tmp_path / "report", data_config="tiny", interaction_basis_ks=(4,),
            simplifiers=["interaction_basis"], n_fit_sequences=30, max_eval_sentences=8, progress=False,
        )  # fmt: skip

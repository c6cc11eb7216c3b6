"""The per-sentence analysis behind the Space: same numbers as the evaluation loop, clear errors.

A tiny random model is enough: the contract (agreement with :func:`evaluate_models`, proxies equal
to fitting the simplifier directly, validation of input) does not depend on training.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hf_illusions.analysis import IllusionExplorer, ProxyChoice, analyze_sentence
from hf_illusions.errors import DyckError, SimplifierError
from hf_illusions.evaluation import evaluate_models

BANK = {"svd_ranks": (1, 8), "kmeans_ks": (2, 4), "n_fit_sequences": 50}
CHOICES = [
    ProxyChoice("svd", 1),
    ProxyChoice("svd", 1, (1,)),
    ProxyChoice("kmeans", 2, (0,)),
    ProxyChoice("kmeans", 4),
    ProxyChoice("onehot"),
]


@pytest.fixture(scope="module")
def explorer(tiny_dyck_dir):
    """A random 2-layer, 2-head model (d_head 8) with every setting of BANK fitted."""
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM

    torch.manual_seed(0)
    config = IllusionConfig(d_model=16, n_head=2, d_mlp=32, n_layer=2, vocab_size=43, n_positions=128)
    return IllusionExplorer(IllusionForCausalLM(config), load_folder(tiny_dyck_dir), **BANK)


@pytest.fixture(scope="module")
def deep_sentence(explorer) -> str:
    """A sentence deeper than training, so it has long-distance closes."""
    return explorer.sample("test_unseen_depth", random.Random(0))


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.name)
def test_sentence_numbers_equal_the_evaluation_loop(explorer, deep_sentence, choice):
    analysis = explorer.analyze(deep_sentence, choice)
    proxy = explorer.bank.proxy(choice)
    loop = evaluate_models(explorer.model, [analysis.input_ids], explorer.task, {"p": proxy})
    assert analysis.metrics["long_distance"]["n"] > 0
    for group in ("all", "close", "long_distance"):
        ours, theirs = analysis.metrics[group], loop["p"][group]
        assert ours["n"] == theirs["n"]
        assert ours["jsd"] == pytest.approx(theirs["jsd"], abs=1e-7)
        assert ours["agreement"] == pytest.approx(theirs["agreement"])
        assert ours["agreement_full"] == pytest.approx(theirs["agreement_full"])
    for group in ("close", "long_distance"):
        assert analysis.metrics[group]["accuracy_proxy"] == pytest.approx(loop["p"][group]["accuracy"])
        assert analysis.metrics[group]["accuracy_original"] == pytest.approx(
            loop["original"][group]["accuracy"]
        )
    for layer, value in analysis.attention_jsd.items():
        assert value == pytest.approx(loop["p"]["attention_jsd"][str(layer)], abs=1e-7)


@pytest.mark.parametrize("choice", [ProxyChoice("svd", 1, (1,)), ProxyChoice("kmeans", 4, (0,))], ids=str)
def test_bank_proxies_equal_fitting_the_simplifier_directly(explorer, tiny_dyck_dir, choice):
    from hf_illusions.data.hub_folder import load_folder
    from hf_illusions.simplify import make_simplifier

    settings = {"rank": choice.setting} if choice.method == "svd" else {"k": choice.setting}
    simplifier = make_simplifier(
        choice.method, layers=list(choice.layers), n_sequences=BANK["n_fit_sequences"], **settings
    )
    direct = simplifier.fit(explorer.model, load_folder(tiny_dyck_dir)["train"]).state_dict()
    banked = explorer.bank.proxy(choice).state_dict()
    assert direct.keys() == banked.keys()
    for key in direct:
        assert torch.equal(direct[key], banked[key]), key


def test_disagreements_are_the_positions_where_top_predictions_differ(explorer, deep_sentence):
    analysis = explorer.analyze(deep_sentence, ProxyChoice("onehot"))
    n = analysis.metrics["all"]["n"]
    assert n == len(analysis.predictions) == len(analysis.tokens) - 1
    assert len(analysis.disagreements) == round(n * (1 - analysis.metrics["all"]["agreement_full"]))
    for p in analysis.predictions:
        assert (p.position in analysis.disagreements) == (p.original != p.proxy)
        assert p.target == analysis.tokens[p.position + 1] and p.context == analysis.tokens[p.position]
        assert (p.original_close is not None) == p.is_close == p.target.endswith(")")


def test_full_rank_svd_proxy_is_the_model(explorer, deep_sentence):
    analysis = explorer.analyze(deep_sentence, ProxyChoice("svd", 8))  # d_head = 16 / 2 heads
    assert analysis.metrics["all"]["jsd"] < 1e-9 and analysis.disagreements == []
    for original, proxy in analysis.attentions.values():
        np.testing.assert_allclose(original, proxy, atol=1e-5)


def test_unsimplified_layers_before_the_simplified_one_are_untouched(explorer, deep_sentence):
    analysis = explorer.analyze(deep_sentence, ProxyChoice("kmeans", 2, (1,)))
    original, proxy = analysis.attentions[0]
    np.testing.assert_array_equal(original, proxy)
    assert analysis.attention_jsd[0] == 0.0 and analysis.attention_jsd[1] > 0


def test_analysis_works_on_a_proxy_fitted_elsewhere(explorer, deep_sentence):
    """analyze_sentence is a plain function of (model, proxy, sentence)."""
    proxy = explorer.bank.proxy(ProxyChoice("svd", 1))
    analysis = analyze_sentence(explorer.model, proxy, deep_sentence, proxy_name="mine")
    assert analysis.proxy_name == "mine" and analysis.tokens[0] == "<bos>" and analysis.tokens[-1] == "<eos>"


@pytest.mark.parametrize(
    ("sentence", "message"),
    [
        ("(a b)", "closes type 'b' but the innermost open bracket is type 'a'"),
        ("(a (b b)", "1 bracket(s) left open"),
        ("a) (a", "no matching opening bracket"),
        ("(a hello a)", "unknown token 'hello' at position 1"),
        ("(z z)", "unknown token '(z'"),  # Dyck-20 has types a…t
        ("   ", "the sentence is empty"),
    ],
)
def test_malformed_sentences_raise_clear_errors(explorer, sentence, message):
    with pytest.raises(DyckError, match=message.replace("(", r"\(").replace(")", r"\)")):
        explorer.analyze(sentence, ProxyChoice("svd", 1))


def test_sentences_longer_than_the_model_are_refused_before_any_work(explorer):
    too_long = " ".join(["(a a)"] * 64)  # 128 brackets + <bos>/<eos> > n_positions=128
    with pytest.raises(DyckError, match=r"reads at most 126 brackets \(n_positions=128"):
        explorer.analyze(too_long, ProxyChoice("svd", 1))
    fits = " ".join(["(a a)"] * 63)
    assert explorer.analyze(fits, ProxyChoice("svd", 1)).n_brackets == 126


def test_choices_are_validated(explorer):
    with pytest.raises(SimplifierError, match="rank"):
        ProxyChoice("svd")
    with pytest.raises(SimplifierError, match="method must be one of"):
        ProxyChoice("pca", 2)
    with pytest.raises(SimplifierError, match=r"rank=2 was not fitted for 'svd'; choose one of \[1, 8\]"):
        explorer.bank.proxy(ProxyChoice("svd", 2))
    with pytest.raises(SimplifierError, match="n_layer=2"):
        explorer.bank.proxy(ProxyChoice("onehot", layers=(5,)))
    assert ProxyChoice("onehot", 7).setting is None and ProxyChoice("svd", 8, (1, 0, 1)).name == "svd_r8@L0,1"
    assert explorer.bank.options == {"svd": [1, 8], "kmeans": [2, 4], "onehot": []}
    assert ProxyChoice("onehot", layers=(1,)).report_name == "onehot_l1"
    assert (
        ProxyChoice("kmeans", 4).report_name == "kmeans_k4"
        and ProxyChoice("svd", 1, (0,)).report_name is None
    )


def test_samples_come_from_the_chosen_split(explorer):
    rng = random.Random(1)
    rows = {" ".join(t[1:-1]) for t in explorer.dataset["test_iid"]["tokens"]}
    for _ in range(5):
        assert explorer.sample("test_iid", rng) in rows
    with pytest.raises(Exception, match="split must be one of"):
        explorer.sample("nope")

"""Property-based tests (hypothesis): the invariants every other result rests on.

Each property is checked against an independent reference, not against the code's own output:
the sampler's bounds, structure and depth against a recursive parse tree, bracket validity
against brute-force pair cancellation, the metric's defining properties, full-rank SVD against
the model itself, and save/load against the in-memory model. Example budgets are bounded and
derandomized (``BOUNDED``) so ``make test`` stays fast and gives the same verdict on every run.
"""

from __future__ import annotations

import random
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hf_illusions.checkpoints import load_checkpoint
from hf_illusions.data import dyck_language as dl
from hf_illusions.data.batching import pad_batch
from hf_illusions.data.tokenizer import dyck_tokenizer
from hf_illusions.errors import DyckError
from hf_illusions.metrics import faithfulness, jsd_per_row
from hf_illusions.modeling import IllusionConfig, IllusionForCausalLM
from hf_illusions.simplify import KMeansSimplifier, OneHotSimplifier, SVDSimplifier

N_TYPES = 20
VOCAB = dl.DyckVocab(N_TYPES)
BOUNDED = settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODEL_BUDGET = settings(BOUNDED, max_examples=25)  # each example builds (and fits) a model


# --------------------------------------------------------------------------- the Dyck sampler


@BOUNDED
@given(
    seed=st.integers(0, 2**32 - 1),
    n_types=st.integers(1, 26),
    max_depth=st.integers(1, 12),
    min_length=st.integers(1, 12),
    slack=st.integers(0, 40),
)
def test_sampler_yields_balanced_sentences_within_bounds(seed, n_types, max_depth, min_length, slack):
    max_length = max(2, min_length + min_length % 2) + slack  # the shortest even length allowed, + slack
    codes = dl.sample_sentence(random.Random(seed), n_types, max_depth, min_length, max_length)
    assert cancels_to_empty(codes, n_types)
    assert min_length <= len(codes) <= max_length
    assert all(0 <= c < 2 * n_types for c in codes)
    assert max(running_depths(codes, n_types)) <= max_depth


def running_depths(codes: list[int], n_types: int) -> list[int]:
    """Stack height after each bracket, counted directly (the reference for ``max_depth``)."""
    heights, height = [], 0
    for c in codes:
        height += 1 if c < n_types else -1
        heights.append(height)
    return heights


def cancels_to_empty(codes: list[int], n_types: int) -> bool:
    """Brute force: delete adjacent ``open t, close t`` pairs until none is left; balanced iff empty."""
    codes = list(codes)
    changed = True
    while changed:
        changed = False
        for i in range(len(codes) - 1):
            if codes[i] < n_types and codes[i + 1] == codes[i] + n_types:
                del codes[i : i + 2]
                changed = True
                break
    return not codes


# --------------------------------------------------------------------------- structure and depth

# A constituent is (bracket type, children); a sentence is a non-empty list of constituents.
constituents = st.recursive(
    st.tuples(st.integers(0, N_TYPES - 1), st.just(())),
    lambda inner: st.tuples(st.integers(0, N_TYPES - 1), st.lists(inner, max_size=3).map(tuple)),
    max_leaves=24,
)
sentences = st.lists(constituents, min_size=1, max_size=4)


def render(tree: tuple, start: int = 0) -> tuple[list[int], list[int]]:
    """(codes, matching-open position per bracket) of one constituent placed at ``start``."""
    kind, children = tree
    codes, openers = [kind], [-1]
    for child in children:
        child_codes, child_openers = render(child, start + len(codes))
        codes += child_codes
        openers += child_openers
    return [*codes, kind + N_TYPES], [*openers, start]


def skeleton(tree: tuple) -> str:
    return "(" + "".join(skeleton(child) for child in tree[1]) + ")"


def depth(tree: tuple) -> int:
    return 1 + max((depth(child) for child in tree[1]), default=0)


@BOUNDED
@given(sentences)
def test_structure_depth_and_matching_agree_with_the_parse_tree(sentence):
    codes, openers = [], []
    for tree in sentence:
        tree_codes, tree_openers = render(tree, len(codes))
        codes += tree_codes
        openers += tree_openers
    assert dl.structure(codes, N_TYPES) == [skeleton(tree) for tree in sentence]
    assert dl.max_depth(codes, N_TYPES) == max(depth(tree) for tree in sentence)
    assert dl.matching_open_positions(codes, N_TYPES) == openers
    tokens = dl.codes_to_tokens(codes, VOCAB)
    assert dl.parse_tokens(tokens, VOCAB) == codes
    assert dl.parse_sentence(" ".join(tokens), VOCAB) == codes
    assert TOKENIZER(" ".join(tokens[1:-1])).input_ids == dl.codes_to_ids(codes)[:-1]  # BOS, no EOS


TOKENIZER = dyck_tokenizer(N_TYPES)


@st.composite
def bracket_sequences(draw) -> list[int]:
    """Mostly near-misses: a valid sentence with one bracket changed, dropped or moved, or random codes."""
    sentence = draw(sentences)
    codes = [c for tree in sentence for c in render(tree)[0]]
    edit = draw(st.sampled_from(["none", "change", "drop", "swap", "random"]))
    i = draw(st.integers(0, len(codes) - 1))
    if edit == "change":
        codes[i] = draw(st.integers(0, 2 * N_TYPES - 1))
    elif edit == "drop":
        del codes[i]
    elif edit == "swap":
        j = draw(st.integers(0, len(codes) - 1))
        codes[i], codes[j] = codes[j], codes[i]
    elif edit == "random":
        codes = draw(st.lists(st.integers(0, 2 * N_TYPES - 1), min_size=1, max_size=12))
    return codes


@BOUNDED
@given(bracket_sequences())
def test_check_balanced_agrees_with_brute_force_cancellation(codes):
    if cancels_to_empty(codes, N_TYPES):
        dl.check_balanced(codes, N_TYPES)
    else:
        with pytest.raises(DyckError):
            dl.check_balanced(codes, N_TYPES)


# --------------------------------------------------------------------------- the faithfulness metric


@st.composite
def distribution_pairs(draw) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (n, V): some rows equal, some perturbed a little, some unrelated; zeros allowed."""
    n, v = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    unit = st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False)
    raw = draw(hnp.arrays(np.float64, (2, n, v), elements=unit))
    raw[..., 0] += 1e-3  # no all-zero row
    p, q = raw / raw.sum(axis=-1, keepdims=True)
    kinds = draw(st.lists(st.sampled_from(["equal", "unrelated", "nudged"]), min_size=n, max_size=n))
    for row, kind in enumerate(kinds):
        if kind == "equal":
            q[row] = p[row]
        elif kind == "nudged" and v > 1:  # move 1e-3 of mass between two outcomes
            q[row] = p[row]
            src, dst = int(np.argmax(p[row])), (int(np.argmax(p[row])) + 1) % v
            q[row, src] -= 1e-3
            q[row, dst] += 1e-3
    return p, q


@BOUNDED
@given(distribution_pairs())
def test_jsd_is_symmetric_bounded_and_zero_exactly_when_rows_are_equal(pair):
    p, q = pair
    values = jsd_per_row(p, q)
    np.testing.assert_array_equal(values, jsd_per_row(q, p))
    assert np.all((values >= 0) & (values <= 1))
    equal = np.all(p == q, axis=-1)
    assert np.all(values[equal] == 0.0)
    clearly_different = np.abs(p - q).max(axis=-1) >= 1e-3
    assert np.all(values[clearly_different] > 0.0)
    same = faithfulness(p, p)
    assert same["jsd"] == 0.0 and same["agreement"] == 1.0


# --------------------------------------------------------------------------- models and proxies


def random_model(seed: int, d_head: int, n_head: int, n_layer: int, d_mlp: int) -> IllusionForCausalLM:
    torch.manual_seed(seed)
    config = IllusionConfig(
        vocab_size=VOCAB.size,
        n_positions=64,
        d_model=d_head * n_head,
        n_head=n_head,
        n_layer=n_layer,
        d_mlp=d_mlp,
    )
    return IllusionForCausalLM(config).eval()


def sentences_of(seed: int, n: int = 6) -> list[list[int]]:
    rng = random.Random(seed)
    return [dl.codes_to_ids(dl.sample_sentence(rng, N_TYPES, max_length=40)) for _ in range(n)]


def logits_on(model: torch.nn.Module, data: list[list[int]]) -> torch.Tensor:
    """Logits of the real (non-pad) positions of a right-padded batch."""
    ids, mask = pad_batch(data)
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits[mask.bool()]


architectures = {
    "seed": st.integers(0, 10_000),
    "d_head": st.sampled_from([1, 2, 4, 8]),
    "n_head": st.integers(1, 2),
    "n_layer": st.integers(1, 2),
    "d_mlp": st.sampled_from([0, 16]),
}


@MODEL_BUDGET
@given(center=st.booleans(), **architectures)
def test_full_rank_svd_proxy_equals_the_model(seed, d_head, n_head, n_layer, d_mlp, center):
    model = random_model(seed, d_head, n_head, n_layer, d_mlp)
    data = sentences_of(seed)
    proxy = SVDSimplifier(rank=d_head, center=center).fit(model, data)
    torch.testing.assert_close(logits_on(proxy, data), logits_on(model, data), atol=1e-5, rtol=0)


def make(kind: str, model: IllusionForCausalLM, data: list[list[int]], d_head: int) -> torch.nn.Module:
    if kind == "svd":
        return SVDSimplifier(rank=max(1, d_head // 2)).fit(model, data)
    if kind == "kmeans":
        return KMeansSimplifier(k=3).fit(model, data)
    if kind == "onehot":
        return OneHotSimplifier(layers=[0]).fit(model)
    return model


@MODEL_BUDGET
@given(kind=st.sampled_from(["model", "svd", "kmeans", "onehot"]), **architectures)
def test_save_and_load_preserve_logits_exactly(kind, seed, d_head, n_head, n_layer, d_mlp):
    data = sentences_of(seed)
    original = make(kind, random_model(seed, d_head, n_head, n_layer, d_mlp), data, d_head)
    with tempfile.TemporaryDirectory() as folder:
        original.save_pretrained(folder)
        loaded = load_checkpoint(folder)
    assert type(loaded) is type(original)
    assert torch.equal(logits_on(loaded, data), logits_on(original, data))

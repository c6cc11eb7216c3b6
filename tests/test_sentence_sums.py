"""Per-sentence sums of the evaluation loop, the depth / length confounds and the paper findings.

Each sum is checked against a direct per-position computation written here, the decompositions
against their defining identities and a hand re-weighting, and the findings against constructed
results whose verdict is known.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hf_illusions import evaluation
from hf_illusions.confounds import depth_decomposition, length_decomposition
from hf_illusions.data.dyck_language import codes_to_ids, sample_sentence
from hf_illusions.evaluation import ORIGINAL, SentenceSums, sentence_sums
from hf_illusions.findings import finding_2, finding_3, finding_4
from hf_illusions.intervals import split_intervals
from hf_illusions.metrics import jsd_per_row
from hf_illusions.simplify import SVDSimplifier
from hf_illusions.tasks.dyck import DyckTask, close_features


@pytest.fixture(scope="module")
def model():
    from conftest import make_tiny_model

    return make_tiny_model()


@pytest.fixture(scope="module")
def sentences() -> list[list[int]]:
    rng = random.Random(1)
    return [codes_to_ids(sample_sentence(rng, n_types=20, max_length=60, max_depth=12)) for _ in range(15)]


@pytest.fixture(scope="module")
def sums(model, sentences) -> SentenceSums:
    proxy = SVDSimplifier(rank=2, n_sequences=15).fit(model, sentences)
    return sentence_sums(model, sentences, DyckTask(), {"p": proxy}, max_batch_tokens=200)


@pytest.fixture(scope="module")
def direct(model, sentences):
    """Per sentence, per position: what the loop should have summed, computed one sentence at a time."""
    proxy = SVDSimplifier(rank=2, n_sequences=15).fit(model, sentences)
    task = DyckTask()
    close_ids = slice(task.vocab.close_ids.start, task.vocab.close_ids.stop)
    rows = []
    for seq in sentences:
        ids = torch.tensor([seq])
        with torch.no_grad():
            lo, lp = model(ids).logits[0, :-1], proxy(ids).logits[0, :-1]
        targets = ids[0, 1:]
        close = task.groups(seq)["close"]
        scored_o = lo[:, close_ids].argmax(-1) + close_ids.start
        scored_p = lp[:, close_ids].argmax(-1) + close_ids.start
        rows.append(
            {
                "close": close,
                "jsd": jsd_per_row(lp.softmax(-1).double().numpy(), lo.softmax(-1).double().numpy()),
                "agreement": (scored_p == scored_o).numpy(),
                "agreement_full": (lp.argmax(-1) == lo.argmax(-1)).numpy(),
                "accuracy": (scored_p == targets).numpy(),
                "accuracy_original": (scored_o == targets).numpy(),
                "features": close_features(seq, 20),
            }
        )
    return rows


def test_per_sentence_sums_equal_a_direct_computation(sums, direct):
    g = sums.groups.index("close")
    for i, row in enumerate(direct):
        mask = row["close"]
        assert sums.n[g, i] == mask.sum()
        for q in ("jsd", "agreement", "agreement_full", "accuracy"):
            assert sums.models["p"][q][g, i] == pytest.approx(row[q][mask].sum(), abs=1e-6), q
        assert sums.models[ORIGINAL]["accuracy"][g, i] == row["accuracy_original"][mask].sum()


def test_headline_agreement_uses_the_scored_candidate_set(sums, direct):
    """``agreement`` compares argmaxes among closing brackets, as accuracy does; ``_full``: whole vocab."""
    means = sums.means()["p"]["close"]
    mask = np.concatenate([r["close"] for r in direct])
    assert means["agreement"] == pytest.approx(np.concatenate([r["agreement"] for r in direct])[mask].mean())
    assert means["agreement_full"] == pytest.approx(
        np.concatenate([r["agreement_full"] for r in direct])[mask].mean()
    )


def test_cells_partition_the_closes_by_depth_distance_and_position(sums, direct):
    g = sums.groups.index("close")
    dd = sums.cell_n["depth_distance"]
    assert np.array_equal(dd.sum(1), sums.n[g]) and np.array_equal(sums.cell_n["position"].sum(1), sums.n[g])
    for q in ("jsd", "agreement", "accuracy"):
        assert sums.cells["p"]["depth_distance"][q].sum(1) == pytest.approx(sums.models["p"][q][g], abs=1e-6)
    # the depth marginal counts closes by their depth, as computed from the brackets directly
    by_depth = dd.reshape(len(direct), 15, -1).sum(2)
    for i, row in enumerate(direct):
        depth = row["features"]["depth"]
        expected = np.bincount(np.minimum(depth[depth > 0], 15) - 1, minlength=15)
        assert np.array_equal(by_depth[i], expected)


def test_close_features_by_hand():
    # ( ( ) ) ( )  with two bracket types: opens 3, 4; closes 5, 6
    features = close_features([1, 3, 3, 5, 5, 3, 5, 2], 2)
    assert features["depth"].tolist() == [-1, -1, 2, 1, -1, 1, -1]
    assert features["distance"].tolist() == [-1, -1, 1, 3, -1, 1, -1]
    assert features["position"].tolist() == [-1, -1, 2, 3, -1, 5, -1]


def test_chunked_jsd_equals_one_chunk(model, sentences, monkeypatch, sums):
    proxy = SVDSimplifier(rank=2, n_sequences=15).fit(model, sentences)
    monkeypatch.setattr(evaluation, "JSD_CHUNK_ELEMENTS", 43 * 7)  # 7 positions per softmax chunk
    chunked = sentence_sums(model, sentences, DyckTask(), {"p": proxy}, max_batch_tokens=200)
    np.testing.assert_allclose(chunked.models["p"]["jsd"], sums.models["p"]["jsd"], rtol=0, atol=1e-12)


def test_attention_metrics_for_some_proxies_change_no_other_number(model, sentences, sums):
    """Attention metrics for a subset of proxies (or none): the same sums, bit for bit."""
    proxy = SVDSimplifier(rank=2, n_sequences=15).fit(model, sentences)
    other = SVDSimplifier(rank=1, n_sequences=15).fit(model, sentences)
    task = DyckTask()
    some = sentence_sums(model, sentences, task, {"p": proxy, "q": other}, 200, attention=["p", "absent"])
    none = sentence_sums(model, sentences, task, {"p": proxy, "q": other}, 200, attention=False)
    assert set(some.attention) == {"p"} and not none.attention
    for key in ("jsd", "agreement"):
        np.testing.assert_array_equal(some.attention["p"]["0"][key], sums.attention["p"]["0"][key])
    for result in (some, none):
        for q, values in sums.models["p"].items():
            np.testing.assert_array_equal(result.models["p"][q], values)
        np.testing.assert_array_equal(result.models[ORIGINAL]["accuracy"], sums.models[ORIGINAL]["accuracy"])


def test_sums_round_trip_through_their_file(sums, tmp_path):
    sums.save(tmp_path / "s.npz")
    back = SentenceSums.load(tmp_path / "s.npz")
    assert back.groups == sums.groups and np.array_equal(back.n, sums.n)
    assert np.array_equal(back.lengths, sums.lengths)
    np.testing.assert_allclose(back.models["p"]["jsd"], sums.models["p"]["jsd"], rtol=1e-6)
    assert back.means()["p"]["close"]["agreement"] == pytest.approx(sums.means()["p"]["close"]["agreement"])
    assert split_intervals(back, "x") == split_intervals(back, "x")  # fixed seed: same intervals


# --- decompositions on constructed sums ---


def _synthetic(n_sent: int, cells: dict[int, tuple[int, float]], lengths: int, seed: int) -> SentenceSums:
    """Every sentence has ``count`` closes in each depth_distance cell, each with JSD ``value`` (+ noise)."""
    rng = np.random.default_rng(seed)
    n_cells = 15 * 8
    cell_n = np.zeros((n_sent, n_cells))
    cell_jsd = np.zeros((n_sent, n_cells))
    for cell, (count, value) in cells.items():
        cell_n[:, cell] = count
        cell_jsd[:, cell] = count * (value + rng.normal(0, value / 20, n_sent))
    n = cell_n.sum(1)[None]
    jsd = cell_jsd.sum(1)[None]
    zero = np.zeros_like(cell_n)
    return SentenceSums(
        n_sentences=n_sent,
        groups=["close"],
        n=n,
        models={
            ORIGINAL: {"accuracy": n.copy()},
            "p": {"jsd": jsd, "accuracy": n.copy(), "agreement": n.copy()},
        },
        cell_names={"depth_distance": [str(i) for i in range(n_cells)], "position": ["0"]},
        cell_n={"depth_distance": cell_n, "position": n.T.copy()},
        cells={
            ORIGINAL: {"depth_distance": {"accuracy": cell_n}, "position": {"accuracy": n.T.copy()}},
            "p": {
                "depth_distance": {"jsd": cell_jsd, "accuracy": cell_n, "agreement": zero},
                "position": {"jsd": jsd.T.copy(), "accuracy": n.T.copy(), "agreement": n.T.copy()},
            },
        },
        lengths=np.full(n_sent, lengths),
    )


def test_depth_decomposition_adds_up_and_matches_a_hand_reweighting():
    # IID: depth 1 (cell 0) and 5 (cell 32), JSD 0.01 and 0.03; deep: more depth 5, and depth 12 (cell 88)
    iid = _synthetic(200, {0: (3, 0.01), 32: (1, 0.03)}, 20, seed=0)
    deep = _synthetic(200, {0: (1, 0.012), 32: (3, 0.03), 88: (4, 0.2)}, 200, seed=1)
    d = depth_decomposition(iid, "a", deep, "b", "p")
    parts = {k: v["value"] for k, v in d["parts"].items()}
    assert parts["total"] == pytest.approx(
        parts["deeper_than_training"]
        + parts["depth_distance_mix"]
        + parts["same_depth_distance_other_context"]
    )
    iid_cell0, iid_cell32 = (
        iid.cells["p"]["depth_distance"]["jsd"][:, c].sum() / iid.cell_n["depth_distance"][:, c].sum()
        for c in (0, 32)
    )
    matched = (1 * iid_cell0 + 3 * iid_cell32) / 4  # IID re-weighted to the deep split's mix at depth ≤ 10
    assert d["means"]["iid_matched_depth_distance"]["value"] == pytest.approx(matched)
    assert d["share_deeper_than_training"] == pytest.approx(0.5) and d["coverage"] == 1.0
    assert parts["deeper_than_training"] > 0.05  # depth 12 closes carry most of the gap
    assert d["parts"]["deeper_than_training"]["ci"][0] > 0
    assert abs(parts["same_depth_distance_other_context"]) < 0.002  # same cells, same JSD up to noise


def test_length_decomposition_credits_length_when_only_length_differs():
    short = _synthetic(100, {0: (2, 0.01)}, 10, seed=2)
    long = _synthetic(100, {0: (2, 0.05)}, 100, seed=3)
    iid = SentenceSums(
        n_sentences=200,
        groups=["close"],
        n=np.concatenate([short.n, long.n], 1),
        models={
            m: {q: np.concatenate([short.models[m][q], long.models[m][q]], 1) for q in short.models[m]}
            for m in short.models
        },
        lengths=np.concatenate([short.lengths, long.lengths]),
    )
    d = length_decomposition(iid, "iid", short, "short", "p")
    assert d["parts"]["total"]["value"] == pytest.approx(
        d["parts"]["length"]["value"] + d["parts"]["same_length_other_sentences"]["value"]
    )
    assert d["parts"]["length"]["ci"][1] < 0  # short sentences are easier: the whole gap is length
    lo, hi = d["parts"]["same_length_other_sentences"]["ci"]
    assert lo < 0.001 and hi > -0.001


# --- findings on constructed results ---


def _with_accuracy(diff: float, noise: float, seed: int) -> SentenceSums:
    rng = np.random.default_rng(seed)
    n = np.full((1, 300), 20.0)
    original = np.full((1, 300), 10.0)
    proxy = np.clip(original + diff * 20 + rng.normal(0, noise, (1, 300)), 0, 20)
    sums = SentenceSums(n_sentences=300, groups=["close"], n=n, models={ORIGINAL: {"accuracy": original}})
    for name in ("svd_r8", "onehot"):
        sums.models[name] = {"accuracy": proxy, "jsd": n * 0.01, "agreement": n * 0.99}
    return sums


@pytest.mark.parametrize(
    "diff, noise, expected_3, expected_4",
    [
        (-0.05, 1.0, "holds", "does not hold"),
        (0.05, 1.0, "does not hold", "holds"),
        (0.0, 3.0, "within noise", "within noise"),
    ],
)
def test_under_and_over_generalization_verdicts_follow_the_intervals(diff, noise, expected_3, expected_4):
    depth = _with_accuracy(diff, noise, seed=0)
    iid = _with_accuracy(0.0, 0.0, seed=1)
    proxies = {"svd_r8": {"family": "svd", "param": 8}, "onehot": {"family": "onehot", "param": None}}
    results = {"test_iid": {n: {"close": {"agreement": 0.99}} for n in proxies}}
    sums = {"test_iid": iid, "test_unseen_depth": depth}
    assert finding_3(sums, results, proxies, "close")["verdict"] == expected_3
    assert finding_4(sums, results, proxies, "close")["verdict"] == expected_4


def _with_jsd(per_proxy: dict[str, float], seed: int) -> SentenceSums:
    rng = np.random.default_rng(seed)
    n = np.full((1, 400), 20.0)
    sums = SentenceSums(n_sentences=400, groups=["close"], n=n, models={ORIGINAL: {"accuracy": n * 0.9}})
    for name, jsd in per_proxy.items():
        sums.models[name] = {"jsd": np.clip(n * jsd + rng.normal(0, 0.5, (1, 400)), 0, None)}
    return sums


def test_median_gap_of_finding_2_has_a_bootstrap_interval():
    """Finding 2's number (the median unseen-depth gap over proxies) carries an interval: the median
    over proxies of each bootstrap replicate, every proxy resampled on the same sentences."""
    from hf_illusions.intervals import gap_replicates
    from hf_illusions.statistics import percentile_interval

    proxies = {f"svd_r{r}": {"family": "svd", "param": r} for r in (1, 2, 4)}
    iid = _with_jsd({"svd_r1": 0.05, "svd_r2": 0.03, "svd_r4": 0.01}, seed=0)
    depth = _with_jsd({"svd_r1": 0.15, "svd_r2": 0.08, "svd_r4": 0.02}, seed=1)
    sums = {"test_iid": iid, "test_unseen_depth": depth}
    key = finding_2(sums, proxies, "close")["key"]
    gaps = {
        name: gap_replicates(depth, "test_unseen_depth", iid, "test_iid", name, "close", "jsd")
        for name in proxies
    }
    assert key["value"] == pytest.approx(np.median([v for v, _ in gaps.values()]))
    assert key["value"] == pytest.approx(0.05, abs=0.005)  # svd_r2's gap, 0.08 - 0.03
    lo, hi = key["ci"]
    assert lo < key["value"] < hi and hi - lo < 0.01
    expected = percentile_interval(np.median(np.stack([r for _, r in gaps.values()]), axis=0))
    assert key["ci"] == pytest.approx(expected)


def test_shared_fitting_pass_gives_the_proxies_fitted_one_by_one(model, sentences):
    """The reproduction fits every SVD rank / k-means k in one pass; each proxy is bit-identical."""
    from hf_illusions.reproduction import fit_all, proxy_specs

    specs = proxy_specs(model.config.d_head, (1, 2), (4,), True, None, 15, n_layer=model.config.n_layer)
    times, passes = {}, {}
    shared = fit_all(specs, model, sentences, times, False, passes)
    assert set(times) == {s.name for s in specs} and list(passes) == ["svd_r1+svd_r2+kmeans_k4"]
    for spec in specs:
        alone = spec.simplifier.fit(model, sentences).state_dict()
        together = shared[spec.name].state_dict()
        assert alone.keys() == together.keys()
        for key, value in alone.items():
            assert torch.equal(value, together[key]), (spec.name, key)

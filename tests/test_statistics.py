"""Bootstrap intervals and row samples: checked against direct computations, and reproducible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hf_illusions.data.sampling import sample_rows, stratum_sizes
from hf_illusions.errors import SettingsError
from hf_illusions.statistics import (
    bootstrap_counts,
    excludes_zero,
    paired_difference_interval,
    percentile_interval,
    ratio,
    ratio_interval,
    split_seed,
    verdict,
)

# --- bootstrap ---


def test_counts_are_draws_with_replacement_and_reproducible():
    counts = bootstrap_counts(50, 200, seed=3)
    assert counts.shape == (200, 50)
    assert (counts.sum(1) == 50).all()  # each replicate draws n items
    assert counts.tobytes() == bootstrap_counts(50, 200, seed=3).tobytes()  # same seed, same bytes
    assert not np.array_equal(counts, bootstrap_counts(50, 200, seed=4))
    assert split_seed("test_iid") != split_seed("test_unseen_depth")
    assert split_seed("test_iid") == split_seed("test_iid")


def test_ratio_interval_equals_explicit_resampling():
    """The count-matrix shortcut is the textbook bootstrap of a ratio of sums over sentences."""
    rng = np.random.default_rng(0)
    n = rng.integers(1, 30, size=40).astype(float)  # positions per sentence
    s = rng.binomial(n.astype(int), 0.8).astype(float)  # correct positions per sentence
    counts = bootstrap_counts(40, 500, seed=1)
    explicit = []
    for row in counts:
        idx = np.repeat(np.arange(40), row.astype(int))  # the drawn sentences
        explicit.append(s[idx].sum() / n[idx].sum())
    assert ratio_interval(s, n, counts) == pytest.approx(list(np.percentile(explicit, [2.5, 97.5])))
    assert ratio(s, n) == pytest.approx(s.sum() / n.sum())


def test_interval_covers_the_truth_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(200):
        n = rng.integers(5, 15, size=60).astype(float)
        s = rng.binomial(n.astype(int), 0.7).astype(float)
        lo, hi = ratio_interval(s, n, bootstrap_counts(60, 400, seed=trial))
        hits += lo <= 0.7 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_interval_is_narrower_than_unpaired_for_correlated_models():
    rng = np.random.default_rng(2)
    n = np.full(80, 10.0)
    a = rng.binomial(10, rng.uniform(0.3, 0.95, size=80)).astype(float)  # sentence difficulty varies a lot
    b = np.clip(a + rng.integers(-1, 2, size=80), 0, 10)  # a second model, close to the first
    counts = bootstrap_counts(80, 1000, seed=0)
    paired = paired_difference_interval(b, a, n, counts)
    lo_a, hi_a = ratio_interval(a, n, counts)
    lo_b, hi_b = ratio_interval(b, n, bootstrap_counts(80, 1000, seed=9))
    assert paired[1] - paired[0] < ((hi_a - lo_a) ** 2 + (hi_b - lo_b) ** 2) ** 0.5 / 2


def test_verdict_words_only_when_the_interval_excludes_zero():
    assert excludes_zero([0.1, 0.2]) == 1 and excludes_zero([-0.2, -0.1]) == -1
    assert excludes_zero([-0.1, 0.2]) == 0 and excludes_zero(None) == 0
    assert verdict([-0.3, -0.01], "over", "under") == "under"
    assert verdict([-0.3, 0.01], "over", "under") == "within noise"
    assert percentile_interval(np.array([np.nan, np.nan])) is None
    with pytest.raises(ValueError, match="n_items"):
        bootstrap_counts(0)


# --- samples ---


def test_sample_rows_is_seeded_sorted_and_unique():
    rows = sample_rows(1000, 100, seed=0, name="test_iid")
    assert rows == sorted(set(rows)) and len(rows) == 100 and max(rows) < 1000
    assert rows == sample_rows(1000, 100, seed=0, name="test_iid")
    assert rows != sample_rows(1000, 100, seed=1, name="test_iid")
    assert rows != sample_rows(1000, 100, seed=0, name="test_unseen_depth")  # splits are independent
    assert rows != list(range(100))  # not a prefix
    assert sample_rows(50, None) == list(range(50)) == sample_rows(50, 80)


def test_stratified_sample_is_proportional_to_strata():
    strata = ["accelerate"] * 600 + ["jinja2"] * 300 + ["tiny"] * 100
    rows = sample_rows(len(strata), 100, seed=0, strata=strata, name="test_unseen_package")
    assert Counter(strata[i] for i in rows) == {"accelerate": 60, "jinja2": 30, "tiny": 10}
    assert stratum_sizes(["a", "a", "b"], 2) == {"a": 1, "b": 1}  # largest remainder (1.33 / 0.67)
    assert sum(stratum_sizes(["a"] * 7 + ["b"] * 5 + ["c"] * 3, 10).values()) == 10


def test_a_prefix_of_a_sorted_split_misses_strata_that_the_sample_covers():
    """The failure this guards against: windows ordered by path put one package first."""
    strata = sorted(["accelerate"] * 500 + ["jinja2"] * 200)
    assert {strata[i] for i in range(300)} == {"accelerate"}
    assert {strata[i] for i in sample_rows(700, 300, strata=strata, name="x")} == {"accelerate", "jinja2"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_rows": 10, "n": 0}, "sample size"),
        ({"n_rows": -1, "n": 3}, "n_rows"),
        ({"n_rows": 3, "n": 2, "strata": ["a"]}, "one label per row"),
    ],
)
def test_bad_sample_arguments_are_named(kwargs, match):
    with pytest.raises(SettingsError, match=match):
        sample_rows(**kwargs)

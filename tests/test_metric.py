"""Tests of the faithfulness metric: the numpy functions, the `evaluate` module, and their docs.

The functions are checked against scipy (the reference the docs promise), on hand-made cases for
argmax agreement/accuracy, and on every kind of bad input. The `evaluate` module is loaded the real
way (`evaluate.load` on its folder) and must give the same numbers; the doctests of the module and
of the metric card are executed so the documented outputs cannot go stale.
"""

from __future__ import annotations

import doctest
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import jensenshannon

from hf_illusions.errors import FaithfulnessInputError, IllusionsError
from hf_illusions.metrics import (
    FAITHFULNESS_METRIC_DIR,
    accuracy,
    agreement,
    faithfulness,
    jsd,
    jsd_per_row,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO_ROOT / "hf_illusions" / "metrics" / "faithfulness"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_EVALUATE_OFFLINE": "1",
}


def scipy_jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The reference: squared base-2 Jensen–Shannon distance, row by row over the last axis.

    scipy returns NaN when rounding leaves its divergence a hair below 0 (sqrt of a negative), for
    rows equal up to the last ulp; the true value there is 0.
    """
    flat_p, flat_q = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])
    values = []
    for a, b in zip(flat_p, flat_q, strict=True):
        with np.errstate(invalid="ignore"):
            value = jensenshannon(a, b, base=2) ** 2
        if np.isnan(value):
            np.testing.assert_allclose(a / a.sum(), b / b.sum(), rtol=1e-12)
            value = 0.0
        values.append(value)
    return np.array(values).reshape(p.shape[:-1])


def sparse_dirichlet(rng: np.random.Generator, shape: tuple[int, ...], zero_frac: float = 0.4) -> np.ndarray:
    """Dirichlet rows with many exact zeros (never an all-zero row), like peaked softmax outputs."""
    x = rng.dirichlet(np.full(shape[-1], 0.5), size=shape[:-1])
    x[rng.random(shape) < zero_frac] = 0.0
    empty = x.sum(axis=-1) == 0
    x[empty, 0] = 1.0
    return x / x.sum(axis=-1, keepdims=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- JSD vs scipy


@pytest.mark.parametrize("shape", [(50, 7), (4, 6, 11), (3, 2)])
def test_jsd_per_row_matches_scipy_with_zeros_and_identical_rows(rng, shape):
    p = sparse_dirichlet(rng, shape)
    q = sparse_dirichlet(rng, shape)
    q.reshape(-1, shape[-1])[0] = p.reshape(-1, shape[-1])[0]  # an identical row pair
    onehot = np.zeros(shape[-1])
    onehot[0] = 1.0
    p.reshape(-1, shape[-1])[-1] = onehot  # disjoint or overlapping one-hot row
    got = jsd_per_row(p, q)
    assert got.shape == shape[:-1]
    np.testing.assert_allclose(got, scipy_jsd(p, q), rtol=1e-10, atol=1e-12)
    assert got.reshape(-1)[0] == 0.0


def test_jsd_per_row_matches_scipy_on_dense_dirichlet(rng):
    p = rng.dirichlet(np.ones(30), size=200)
    q = rng.dirichlet(np.ones(30), size=200)
    np.testing.assert_allclose(jsd_per_row(p, q), scipy_jsd(p, q), rtol=1e-10, atol=1e-12)


def test_jsd_extremes_are_exact():
    assert jsd([[1.0, 0.0]], [[0.0, 1.0]]) == 1.0  # disjoint supports
    assert jsd([[0.2, 0.3, 0.5]], [[0.2, 0.3, 0.5]]) == 0.0
    # p=(1/2, 1/2), q=(1, 0): log2(4/3)/2 + (log2(2/3) + 1)/4, worked by hand
    expected = 0.5 * np.log2(4 / 3) + 0.25 * (np.log2(2 / 3) + 1)
    assert jsd([[0.5, 0.5]], [[1.0, 0.0]]) == pytest.approx(expected, abs=1e-15)


def test_jsd_positive_for_distinct_rows_and_symmetric(rng):
    p = rng.dirichlet(np.ones(5), size=100)
    q = rng.dirichlet(np.ones(5), size=100)
    forward, backward = jsd_per_row(p, q), jsd_per_row(q, p)
    np.testing.assert_array_equal(forward, backward)
    assert np.all(forward > 0) and np.all(forward <= 1)


def test_jsd_is_mean_of_per_row_and_respects_axis(rng):
    p = sparse_dirichlet(rng, (3, 5, 8))
    q = sparse_dirichlet(rng, (3, 5, 8))
    assert jsd(p, q) == pytest.approx(jsd_per_row(p, q).mean(), abs=1e-15)
    moved_p, moved_q = np.moveaxis(p, -1, 1), np.moveaxis(q, -1, 1)  # (3, 8, 5): outcomes on axis 1
    assert jsd(moved_p, moved_q, axis=1) == pytest.approx(jsd(p, q), abs=1e-15)
    np.testing.assert_allclose(jsd_per_row(moved_p, moved_q, axis=1), jsd_per_row(p, q), atol=1e-15)


def test_slightly_unnormalised_rows_are_renormalised_like_scipy():
    p = np.array([[0.3, 0.7004]])  # sums to 1.0004, inside the default atol
    q = np.array([[0.5, 0.4998]])
    np.testing.assert_allclose(jsd_per_row(p, q), scipy_jsd(p, q), rtol=1e-12)


def test_single_row_1d_input():
    assert jsd([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert faithfulness([0.0, 1.0], [0.0, 1.0], references=1) == {
        "jsd": 0.0,
        "agreement": 1.0,
        "n": 1,
        "accuracy_proxy": 1.0,
        "accuracy_original": 1.0,
    }


@st.composite
def row_pairs(draw):
    n = draw(st.integers(1, 6))
    v = draw(st.integers(1, 9))
    unit = st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False)
    raw = [draw(hnp.arrays(np.float64, (n, v), elements=unit)) for _ in range(2)]
    rows = []
    for x in raw:
        x[x.sum(axis=-1) == 0] = 1.0
        rows.append(x / x.sum(axis=-1, keepdims=True))
    return rows[0], rows[1]


@settings(max_examples=200, deadline=None, database=None)
@given(row_pairs())
def test_jsd_properties(pair):
    p, q = pair
    forward = jsd_per_row(p, q)
    np.testing.assert_allclose(forward, scipy_jsd(p, q), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(forward, jsd_per_row(q, p))  # symmetric
    assert np.all((forward >= 0) & (forward <= 1))
    np.testing.assert_array_equal(jsd_per_row(p, p), np.zeros(p.shape[0]))  # zero on equal rows
    assert 0.0 <= jsd(p, q) <= 1.0


# --------------------------------------------------------------------------- agreement / accuracy


def test_agreement_and_accuracy_by_hand():
    proxy = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.5, 0.5, 0.0]]
    original = [[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.5, 0.0, 0.5]]
    labels = [0, 1, 2, 0]
    # argmax proxy: 0, 2, 1, 0 (tie -> lowest index); original: 0, 1, 1, 0 (tie -> lowest index)
    assert agreement(proxy, original) == 0.75
    assert accuracy(proxy, labels) == 0.5
    assert accuracy(original, labels) == 0.75
    assert faithfulness(proxy, original, references=labels) == {
        "jsd": pytest.approx(jsd(proxy, original)),
        "agreement": 0.75,
        "n": 4,
        "accuracy_proxy": 0.5,
        "accuracy_original": 0.75,
    }


def test_faithfulness_keys_and_types(rng):
    p, q = sparse_dirichlet(rng, (4, 3)), sparse_dirichlet(rng, (4, 3))
    result = faithfulness(p, q)
    assert list(result) == ["jsd", "agreement", "n"]
    assert type(result["jsd"]) is float and type(result["agreement"]) is float and type(result["n"]) is int
    with_labels = faithfulness(p, q, references=[0, 1, 2, 0])
    assert list(with_labels) == ["jsd", "agreement", "n", "accuracy_proxy", "accuracy_original"]


# --------------------------------------------------------------------------- masks


def test_mask_selects_rows_and_broadcasts(rng):
    p, q = sparse_dirichlet(rng, (3, 4, 5)), sparse_dirichlet(rng, (3, 4, 5))
    labels = rng.integers(0, 5, size=(3, 4))
    mask = rng.random((3, 4)) < 0.6
    mask[0, 0] = True
    per_row = jsd_per_row(p, q)
    assert jsd(p, q, mask=mask) == pytest.approx(per_row[mask].mean(), abs=1e-15)
    assert jsd(p, q, mask=mask.astype(int)) == jsd(p, q, mask=mask)  # 0/1 works like bool
    expected_agree = np.mean(p[mask].argmax(-1) == q[mask].argmax(-1))
    assert agreement(p, q, mask=mask) == pytest.approx(expected_agree)
    assert accuracy(p, labels, mask=mask) == pytest.approx(np.mean(p[mask].argmax(-1) == labels[mask]))
    result = faithfulness(p, q, references=labels, mask=mask)
    assert result["n"] == int(mask.sum())
    # (batch, 1) broadcasts over the sequence: whole sequences in or out
    seq_mask = np.array([[True], [False], [True]])
    assert faithfulness(p, q, mask=seq_mask)["n"] == 8
    assert jsd(p, q, mask=seq_mask) == pytest.approx(per_row[[0, 2]].mean(), abs=1e-15)


def test_masked_rows_are_not_validated():
    """Padding may hold garbage and -100 labels; only counted rows have to be distributions."""
    proxy = np.array([[0.0, 1.0], [np.nan, -3.0]])
    original = np.array([[0.0, 1.0], [0.0, 0.0]])
    result = faithfulness(proxy, original, references=[1, -100], mask=[True, False])
    assert result == {"jsd": 0.0, "agreement": 1.0, "n": 1, "accuracy_proxy": 1.0, "accuracy_original": 1.0}


def test_jsd_per_row_mask_leaves_padding_nan_and_unvalidated(rng):
    p, q = sparse_dirichlet(rng, (2, 3, 4)), sparse_dirichlet(rng, (2, 3, 4))
    mask = np.array([[True, True, False], [True, False, False]])
    p[~mask] = np.nan  # garbage in padding is fine when masked out
    got = jsd_per_row(p, q, mask=mask)
    assert got.shape == (2, 3)
    assert np.isnan(got[~mask]).all()
    np.testing.assert_allclose(got[mask], scipy_jsd(p[mask], q[mask]), rtol=1e-10, atol=1e-12)
    assert np.isnan(jsd_per_row(p, q, mask=np.zeros((2, 3), dtype=bool))).all()  # no rows: all NaN
    with pytest.raises(
        FaithfulnessInputError, match=r"p has non-finite values \(NaN or inf\) in row \(0, 2\)"
    ):
        jsd_per_row(p, q)


def test_atol_is_configurable():
    p = [[0.5, 0.505]]  # sums to 1.005
    with pytest.raises(FaithfulnessInputError, match=r"atol=0\.001"):
        jsd(p, p)
    assert jsd(p, p, atol=1e-2) == 0.0
    assert faithfulness(p, p, atol=1e-2)["n"] == 1


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")  # a hard dependency, present in the venv
    p = torch.tensor([[0.25, 0.75], [1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.75, 0.25], [1.0, 0.0]], dtype=torch.float64)
    expected = faithfulness(p.detach().numpy(), q.numpy(), references=np.array([1, 0]))
    assert faithfulness(p, q, references=torch.tensor([1, 0]), mask=torch.tensor([True, True])) == expected
    assert jsd(p.to(torch.bfloat16), q) == pytest.approx(expected["jsd"])  # bf16 has no numpy dtype


def test_functional_module_does_not_import_evaluate():
    code = "import sys, hf_illusions.metrics; print('evaluate' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **OFFLINE_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- validation

GOOD = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])


def _with(row: int, col: int, value: float) -> np.ndarray:
    x = GOOD.copy()
    x[row, col] = value
    return x


FAITHFULNESS_ERRORS = {
    "shape mismatch": (
        {"proxy": GOOD, "original": GOOD[:, :2]},
        r"proxy and original must have the same shape.*\(2, 3\).*\(2, 2\)",
    ),
    "batch mismatch": ({"proxy": GOOD, "original": GOOD[:1]}, r"proxy.*\(2, 3\).*original \(1, 3\)"),
    "nan": ({"proxy": _with(1, 0, np.nan), "original": GOOD}, r"proxy has non-finite values .* row 1"),
    "inf": ({"proxy": GOOD, "original": _with(0, 2, np.inf)}, r"original has non-finite values .* row 0"),
    "negative": ({"proxy": _with(0, 2, -0.1), "original": GOOD}, r"proxy has negative values in row 0"),
    "not summing to 1": (
        {"proxy": GOOD, "original": GOOD * 2},
        r"original rows must sum to 1.*row 0 sums to 2",
    ),
    "logits": ({"proxy": np.log(GOOD + 1), "original": GOOD}, r"proxy rows must sum to 1.*logits"),
    "no rows": ({"proxy": np.zeros((0, 3)), "original": np.zeros((0, 3))}, r"proxy is empty"),
    "no outcomes": ({"proxy": np.zeros((2, 0)), "original": np.zeros((2, 0))}, r"proxy is empty"),
    "scalar": ({"proxy": 1.0, "original": 1.0}, r"proxy must have shape \(\.\.\., V\)"),
    "ragged": ({"proxy": [[1.0], [0.5, 0.5]], "original": GOOD}, r"proxy could not be read as an array"),
    "strings": ({"proxy": [["a", "b"]], "original": [[0.5, 0.5]]}, r"proxy must be numeric"),
    "empty mask": ({"proxy": GOOD, "original": GOOD, "mask": [False, False]}, r"mask selects no rows"),
    "zero mask": ({"proxy": GOOD, "original": GOOD, "mask": [0, 0]}, r"mask selects no rows"),
    "non-binary mask": ({"proxy": GOOD, "original": GOOD, "mask": [1, 2]}, r"mask must be boolean or 0/1"),
    "nan mask": ({"proxy": GOOD, "original": GOOD, "mask": [1.0, np.nan]}, r"mask must be boolean or 0/1"),
    "mask shape": (
        {"proxy": GOOD, "original": GOOD, "mask": [True, False, True]},
        r"mask with shape \(3,\) does not broadcast .* \(2,\)",
    ),
    "label too big": (
        {"proxy": GOOD, "original": GOOD, "references": [0, 3]},
        r"references must lie in \[0, 3\).*got 3",
    ),
    "label negative": (
        {"proxy": GOOD, "original": GOOD, "references": [-100, 0]},
        r"references must lie in \[0, 3\).*-100",
    ),
    "label shape": (
        {"proxy": GOOD, "original": GOOD, "references": [0, 1, 2]},
        r"references must have the leading \(row\) shape.*\(3,\).*\(2,\)",
    ),
    "label fractional": (
        {"proxy": GOOD, "original": GOOD, "references": [0.5, 1.0]},
        r"references must be integer class ids",
    ),
    "label bool": (
        {"proxy": GOOD, "original": GOOD, "references": [True, False]},
        r"references must be integer",
    ),
    "atol": ({"proxy": GOOD, "original": GOOD, "atol": 1.5}, r"atol must be in \[0, 1\)"),
    "atol nan": ({"proxy": GOOD, "original": GOOD, "atol": float("nan")}, r"atol must be in \[0, 1\)"),
    "atol text": ({"proxy": GOOD, "original": GOOD, "atol": "tight"}, r"atol must be a number"),
}


@pytest.mark.parametrize("kwargs, message", FAITHFULNESS_ERRORS.values(), ids=FAITHFULNESS_ERRORS.keys())
def test_faithfulness_rejects_bad_input(kwargs, message):
    with pytest.raises(FaithfulnessInputError, match=message) as info:
        faithfulness(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IllusionsError)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: jsd(GOOD, GOOD[:, :2]), r"p and q must have the same shape, got p \(2, 3\) and q \(2, 2\)"),
        (lambda: jsd(GOOD, _with(0, 0, np.nan)), r"q has non-finite"),
        (lambda: jsd(GOOD, GOOD, axis=5), r"axis=5 is out of range for p"),
        (lambda: jsd_per_row(_with(1, 1, -1.0), GOOD), r"p has negative values in row 1"),
        (lambda: jsd(GOOD[None], GOOD[None] * 3), r"q rows must sum to 1.*row \(0, 0\)"),
        (lambda: agreement(GOOD, GOOD, mask=[0, 0]), r"mask selects no rows"),
        (lambda: agreement(GOOD, np.ones((2, 3))), r"q rows must sum to 1"),
        (lambda: accuracy(GOOD, [0, 7]), r"labels must lie in \[0, 3\)"),
        (lambda: accuracy(GOOD, [[0, 1]]), r"labels must have the leading"),
        (lambda: accuracy(_with(0, 0, np.inf), [0, 1]), r"p has non-finite"),
    ],
)
def test_other_functions_name_their_arguments(call, message):
    with pytest.raises(FaithfulnessInputError, match=message):
        call()


# --------------------------------------------------------------------------- the evaluate module


@pytest.fixture(scope="module")
def faithfulness_metric():
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import evaluate  # imported here: it takes seconds, and only these tests need it

    return evaluate.load(str(METRIC_DIR))


def test_metric_dir_constant_points_at_the_module():
    assert Path(FAITHFULNESS_METRIC_DIR) == METRIC_DIR
    assert (METRIC_DIR / "faithfulness.py").is_file() and (METRIC_DIR / "README.md").is_file()


def test_evaluate_module_matches_function(faithfulness_metric, rng):
    p = sparse_dirichlet(rng, (40, 9)).astype(np.float32)
    q = sparse_dirichlet(rng, (40, 9)).astype(np.float32)
    labels = rng.integers(0, 9, size=40)
    mask = rng.random(40) < 0.7
    got = faithfulness_metric.compute(predictions=p, references=q, labels=labels, mask=mask)
    expected = faithfulness(p, q, references=labels, mask=mask)  # same float32 values, float64 maths
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    plain = faithfulness_metric.compute(predictions=p.tolist(), references=q.tolist())
    assert plain == pytest.approx(faithfulness(p, q), rel=1e-12)
    assert list(plain) == ["jsd", "agreement", "n"]


def test_evaluate_module_add_batch_streams_rows(faithfulness_metric, rng):
    p = sparse_dirichlet(rng, (10, 4)).astype(np.float32)
    q = sparse_dirichlet(rng, (10, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=10)
    for start in range(0, 10, 3):
        faithfulness_metric.add_batch(predictions=p[start : start + 3], references=q[start : start + 3])
    streamed = faithfulness_metric.compute(labels=labels)
    assert streamed == pytest.approx(faithfulness(p, q, references=labels), rel=1e-12)


def test_evaluate_module_accepts_torch(faithfulness_metric):
    torch = pytest.importorskip("torch")
    p = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    q = torch.tensor([[0.75, 0.25], [1.0, 0.0]])
    assert faithfulness_metric.compute(predictions=p, references=q) == pytest.approx(
        faithfulness(p, q), rel=1e-12
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predictions": [[np.nan, 1.0]], "references": [[0.0, 1.0]]}, r"^predictions has non-finite"),
        ({"predictions": [[0.0, 1.0]], "references": [[0.0, 3.0]]}, r"^references rows must sum to 1"),
        ({"predictions": [[0.0, 1.0]], "references": [[0.0, 1.0]], "labels": [2]}, r"^labels must lie in"),
        ({"predictions": [[0.0, 1.0]], "references": [[0.0, 1.0]], "mask": [0]}, r"^mask selects no rows"),
        (
            {"predictions": [[0.0, 1.0]], "references": [[0.0, 0.5, 0.5]]},
            r"^predictions and references must have the same shape",
        ),
    ],
)
def test_evaluate_module_errors_use_its_argument_names(faithfulness_metric, kwargs, message):
    with pytest.raises(FaithfulnessInputError, match=message):
        faithfulness_metric.compute(**kwargs)


# --------------------------------------------------------------------------- doctests


def _run(tests: list[doctest.DocTest]) -> tuple[int, str]:
    """Run doctests, return (examples attempted, report); fail on any failing example."""
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write, clear_globs=False)  # README blocks share a namespace
    results = runner.summarize(verbose=False)
    assert results.failed == 0, report.getvalue()
    return results.attempted, report.getvalue()


def test_module_doctests_run(faithfulness_metric):  # fixture: evaluate already imported, offline
    spec = importlib.util.spec_from_file_location(
        "faithfulness_evaluate_module", METRIC_DIR / "faithfulness.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = doctest.DocTestFinder().find(module)
    attempted, _ = _run(tests)
    assert attempted >= 8  # the three examples in _KWARGS_DESCRIPTION really ran


def test_readme_doctests_run(faithfulness_metric):
    """Every ```python block of the metric card runs, in order, sharing one namespace."""
    card = (METRIC_DIR / "README.md").read_text(encoding="utf-8")
    parser = doctest.DocTestParser()
    shared: dict = {}
    tests = []
    for match in re.finditer(r"```python\n(.*?)```", card, flags=re.DOTALL):
        lineno = card.count("\n", 0, match.start(1))
        test = parser.get_doctest(match.group(1), {}, "README.md", str(METRIC_DIR / "README.md"), lineno)
        test.globs = shared  # DocTest copies its globs; later blocks use names set by earlier ones
        tests.append(test)
    assert len(tests) >= 6
    attempted, _ = _run(tests)
    assert attempted >= 20

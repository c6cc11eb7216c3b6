"""Faithfulness of a simplified proxy to the model it stands in for, as plain numpy.

Friedman et al. (ICML 2024) judge a simplification (low-rank attention, clustered values, ...) by
how closely its output distributions track the original model's, in and out of distribution:
mean Jensen–Shannon divergence, how often the two argmaxes agree, and each one's task accuracy.

This module is the single implementation of that arithmetic. The ``evaluate`` module in
``metrics/faithfulness/`` and the evaluation code both call it, so the numbers cannot drift apart;
it imports neither ``evaluate`` (slow to import) nor ``torch`` (tensors are converted lazily).
:func:`jsd_rows` is the formula itself and runs on numpy arrays and torch tensors alike.

Conventions shared by every function here:

* distributions are arrays of shape ``(..., V)``: any leading dimensions (``(batch, seq)`` for
  language models), one probability row over ``V`` outcomes per leading index;
* ``mask`` (bool or 0/1) broadcasts to the leading dimensions and selects the rows that count,
  e.g. to drop padding. Rows it leaves out are ignored entirely, *including validation*, so
  padding may hold zeros or NaN and its labels may be ``-100``;
* every selected row must be finite, non-negative and sum to 1 within ``atol`` (default
  ``1e-3``: loose enough for float16 softmax outputs, tight enough to catch logits or
  unnormalised scores; bfloat16 rows can miss it, so softmax in float32 or raise ``atol``).
  Rows are renormalised before the JSD so it matches
  ``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2`` up to float rounding;
* arithmetic is float64; argmax ties go to the lowest index (numpy's rule), on both sides alike;
* bad input raises :class:`~hf_illusions.errors.FaithfulnessInputError` (a ``ValueError``)
  whose message names the offending argument.

Validation happens where input is untrusted — the public functions below, which users and the
``evaluate`` module call. The evaluation loop scores softmax outputs of models it ran itself
(distributions by construction) and calls the trusted :func:`jsd_rows` directly: validating
every (query × key) attention row of every proxy dominated the evaluation time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hf_illusions.errors import FaithfulnessInputError

__all__ = [
    "DEFAULT_ATOL",
    "accuracy",
    "agreement",
    "entropy_rows",
    "faithfulness",
    "jsd",
    "jsd_per_row",
    "jsd_rows",
    "normalize_rows",
]

DEFAULT_ATOL = 1e-3
"""How far a row's sum may stray from 1 before it is rejected as not being a distribution."""


# --------------------------------------------------------------------------- input handling


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Turn lists, numpy arrays and torch tensors (any device, bf16, requiring grad) into numpy.

    torch is recognised by the type's module rather than imported, so this file stays torch-free.
    """
    if type(x).__module__.split(".", 1)[0] == "torch":
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # numpy has no bfloat16
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except ValueError as err:  # ragged nested lists
        raise FaithfulnessInputError(
            f"{name} could not be read as an array ({err}); every row must have the same length"
        ) from None
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise FaithfulnessInputError(f"{name} must be numeric, could not convert it: {err}") from None
    if arr.dtype.kind not in "biuf":
        raise FaithfulnessInputError(f"{name} must be numeric (bool, int or float), got dtype {arr.dtype}")
    return arr


def _row_index(bad: np.ndarray) -> tuple[int, ...]:
    """The leading-dims index of the first flagged row (for error messages and for indexing)."""
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _where(idx: tuple[int, ...]) -> str:
    """``row 3`` for 2-D input, ``row (0, 3)`` for (batch, seq, V), ``the row`` for a single 1-D row."""
    if not idx:
        return "the row"
    return f"row {idx[0]}" if len(idx) == 1 else f"row {idx}"


def _check_atol(atol: float) -> float:
    """``atol`` as a float in [0, 1): from 1 up, an all-zero row would pass and then divide by 0."""
    try:
        value = float(atol)
    except (TypeError, ValueError):
        raise FaithfulnessInputError(f"atol must be a number in [0, 1), got {atol!r}") from None
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise FaithfulnessInputError(f"atol must be in [0, 1), got {value}")
    return value


def _distributions(x: Any, name: str, axis: int = -1) -> np.ndarray:
    """Convert to float64 with the outcome axis last; reject scalars, bad axes and empty input."""
    arr = _to_numpy(x, name).astype(np.float64, copy=False)
    if arr.ndim == 0:
        raise FaithfulnessInputError(
            f"{name} must have shape (..., V) with one distribution per row, got a scalar"
        )
    try:
        arr = np.moveaxis(arr, axis, -1)
    except np.exceptions.AxisError:
        raise FaithfulnessInputError(
            f"axis={axis} is out of range for {name} with shape {arr.shape}"
        ) from None
    if arr.size == 0:
        raise FaithfulnessInputError(f"{name} is empty (shape {arr.shape}); need at least one row of V >= 1")
    return arr


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise FaithfulnessInputError(
            f"{name_a} and {name_b} must have the same shape, got {name_a} {a.shape} and {name_b} {b.shape}"
        )


def _selection(mask: Any, lead: tuple[int, ...], name: str = "mask", allow_empty: bool = False) -> np.ndarray:
    """Boolean array of shape ``lead`` saying which rows count; all of them when ``mask`` is None."""
    if mask is None:
        return np.ones(lead, dtype=bool)
    m = _to_numpy(mask, name)
    if m.dtype.kind != "b":
        if not np.all(np.isin(m, (0, 1))):  # NaN fails this too
            raise FaithfulnessInputError(f"{name} must be boolean or 0/1, got values {np.unique(m)[:5]}")
        m = m.astype(bool)
    try:
        m = np.broadcast_to(m, lead)
    except ValueError:
        raise FaithfulnessInputError(
            f"{name} with shape {m.shape} does not broadcast to the leading (row) dimensions {lead}"
        ) from None
    if not (allow_empty or m.any()):
        raise FaithfulnessInputError(f"{name} selects no rows; nothing to average over")
    return m


def _validate_rows(arr: np.ndarray, sel: np.ndarray, name: str, atol: float) -> None:
    """Reject selected rows that are not probability distributions, naming the first bad row."""
    nonfinite = sel & ~np.isfinite(arr).all(axis=-1)
    if nonfinite.any():
        raise FaithfulnessInputError(
            f"{name} has non-finite values (NaN or inf) in {_where(_row_index(nonfinite))}"
        )
    negative = sel & (arr < 0).any(axis=-1)
    if negative.any():
        raise FaithfulnessInputError(f"{name} has negative values in {_where(_row_index(negative))}")
    sums = arr.sum(axis=-1)
    off = sel & (np.abs(sums - 1.0) > atol)
    if off.any():
        idx = _row_index(off)
        raise FaithfulnessInputError(
            f"{name} rows must sum to 1 (within atol={atol}); {_where(idx)} sums to {sums[idx]:.6g}. "
            "Pass probabilities (e.g. softmax of the logits), not logits or scores"
        )


def _labels(labels: Any, lead: tuple[int, ...], sel: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    """Validate class ids (shape = leading dims, integers in [0, V) where selected); return them selected."""
    lab = _to_numpy(labels, name)
    if lab.shape != lead:
        raise FaithfulnessInputError(
            f"{name} must have the leading (row) shape of the distributions, got {name} {lab.shape} "
            f"and rows {lead}"
        )
    chosen = lab[sel]
    if chosen.dtype.kind == "f":
        if not (np.isfinite(chosen).all() and np.all(chosen == np.round(chosen))):
            raise FaithfulnessInputError(f"{name} must be integer class ids, got non-integer values")
    elif chosen.dtype.kind not in "iu":
        raise FaithfulnessInputError(f"{name} must be integer class ids, got dtype {lab.dtype}")
    chosen = chosen.astype(np.int64)
    out = (chosen < 0) | (chosen >= n_classes)
    if out.any():
        raise FaithfulnessInputError(
            f"{name} must lie in [0, {n_classes}) where the mask selects a row, got {chosen[out][0]}"
            " (mask out ignored positions such as -100 padding labels)"
        )
    return chosen


# --------------------------------------------------------------------------- arithmetic

_LN2 = float(np.log(2.0))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def _xlogx(x: Any) -> Any:
    """``x * ln(x)`` elementwise with ``0 ln 0 = 0``, for numpy arrays or torch tensors.

    The only primitive that differs between the two array libraries: torch fuses it
    (``special.xlogy``); numpy needs a guarded log (``scipy.special.xlogy`` would do it too, but
    importing scipy.special costs ~0.4 s on every ``import hf_illusions.metrics``).
    """
    if _is_torch(x):
        return x.xlogy(x)
    pos = x > 0
    return np.where(pos, x * np.log(np.where(pos, x, 1.0)), 0.0)


def entropy_rows(x: Any) -> Any:
    """Shannon entropy in bits of every row of ``x`` (rows already normalised), numpy or torch."""
    return -_xlogx(x).sum(-1) / _LN2


def normalize_rows(x: Any) -> Any:
    """Rows divided by their sums, as scipy's ``jensenshannon`` does before comparing them."""
    return x / x.sum(-1, keepdims=True)


def jsd_rows(p: Any, q: Any, q_entropy: Any = None) -> Any:
    """Per-row JSD (base 2, in [0, 1]) of *trusted* rows; numpy arrays or torch tensors alike.

    The one implementation of the formula: :func:`jsd_per_row` and friends call it on validated
    float64 numpy rows, and the evaluation loop calls it directly on float64 torch tensors of
    softmax outputs (distributions by construction, so validating them again per proxy would
    only cost time). It uses ``JSD = H((p + q) / 2) − (H(p) + H(q)) / 2``: three entropies and
    no ratios, so the original's entropy can be computed once and shared by every proxy — pass
    it as ``q_entropy`` (``entropy_rows`` of ``q``), in which case ``q`` must already be
    normalised (:func:`normalize_rows`). In float64 the absolute error is ~1e-16 · log2(V); the
    result is exactly symmetric and exactly 0 on equal rows.
    """
    p = normalize_rows(p)
    if q_entropy is None:
        q = normalize_rows(q)
        q_entropy = entropy_rows(q)
    js = entropy_rows((p + q) / 2) - (entropy_rows(p) + q_entropy) / 2
    return js.clip(0.0, 1.0)  # float error can leave it a hair outside the true range


# --------------------------------------------------------------------------- public API


def jsd_per_row(
    p: Any, q: Any, *, axis: int = -1, atol: float = DEFAULT_ATOL, mask: Any = None
) -> np.ndarray:
    """Jensen–Shannon divergence (base 2) of every row pair, shape ``p.shape`` minus ``axis``.

    Each value equals ``scipy.spatial.distance.jensenshannon(p_row, q_row, base=2) ** 2`` and lies
    in [0, 1]: 0 iff the rows are equal, 1 iff their supports are disjoint. Unlike :func:`jsd`
    this keeps the per-position values, to break faithfulness down by depth, length, ... Without
    ``mask`` every row must be a valid distribution; with it, rows it leaves out (padding) are
    not validated and come back as NaN, so summing them by mistake is loud rather than silent.
    """
    atol = _check_atol(atol)
    pa, qa = _distributions(p, "p", axis), _distributions(q, "q", axis)
    _same_shape(pa, qa, "p", "q")
    sel = _selection(mask, pa.shape[:-1], allow_empty=True)
    _validate_rows(pa, sel, "p", atol)
    _validate_rows(qa, sel, "q", atol)
    if mask is None:
        return jsd_rows(pa, qa)
    out = np.full(pa.shape[:-1], np.nan)
    out[sel] = jsd_rows(pa[sel], qa[sel])
    return out


def jsd(p: Any, q: Any, mask: Any = None, axis: int = -1, *, atol: float = DEFAULT_ATOL) -> float:
    """Mean Jensen–Shannon divergence (base 2, in [0, 1]) over the rows ``mask`` selects.

    Symmetric and bounded, unlike KL, so it stays finite when the proxy puts zero mass where the
    original does not, which is exactly the out-of-distribution failure being measured.
    """
    atol = _check_atol(atol)
    pa, qa = _distributions(p, "p", axis), _distributions(q, "q", axis)
    _same_shape(pa, qa, "p", "q")
    sel = _selection(mask, pa.shape[:-1])
    _validate_rows(pa, sel, "p", atol)
    _validate_rows(qa, sel, "q", atol)
    return float(jsd_rows(pa[sel], qa[sel]).mean())


def agreement(p: Any, q: Any, mask: Any = None, *, atol: float = DEFAULT_ATOL) -> float:
    """Fraction of selected rows where ``p`` and ``q`` have the same argmax.

    The proxy can match the original's top prediction while its JSD is poor (or vice versa), so
    both are reported. Inputs are validated as distributions to catch logits passed by mistake.
    """
    atol = _check_atol(atol)
    pa, qa = _distributions(p, "p"), _distributions(q, "q")
    _same_shape(pa, qa, "p", "q")
    sel = _selection(mask, pa.shape[:-1])
    _validate_rows(pa, sel, "p", atol)
    _validate_rows(qa, sel, "q", atol)
    return float(np.mean(pa[sel].argmax(axis=-1) == qa[sel].argmax(axis=-1)))


def accuracy(p: Any, labels: Any, mask: Any = None, *, atol: float = DEFAULT_ATOL) -> float:
    """Fraction of selected rows whose argmax equals the integer label.

    ``labels`` has the leading shape of ``p``; labels of masked-out rows are not checked, so
    ``-100`` padding is fine as long as the mask drops it.
    """
    atol = _check_atol(atol)
    pa = _distributions(p, "p")
    sel = _selection(mask, pa.shape[:-1])
    _validate_rows(pa, sel, "p", atol)
    lab = _labels(labels, pa.shape[:-1], sel, pa.shape[-1], "labels")
    return float(np.mean(pa[sel].argmax(axis=-1) == lab))


def faithfulness(
    proxy: Any,
    original: Any,
    references: Any = None,
    mask: Any = None,
    *,
    atol: float = DEFAULT_ATOL,
    arg_names: Mapping[str, str] | None = None,
) -> dict[str, float | int]:
    """How faithful ``proxy`` is to ``original``: every number of the paper's tables in one pass.

    Args:
        proxy: the simplified model's distributions, shape ``(..., V)``.
        original: the original model's distributions, same shape.
        references: optional integer task labels, shape ``proxy.shape[:-1]``.
        mask: optional bool/0-1 row selection broadcastable to ``proxy.shape[:-1]``.
        atol: tolerance on each selected row summing to 1.
        arg_names: display names for ``proxy``/``original``/``references``/``mask`` in error
            messages, for wrappers (the ``evaluate`` module) whose users call them otherwise.

    Returns:
        ``{"jsd", "agreement", "n"}`` (``n`` = rows counted), plus ``accuracy_proxy`` and
        ``accuracy_original`` when ``references`` is given. Floats are plain Python floats.
    """
    names = {"proxy": "proxy", "original": "original", "references": "references", "mask": "mask"}
    names.update(arg_names or {})
    atol = _check_atol(atol)
    pa, oa = _distributions(proxy, names["proxy"]), _distributions(original, names["original"])
    _same_shape(pa, oa, names["proxy"], names["original"])
    lead = pa.shape[:-1]
    sel = _selection(mask, lead, names["mask"])
    _validate_rows(pa, sel, names["proxy"], atol)
    _validate_rows(oa, sel, names["original"], atol)
    p_rows, o_rows = pa[sel], oa[sel]
    p_top, o_top = p_rows.argmax(axis=-1), o_rows.argmax(axis=-1)
    result: dict[str, float | int] = {
        "jsd": float(jsd_rows(p_rows, o_rows).mean()),
        "agreement": float(np.mean(p_top == o_top)),
        "n": int(sel.sum()),
    }
    if references is not None:
        lab = _labels(references, lead, sel, pa.shape[-1], names["references"])
        result["accuracy_proxy"] = float(np.mean(p_top == lab))
        result["accuracy_original"] = float(np.mean(o_top == lab))
    return result

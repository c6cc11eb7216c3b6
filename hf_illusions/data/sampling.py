"""One seeded way to pick the rows a reproduction fits on and scores, for every task.

A split's prefix is a fair sample only when the split is itself an i.i.d. draw in random order.
Dyck splits are (each is filled by fresh draws from the sampler, in the order drawn), but the
code splits are not: the builder walks files sorted by path, so the first windows of a split all
come from one or two packages. :func:`sample_rows` therefore never takes a prefix: it draws a
seeded sample of row indices, stratified by a column (``package`` for code) when one is given,
with each stratum's share of the sample proportional to its share of the split (largest
remainders, so the sizes add up exactly). The indices are returned sorted, and recorded in
``results.json`` so a reader can re-score exactly the same rows.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from hf_illusions.errors import SettingsError


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator of its own per (seed, name): adding a stratum never reshuffles another."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def stratum_sizes(strata: Sequence[str], n: int) -> dict[str, int]:
    """How many rows each stratum gets in a sample of ``n``: proportional, largest remainders."""
    sizes = Counter(strata)
    total = sum(sizes.values())
    exact = {s: n * c / total for s, c in sizes.items()}
    out = {s: int(np.floor(x)) for s, x in exact.items()}
    short = n - sum(out.values())
    # ties broken by name so the allocation does not depend on dict order
    for s in sorted(exact, key=lambda s: (-(exact[s] - out[s]), s))[:short]:
        out[s] += 1
    return dict(sorted(out.items()))


def sample_rows(
    n_rows: int, n: int | None, seed: int = 0, strata: Sequence[str] | None = None, name: str = "rows"
) -> list[int]:
    """Sorted indices of a seeded sample of ``n`` of ``n_rows`` rows (all rows when ``n`` is None).

    ``strata`` (one label per row, e.g. each window's package) makes the sample stratified:
    proportional allocation, then a uniform draw without replacement within each stratum. ``name``
    (e.g. the split) keys the random stream, so two splits sampled with one seed are independent.
    Same arguments → same indices, on any machine.
    """
    if n_rows < 0:
        raise SettingsError(f"n_rows must be >= 0, got {n_rows}")
    if n is not None and n < 1:
        raise SettingsError(f"the sample size must be >= 1 or None (all rows), got {n}")
    if strata is not None and len(strata) != n_rows:
        raise SettingsError(f"strata has {len(strata)} labels for {n_rows} rows; give one label per row")
    if n is None or n >= n_rows:
        return list(range(n_rows))
    if strata is None:
        return sorted(int(i) for i in _rng(seed, name).choice(n_rows, size=n, replace=False))
    members: dict[str, list[int]] = {}
    for i, label in enumerate(strata):
        members.setdefault(str(label), []).append(i)
    chosen: list[int] = []
    for label, size in stratum_sizes([str(s) for s in strata], n).items():
        rows = members[label]
        picked = _rng(seed, f"{name}/{label}").choice(len(rows), size=size, replace=False)
        chosen += [rows[int(j)] for j in picked]
    return sorted(chosen)


STRATA_COLUMN = "package"


def sample_split_rows(split, n: int | None, name: str, seed: int = 0) -> list[int]:
    """:func:`sample_rows` of a ``datasets.Dataset``, stratified by its ``package`` column if it has one."""
    strata = split.data.column(STRATA_COLUMN).to_pylist() if STRATA_COLUMN in split.column_names else None
    return sample_rows(len(split), n, seed=seed, strata=strata, name=name)


def sample_split_ids(split, n: int | None, name: str, seed: int = 0) -> list[list[int]]:
    """The ``input_ids`` of :func:`sample_split_rows`, in row order."""
    ids = split.data.column("input_ids")
    return [ids[i].as_py() for i in sample_split_rows(split, n, name, seed)]


__all__ = ["STRATA_COLUMN", "sample_rows", "sample_split_ids", "sample_split_rows", "stratum_sizes"]

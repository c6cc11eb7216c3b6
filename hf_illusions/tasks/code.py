"""What is scored on code and how (Friedman et al. 2024, §5: faithfulness per prediction type).

Every position predicts the next character with the full-vocabulary argmax; positions are grouped
by the prediction type of the character they predict (``whitespace``, ``keyword``,
``identifier_repeat``, …, plus ``all``). The types depend on the whole source file (a window can
start inside a string), so they are not recomputed from the ids: the task is built from the
dataset splits it will score and looks each sequence's stored ``prediction_types`` up by its ids.
The builder drops duplicate windows, so ids identify a window uniquely and
:func:`hf_illusions.evaluation.evaluate_models` runs unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from hf_illusions.data.code_labels import PREDICTION_TYPES
from hf_illusions.errors import DatasetError


def type_groups(prediction_types: Sequence[int]) -> dict[str, np.ndarray]:
    """Boolean masks over prediction positions: ``all`` and one per prediction type.

    Position ``t`` predicts character ``t`` of the window (``input_ids[t + 1]``), whose label is
    ``prediction_types[t]``.
    """
    types = np.asarray(prediction_types, dtype=np.int64)
    groups = {"all": np.ones(len(types), dtype=bool)}
    groups.update({name: types == i for i, name in enumerate(PREDICTION_TYPES)})
    return groups


class CodeTask:
    """The code scoring as the evaluation loop sees it: type groups + the full argmax."""

    name = "code"
    #: groups whose accuracy is the task's headline number (others are reported too)
    headline_groups = ("all", "identifier_repeat")

    def __init__(self, rows: Iterable[dict] = ()):
        self._types: dict[tuple[int, ...], list[int]] = {}
        self.add(rows)

    @classmethod
    def from_dataset(cls, ds) -> CodeTask:
        """A task knowing every window of a ``Dataset`` or every split of a ``DatasetDict``."""
        task = cls()
        for split in ds.values() if hasattr(ds, "values") else [ds]:
            table = split.data
            task.add(
                {"input_ids": ids, "prediction_types": types}
                for ids, types in zip(
                    table.column("input_ids").to_pylist(),
                    table.column("prediction_types").to_pylist(),
                    strict=True,
                )
            )
        return task

    def add(self, rows: Iterable[dict]) -> None:
        """Register windows (``input_ids`` and ``prediction_types`` of each)."""
        for row in rows:
            ids, types = tuple(row["input_ids"]), list(row["prediction_types"])
            if len(types) != len(ids) - 1:
                raise DatasetError(
                    f"prediction_types has {len(types)} labels for {len(ids)} input_ids; "
                    "expected len(input_ids) - 1"
                )
            self._types[ids] = types

    def groups(self, input_ids: Sequence[int]) -> dict[str, np.ndarray]:
        types = self._types.get(tuple(int(i) for i in input_ids))
        if types is None:
            raise DatasetError(
                "a sequence is not among the windows this CodeTask was built from; "
                "build it with CodeTask.from_dataset(<the split being evaluated>)"
            )
        return type_groups(types)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

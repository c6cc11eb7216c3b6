"""Generic next-token scoring for a user's own model and text (issue 13, item 4).

Every position of a window predicts the next token, scored with the full-vocabulary argmax (there
is no restricted answer set as on Dyck), so ``accuracy`` equals ``accuracy_full``. Positions form
the group ``all``; a *labeller* adds one group per prediction type, as the code task does
(Friedman et al. 2024, §5 found the largest faithfulness gaps on particular token types).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from hf_illusions.errors import SettingsError

#: ``labeller(input_ids) -> labels`` gives one label per prediction position (``len(ids) - 1``):
#: the label of position ``t`` is the type of the token it predicts, ``input_ids[t + 1]``.
Labeller = Callable[[Sequence[int]], Sequence[str]]


class LanguageModelTask:
    """The evaluation loop's :class:`~hf_illusions.evaluation.Task` for plain language modelling.

    Args:
        labeller: optional per-position labeller (see :data:`Labeller`).
        labels: every label the labeller may return, in report order. Required with a labeller:
            the loop needs the same groups for every window, also for labels a window lacks.
    """

    name = "lm"
    headline_groups = ("all",)

    def __init__(self, labeller: Labeller | None = None, labels: Sequence[str] = ()):
        labels = [str(label) for label in labels]
        if labeller is not None and not labels:
            raise SettingsError("labels must list every label the labeller returns (the group names)")
        if labeller is None and labels:
            raise SettingsError("labels were given without a labeller")
        clash = {"all"}.intersection(labels) or {x for x in labels if labels.count(x) > 1}
        if clash:
            raise SettingsError(
                f"labels must be distinct and not 'all', got {sorted(clash)} twice or reserved"
            )
        self.labeller, self.labels = labeller, labels

    def groups(self, input_ids: Sequence[int]) -> dict[str, np.ndarray]:
        """``all`` (every prediction position) and, with a labeller, one mask per label."""
        n = len(input_ids) - 1
        groups = {"all": np.ones(n, dtype=bool)}
        if self.labeller is None:
            return groups
        types = np.asarray([str(x) for x in self.labeller(input_ids)], dtype=object)
        if len(types) != n:
            raise SettingsError(
                f"the labeller returned {len(types)} labels for a window of {len(input_ids)} tokens; "
                f"expected one per prediction position ({n})"
            )
        unknown = set(types.tolist()) - set(self.labels)
        if unknown:
            raise SettingsError(f"the labeller returned labels {sorted(unknown)} not in labels={self.labels}")
        groups.update({label: types == label for label in self.labels})
        return groups

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)


__all__ = ["Labeller", "LanguageModelTask"]

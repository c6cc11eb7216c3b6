"""Every card of the project, rendered with ``huggingface_hub`` from measured results.

Cards are what makes a folder a first-class Hub repo: YAML metadata the Hub indexes (library,
tags, datasets, ``model-index`` results, Space settings) and the prose a reader needs. Templates
live in ``model_cards/`` and are rendered with ``ModelCard`` / ``DatasetCard`` / ``SpaceCard``
``.from_template``; every number comes from a results file or a fresh evaluation, never typed in.
One module per card kind, all re-exported here (``from hf_illusions.cards import …``):

* :mod:`~hf_illusions.cards.model`: :func:`evaluate_checkpoint` measures, :func:`write_model_card`
  renders, for the task of the data folder (Dyck here, code in :mod:`~hf_illusions.cards.code_model`);
  ``eval_results.json`` keeps the numbers, so the card can be re-rendered without re-measuring;
* :mod:`~hf_illusions.cards.dataset`: :func:`render_dyck_dataset_card` (at build time) /
  :func:`write_dataset_card` (re-render);
* :mod:`~hf_illusions.cards.proxy`: :func:`write_proxy_card` from ``hf-illusions evaluate`` or
  ``reproduce`` results;
* :mod:`~hf_illusions.cards.metric`: :func:`write_metric_folder` assembles the ``evaluate``
  module's Space around its card;
* :mod:`~hf_illusions.cards.space`: :func:`write_space_card` renders ``spaces_app/README.md`` and
  copies the report's plot;
* :mod:`~hf_illusions.cards.common`: Hub ids, tags, templates folder and results files they share.
"""

from hf_illusions.cards.code_model import (
    CODE_ACCURACY_SPLITS,
    CODE_TAGS,
    TYPE_DEFINITIONS,
    evaluate_code_checkpoint,
    write_code_model_card,
)
from hf_illusions.cards.common import (
    HUB_REPO_IDS,
    IID_SPLIT,
    TAGS,
    TEMPLATES,
    read_results,
)
from hf_illusions.cards.dataset import render_dyck_dataset_card, write_dataset_card
from hf_illusions.cards.metric import METRIC_APP, write_metric_folder
from hf_illusions.cards.model import (
    ACCURACY_SPLITS,
    data_task,
    evaluate_checkpoint,
    results_task,
    write_dyck_model_card,
    write_model_card,
)
from hf_illusions.cards.proxy import (
    FAMILY_TITLES,
    FITTED_STATE,
    evaluate_proxy,
    proxy_results,
    write_proxy_card,
)
from hf_illusions.cards.space import SPACE_PLOT, SPACE_SUMMARY, report_summary, write_space_card

__all__ = [
    "ACCURACY_SPLITS",
    "CODE_ACCURACY_SPLITS",
    "CODE_TAGS",
    "FAMILY_TITLES",
    "FITTED_STATE",
    "HUB_REPO_IDS",
    "IID_SPLIT",
    "METRIC_APP",
    "SPACE_PLOT",
    "SPACE_SUMMARY",
    "TAGS",
    "TEMPLATES",
    "TYPE_DEFINITIONS",
    "data_task",
    "evaluate_checkpoint",
    "evaluate_code_checkpoint",
    "evaluate_proxy",
    "proxy_results",
    "read_results",
    "render_dyck_dataset_card",
    "report_summary",
    "results_task",
    "write_code_model_card",
    "write_dataset_card",
    "write_dyck_model_card",
    "write_metric_folder",
    "write_model_card",
    "write_proxy_card",
    "write_space_card",
]

"""The project's sweeps and presets: which settings a reproduction runs, with the measurement
behind each choice. :class:`~hf_illusions.config.ReproductionConfig` is made from them
(``ReproductionConfig.for_task``); change a run with its fields, not by editing these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASKS = ("dyck", "code")
FAMILIES = ("svd", "kmeans", "onehot", "interaction_basis", "sparse_circuit")
#: families of the code study (the interaction basis and circuits are Dyck-only extensions)
CODE_FAMILIES = ("svd", "kmeans", "onehot")

#: full rank (d_head = 64 on the shipped Dyck models) is left out: a centered projection onto every
#: principal direction is the identity, exact by construction (tested in tests/test_simplify.py)
DEFAULT_SVD_RANKS = (1, 2, 4, 8, 16, 32)
#: k-means never looks faithful on Dyck (IID agreement at closes 0.80 at k = 64, 0.83 at k = 256, 0.86
#: at k = 1024, 0.88 at k = 4096, measured by scripts/kmeans_ceiling.py into
#: reports/summary/kmeans_ceiling.json); k = 256 is the largest setting a full reproduction can afford.
#: Every other power of 4 between: k = 8 and 32 added two more unfaithful points to the same
#: monotone curve (finding 1 compares the smallest with the largest k, which stay).
DEFAULT_KMEANS_KS = (2, 4, 16, 64, 256)
#: the beyond-the-paper sweeps ``hf-illusions reproduce dyck`` (and so ``make reproduce``) adds;
#: the Python functions add them only when asked (``interaction_basis_ks``, ``circuit_slacks``)
DEFAULT_IB_KS = (8, 16, 32)
#: circuit targets, as allowed next-token loss increase (nats) over the model's own loss
DEFAULT_CIRCUIT_SLACKS = (0.01, 0.05, 0.2)
CODE_SVD_RANKS = (1, 2, 4, 8, 16, 32)
CODE_KMEANS_KS = (4, 16, 64)
#: ranks of the copying head's own SVD proxies (code)
COPY_HEAD_SVD_RANKS = (1, 2, 4, 8)

#: extra training seeds are evaluated on each family's representative settings only (≥ 2 settings
#: per swept family, so finding 1 can still be tested) and without attention metrics (no finding
#: uses them); ``--sweep seed`` on the command line
SEED_SWEEPS: dict[str, dict[str, Any]] = {
    "dyck": {
        "svd_ranks": (4, 8, 16),
        "kmeans_ks": (64, 256),
        "interaction_basis_ks": (32,),
        "circuit_slacks": (),
        "max_eval_sentences": 1000,
        "attention_metrics": False,
    },
    "code": {
        "svd_ranks": (8, 16, 32),
        "kmeans_ks": (16, 64),
        "copy_head_ranks": (4, 8),
        "max_eval_sentences": 400,
        "attention_metrics": False,
    },
}
#: sentences (windows) scored per test split by ``hf-illusions reproduce`` (and so ``make
#: reproduce``), full sweep and seed sweep alike: every report of a task scores the same seeded rows,
#: so seeds are compared on the same sentences. Half of each 2,000-sentence Dyck split and two thirds
#: of the 600 code windows the first code reports scored: the intervals are ~1.4x (~1.2x) wider, and
#: every shipped model fits a 20-minute reproduction on 2 cores. ``--max_eval_sentences`` overrides.
EVAL_SENTENCES = {"dyck": 1000, "code": 400}
#: the proxies whose attention JSD / argmax agreement the full sweep measures (the report's
#: "Attention JSD per layer" table): the representative settings the README and the findings show,
#: plus whole-model one-hot. Attention metrics are float64 over every (head, query, key) entry and
#: cost about one more forward pass per proxy; no finding uses them.
ATTENTION_PROXIES = {
    "dyck": ("svd_r8", "svd_r16", "onehot", "onehot_l1", "ib_k32", "circuit_0p01"),
    "code": ("svd_r16", "onehot", "copy_svd_r8", "copy_onehot"),
}
#: a smoke run (``--quick``): fewer settings, sentences and fitting sequences
QUICK = {
    "dyck": {
        "svd_ranks": (1, 4, 16),
        "kmeans_ks": (4, 16),
        "max_eval_sentences": 200,
        "n_fit_sequences": 200,
        "interaction_basis_ks": (16,),
        "circuit_slacks": (0.1,),
    },
    "code": {"svd_ranks": (1, 4, 16), "kmeans_ks": (4, 16), "max_eval_sentences": 200, "n_fit_sequences": 50},
}

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
#: per task: the shipped model, the dataset folder, the preset it is built with, the report folder
TASK_DEFAULTS = {
    "dyck": {"model": str(CHECKPOINTS / "dyck"), "data": "dyck-illusions", "data_config": "dyck-20-10",
             "out": "reports/dyck"},
    "code": {"model": str(CHECKPOINTS / "code"), "data": "code-illusions", "data_config": "code-py",
             "out": "reports/code"},
}  # fmt: skip
#: the Python API's sweep of each task (``reproduce_dyck`` / ``reproduce_code``): the paper's
FUNCTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "dyck": {"svd_ranks": DEFAULT_SVD_RANKS, "kmeans_ks": DEFAULT_KMEANS_KS, "n_fit_sequences": 1000,
             "max_eval_sentences": None},
    "code": {"svd_ranks": CODE_SVD_RANKS, "kmeans_ks": CODE_KMEANS_KS, "copy_head_ranks": COPY_HEAD_SVD_RANKS,
             "n_fit_sequences": 250, "max_eval_sentences": 600},
}  # fmt: skip

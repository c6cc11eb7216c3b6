"""One Dyck sentence through the original model and one proxy: the numbers the Space shows.

Friedman et al. (2024, §4) measure faithfulness over whole splits; one sentence at a time shows
*where* a proxy leaves the model — which next-token predictions change, and how the attention
pattern differs. Everything here is plain Python the Space (``spaces_app/app.py``) only lays out:

* :class:`ProxyBank` fits every simplifier setting of the report's sweep once, per layer, from a
  single pass of queries/keys over the fitting sequences, and assembles a proxy for any choice of
  simplified layers on demand (no fitting per request).
* :func:`analyze_sentence` validates a sentence, runs the model and a proxy once each with
  ``output_attentions=True``, and returns per-position predictions, disagreements and the
  per-sentence faithfulness computed with :mod:`hf_illusions.metrics` — the same definitions as
  :func:`hf_illusions.evaluation.evaluate_models` (tested to agree).
* :class:`IllusionExplorer` bundles the model, the bank and the split pools a visitor samples from.

The bank is :mod:`hf_illusions.proxy_bank` and the checks of which models and sentences the Space
can read are :mod:`hf_illusions.dyck_inputs`; this module re-exports both, so the Space and its tests
import everything from here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hf_illusions.data.dyck_language import DyckVocab
from hf_illusions.dyck_inputs import check_dyck_tokenizer, dyck_task, position_limit, sentence_ids
from hf_illusions.errors import IllusionsError
from hf_illusions.metrics import accuracy, faithfulness, jsd, jsd_per_row
from hf_illusions.proxy_bank import METHODS, ProxyBank, ProxyChoice
from hf_illusions.simplify.seam import expose_attention_weights
from hf_illusions.tasks.dyck import DyckTask, closing_bracket_logits

if TYPE_CHECKING:
    from hf_illusions.config import ReproductionConfig

GROUPS = ("all", "close", "long_distance")
SCORED_GROUPS = ("close", "long_distance")


@dataclass(frozen=True)
class PositionPrediction:
    """Position ``t`` reads ``context`` and predicts the next token ``target``.

    ``original``/``proxy`` are the full-vocabulary argmaxes (what *agreement* compares);
    ``original_close``/``proxy_close`` the argmax among closing brackets, the scored prediction
    (Murty et al. 2023), set only where ``target`` is a closing bracket.
    """

    position: int
    context: str
    target: str
    original: str
    proxy: str
    p_target_original: float
    p_target_proxy: float
    jsd: float
    is_close: bool
    is_long_distance: bool
    original_close: str | None = None
    proxy_close: str | None = None

    @property
    def agree(self) -> bool:
        return self.original == self.proxy


@dataclass
class SentenceAnalysis:
    """Everything the Space shows for one sentence and one proxy.

    ``metrics[group]`` has ``n``, ``jsd``, ``agreement`` (of the argmaxes among closing brackets,
    the scored candidate set) and ``agreement_full`` (whole vocabulary) for every group and, for the scored
    groups (``close``, ``long_distance``), ``accuracy_original`` and ``accuracy_proxy``; a group
    with no positions has ``n = 0`` and ``None`` elsewhere. ``attentions[layer]`` is a pair of
    ``(n_head, query, key)`` arrays (original, proxy).
    """

    tokens: list[str]
    input_ids: list[int]
    proxy_name: str
    predictions: list[PositionPrediction]
    metrics: dict[str, dict[str, float | int | None]]
    attention_jsd: dict[int, float]
    attentions: dict[int, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    seconds: float = 0.0

    @property
    def n_brackets(self) -> int:
        return len(self.tokens) - 2

    @property
    def disagreements(self) -> list[int]:
        """Positions where the proxy's top prediction differs from the original's."""
        return [p.position for p in self.predictions if not p.agree]


@torch.no_grad()
def _run(model: torch.nn.Module, ids: torch.Tensor, vocab: DyckVocab) -> dict[str, Any]:
    """One forward pass: next-token and closing-bracket distributions, and attention maps, as numpy."""
    out = model(ids, output_attentions=True, use_cache=False)
    logits = out.logits[0, :-1].float()
    return {
        "probs": logits.softmax(-1).cpu().numpy(),
        "close_probs": closing_bracket_logits(logits, vocab).softmax(-1).cpu().numpy(),
        "attentions": [a[0].float().cpu().numpy() for a in out.attentions],
    }


def _group_metrics(
    orig: dict, prox: dict, targets: np.ndarray, groups: Mapping[str, np.ndarray], vocab: DyckVocab
) -> dict[str, dict[str, float | int | None]]:
    """Faithfulness per position group, and scored accuracy of both models on the close groups."""
    metrics: dict[str, dict[str, float | int | None]] = {}
    for group in GROUPS:
        mask = groups[group]
        res: dict[str, float | int | None] = {
            "n": int(mask.sum()),
            "jsd": None,
            "agreement": None,
            "agreement_full": None,
        }
        if group in SCORED_GROUPS:
            res.update(accuracy_original=None, accuracy_proxy=None)
        if res["n"]:
            res.update(faithfulness(prox["probs"], orig["probs"], mask=mask))
            # headline agreement uses the scored candidate set (closing brackets), as accuracy does
            res["agreement_full"] = res["agreement"]
            same = prox["close_probs"].argmax(-1) == orig["close_probs"].argmax(-1)
            res["agreement"] = float(same[mask].mean())
            if group in SCORED_GROUPS:
                labels = np.where(mask, targets - vocab.close_ids.start, -100)  # index among closes
                res["accuracy_original"] = accuracy(orig["close_probs"], labels, mask=mask)
                res["accuracy_proxy"] = accuracy(prox["close_probs"], labels, mask=mask)
        metrics[group] = res
    return metrics


def _predictions(
    tokens: list[str], orig: dict, prox: dict, groups: Mapping[str, np.ndarray], vocab: DyckVocab
) -> list[PositionPrediction]:
    names, index, close_start = vocab.tokens, vocab.token_to_id(), vocab.close_ids.start
    per_position = jsd_per_row(prox["probs"], orig["probs"])

    def close(side: dict, t: int) -> str:
        return names[close_start + int(side["close_probs"][t].argmax())]

    out = []
    for t in range(len(tokens) - 1):
        target = index[tokens[t + 1]]
        is_close = bool(groups["close"][t])
        out.append(
            PositionPrediction(
                position=t,
                context=tokens[t],
                target=tokens[t + 1],
                original=names[int(orig["probs"][t].argmax())],
                proxy=names[int(prox["probs"][t].argmax())],
                p_target_original=float(orig["probs"][t, target]),
                p_target_proxy=float(prox["probs"][t, target]),
                jsd=float(per_position[t]),
                is_close=is_close,
                is_long_distance=bool(groups["long_distance"][t]),
                original_close=close(orig, t) if is_close else None,
                proxy_close=close(prox, t) if is_close else None,
            )
        )
    return out


def analyze_sentence(
    model: torch.nn.Module,
    proxy: torch.nn.Module,
    sentence: str,
    task: DyckTask | None = None,
    proxy_name: str = "proxy",
) -> SentenceAnalysis:
    """Run ``model`` and ``proxy`` on one sentence; per-position predictions and faithfulness.

    Faithfulness is Friedman et al.'s (2024, §3): JSD (base 2) between the two next-token
    distributions and agreement of their argmaxes, per position group of
    :meth:`~hf_illusions.tasks.dyck.DyckTask.groups`; accuracy is the task's scored prediction.
    Attention JSD per layer is the mean over heads and query positions, as in the evaluation loop.
    """
    start = time.perf_counter()
    task = task or dyck_task(model)
    vocab = task.vocab
    input_ids = sentence_ids(sentence, vocab, position_limit(model))
    tokens = [vocab.tokens[i] for i in input_ids]
    ids = torch.tensor([input_ids], dtype=torch.long, device=next(model.parameters()).device)
    orig, prox = _run(model, ids, vocab), _run(proxy, ids, vocab)
    groups = task.groups(input_ids)
    layers = range(len(orig["attentions"]))
    return SentenceAnalysis(
        tokens=tokens,
        input_ids=input_ids,
        proxy_name=proxy_name,
        predictions=_predictions(tokens, orig, prox, groups, vocab),
        metrics=_group_metrics(orig, prox, np.asarray(input_ids[1:]), groups, vocab),
        attention_jsd={  # rows = (query, head) pairs, as evaluation._add_attention_jsd
            layer: jsd(
                np.swapaxes(prox["attentions"][layer], 0, 1), np.swapaxes(orig["attentions"][layer], 0, 1)
            )
            for layer in layers
        },
        attentions={layer: (orig["attentions"][layer], prox["attentions"][layer]) for layer in layers},
        seconds=time.perf_counter() - start,
    )


class IllusionExplorer:
    """The Space's state, loaded once: model, fitted proxies and the splits to sample from.

    Args:
        model: the original model (eval mode is set here).
        dataset: a ``DatasetDict`` with ``train`` (for fitting) and the splits to sample from.
        fit_rows: the rows the proxies are fitted on (default: ``dataset["train"]``, its first rows).
        **bank_kwargs: passed to :class:`ProxyBank` (``svd_ranks``, ``kmeans_ks``,
            ``n_fit_sequences``, ``seed``).
    """

    def __init__(
        self, model: torch.nn.Module, dataset: Mapping[str, Any], fit_rows: Any = None, **bank_kwargs: Any
    ):
        if "train" not in dataset:
            raise IllusionsError(f"dataset needs a 'train' split to fit simplifiers on, has {list(dataset)}")
        self.task = dyck_task(model)
        # the Space draws attention maps, which sdpa (a stock model's default) does not return
        self.model = expose_attention_weights(model).eval()
        self.dataset = dataset
        self.bank = ProxyBank(model, dataset["train"] if fit_rows is None else fit_rows, **bank_kwargs)

    @classmethod
    def from_paths(
        cls, model_path: str | Path, data_path: str | Path, build_missing: bool = True, **bank_kwargs: Any
    ) -> IllusionExplorer:
        """:meth:`from_config` of the Dyck reproduction's config with this model and data, and
        ``bank_kwargs`` (``svd_ranks``, ``kmeans_ks``, ``n_fit_sequences``) changing its sweep."""
        from hf_illusions.config import ReproductionConfig

        changes = {name: value for name, value in bank_kwargs.items() if value is not None}
        config = ReproductionConfig.for_task("dyck", model=model_path, data=data_path, **changes)
        return cls.from_config(config, build_missing)

    @classmethod
    def from_config(cls, config: ReproductionConfig, build_missing: bool = True) -> IllusionExplorer:
        """The Space for a reproduction: its model, its data (built if missing), and the proxies of its
        sweep (SVD ranks, k-means k, one-hot) fitted on the very rows the report's proxies were fitted
        on — the config's seeded sample of ``train`` — so a visitor inspects the report's proxies.

        The model may be ours or any transformers causal LM over the Dyck vocabulary (a
        ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` from ``train --architecture``); a folder the
        Space cannot serve raises an :class:`~hf_illusions.errors.IllusionsError` saying why
        (no Dyck vocabulary or tokenizer, data of another vocabulary, attention the proxies
        cannot patch) before anything is fitted.
        """
        from hf_illusions.checkpoints import check_model_fits, resolve
        from hf_illusions.data.hub_folder import read_settings
        from hf_illusions.reproduction.inputs import sample_split
        from hf_illusions.simplify.geometry import model_geometry

        if config.task != "dyck":
            raise IllusionsError(f"the Space explores Dyck models; this config's task is {config.task!r}")
        folder = resolve(config.model)
        model = load_model(folder)
        check_dyck_tokenizer(folder, dyck_task(model).vocab)
        model_geometry(model)  # raises SimplifierError for attention the seam cannot patch
        dataset = load_dyck_data(config.data, build_missing)
        check_model_fits(model, read_settings(config.data).vocab.size, 0, f"the data in {config.data!r}")
        n_fit, sweep = config.sample.n_fit_sequences, config.sweep
        fit_rows = dataset["train"].select(sample_split(dataset["train"], n_fit, "train", config.sample.seed))
        return cls(
            model, dataset, fit_rows, svd_ranks=sweep.svd_ranks, kmeans_ks=sweep.kmeans_ks,
            n_fit_sequences=n_fit, seed=sweep.fit_seed,
        )  # fmt: skip

    @property
    def splits(self) -> list[str]:
        return list(self.dataset)

    def analyze(self, sentence: str, choice: ProxyChoice) -> SentenceAnalysis:
        return analyze_sentence(self.model, self.bank.proxy(choice), sentence, self.task, choice.name)

    def sample(self, split: str, rng: random.Random | None = None) -> str:
        """A random sentence of ``split`` that the model can read, as space-separated brackets."""
        if split not in self.dataset:
            raise IllusionsError(f"split must be one of {self.splits}, got {split!r}")
        rows = self.dataset[split]
        rng = rng or random.Random()
        limit = position_limit(self.model)
        for _ in range(100):
            tokens = rows[rng.randrange(len(rows))]["tokens"]
            if len(tokens) <= limit:
                return " ".join(tokens[1:-1])
        raise IllusionsError(f"no sentence of {split!r} fits the model's {limit} positions")


def load_model(path: str | Path) -> torch.nn.Module:
    """The model in a folder or Hub id, checked by :func:`~hf_illusions.checkpoints.load_checkpoint`."""
    from hf_illusions.checkpoints import load_checkpoint

    return load_checkpoint(path)


def load_dyck_data(path: str | Path, build_missing: bool = True) -> Any:
    """The Dyck splits from a local Hub-style folder, building it (deterministic, ~20 s) if missing.

    Building instead of downloading keeps the Space runnable offline and from a fresh clone; the
    result is byte-identical to the published dataset (same seed).
    """
    from hf_illusions.data.hub_folder import load_folder, write_dyck_folder

    path = Path(path)
    if build_missing and not path.exists():
        print(f"building the Dyck dataset into {path}/ (once; ~20 s)", flush=True)
        write_dyck_folder(path, config_name="dyck-20-10")
    return load_folder(path)  # raises DatasetError naming the folder if it is missing


__all__ = [
    "METHODS",
    "IllusionExplorer",
    "PositionPrediction",
    "ProxyBank",
    "ProxyChoice",
    "SentenceAnalysis",
    "analyze_sentence",
    "check_dyck_tokenizer",
    "dyck_task",
    "load_dyck_data",
    "load_model",
    "position_limit",
    "sentence_ids",
]

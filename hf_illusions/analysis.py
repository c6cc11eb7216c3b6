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
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_illusions.data.dyck_language import (
    BOS,
    EOS,
    SPECIAL_TOKENS,
    DyckVocab,
    codes_to_ids,
    parse_sentence,
)
from hf_illusions.errors import CheckpointError, DyckError, IllusionsError, SimplifierError
from hf_illusions.metrics import accuracy, faithfulness, jsd, jsd_per_row
from hf_illusions.simplify.seam import expose_attention_weights
from hf_illusions.tasks.dyck import DyckTask, closing_bracket_logits

METHODS = ("svd", "kmeans", "onehot")
SETTING_NAMES = {"svd": "rank", "kmeans": "k", "onehot": None}
GROUPS = ("all", "close", "long_distance")
SCORED_GROUPS = ("close", "long_distance")


@dataclass(frozen=True)
class ProxyChoice:
    """What a visitor picks: simplifier family, its setting (rank or k) and the simplified layers.

    ``layers=None`` simplifies every layer (the report's setting).
    """

    method: str
    setting: int | None = None
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SimplifierError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "onehot":
            object.__setattr__(self, "setting", None)
        elif self.setting is None or int(self.setting) < 1:
            raise SimplifierError(
                f"setting ({SETTING_NAMES[self.method]}) must be an integer >= 1 for {self.method!r}, "
                f"got {self.setting!r}"
            )
        else:
            object.__setattr__(self, "setting", int(self.setting))
        if self.layers is not None:
            layers = tuple(sorted({int(layer) for layer in self.layers}))
            if not layers:
                raise SimplifierError("layers must name at least one layer, or be None for all")
            object.__setattr__(self, "layers", layers)

    @property
    def spec_name(self) -> str:
        """The report's name of this setting (``svd_r8``, ``kmeans_k16``, ``onehot``)."""
        if self.method == "svd":
            return f"svd_r{self.setting}"
        if self.method == "kmeans":
            return f"kmeans_k{self.setting}"
        return "onehot"

    @property
    def report_name(self) -> str | None:
        """This setting's name in a ``reproduce`` report, which sweeps all layers (plus one-hot per layer)."""
        if self.layers is None:
            return self.spec_name
        if self.method == "onehot" and len(self.layers) == 1:
            return f"onehot_l{self.layers[0]}"
        return None

    @property
    def name(self) -> str:
        """``svd_r8`` (all layers) or ``svd_r8@L1`` (layer 1 only)."""
        if self.layers is None:
            return self.spec_name
        return f"{self.spec_name}@L{','.join(map(str, self.layers))}"


class ProxyBank:
    """Every setting of the report's sweep, fitted once per layer; proxies built on demand.

    Fitting a head only needs that head's queries and keys on the fitting sequences, and those come
    from the *original* model whichever layers are simplified (see
    :func:`~hf_illusions.simplify.collect.fit_attention`). So one pass feeds them for all layers,
    each (setting, layer) is fitted once, and the proxy for any set of layers is assembled from
    those fits with :func:`~hf_illusions.simplify.build_proxy` — bit-identical to
    ``SVDSimplifier(rank, layers=…).fit(model, data)`` (tested), at a fraction of the cost.

    Args:
        model: the original model: our :class:`~hf_illusions.modeling.IllusionForCausalLM` or any
            causal LM whose attention goes through transformers' attention interface (Llama, GPT-2, …).
        fit_data: a ``datasets.Dataset`` with ``input_ids`` (the training split) or id lists.
        svd_ranks / kmeans_ks: the swept settings (ranks above ``d_head`` are capped).
        n_fit_sequences: fit on the first ``n_fit_sequences`` rows, as the report does.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        fit_data: Any,
        svd_ranks: Sequence[int] | None = None,
        kmeans_ks: Sequence[int] | None = None,
        n_fit_sequences: int = 1000,
    ):
        from hf_illusions.reproduce import DEFAULT_KMEANS_KS, DEFAULT_SVD_RANKS, proxy_specs
        from hf_illusions.simplify.collect import fit_attention
        from hf_illusions.simplify.geometry import model_geometry
        from hf_illusions.simplify.seam import attention_layers

        start = time.perf_counter()
        self.model = model.eval()
        # head shapes and module paths from the model itself: ours, Llama, GPT-2, … alike
        self.geometry = model_geometry(model)
        paths = {layer: path for layer, (path, _) in attention_layers(model).items()}
        specs = proxy_specs(
            self.geometry.d_head,
            DEFAULT_SVD_RANKS if svd_ranks is None else svd_ranks,
            DEFAULT_KMEANS_KS if kmeans_ks is None else kmeans_ks,
            onehot=True,
            n_fit_sequences=n_fit_sequences,
        )
        self.specs = {spec.name: spec for spec in specs}
        self.heads = {layer: list(range(self.geometry.n_head)) for layer in range(self.geometry.n_layer)}
        for spec in specs:
            spec.simplifier.resolve(model)  # rejects proxies and impossible settings up front
        needs_data = [spec for spec in specs if spec.simplifier.needs_data]
        # one streamed pass feeds every setting: each fit is the one its simplifier would do alone
        simplifiers = [spec.simplifier for spec in needs_data]
        fits = fit_attention(model, fit_data, simplifiers, self.heads, n_fit_sequences) if needs_data else []
        self._fitted: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        for spec, fitted in zip(needs_data, fits, strict=True):
            for layer in self.heads:
                prefix = f"{paths[layer]}.simplification."
                self._fitted[(spec.name, layer)] = {k: v for k, v in fitted.items() if k.startswith(prefix)}
        self._proxies: dict[ProxyChoice, torch.nn.Module] = {}
        self.fit_seconds = time.perf_counter() - start

    @property
    def options(self) -> dict[str, list[int]]:
        """Settings a visitor can pick per method: ``{"svd": ranks, "kmeans": ks, "onehot": []}``."""
        out: dict[str, list[int]] = {method: [] for method in METHODS}
        for spec in self.specs.values():
            if spec.param is not None:
                out[spec.family].append(int(spec.param))
        return out

    @property
    def n_layer(self) -> int:
        return self.geometry.n_layer

    def proxy(self, choice: ProxyChoice) -> torch.nn.Module:
        """The proxy for ``choice`` (built once, then cached)."""
        from hf_illusions.simplify import build_proxy

        if choice in self._proxies:
            return self._proxies[choice]
        spec = self.specs.get(choice.spec_name)
        if spec is None:
            raise SimplifierError(
                f"{SETTING_NAMES[choice.method]}={choice.setting} was not fitted for {choice.method!r}; "
                f"choose one of {self.options[choice.method]}"
            )
        layers = list(range(self.n_layer)) if choice.layers is None else list(choice.layers)
        bad = [layer for layer in layers if layer not in self.heads]
        if bad:
            raise SimplifierError(f"layers {bad} out of range: the model has n_layer={self.n_layer}")
        state: dict[str, torch.Tensor] = {}
        if spec.simplifier.needs_data:
            for layer in layers:
                state.update(self._fitted[(spec.name, layer)])
        heads = {layer: self.heads[layer] for layer in layers}
        proxy = build_proxy(self.model, spec.simplifier.name, heads, spec.simplifier.settings(), state)
        self._proxies[choice] = proxy
        return proxy


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


def position_limit(model: torch.nn.Module) -> int:
    """The longest input ``model`` reads, in tokens: ``config.max_position_embeddings``.

    Every family names it so (ours and GPT-2 map their ``n_positions`` to it; for Llama it is the
    context the model was built for), so the Space bounds sentences the same way for all of them.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit < 3:
        raise CheckpointError(
            f"{type(model).__name__}: config.max_position_embeddings is {limit!r}; the Space needs the "
            "longest input the model reads (at least <bos>, one bracket pair's first token and <eos>)"
        )
    return limit


def dyck_task(model: torch.nn.Module) -> DyckTask:
    """The Dyck task of ``model``'s vocabulary, or :class:`CheckpointError` for a non-Dyck model.

    The Space parses, scores and labels brackets by id (``DyckVocab``: 3 special tokens, then one
    opening and one closing bracket per type); a model over any other vocabulary (a GPT-2 BPE, a
    code model) would be read as meaningless brackets, so it is refused up front.
    """
    vocab_size = int(model.config.vocab_size)
    n_types, odd = divmod(vocab_size - len(SPECIAL_TOKENS), 2)
    if odd or not 1 <= n_types <= 26:
        raise CheckpointError(
            f"{type(model).__name__} has vocab_size={vocab_size}, which is no Dyck vocabulary "
            f"({len(SPECIAL_TOKENS)} special tokens + 2 per bracket type, 1–26 types): the Space "
            "serves Dyck models only, e.g. one trained by "
            "`hf-illusions train --task dyck [--architecture llama|gpt2]`"
        )
    return DyckTask(n_types=n_types)


def check_dyck_tokenizer(folder: Path, vocab: DyckVocab) -> None:
    """A tokenizer saved with the model must be the Dyck one, token for token, in the Dyck id order.

    :func:`~hf_illusions.checkpoints.check_tokenizer` enforces the id order only for tokenizers
    that hold brackets; a model folder whose vocabulary merely has the Dyck *size* would pass it
    and be silently misread here.
    """
    from hf_illusions.checkpoints import TOKENIZER_FILES

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return  # a bare model folder: its vocabulary size was checked by dyck_task
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"the tokenizer in {str(folder)!r} cannot be loaded: {err}") from None
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if tokens != list(vocab.tokens):
        bad = next((i for i, (a, b) in enumerate(zip(tokens, vocab.tokens, strict=False)) if a != b), None)
        where = f"id {bad} is {tokens[bad]!r}, not {vocab.tokens[bad]!r}" if bad is not None else (
            f"it has {len(tokens)} tokens, not {vocab.size}"
        )  # fmt: skip
        raise CheckpointError(
            f"the tokenizer in {str(folder)!r} is not the Dyck-{vocab.n_types} tokenizer ({where}): the "
            "Space serves Dyck models only (save hf_illusions.data.tokenizer.dyck_tokenizer with the model)"
        )


def sentence_ids(text: str, vocab: DyckVocab, n_positions: int) -> list[int]:
    """``[<bos>, …, <eos>]`` ids of a space-separated sentence, validated and bounded.

    Raises:
        DyckError: malformed input (unknown token, unbalanced, …), or a sentence longer than the
            model can read — checked before parsing, which also bounds the work per request.
    """
    limit = n_positions - 2  # <bos> and <eos> take two positions
    try:
        codes = parse_sentence(text, vocab, max_length=limit)
    except DyckError as err:
        if len([t for t in text.split() if t not in (BOS, EOS)]) > limit:
            raise DyckError(
                f"{err}: this model reads at most {limit} brackets (n_positions={n_positions} tokens "
                "including <bos> and <eos>); shorten the sentence"
            ) from None
        raise
    return codes_to_ids(codes)


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
        **bank_kwargs: passed to :class:`ProxyBank` (``svd_ranks``, ``kmeans_ks``, ``n_fit_sequences``).
    """

    def __init__(self, model: torch.nn.Module, dataset: Mapping[str, Any], **bank_kwargs: Any):
        if "train" not in dataset:
            raise IllusionsError(f"dataset needs a 'train' split to fit simplifiers on, has {list(dataset)}")
        self.task = dyck_task(model)
        # the Space draws attention maps, which sdpa (a stock model's default) does not return
        self.model = expose_attention_weights(model).eval()
        self.dataset = dataset
        self.bank = ProxyBank(model, dataset["train"], **bank_kwargs)

    @classmethod
    def from_paths(
        cls, model_path: str | Path, data_path: str | Path, build_missing: bool = True, **bank_kwargs: Any
    ) -> IllusionExplorer:
        """Load the model folder (or Hub id) and the dataset folder; build the data if it is missing.

        The model may be ours or any transformers causal LM over the Dyck vocabulary (a
        ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` from ``train --architecture``); a folder the
        Space cannot serve raises an :class:`~hf_illusions.errors.IllusionsError` saying why
        (no Dyck vocabulary or tokenizer, data of another vocabulary, attention the proxies
        cannot patch) before anything is fitted.
        """
        from hf_illusions.checkpoints import check_model_fits, resolve
        from hf_illusions.data.hub_folder import read_settings
        from hf_illusions.simplify.geometry import model_geometry

        folder = resolve(model_path)
        model = load_model(folder)
        check_dyck_tokenizer(folder, dyck_task(model).vocab)
        model_geometry(model)  # raises SimplifierError for attention the seam cannot patch
        dataset = load_dyck_data(data_path, build_missing)
        check_model_fits(model, read_settings(data_path).vocab.size, 0, f"the data in {str(data_path)!r}")
        return cls(model, dataset, **bank_kwargs)

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

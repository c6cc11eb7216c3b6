"""Which models and sentences the Space can read, refused up front with an error saying why.

The Space parses, scores and labels brackets by id, so a model over another vocabulary, a tokenizer
in another id order or a sentence longer than the model reads would be silently misread rather than
fail. These checks sit apart from the analysis itself (:mod:`hf_illusions.analysis`), which calls
them on every request and when loading a model folder; each raises an
:class:`~hf_illusions.errors.IllusionsError` kind naming what to change.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hf_illusions.data.dyck_language import BOS, EOS, SPECIAL_TOKENS, DyckVocab, codes_to_ids, parse_sentence
from hf_illusions.errors import CheckpointError, DyckError
from hf_illusions.tasks.dyck import DyckTask


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

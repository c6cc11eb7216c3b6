"""A `PreTrainedTokenizerFast` for Dyck sentences, saved next to every model and proxy.

Sentences are whitespace-separated tokens (``"(a (b b) a)"``); the tokenizer prepends ``<bos>``
(the models were trained with it) and never invents an unknown-token id: unknown strings are a
`DyckError` in :func:`hf_illusions.data.dyck_language.parse_sentence`, and the fast tokenizer has
no ``unk_token`` to hide them behind.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from hf_illusions.data.dyck_language import BOS, BOS_ID, EOS, PAD, DyckVocab


def dyck_tokenizer(n_types: int = 20, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the Dyck vocabulary, ids identical to `DyckVocab`."""
    vocab = DyckVocab(n_types)
    backend = Tokenizer(models.WordLevel(vocab=vocab.token_to_id(), unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, BOS_ID)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
        padding_side="right",
    )


def code_tokenizer(model_max_length: int = 257) -> PreTrainedTokenizerFast:
    r"""Character-level tokenizer with the ids of :func:`hf_illusions.data.code.encode`.

    Every character is its own token (``[\s\S]`` split), characters outside the vocabulary become
    ``<unk>``, ``<bos>`` is prepended, and decoding fuses characters back without spaces.
    """
    from tokenizers import Regex, decoders

    from hf_illusions.data import code

    vocab = {tok: i for i, tok in enumerate(code.SPECIALS)} | code.CHAR_TO_ID
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=code.UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{code.BOS} $A", special_tokens=[(code.BOS, code.BOS_ID)]
    )
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=code.BOS,
        eos_token=code.EOS,
        pad_token=code.PAD,
        unk_token=code.UNK,
        model_max_length=model_max_length,
        padding_side="right",
    )

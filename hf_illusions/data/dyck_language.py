"""The Dyck-(k, m) language: vocabulary, the Hewitt et al. sampler, parsing and structure.

Everything here is a pure function of its arguments (plus an explicit ``random.Random``), so the
builder, the ``verify`` command, the evaluation and the Space all share one definition of a
sentence, its depth and its structure.

Conventions (DESIGN.md, "Dyck task"):

* token ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, then the ``k`` opening brackets ``(a`` … and
  the ``k`` closing brackets ``a)`` …; a bracket *code* is ``0..k-1`` for opens, ``k..2k-1`` for
  closes (token id = code + 3).
* a sentence's *length* is its number of brackets (BOS/EOS excluded).
* its *structure* is the list of its top-level constituents' skeletons, bracket types erased
  (Murty et al. 2023's stack paths): ``(a (b b) a) (c c)`` → ``["(())", "()"]``.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

from hf_illusions.errors import DyckError

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
N_SPECIAL = len(SPECIAL_TOKENS)


@dataclass(frozen=True)
class DyckVocab:
    """Token strings and ids for Dyck-(n_types, ·)."""

    n_types: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.n_types <= 26:
            raise DyckError(f"n_types must be between 1 and 26 (one letter per type), got {self.n_types}")

    @property
    def letters(self) -> str:
        return string.ascii_lowercase[: self.n_types]

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order."""
        return [*SPECIAL_TOKENS, *(f"({c}" for c in self.letters), *(f"{c})" for c in self.letters)]

    @property
    def size(self) -> int:
        return N_SPECIAL + 2 * self.n_types

    @property
    def open_ids(self) -> range:
        return range(N_SPECIAL, N_SPECIAL + self.n_types)

    @property
    def close_ids(self) -> range:
        return range(N_SPECIAL + self.n_types, N_SPECIAL + 2 * self.n_types)

    def token_to_id(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.tokens)}


def sample_sentence(
    rng: random.Random,
    n_types: int = 20,
    max_depth: int = 10,
    min_length: int = 4,
    max_length: int = 510,
) -> list[int]:
    """Draw one sentence (bracket codes) from the probabilistic pushdown process of Hewitt et al. 2020.

    Empty stack: end with probability 1/2 (refused while shorter than ``min_length``), else open a
    uniform type. Non-empty stack below ``max_depth``: close the top with probability 1/2, else open.
    At ``max_depth``: close. Sentences longer than ``max_length`` brackets are redrawn whole, so
    the cap truncates the heavy tail instead of cutting sentences (stated in the dataset card).

    Raises:
        DyckError: bounds no sentence can meet (they would make the redraw loop spin forever).
    """
    DyckVocab(n_types)  # validates n_types
    if max_depth < 1:
        raise DyckError(f"max_depth must be >= 1, got {max_depth}")
    if min_length < 1:
        raise DyckError(
            f"min_length must be >= 1 (a sentence has at least one bracket pair), got {min_length}"
        )
    shortest = max(2, min_length + min_length % 2)  # sentences have an even number of brackets
    if max_length < shortest:
        raise DyckError(
            f"max_length must be >= {shortest} (the shortest sentence with min_length={min_length}), "
            f"got {max_length}"
        )
    rand = rng.random
    while True:
        out: list[int] = []
        stack: list[int] = []
        while True:
            if not stack:
                if len(out) >= min_length and rand() < 0.5:
                    return out
                t = int(rand() * n_types)
                stack.append(t)
                out.append(t)
            elif len(stack) < max_depth and rand() >= 0.5:
                t = int(rand() * n_types)
                stack.append(t)
                out.append(t)
            else:
                out.append(n_types + stack.pop())
            if len(out) > max_length:
                break  # over the cap: redraw


def parse_tokens(tokens: Sequence[str], vocab: DyckVocab, max_length: int | None = None) -> list[int]:
    """Bracket codes of a sentence given as token strings; BOS/EOS at the ends are accepted and dropped.

    ``max_length`` caps the number of brackets (e.g. a model's ``n_positions - 2``, or a Space's
    per-request budget); the check comes before any parsing work.

    Raises:
        DyckError: unknown tokens, special tokens inside the sentence, an empty sentence, a
            sentence over ``max_length`` brackets, or an unbalanced/mismatched bracket sequence
            (with the offending position).
    """
    toks = list(tokens)
    if toks and toks[0] == BOS:
        toks = toks[1:]
    if toks and toks[-1] == EOS:
        toks = toks[:-1]
    if not toks:
        raise DyckError("the sentence is empty: expected at least one bracket token such as '(a' 'a)'")
    if max_length is not None and len(toks) > max_length:
        raise DyckError(f"the sentence has {len(toks)} brackets, more than max_length={max_length}")
    index = vocab.token_to_id()
    codes = []
    for pos, tok in enumerate(toks):
        tid = index.get(tok)
        if tid is None or tid < N_SPECIAL:
            raise DyckError(
                f"unknown token {tok!r} at position {pos}: expected one of '(a'…'({vocab.letters[-1]}' "
                f"or 'a)'…'{vocab.letters[-1]})' (special tokens only at the ends)"
            )
        codes.append(tid - N_SPECIAL)
    check_balanced(codes, vocab.n_types)
    return codes


def parse_sentence(text: str, vocab: DyckVocab, max_length: int | None = None) -> list[int]:
    """Bracket codes of a whitespace-separated sentence such as ``"(a (b b) a)"``."""
    if not isinstance(text, str):
        raise DyckError(f"sentence must be a str of space-separated tokens, got {type(text).__name__}")
    return parse_tokens(text.split(), vocab, max_length)


def check_balanced(codes: Sequence[int], n_types: int) -> None:
    """Raise ``DyckError`` unless ``codes`` is a balanced, well-nested bracket sequence."""
    stack: list[int] = []
    for pos, c in enumerate(codes):
        if c < n_types:
            stack.append(c)
        elif not stack:
            raise DyckError(f"closing bracket at position {pos} has no matching opening bracket")
        elif stack[-1] != c - n_types:
            raise DyckError(
                f"closing bracket at position {pos} closes type {chr(97 + c - n_types)!r} but the "
                f"innermost open bracket is type {chr(97 + stack[-1])!r}"
            )
        else:
            stack.pop()
    if stack:
        raise DyckError(f"unbalanced sentence: {len(stack)} bracket(s) left open at the end")


def max_depth(codes: Sequence[int], n_types: int) -> int:
    """Largest stack height reached."""
    depth = best = 0
    for c in codes:
        depth += 1 if c < n_types else -1
        best = max(best, depth)
    return best


def structure(codes: Sequence[int], n_types: int) -> list[str]:
    """Skeletons of the top-level constituents, bracket types erased (split where the stack empties)."""
    skeletons, current, depth = [], [], 0
    for c in codes:
        if c < n_types:
            current.append("(")
            depth += 1
        else:
            current.append(")")
            depth -= 1
            if depth == 0:
                skeletons.append("".join(current))
                current = []
    return skeletons


def matching_open_positions(codes: Sequence[int], n_types: int) -> list[int]:
    """For each position, the index of the opening bracket a close matches (``-1`` for opens)."""
    stack: list[int] = []
    out = []
    for pos, c in enumerate(codes):
        if c < n_types:
            stack.append(pos)
            out.append(-1)
        else:
            out.append(stack.pop())
    return out


def codes_to_tokens(codes: Sequence[int], vocab: DyckVocab) -> list[str]:
    """``[<bos>, brackets…, <eos>]`` as token strings."""
    toks = vocab.tokens
    return [BOS, *(toks[c + N_SPECIAL] for c in codes), EOS]


def codes_to_ids(codes: Sequence[int]) -> list[int]:
    """``[<bos>, brackets…, <eos>]`` as token ids."""
    return [BOS_ID, *(c + N_SPECIAL for c in codes), EOS_ID]

"""Prediction types of every character of a source file (Friedman et al. 2024, §5, code completion).

The paper found the largest faithfulness gaps of simplified code models on *repeated identifiers*
(the copy / induction case), so every target character gets one of :data:`PREDICTION_TYPES`.

Labels come from a real lexer run over the **whole file** (Python's :mod:`tokenize` and
:mod:`keyword`), never from the window alone: a window that starts inside a triple-quoted string
or a comment would be mislabelled by re-lexing only what the window shows. :func:`label_python`
therefore returns per-file character types plus identifier spans, and :func:`window_types` cuts a
window out of them. Only the first-vs-repeat distinction is decided per window, because the model
sees only the window: an identifier is ``identifier_repeat`` when the same name occurred as a
complete identifier earlier *in the window*. All characters of an identifier get its type.

Non-Python sources (C headers, CodeSearchNet's other languages) go through :func:`label_c_like`, a
small documented lexer for C-family syntax: ``/* */`` and ``//`` comments, ``"…"``/``'…'``
literals, numbers, identifiers (C11 keywords are ``keyword``); preprocessor lines are lexed like
ordinary code (``#`` is punctuation, ``include``/``define`` identifiers).
"""

from __future__ import annotations

import bisect
import io
import keyword
import re
import tokenize
from dataclasses import dataclass

import numpy as np

PREDICTION_TYPES = (
    "whitespace",
    "punctuation",
    "keyword",
    "identifier_first",
    "identifier_repeat",
    "number",
    "string_or_comment",
)
TYPE_ID = {name: i for i, name in enumerate(PREDICTION_TYPES)}
#: per-file placeholder for identifiers, resolved to first/repeat per window
IDENTIFIER = TYPE_ID["identifier_first"]

_C11_KEYWORDS = """
auto break case char const continue default do double else enum extern float for goto if inline int long
register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
_Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local
"""
C_KEYWORDS = frozenset(_C11_KEYWORDS.split())
_C_LEXER = re.compile(
    r"(?P<comment>/\*.*?(?:\*/|\Z)|//[^\n]*)"
    r'|(?P<string>"(?:\\.|[^"\\\n])*"?|\'(?:\\.|[^\'\\\n])*\'?)'
    r"|(?P<number>\.?\d(?:[eEpP][+-]|[\w.])*)"
    r"|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<space>\s+)"
    r"|(?P<punct>.)",
    re.DOTALL,
)


@dataclass
class FileLabels:
    """Character types of one whole file: ``types[i]`` for ``text[i]``; identifiers as spans."""

    types: np.ndarray  # uint8, identifiers marked IDENTIFIER
    identifiers: list[tuple[int, int, str]]  # (start, stop, name), sorted by start

    def __post_init__(self) -> None:
        self._starts = [start for start, _, _ in self.identifiers]


class LabelError(ValueError):
    """A file the lexer cannot handle (the builder skips it and records why in the manifest)."""


def _line_offsets(text: str) -> list[int]:
    """Character offset of each line start, splitting on ``\\n`` only (as ``StringIO.readline`` does)."""
    offsets = [0]
    offsets.extend(m.end() for m in re.finditer("\n", text))
    return offsets


def label_python(text: str) -> FileLabels:
    """Types of every character of a Python file, from :mod:`tokenize` over the whole file.

    Characters outside every token are ``whitespace`` if they are spaces and ``punctuation``
    otherwise (line-continuation backslashes). Soft keywords (``match``, ``case``, ``type``, ``_``)
    are identifiers: they are keywords only in context, and :mod:`keyword` lists them apart.
    Raises :class:`LabelError` when :mod:`tokenize` rejects the file.
    """
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    types = np.where(np.isin(chars, [9, 10, 11, 12, 13, 32]), TYPE_ID["whitespace"], TYPE_ID["punctuation"])
    types = types.astype(np.uint8)
    lines = _line_offsets(text)
    identifiers: list[tuple[int, int, str]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (
                tokenize.NEWLINE,
                tokenize.NL,
                tokenize.INDENT,
                tokenize.DEDENT,
                tokenize.ENDMARKER,
            ):
                continue
            start = lines[tok.start[0] - 1] + tok.start[1]
            stop = lines[tok.end[0] - 1] + tok.end[1]
            if tok.type == tokenize.NAME:
                if keyword.iskeyword(tok.string):
                    types[start:stop] = TYPE_ID["keyword"]
                else:
                    types[start:stop] = IDENTIFIER
                    identifiers.append((start, stop, tok.string))
            elif tok.type == tokenize.NUMBER:
                types[start:stop] = TYPE_ID["number"]
            elif tok.type in (tokenize.STRING, tokenize.COMMENT) or tok.type in _FSTRING_TYPES:
                types[start:stop] = TYPE_ID["string_or_comment"]
            elif tok.type == tokenize.ERRORTOKEN and not tok.string.isspace():
                raise LabelError(f"tokenize error token {tok.string!r} at line {tok.start[0]}")
    except (tokenize.TokenError, SyntaxError) as err:  # IndentationError is a SyntaxError
        raise LabelError(f"tokenize failed: {err}") from None
    return FileLabels(types, identifiers)


# Python 3.12+ splits f-strings into parts; 3.11 yields one STRING token.
_FSTRING_TYPES = tuple(
    getattr(tokenize, name)
    for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
    if hasattr(tokenize, name)
)


def label_c_like(text: str, keywords: frozenset[str] = C_KEYWORDS) -> FileLabels:
    """Types of every character of a C-family file, from the small lexer :data:`_C_LEXER`."""
    types = np.zeros(len(text), dtype=np.uint8)
    identifiers: list[tuple[int, int, str]] = []
    kinds = {
        "comment": TYPE_ID["string_or_comment"],
        "string": TYPE_ID["string_or_comment"],
        "number": TYPE_ID["number"],
        "space": TYPE_ID["whitespace"],
        "punct": TYPE_ID["punctuation"],
    }
    for m in _C_LEXER.finditer(text):
        start, stop = m.span()
        if m.lastgroup == "name":
            if m.group() in keywords:
                types[start:stop] = TYPE_ID["keyword"]
            else:
                types[start:stop] = IDENTIFIER
                identifiers.append((start, stop, m.group()))
        else:
            types[start:stop] = kinds[m.lastgroup]
    return FileLabels(types, identifiers)


def label_source(text: str, language: str) -> FileLabels:
    """Dispatch on language: Python through :mod:`tokenize`, everything else through the C-family lexer."""
    return label_python(text) if language == "python" else label_c_like(text)


def window_types(labels: FileLabels, start: int, stop: int) -> list[int]:
    """Prediction-type ids of ``text[start:stop]``, deciding first vs repeated identifiers in the window.

    An identifier cut by the window start is ``identifier_first`` and is not remembered (the model
    never saw its beginning); one cut by the window end is still typed by what came before it.
    """
    out = labels.types[start:stop].copy()
    seen: set[str] = set()
    first = bisect.bisect_left(labels._starts, start)
    if first > 0 and labels.identifiers[first - 1][1] > start:  # clipped by the window start
        first -= 1
    for ident_start, ident_stop, name in labels.identifiers[first:]:
        if ident_start >= stop:
            break
        lo, hi = max(ident_start, start) - start, min(ident_stop, stop) - start
        if ident_start >= start and name in seen:
            out[lo:hi] = TYPE_ID["identifier_repeat"]
        elif ident_start >= start:
            seen.add(name)
    return out.tolist()

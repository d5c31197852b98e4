"""Cutting a long document into passages: token windows that end where sentences end.

Pure functions over a text and its tokens' character offsets (from the model's own
tokenizer, ``Encoder.spans``), so a passage's length is counted in the tokens the model
will see, and every window is tested with exact offsets.

A window holds at most ``budget`` tokens. It ends at the last sentence end in the second
half of its budget (``.``, ``!`` or ``?`` followed by a space, a line break, or a CJK stop
such as ``。！？；``, which need no space); failing that, at the last word boundary; only a
single "word" longer than the budget (a URL, a run of digits) is cut between tokens. The
next window starts about ``overlap`` tokens before the end, moved to the nearest sentence
start within half the overlap (else to the nearest word start), so passages repeat whole
sentences where they can, as Elastic's sentence chunking does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Offsets = Sequence[tuple[int, int]]

STOPS = frozenset(".!?")  # end a sentence when a space or the text's end follows
CJK_STOPS = frozenset("。！？；…｡．")  # end a sentence by themselves (no spaces in CJK text)
CLOSERS = frozenset("\"')]}»”’」』）】")  # may follow a stop: 'He left." Then' ends after '"'


@dataclass(frozen=True)
class Window:
    """Tokens ``[first, last)`` of the text, covering characters ``[start, end)``."""

    first: int
    last: int
    start: int
    end: int


def is_cjk(ch: str) -> bool:
    """Han, kana and CJK punctuation: scripts written without spaces between words."""
    code = ord(ch)
    return (
        0x3000 <= code <= 0x30FF  # CJK punctuation, hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # Han extension A
        or 0x4E00 <= code <= 0x9FFF  # Han
        or 0xF900 <= code <= 0xFAFF  # Han compatibility
        or 0xFF00 <= code <= 0xFFEF  # full- and half-width forms
        or 0x20000 <= code <= 0x3FFFF  # Han extensions B and later
    )


def sentence_end(text: str, c: int) -> bool:
    """May a passage end at character ``c`` (after ``text[c - 1]``) as a sentence ends?"""
    if c >= len(text):
        return True
    if c <= 0:
        return False
    if text[c - 1] == "\n":
        return True
    j = c - 1
    while j > 0 and text[j] in CLOSERS:
        j -= 1
    if text[j] in CJK_STOPS:
        return True
    return text[j] in STOPS and text[c].isspace()


def word_boundary(text: str, c: int) -> bool:
    """Is character ``c`` between two words (a space on either side, or CJK text)?"""
    if c <= 0 or c >= len(text):
        return True
    before, after = text[c - 1], text[c]
    return before.isspace() or after.isspace() or is_cjk(before) or is_cjk(after)


def _gap(offsets: Offsets, j: int) -> range | None:
    """The characters where a cut before token ``j`` may fall (what lies between tokens
    ``j - 1`` and ``j``: spaces, punctuation the tokenizer dropped), or None when the two
    tokens share a character (byte-level pieces of one character)."""
    before, after = offsets[j - 1][1], offsets[j][0]
    return range(before, after + 1) if after >= before else None


def _cut_at(text: str, offsets: Offsets, j: int, sentence: bool) -> bool:
    gap = _gap(offsets, j)
    if gap is None:
        return False
    test = sentence_end if sentence else word_boundary
    return any(test(text, c) for c in gap)


def _end(text: str, offsets: Offsets, i: int, budget: int, floor: int) -> tuple[int, bool]:
    """One past the last token of the window starting at token ``i`` (past ``floor``), and
    whether it ends between words."""
    n = len(offsets)
    hard = i + budget
    if hard >= n:
        return n, True
    low = max(i + max(1, budget // 2), floor + 1)
    for j in range(hard, low - 1, -1):
        if _cut_at(text, offsets, j, sentence=True):
            return j, True
    for j in range(hard, max(i, floor), -1):
        if _cut_at(text, offsets, j, sentence=False):
            return j, True
    for j in range(hard, max(i, floor), -1):  # one word longer than the budget
        if _gap(offsets, j) is not None:
            return j, False
    return hard, False


def _next_start(text: str, offsets: Offsets, i: int, j: int, overlap: int) -> int:
    """Where the window after ``[i, j)`` starts: about ``overlap`` tokens before ``j``."""
    overlap = min(overlap, (j - i) // 2)  # a short window (a sentence ended early) repeats less
    if overlap <= 0:
        return j
    target = max(i + 1, j - overlap)
    span = overlap // 2
    near = sorted(range(max(i + 1, target - span), min(j, target + span) + 1),
                  key=lambda k: (abs(k - target), k))  # fmt: skip
    for sentence in (True, False):
        for k in near:
            if _cut_at(text, offsets, k, sentence):
                return k
    return target


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def cut(text: str, offsets: Offsets, budget: int, overlap: int) -> list[Window]:
    """Windows of at most ``budget`` tokens over the whole text, in order.

    ``offsets`` are the character ranges of the text's tokens. Every token is in at least
    one window; consecutive windows share about ``overlap`` tokens; each window starts
    later than the one before and ends later too.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1 token, got {budget}")
    n = len(offsets)
    windows: list[Window] = []
    i, floor = 0, 0
    while i < n:
        j, clean = _end(text, offsets, i, budget, floor)
        if not clean and i < floor:
            # The overlap left no word end in reach: start where the last window ended.
            i = floor
            j, clean = _end(text, offsets, i, budget, floor)
        # Up to the next token, so a stop the tokenizer dropped stays with its sentence.
        start, end = _trimmed(text, offsets[i][0], offsets[j][0] if j < n else len(text))
        windows.append(Window(i, j, start, end))
        if j >= n:
            break
        i, floor = _next_start(text, offsets, i, j, overlap), j
    return windows


TITLE_SHARE = 4  # a title takes at most a quarter of each passage's tokens


@dataclass(frozen=True)
class Piece:
    """One model input of a document: a passage, with the title before it as context."""

    start: int  # characters [start, end) of the joined text: the passage alone
    end: int
    ids: tuple[int, ...]  # content token ids: the title's, then the passage's


def pieces(
    text: str,
    body_start: int,
    ids: Sequence[int],
    offsets: Offsets,
    *,
    max_tokens: int,
    overlap: int,
    specials: int,
) -> list[Piece]:
    """The passages of one document, each embedded as ``title + "\\n" + passage``.

    ``text`` is the joined text fields, ``ids``/``offsets`` its tokens, ``body_start`` where
    the text after the title begins (0: no title). Each input, special tokens included,
    holds at most ``max_tokens`` tokens: the title's tokens (at most a quarter) come out of
    every passage's budget. A text whose body has no tokens still gets one piece, so every
    document with text has a vector.
    """
    split = next((k for k, (a, _) in enumerate(offsets) if a >= body_start), len(offsets))
    title = tuple(ids[: min(split, max_tokens // TITLE_SHARE)])
    body_ids, body_offsets = ids[split:], offsets[split:]
    budget = max(1, max_tokens - specials - len(title))
    windows = cut(text, body_offsets, budget, overlap)
    if not windows:
        start, end = _trimmed(text, body_start, len(text))
        return [Piece(start, end, title)]
    return [Piece(w.start, w.end, (*title, *body_ids[w.first : w.last])) for w in windows]

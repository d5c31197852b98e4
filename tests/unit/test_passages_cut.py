"""Cutting documents into passages: exact windows and offsets, and the rules every cut obeys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from es_embed.indices.passages import Window, cut, pieces, sentence_end, word_boundary
from tests.fakes import FakeEncoder

FAKE = FakeEncoder()


def offsets(text: str) -> tuple[tuple[int, int], ...]:
    """One token per word, as the fake encoder (and so the exact tests) see it."""
    return FAKE.spans([text])[0].offsets


def chars(text: str) -> tuple[tuple[int, int], ...]:
    """One token per character but spaces: CJK text through a character-level tokenizer."""
    return tuple((i, i + 1) for i, ch in enumerate(text) if not ch.isspace())


def texts(text: str, windows: list[Window]) -> list[str]:
    return [text[w.start : w.end] for w in windows]


@pytest.mark.parametrize(
    ("text", "c", "expected"),
    [
        ("One. Two", 4, True),  # after the stop, before the space
        ("One. Two", 3, False),  # before the stop
        ("3.14 is pi", 2, False),  # a decimal point is no stop
        ('He left." Then', 9, True),  # a closing quote after the stop
        ("line\nnext", 5, True),  # after a line break
        ("甲乙。丙丁", 3, True),  # a CJK stop needs no space
        ("甲乙；丙丁", 3, True),
        ("甲乙，丙丁", 3, False),  # a comma is no stop
        ("end.", 4, True),  # the text's end
    ],
)
def test_sentence_end(text: str, c: int, expected: bool) -> None:
    assert sentence_end(text, c) is expected


@pytest.mark.parametrize(
    ("text", "c", "expected"),
    [("two words", 3, True), ("two words", 4, True), ("two words", 2, False),
     ("don't", 3, False), ("日本語", 1, True), ("state-of-the-art", 5, False)],
)  # fmt: skip
def test_word_boundary(text: str, c: int, expected: bool) -> None:
    assert word_boundary(text, c) is expected


def test_a_text_within_the_budget_is_one_window() -> None:
    text = "Short text. Two sentences."
    assert cut(text, offsets(text), 8, 2) == [Window(0, 4, 0, len(text))]


SENTENCES = (
    "One two three. Four five six seven! Eight nine ten eleven twelve. "
    "Thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty."
)


def test_windows_end_at_sentence_ends_and_overlap() -> None:
    windows = cut(SENTENCES, offsets(SENTENCES), 8, 2)
    assert windows == [
        Window(0, 7, 0, 35),
        Window(5, 12, 25, 65),
        Window(10, 18, 51, 118),
        Window(16, 20, 100, 135),
    ]
    assert texts(SENTENCES, windows) == [
        "One two three. Four five six seven!",  # not "... seven! Eight": the sentence ends
        "six seven! Eight nine ten eleven twelve.",
        "eleven twelve. Thirteen fourteen fifteen sixteen seventeen eighteen",  # no stop near
        "seventeen eighteen nineteen twenty.",
    ]


def test_overlap_moves_to_a_sentence_start_when_one_is_near() -> None:
    text = "Aa bb cc dd ee ff gg. Hh ii jj. Kk ll mm nn oo pp qq rr."
    windows = cut(text, offsets(text), 10, 4)
    assert texts(text, windows)[:2] == [
        "Aa bb cc dd ee ff gg. Hh ii jj.",  # the last sentence end within the budget
        "Hh ii jj. Kk ll mm nn oo pp qq",  # 3 tokens back (a sentence start), not 4
    ]


def test_a_short_window_repeats_at_most_half_of_itself() -> None:
    text = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa lambda mu nu xi."
    windows = cut(text, offsets(text), 8, 4)
    assert [(w.first, w.last) for w in windows[:2]] == [(0, 4), (2, 10)]


def test_no_overlap_means_windows_touch() -> None:
    windows = cut(SENTENCES, offsets(SENTENCES), 8, 0)
    assert [(w.first, w.last) for w in windows] == [(0, 7), (7, 12), (12, 20)]


def test_a_word_longer_than_the_budget_is_the_only_cut_inside_a_word() -> None:
    text = "see https://example.com/a/b/c/d/e/f/g/h/i/j/k/l now"
    windows = cut(text, offsets(text), 6, 0)
    # "see" stands alone rather than cutting into the URL; then the URL is cut by tokens.
    assert texts(text, windows)[0] == "see"
    assert all(len(range(w.first, w.last)) <= 6 for w in windows)
    assert windows[-1].end == len(text)


def test_cjk_text_is_cut_after_its_stops() -> None:
    text = "日本語の文です。次の文です！最後の文です。"
    windows = cut(text, chars(text), 9, 0)
    assert texts(text, windows) == ["日本語の文です。", "次の文です！", "最後の文です。"]


def test_tokens_sharing_one_character_are_never_cut_apart() -> None:
    # Byte-level BPE splits a rare character into pieces with the same offsets.
    text = "ab wxyz cd"
    offs = ((0, 2), (3, 5), (3, 5), (5, 7), (5, 7), (8, 10))
    windows = cut(text, offs, 3, 0)
    assert [(w.first, w.last) for w in windows] == [(0, 1), (1, 3), (3, 6)]


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(
        st.text(alphabet="abcXYZ日本", min_size=1, max_size=6), min_size=1, max_size=60
    ),  # fmt: skip
    stops=st.lists(st.sampled_from([" ", " ", ". ", "! ", "\n", "。"]), min_size=60, max_size=60),
    budget=st.integers(8, 30),
    data=st.data(),
)
def test_every_cut_keeps_the_rules(
    words: list[str], stops: list[str], budget: int, data: st.DataObject
) -> None:
    # One token per character: a subword tokenizer at its finest, so a cut could fall
    # inside any word; words are shorter than half the budget, so none has to.
    text = "".join(w + s for w, s in zip(words, stops, strict=False))
    offs = chars(text)
    overlap = data.draw(st.integers(0, budget // 2))
    windows = cut(text, offs, budget, overlap)
    assert windows[0].first == 0 and windows[-1].last == len(offs)  # every token is covered
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.first < b.first <= a.last and a.last < b.last  # forward, no gap, no repeat
    for w in windows:
        assert 0 < w.last - w.first <= budget
        assert text[w.start : w.end] == text[w.start : w.end].strip()
        if w.last < len(offs):  # the cut falls between two words
            gap = range(offs[w.last - 1][1], offs[w.last][0] + 1)
            assert any(word_boundary(text, c) for c in gap), (text, w)


def test_pieces_carry_the_title_and_count_it_in_the_budget() -> None:
    title = "Manual"
    text = title + "\n" + SENTENCES
    spans = FAKE.spans([text])[0]
    got = pieces(text, len(title) + 1, spans.ids, spans.offsets, max_tokens=10, overlap=0,
                 specials=1)  # fmt: skip
    title_id = spans.ids[0]
    assert all(p.ids[0] == title_id for p in got)  # every passage starts with the title
    assert all(len(p.ids) + 1 <= 10 for p in got)  # title + passage + special tokens
    assert text[got[0].start : got[0].end] == "One two three. Four five six seven!"
    assert got[0].start == len(title) + 1  # offsets point into the joined text, body only


def test_a_long_title_takes_at_most_a_quarter() -> None:
    title = " ".join(f"t{i}" for i in range(30))
    text = title + "\nbody words here"
    spans = FAKE.spans([text])[0]
    got = pieces(text, len(title) + 1, spans.ids, spans.offsets, max_tokens=16, overlap=0,
                 specials=1)  # fmt: skip
    assert len(got) == 1 and len(got[0].ids) == 4 + 3  # 16 // 4 title tokens, then the body


def test_a_text_without_tokens_still_gets_one_piece() -> None:
    text = "Title\n!!!"  # the fake tokenizer makes no token of punctuation
    spans = FAKE.spans([text])[0]
    got = pieces(text, 6, spans.ids, spans.offsets, max_tokens=16, overlap=0, specials=1)
    assert [(p.start, p.end, len(p.ids)) for p in got] == [(6, 9, 1)]


def test_a_document_without_title_is_all_body() -> None:
    spans = FAKE.spans([SENTENCES])[0]
    got = pieces(SENTENCES, 0, spans.ids, spans.offsets, max_tokens=9, overlap=2, specials=1)
    assert got[0].start == 0 and got[0].ids == spans.ids[: len(got[0].ids)]

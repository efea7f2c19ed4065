"""Sentence boundaries: what groundedness scores and where a streamed answer may be cut."""

from __future__ import annotations

import pytest

from guardrails.sentences import last_sentence_end, sentence_spans


def sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in sentence_spans(text)]


def test_splits_at_terminators_and_newlines() -> None:
    text = "It works. Does it?  Yes!\nA new line\n\nAnd another…  End"
    assert sentences(text) == [
        "It works.",
        "Does it?",
        "Yes!",
        "A new line",
        "And another…",
        "End",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Fruit, e.g. apples, is healthy.",
        "Ask Dr. Smith about it.",
        "The U.S. economy grew.",
        "The value rose to 3.5 percent.",
        "J. R. Tolkien wrote it.",
        "Well... maybe not.",
        "Meet at 5 p.m. tomorrow.",
    ],
)
def test_abbreviations_numbers_and_initials_do_not_split(text: str) -> None:
    assert sentences(text) == [text]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert sentences('He said "yes." Then he left.') == ['He said "yes."', "Then he left."]


def test_list_numbers_do_not_split_but_lines_do() -> None:
    assert sentences("1. Install it\n2. Run it. Done") == ["1. Install it", "2. Run it.", "Done"]


def test_etc_ends_a_sentence_only_before_a_capital() -> None:
    assert sentences("Apples, pears, etc. And more.") == ["Apples, pears, etc.", "And more."]
    assert sentences("Apples, pears, etc. are fruit.") == ["Apples, pears, etc. are fruit."]


def test_empty_and_blank_texts_have_no_sentences() -> None:
    assert sentence_spans("") == []
    assert sentence_spans("  \n ") == []


def test_last_sentence_end_waits_for_the_next_word() -> None:
    assert last_sentence_end("Hello world. ") == 0  # "world. e.g." could still follow
    assert last_sentence_end("Hello world. This") == len("Hello world.")
    assert last_sentence_end("Hello world. this") == 0  # lower case: the same sentence
    assert last_sentence_end("See Dr. Smith") == 0
    assert last_sentence_end("One.\nTwo") == len("One.\n")  # a newline never waits
    assert last_sentence_end("No end yet") == 0


def test_streamed_cuts_agree_with_the_finished_text() -> None:
    """Every prefix's cut is a sentence end of the finished text (the holdback's contract)."""
    text = "The U.S. team won. It was e.g. close! Dr. Who? Yes.\nThe score was 3.5 to 2. Done."
    ends = {end for _, end in sentence_spans(text)}
    cuts = {last_sentence_end(text[:k]) for k in range(len(text) + 1)} - {0}
    assert cuts
    for cut in cuts:
        assert text[:cut].rstrip() and len(text[:cut].rstrip()) in ends

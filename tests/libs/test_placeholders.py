"""Pseudonyms: one placeholder per value within a request, restored across piece boundaries."""

from __future__ import annotations

from llmops.guardrails.placeholders import (
    Pseudonyms,
    Restorer,
    partial_tail,
    placeholder_spans,
    replace_spans,
    restore,
)


def test_the_same_value_gets_the_same_placeholder_and_types_count_apart() -> None:
    names = Pseudonyms()
    assert names.placeholder("PERSON", "Jane Roe") == "<PERSON_1>"
    assert names.placeholder("EMAIL", "jane@example.com") == "<EMAIL_1>"
    assert names.placeholder("PERSON", "John Doe") == "<PERSON_2>"
    assert names.placeholder("PERSON", "Jane Roe") == "<PERSON_1>"
    assert names.mapping == {
        "<PERSON_1>": "Jane Roe",
        "<EMAIL_1>": "jane@example.com",
        "<PERSON_2>": "John Doe",
    }


def test_known_placeholders_continue_their_numbering() -> None:
    names = Pseudonyms({"<PERSON_1>": "Jane Roe", "<EMAIL_3>": "a@b.co"})
    assert names.placeholder("PERSON", "Jane Roe") == "<PERSON_1>"
    assert names.placeholder("PERSON", "Max Power") == "<PERSON_2>"
    assert names.placeholder("EMAIL", "c@d.co") == "<EMAIL_4>"


def test_replace_spans_applies_edits_in_order_and_skips_overlaps() -> None:
    text = "Mail jane@example.com or call +1 555 0100."
    out = replace_spans(text, [(30, 41, "<PHONE_1>"), (5, 21, "<EMAIL_1>"), (6, 9, "x")])
    assert out == "Mail <EMAIL_1> or call <PHONE_1>."


def test_restore_puts_values_back_and_leaves_unknown_placeholders() -> None:
    mapping = {"<PERSON_1>": "Jane Roe"}
    assert restore("Dear <PERSON_1>, see <PERSON_2>.", mapping) == "Dear Jane Roe, see <PERSON_2>."
    assert placeholder_spans("a <PERSON_1> b <EMAIL_12>") == [(2, 12), (15, 25)]


def test_a_placeholder_split_across_pieces_is_restored_whole() -> None:
    restorer = Restorer({"<PERSON_1>": "Jane Roe", "<EMAIL_1>": "jane@example.com"})
    pieces = ["Hello <PER", "SON_1", ">, I wrote to <", "EMAIL_1> ", "today. 3 < 4"]
    out = "".join(restorer.feed(p) for p in pieces) + restorer.flush()
    assert out == "Hello Jane Roe, I wrote to jane@example.com today. 3 < 4"
    # Nothing is held that cannot become a placeholder.
    assert partial_tail("a < b") == len("a < b")
    assert partial_tail("hi <PERS") == 3

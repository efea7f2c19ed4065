"""Reference-based metrics on examples worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from llmops.evaluation.metrics import (
    BINARY_METRICS,
    bleu,
    chrf,
    context_precision,
    context_recall,
    cosine,
    exact_match,
    is_refusal,
    normalize_answer,
    reference_scores,
    rouge_l,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("An apple, a day.", "apple day"),
        ("„Grüß Gott“, sagte sie.", "grüß gott sagte sie"),  # German quotes are punctuation
        ("theory of the atom", "theory of atom"),  # "the" only as a whole word
        ("  \n ", ""),
    ],
)
def test_normalize_answer_follows_squad(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_exact_match_after_normalisation() -> None:
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0


def test_token_f1_on_hand_counted_overlaps() -> None:
    # [red green blue] vs [red green yellow]: 2 common, P = R = 2/3, F1 = 2/3
    assert token_f1("red green blue", "red green yellow") == pytest.approx(2 / 3)
    # [cat sat] vs [cat sat down] ("the", "a" dropped): P = 2/2, R = 2/3,
    # F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # repeats count once per match: [dog dog dog] vs [dog cat]: 1 common,
    # P = 1/3, R = 1/2, F1 = 2 * 1/6 / (5/6) = 0.4
    assert token_f1("dog dog dog", "dog cat") == pytest.approx(0.4)
    assert token_f1("Paris", "London") == 0.0
    # SQuAD's empty rule: both empty agree, one empty scores 0 ("the" normalises to nothing)
    assert token_f1("", "the") == 1.0
    assert token_f1("the", "cat") == 0.0


def test_rouge_l_is_the_lcs_f_measure() -> None:
    # 6 tokens each, LCS "the cat on the mat" = 5: P = R = 5/6
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # [b a c] vs [a b c]: LCS 2 ("a c"), P = R = 2/3; order matters, unlike token F1 (= 1)
    assert rouge_l("b a c", "a b c") == pytest.approx(2 / 3)
    assert token_f1("b a c", "a b c") == 1.0
    # Umlauts are word characters (rouge-score's own tokenizer would drop them):
    # 3 of 4 reference words in order, P = 1, R = 3/4, F = 2 * 3/4 / (7/4) = 6/7
    assert rouge_l("über die brücke", "Über die Brücke gehen") == pytest.approx(6 / 7)
    assert rouge_l("", "anything") == 0.0


def test_sentence_bleu_uses_the_effective_order() -> None:
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    # 3 hypothesis words: orders 1..3 only, each precision 1; brevity penalty
    # exp(1 - 6/3) = e^-1 = 0.3679
    assert bleu("the cat sat", "the cat sat on the mat") == pytest.approx(math.exp(-1))
    # 2 words: orders 1..2, BP = exp(1 - 6/2) = e^-2 = 0.1353
    assert bleu("the cat", "the cat sat on the mat") == pytest.approx(math.exp(-2))
    assert bleu("xyz", "the cat") == 0.0
    assert bleu("", "the cat") == 0.0


def test_chrf_on_character_ngrams() -> None:
    assert chrf("abcd", "abcd") == pytest.approx(1.0)
    # "ab" vs "abcd": 1-grams P = 2/2, R = 2/4; 2-grams P = 1/1, R = 1/3 (no longer n-grams
    # in the hypothesis). Averaged: P = 1, R = 5/12; F_beta=2 = 5PR / (4P + R)
    # = (25/12) / (53/12) = 25/53 = 0.4717
    assert chrf("ab", "abcd") == pytest.approx(25 / 53)
    assert chrf("xyz", "abcd") == 0.0


def test_cosine_is_clipped_to_zero_and_one() -> None:
    # (1, 0) . (1, 1) / (1 * sqrt 2) = 0.7071
    assert cosine([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    assert cosine([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [-1.0, 0.0]) == 0.0  # opposed: -1, clipped
    assert cosine([0.0, 0.0], [1.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="different lengths"):
        cosine([1.0], [1.0, 2.0])


def test_context_precision_weights_relevant_documents_by_rank() -> None:
    expected = {"a", "b"}
    assert context_precision(["a", "b", "x", "y"], expected) == 1.0
    # relevant at ranks 1 and 3: (P@1 + P@3) / 2 = (1 + 2/3) / 2 = 5/6
    assert context_precision(["a", "x", "b", "y"], expected) == pytest.approx(5 / 6)
    # relevant at ranks 3 and 4: (1/3 + 2/4) / 2 = 5/12
    assert context_precision(["x", "y", "a", "b"], expected) == pytest.approx(5 / 12)
    # several chunks of one document count once, at its best rank: ["a", "x", "b"] -> 5/6
    assert context_precision(["a", "a", "x", "b", "x"], expected) == pytest.approx(5 / 6)
    assert context_precision(["x", "y"], expected) == 0.0
    assert context_precision([], expected) == 0.0


def test_context_recall_is_the_share_of_expected_documents_found() -> None:
    assert context_recall(["a", "x"], {"a", "b", "c"}) == pytest.approx(1 / 3)
    assert context_recall(["c", "b", "a"], ["a", "b", "c"]) == 1.0
    assert context_recall(["a", "a"], {"a", "b"}) == 0.5
    assert context_recall([], {"a"}) == 0.0
    assert context_recall(["a"], set()) == 0.0


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "I don't know.",
        "I do not know the answer to that.",
        "I\u2019m sorry, I can\u2019t answer that question.",  # typographic apostrophes
        "The passages do not contain the opening hours.",
        "The provided context doesn't mention a price.",
        "This is not mentioned in the documents.",
        "There is no information about refunds.",
        "Ich weiß es nicht.",
        "Das kann ich leider nicht beantworten.",
        "Die Dokumente enthalten dazu keine Angaben.",
        "Dazu finde ich keine Informationen.",
        "Das steht nicht in den Passagen.",
    ],
)
def test_refusals_are_recognised(answer: str) -> None:
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "Paris is the capital of France.",
        "If you cannot find the receipt, call the travel desk.",  # "cannot find" of the user
        "I know the defrost cycle lasts two to six minutes.",
        "Die Wärmepumpe taut zwei bis sechs Minuten lang ab.",
        "The documents contain three error codes.",
    ],
)
def test_answers_are_not_refusals(answer: str) -> None:
    assert not is_refusal(answer)


def test_reference_scores_include_what_the_item_allows() -> None:
    full = reference_scores("The Eiffel Tower", "eiffel tower", ["d1", "d2"], {"d2"})
    assert set(full) == {
        "exact_match",
        "token_f1",
        "rouge_l",
        "bleu",
        "chrf",
        "context_precision",
        "context_recall",
        "refusal",
    }
    assert full["exact_match"] == full["token_f1"] == 1.0
    # ROUGE keeps the article: [the eiffel tower] vs [eiffel tower], LCS 2: P = 2/3, R = 1,
    # F = 2 * 2/3 / (5/3) = 0.8
    assert full["rouge_l"] == pytest.approx(0.8)
    assert full["context_precision"] == 0.5  # the one relevant document at rank 2: P@2
    assert full["context_recall"] == 1.0
    assert full["refusal"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in full.values())

    bare = reference_scores("I don't know.", None, ["d1"], ())
    assert bare == {"refusal": 1.0}
    assert set(reference_scores("x", "", [], {"d1"})) == {
        "context_precision",
        "context_recall",
        "refusal",
    }


def test_binary_metrics_are_the_pass_fail_ones() -> None:
    assert {"exact_match", "refusal"} <= BINARY_METRICS
    assert "token_f1" not in BINARY_METRICS

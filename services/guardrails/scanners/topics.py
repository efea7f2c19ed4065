"""Topics: banned ones, or only allowed ones, by embedding similarity to their descriptions.

A description's whole sentence is a poor target for a short question ("Was Brexit a
mistake?" is 0.17 from "politics: elections, political parties, ..." but 0.26 from
"politics"), so each topic is embedded as its name, its description and each phrase of the
description (split at commas, "and", semicolons), once, at construction; a text's similarity
to a topic is the best over those. A short text is embedded whole; a longer one as windows
of a few sentences, so one banned paragraph in a long text is not averaged away.

Banned: score = the best cosine to any banned topic (fires at the rule's threshold).
Allowed-only: the best cosine b to any allowed topic is mapped so the score reaches the
threshold t exactly when b falls below it: t + (1 - t)(t - b)/t below t, t(1 - b)/(1 - t)
above, so 1.0 means "like nothing allowed" and 0 means "exactly an allowed topic".
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from guardrails.scanners.base import Found, Scan, ScanInput
from guardrails.sentences import sentence_spans
from llmops.encoder import OnnxEncoder
from llmops.guardrails.policy import Topic, TopicsRule

WINDOW_CHARS = 300  # about 64 tokens: windows of whole sentences up to this long
_PHRASE_SPLIT = re.compile(r"[,;:()]|\band\b|\bor\b")


class TopicsScanner:
    name = "topics"

    def __init__(self, rule: TopicsRule, encoder: OnnxEncoder) -> None:
        self.rule = rule
        self._encoder = encoder
        self._allowed = rule.allowed
        self._topics = rule.allowed or rule.banned  # allowed-only mode when allowed is set
        texts: list[str] = []
        self._slices: list[slice] = []  # each topic's rows of `_vectors`
        for topic in self._topics:
            phrases = topic_phrases(topic)
            self._slices.append(slice(len(texts), len(texts) + len(phrases)))
            texts += phrases
        self._vectors = encoder.encode(texts).vectors

    def scan(self, item: ScanInput) -> Scan:
        windows = text_windows(item.text)
        if not windows:
            return Scan(0.0)
        vectors = self._encoder.encode([item.text[a:b] for a, b in windows]).vectors
        similarity = vectors @ self._vectors.T
        # (windows, topics): each window's best similarity to each topic's phrases
        per_topic = np.stack([similarity[:, rows].max(axis=1) for rows in self._slices], axis=1)
        return self._allowed_only(per_topic) if self._allowed else self._banned(windows, per_topic)

    def _banned(self, windows: list[tuple[int, int]], per_topic: npt.NDArray[np.float32]) -> Scan:
        best_window, best_topic = np.unravel_index(int(per_topic.argmax()), per_topic.shape)
        score = max(0.0, float(per_topic[best_window, best_topic]))
        threshold = self.rule.threshold
        spans = [
            Found("BANNED_TOPIC", start, end, round(float(per_topic[i].max()), 4))
            for i, (start, end) in enumerate(windows)
            if per_topic[i].max() >= threshold
        ]
        reason = f"on a banned topic: {self._topics[best_topic].name}" if spans else ""
        return Scan(score, spans, reason)

    def _allowed_only(self, per_topic: npt.NDArray[np.float32]) -> Scan:
        best = max(0.0, float(per_topic.max()))
        t = self.rule.threshold
        score = t + (1 - t) * (t - best) / t if best < t else t * (1 - best) / (1 - t)
        reason = "not on an allowed topic" if best < t else ""
        return Scan(min(1.0, max(0.0, score)), reason=reason)


def topic_phrases(topic: Topic) -> list[str]:
    """What a topic is embedded as: its name, its description and the description's phrases."""
    phrases = [topic.name, topic.description]
    for part in _PHRASE_SPLIT.split(topic.description):
        phrase = part.strip(" .")
        if len(phrase) > 2 and phrase not in phrases:
            phrases.append(phrase)
    return phrases


def text_windows(text: str) -> list[tuple[int, int]]:
    """The whole text when short, else runs of whole sentences of up to WINDOW_CHARS."""
    if len(text) <= WINDOW_CHARS:
        return [(0, len(text))] if text.strip() else []
    windows: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        if windows and end - windows[-1][0] <= WINDOW_CHARS:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows

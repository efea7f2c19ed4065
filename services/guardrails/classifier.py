"""A logistic-regression head over e5 vectors, shared by the injection and toxicity scanners.

Why this shape: on the public injection set a linear head over multilingual
e5 vectors scores F1 ~0.97, near a fine-tuned DeBERTa, for the cost of one
small encoder pass that both scanners share. The head is 385 numbers trained
by Newton's method in numpy (no scikit-learn at run or train time), saved as a
.npz next to a JSON manifest that says what it was trained on and how it did.

Long texts are never encoded whole (0.27 ms a token here): a text up to
`FULL_TOKENS` tokens is one window; a longer one is cut at sentence ends into
windows of about `WINDOW_TOKENS` tokens, and only the first window, the ones a
scanner's cue pattern points at, and the last are encoded, `MAX_WINDOWS` at most.

Both heads read the same encoder, so a check that runs both encodes a text once:
the windows' vectors are kept in the request's memo, keyed by the token ids of the
whole batch they were encoded in (the int8 graph quantises activations per run, so
a vector depends on the other rows of its batch; a short text is one window, the
same batch for both heads). Nothing is kept beyond the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from guardrails.multilingual import EncoderMissingError, MultilingualEncoder

Floats = npt.NDArray[np.float32]
MANIFEST = "classifiers.json"
FULL_TOKENS = 128
WINDOW_TOKENS = 64
MAX_WINDOWS = 3
VECTORS = "e5_vectors"  # the memo key of a request's encoded window batches
_SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*|[.!?\n]+")


class ModelMissingError(EncoderMissingError):
    """A classifier's weights or manifest are missing: run make setup."""


@dataclass(frozen=True, slots=True)
class LogisticHead:
    weights: Floats
    bias: float

    def proba(self, vectors: Floats) -> Floats:
        z = vectors @ self.weights + self.bias
        result: Floats = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return result

    def save(self, path: Path) -> None:
        np.savez(path, weights=self.weights, bias=np.array([self.bias], np.float32))

    @classmethod
    def load(cls, path: Path) -> LogisticHead:
        with np.load(path) as data:
            return cls(data["weights"].astype(np.float32), float(data["bias"][0]))


def fit_logistic(
    x: Floats, y: npt.NDArray[np.int_], c: float, iterations: int = 30
) -> LogisticHead:
    """L2-regularised logistic regression (penalty 1/(2c)), classes weighted to balance.

    Newton's method on d+1 parameters: a few exact steps, deterministic, no solver to ship.
    """
    n, d = x.shape
    xb = np.hstack([x.astype(np.float64), np.ones((n, 1))])
    positives = max(int(y.sum()), 1)
    weight = np.where(y == 1, n / (2 * positives), n / (2 * max(n - positives, 1)))
    penalty = np.full(d + 1, 1.0 / c)
    penalty[-1] = 0.0  # the bias is not shrunk
    theta = np.zeros(d + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ theta)))
        gradient = xb.T @ (weight * (p - y)) + penalty * theta
        hessian = (xb * (weight * p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    return LogisticHead(theta[:-1].astype(np.float32), float(theta[-1]))


def precision_recall_f1(labels: Sequence[int], predicted: Sequence[bool]) -> dict[str, float]:
    truth = np.asarray(labels, dtype=bool)
    guess = np.asarray(predicted, dtype=bool)
    tp = int((truth & guess).sum())
    precision = tp / max(int(guess.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def choose_c(
    x: Floats, y: npt.NDArray[np.int_], candidates: Sequence[float], folds: int = 5
) -> float:
    """The regularisation with the best mean F1 (at 0.5) over fixed interleaved folds."""
    fold = np.arange(len(y)) % folds
    best, best_f1 = candidates[0], -1.0
    for c in candidates:
        scores = []
        for k in range(folds):
            head = fit_logistic(x[fold != k], y[fold != k], c)
            held = head.proba(x[fold == k]) >= 0.5
            scores.append(precision_recall_f1(y[fold == k].tolist(), held.tolist())["f1"])
        if float(np.mean(scores)) > best_f1:
            best, best_f1 = c, float(np.mean(scores))
    return best


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # code point offsets into the scanned text
    end: int
    score: float


class ClassifierModel:
    """One task's head on the shared encoder; `windows` scores a text, window by window."""

    def __init__(
        self, encoder: MultilingualEncoder, head: LogisticHead, info: dict[str, Any]
    ) -> None:
        self.encoder = encoder
        self.head = head
        self.info = info

    def windows(
        self, text: str, cue: re.Pattern[str] | None = None, memo: dict[str, Any] | None = None
    ) -> list[Window]:
        """Each encoded window's probability; `memo` (the request's) shares the vectors."""
        ids = self.encoder.token_ids([text])[0]
        if len(ids) <= FULL_TOKENS:
            spans = [(0, len(text))]
            chosen = [ids]
        else:
            spans = _chunks(text, self.encoder)
            picked = _pick(text, spans, cue)
            spans = [spans[i] for i in picked]
            chosen = [
                w[:WINDOW_TOKENS] for w in self.encoder.token_ids([text[a:b] for a, b in spans])
            ]
        scores = self.head.proba(self._vectors(chosen, memo))
        return [Window(a, b, float(s)) for (a, b), s in zip(spans, scores, strict=True)]

    def _vectors(self, chosen: list[list[int]], memo: dict[str, Any] | None) -> Floats:
        if memo is None:
            return self.encoder.encode_ids(chosen)
        batches: dict[tuple[tuple[int, ...], ...], Floats] = memo.setdefault(VECTORS, {})
        key = tuple(map(tuple, chosen))
        vectors = batches.get(key)
        if vectors is None:
            vectors = batches[key] = self.encoder.encode_ids(chosen)
        return vectors


def _chunks(text: str, encoder: MultilingualEncoder) -> list[tuple[int, int]]:
    """Sentence-aligned spans of about WINDOW_TOKENS tokens each (a long sentence is its own)."""
    sentences = [(m.start(), m.end()) for m in _SENTENCE.finditer(text)]
    counts = [len(ids) for ids in encoder.token_ids([text[a:b] for a, b in sentences])]
    spans: list[tuple[int, int]] = []
    start, used = sentences[0][0], 0
    for (a, b), count in zip(sentences, counts, strict=True):
        if used and used + count > WINDOW_TOKENS:
            spans.append((start, a))
            start, used = a, 0
        used += count
        _ = b
    spans.append((start, sentences[-1][1]))
    return spans


def _pick(text: str, spans: list[tuple[int, int]], cue: re.Pattern[str] | None) -> list[int]:
    """The first span, then those with the most cue hits, then the last: MAX_WINDOWS at most."""
    hits = [len(cue.findall(text, a, b)) if cue else 0 for a, b in spans]
    cued = sorted((i for i in range(len(spans)) if hits[i]), key=lambda i: (-hits[i], i))
    order = [0, *cued, len(spans) - 1]
    picked: list[int] = []
    for i in order:
        if i not in picked and len(picked) < MAX_WINDOWS:
            picked.append(i)
    return sorted(picked)


def load_model(
    models_dir: Path, task: str, encoder: MultilingualEncoder | None = None
) -> ClassifierModel:
    """A task's trained head (and the encoder, unless one is shared in) from `models_dir`."""
    manifest_path, weights = models_dir / MANIFEST, models_dir / f"{task}.npz"
    if not manifest_path.is_file() or not weights.is_file():
        raise ModelMissingError(
            f"no trained {task} classifier in {models_dir} "
            f"(python -m guardrails.train_classifiers): run make setup"
        )
    info = json.loads(manifest_path.read_text())["tasks"][task]
    encoder = encoder or MultilingualEncoder(models_dir, threads=1)  # one check, one core
    return ClassifierModel(encoder, LogisticHead.load(weights), info)

"""Sentence vectors kept across requests: the same passages are retrieved again and again.

Groundedness embeds every sentence of a request's passages; popular documents come
back in request after request, so their sentences' vectors are kept (by text, in a
bounded LRU, vectors only) instead of being computed each time: on this 2-core machine
five passages of ~200 tokens cost ~100 ms of CPU to embed, a cache hit nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from llmops.encoder import OnnxEncoder

Vectors = npt.NDArray[np.float32]


class CachedEncoder:
    """`encode` as OnnxEncoder's (unit vectors, input order), remembering `size` texts."""

    def __init__(self, encoder: OnnxEncoder, size: int = 8192) -> None:
        self._encoder = encoder
        self._size = size
        self._kept: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()  # scanners run in several worker threads

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self._encoder.dimensions), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                found = self._kept.get(text)
                if found is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._kept.move_to_end(text)
                    out[i] = found
        if missing:
            fresh = self._encoder.encode(list(missing)).vectors
            with self._lock:
                for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                    out[rows] = vector
                    self._kept[text] = vector
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
        return out

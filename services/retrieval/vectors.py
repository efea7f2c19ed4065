"""A small LRU of query text -> dense vector, so one question is embedded once.

The gateway asks `LookupAnswer`, then `Search`, then `StoreAnswer` with the same
question; all three embed it through `RetrievalServicer`, which asks here first.
The model is fixed for the life of the process, so entries never go stale.
"""

from __future__ import annotations

from collections import OrderedDict


class QueryVectors:
    def __init__(self, size: int) -> None:
        self._size = size
        self._vectors: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> list[float] | None:
        vector = self._vectors.get(text)
        if vector is None:
            self.misses += 1
            return None
        self._vectors.move_to_end(text)
        self.hits += 1
        return list(vector)

    def put(self, text: str, vector: list[float]) -> None:
        if self._size <= 0:
            return
        self._vectors[text] = tuple(vector)
        self._vectors.move_to_end(text)
        while len(self._vectors) > self._size:
            self._vectors.popitem(last=False)

    def __len__(self) -> int:
        return len(self._vectors)

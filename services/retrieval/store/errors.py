"""The one exception the store layer raises for failures of the store itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class StoreError(Exception):
    """The vector store failed (I/O, engine, network); the message says what was being done."""


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Re-raise anything the engine throws as StoreError naming `action`.

    Both client libraries raise a wide spread of types (qdrant-edge raises plain
    `Exception`), so callers get one type to map to a gRPC status or a NACK.
    """
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{action} failed: {exc}") from exc

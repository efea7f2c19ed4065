"""An in-memory copy of a NATS KV bucket, kept current by a watch.

Hot paths (authentication, budgets, prices) read these copies: no round trip
per request, and a change reaches every replica within a moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel

from llmops.logging import get_logger

log = get_logger(__name__)
Record = TypeVar("Record")
Model = TypeVar("Model", bound=BaseModel)


class KvMirror(Generic[Record]):
    """`parse` turns a value into a record (a pydantic model's `model_validate_json`, say)."""

    def __init__(
        self,
        bucket: str,
        parse: Callable[[bytes], Record],
        encode: Callable[[Record], bytes] | None = None,
    ) -> None:
        self.bucket = bucket
        self._parse = parse
        self._encode = encode
        self.items: dict[str, Record] = {}
        self._task: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None

    async def start(self, js: JetStreamContext) -> None:
        """Load the bucket, then follow its changes in the background."""
        kv = self._kv = await js.key_value(self.bucket)
        watcher = await kv.watchall()
        async for entry in watcher:  # every current value, then None, then live changes
            if entry is None:
                break
            self._apply(entry)
        self._task = asyncio.create_task(self._follow(watcher))

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self.items.pop(entry.key, None)
            return
        try:
            self.items[entry.key] = self._parse(entry.value)
        except ValueError as exc:
            log.error("kv.bad_record", bucket=self.bucket, key=entry.key, error=str(exc))

    def get(self, key: str) -> Record | None:
        return self.items.get(key)

    async def put(self, key: str, record: Record) -> None:
        """Write a record (the copy updates when the watch sees it)."""
        if self._kv is None or self._encode is None:
            raise RuntimeError(f"{self.bucket}: not started, or read-only")
        await self._kv.put(key, self._encode(record))
        self.items[key] = record

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def model_mirror(bucket: str, model: type[Model]) -> KvMirror[Model]:
    """A mirror of a bucket whose values are a pydantic model's JSON."""
    return KvMirror(bucket, model.model_validate_json, lambda r: r.model_dump_json().encode())

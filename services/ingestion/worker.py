"""Parsing in worker processes, each document with a deadline and a memory cap.

A hostile or pathological file (deeply nested HTML, a PDF bomb, a spreadsheet of
millions of tiny cells) can hold a parser for minutes or take gigabytes. So every
document is parsed in a pebble worker process: past the deadline the worker is
killed and replaced, and the document is refused "gave up after N s"; an
address-space limit (RLIMIT_AS) turns a runaway allocation into a MemoryError,
"over N MB". Either way the documents behind it go on with the next worker, and
the service itself never grows.

Workers are spawned (not forked), so they import only the parsers, not the
service's event loop, NATS client or tokenizer. Small plain text (pipeline.harmless)
skips the round trip: nothing in it can nest or inflate. The format of inline
content is told here once (pipeline.resolved), not again in the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import resource

import pebble

from ingestion.errors import IngestionError
from ingestion.pipeline import ParseJob, PreparedDocument, harmless, prepare, resolved

_MB = 1024 * 1024


class ParseTimeout(IngestionError):
    """Parsing took longer than the deadline: the worker was killed."""

    code = "parse_timeout"


class ParseOverMemory(IngestionError):
    """Parsing needed more memory than the cap: the worker gave up or died."""

    code = "parse_over_memory"


def _cap_memory(memory_mb: int) -> None:
    """Worker initializer: an allocation past the cap raises MemoryError instead of growing."""
    limit = memory_mb * _MB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class ParserPool:
    """`workers` spawned parser processes; `prepare` awaits one document's result."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int) -> None:
        self._workers = workers
        self._timeout_s = timeout_s
        self._memory_mb = memory_mb
        self._pool: pebble.ProcessPool | None = None

    def start(self) -> None:
        self._pool = pebble.ProcessPool(
            max_workers=self._workers,
            initializer=_cap_memory,
            initargs=(self._memory_mb,),
            context=multiprocessing.get_context("spawn"),
        )

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()  # type: ignore[no-untyped-call]
            self._pool.join(timeout=10)
            self._pool = None

    async def prepare(self, job: ParseJob) -> PreparedDocument:
        if self._pool is None:
            raise RuntimeError("the parser pool is not started")
        job = resolved(job)
        if harmless(job):
            return prepare(job)
        future = self._pool.schedule(prepare, args=(job,), timeout=self._timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except concurrent.futures.TimeoutError:
            raise ParseTimeout(
                f"gave up after {self._timeout_s:g} s parsing {job.describe()} "
                "(LLMOPS_PARSE_TIMEOUT_S)"
            ) from None
        except MemoryError:
            raise ParseOverMemory(
                f"over {self._memory_mb} MB parsing {job.describe()} (LLMOPS_PARSE_MEMORY_MB)"
            ) from None
        except pebble.ProcessExpired as exc:
            raise ParseOverMemory(
                f"the parser process died (exit code {exc.exitcode}) parsing {job.describe()}; "
                f"most likely over {self._memory_mb} MB (LLMOPS_PARSE_MEMORY_MB)"
            ) from None

"""What every scanner is: text in, a score and the spans it found out.

A scanner is built once per policy rule (its options fixed) from the models
loaded at start-up, and `scan` is its only hot path: plain, synchronous CPU
work that the engine runs in a worker thread under the policy's time budget.
Scanners never redact, block or log; the engine turns scores into actions, so
every scanner is tested on what it finds and nothing else. Matched values
never leave the process: spans carry offsets and types only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Found:
    """One finding: `text[start:end]` is a `type` (code point offsets into the scanned text)."""

    type: str
    start: int
    end: int
    score: float = 1.0


@dataclass(slots=True)
class Scan:
    """A scanner's result. `score` is 0..1, how sure it is that its rule applies."""

    score: float
    spans: list[Found] = field(default_factory=list)
    reason: str = ""  # short, safe to show a user: never the matched value


@dataclass(slots=True)
class ScanInput:
    """What a scanner may look at.

    `final` is False while an answer is still streaming (a JSON answer is then
    only checked to be a valid prefix). `memo` lives as long as one request (or
    one streamed answer): scanners keep what they computed once there, such as
    the passages' vectors.
    """

    text: str
    passages: Sequence[str] = ()
    json_schema: dict[str, Any] | None = None
    final: bool = True
    memo: dict[str, Any] = field(default_factory=dict)


class Scanner(Protocol):
    name: str

    def scan(self, item: ScanInput) -> Scan: ...

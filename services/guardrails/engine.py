"""A policy's rules run over one text: normalise, scan, then decide allow, redact or block.

Scanners only find; this module decides. A rule fires when its scanner's
score reaches the rule's threshold; then its action applies: `block` refuses
the text (the first blocking rule's reason is what a user is told), `redact`
replaces the spans it found with placeholders (`<PERSON_1>`, `<SECRET_1>`),
`flag` only records the verdict. Scanners run one after another in a worker
thread; `Progress` lets the caller give up at the time budget and still know
which scanners ran, so the rest are reported as unscanned rather than guessed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrails.scanners.base import Found, Scan, ScanInput
from guardrails.scanners.hidden_text import normalize
from guardrails.scanners.registry import RuleRun
from llmops.guardrails.placeholders import Pseudonyms, placeholder_spans, replace_spans
from llmops.logging import get_logger

log = get_logger(__name__)
SECRET_KIND = "SECRET"
_REDACTING = frozenset({"pii", "secrets"})


@dataclass(slots=True)
class Verdict:
    """One rule's outcome on one text (or, for context, on one passage)."""

    scanner: str
    score: float
    passed: bool
    action: str  # the rule's action; it applied only when not passed
    latency_ms: float
    spans: list[Found] = field(default_factory=list)
    replacements: list[str] = field(default_factory=list)  # one per span when redacted
    reason: str = ""
    unscanned: bool = False
    passage: int = -1

    @property
    def fired(self) -> bool:
        return not self.passed and not self.unscanned


@dataclass(slots=True)
class Outcome:
    action: str  # allow | redact | block
    text: str  # what may go on: the redacted text, or the text as it came
    verdicts: list[Verdict]
    reason: str = ""  # for block: safe to show a user

    @property
    def unscanned(self) -> bool:
        return any(v.unscanned for v in self.verdicts)


class Progress:
    """Verdicts as they complete; `give_up` stops the worker at the next scanner."""

    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self._stop = threading.Event()

    def give_up(self) -> None:
        self._stop.set()

    @property
    def given_up(self) -> bool:
        return self._stop.is_set()


def scan_text(
    runs: Sequence[RuleRun],
    text: str,
    *,
    passages: Sequence[str] = (),
    json_schema: dict[str, Any] | None = None,
    final: bool = True,
    memo: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> tuple[str, list[Verdict]]:
    """Every rule's verdict on `text`; returns the normalised text the offsets refer to."""
    progress = progress or Progress()
    normalized = normalize(text)
    memo = {} if memo is None else memo
    memo["normalized"] = normalized
    item = ScanInput(normalized.text, passages, json_schema, final, memo)
    skip = placeholder_spans(normalized.text)
    for run in runs:
        if progress.given_up:
            break
        began = time.perf_counter()
        try:
            scan = run.scanner.scan(item)
        except Exception as exc:
            log.exception("scanner.failed", scanner=run.name, error=type(exc).__name__)
            progress.verdicts.append(
                Verdict(
                    run.name,
                    0.0,
                    True,
                    run.rule.action,
                    _ms(began),
                    reason=f"{run.name} failed: {type(exc).__name__}",
                    unscanned=True,
                )
            )
            continue
        progress.verdicts.append(_verdict(run, scan, skip, _ms(began)))
    return normalized.text, progress.verdicts


def _verdict(run: RuleRun, scan: Scan, skip: list[tuple[int, int]], latency_ms: float) -> Verdict:
    threshold = run.rule.threshold
    spans = [s for s in scan.spans if not _inside_any(s, skip)]
    if run.name in _REDACTING:  # a finding below the threshold (or a placeholder) is none
        spans = [s for s in spans if s.score >= threshold]
        score = max((s.score for s in spans), default=0.0)
        passed = not spans
    else:
        score = scan.score
        passed = score < threshold
    return Verdict(
        run.name,
        round(score, 4),
        passed,
        run.rule.action,
        latency_ms,
        spans,
        reason=scan.reason if not passed else "",
    )


def decide(
    text: str, verdicts: list[Verdict], pseudonyms: Pseudonyms, original: str | None = None
) -> Outcome:
    """The action for `text` (normalised) from its verdicts; placeholders from `pseudonyms`.

    `original` is what to pass on when nothing needs redacting (the caller's
    text exactly as sent, hidden characters and all: flagging changes nothing).
    """
    blocking = [v for v in verdicts if v.fired and v.action == "block"]
    if blocking:
        first = blocking[0]
        return Outcome("block", "", verdicts, block_reason(first))
    redacting = [
        v for v in verdicts if v.fired and v.action == "redact" and v.scanner in _REDACTING
    ]
    if not redacting:
        return Outcome("allow", text if original is None else original, verdicts)
    edits: list[tuple[int, int, str]] = []
    for verdict in redacting:
        for span in verdict.spans:
            kind = SECRET_KIND if verdict.scanner == "secrets" else span.type
            replacement = pseudonyms.placeholder(kind, text[span.start : span.end])
            verdict.replacements.append(replacement)
            edits.append((span.start, span.end, replacement))
    return Outcome("redact", replace_spans(text, _without_overlaps(edits)), verdicts)


def block_reason(verdict: Verdict) -> str:
    detail = verdict.reason or f"{verdict.scanner} rule"
    return f"blocked by the guardrail policy: {detail}"


def unscanned_verdicts(runs: Sequence[RuleRun], done: Sequence[Verdict], why: str) -> list[Verdict]:
    """Verdicts for the rules that did not run (time budget), so none is silently missing."""
    ran = {v.scanner for v in done}
    return [
        Verdict(run.name, 0.0, True, run.rule.action, 0.0, reason=why, unscanned=True)
        for run in runs
        if run.name not in ran
    ]


_STRENGTH = {"allow": 0, "redact": 1, "block": 2}


def stronger(a: str, b: str) -> str:
    """The stronger of two actions (block over redact over allow)."""
    return a if _STRENGTH[a] >= _STRENGTH[b] else b


def _without_overlaps(edits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Earliest first; of two spans that overlap, the longer one is kept."""
    kept: list[tuple[int, int, str]] = []
    for edit in sorted(edits, key=lambda e: (e[0], -(e[1] - e[0]))):
        if kept and edit[0] < kept[-1][1]:
            if edit[1] - edit[0] > kept[-1][1] - kept[-1][0]:
                kept[-1] = edit
            continue
        kept.append(edit)
    return kept


def _inside_any(span: Found, ranges: list[tuple[int, int]]) -> bool:
    return any(span.start < end and start < span.end for start, end in ranges)


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)

"""One check, end to end: the policy's scanners in a worker thread under its time budget,
the decision, the events, and the shadow policy run afterwards.

Over budget, the scanners that ran keep their verdicts and the rest are
`unscanned`. Then the policy's fail mode decides: open lets the text through
(every unscanned verdict recorded), closed raises `FailedClosed`, which the
servicer turns into UNAVAILABLE. A shadow policy runs after the reply is
sent, on the same text, and only publishes what it would have done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from guardrails.engine import (
    Outcome,
    Progress,
    Verdict,
    decide,
    scan_text,
    stronger,
    unscanned_verdicts,
)
from guardrails.scanners.base import ScanInput
from guardrails.scanners.registry import RuleRun, ScannerCache
from guardrails.verdicts import events_for
from llmops.bus.publisher import EventPublisher
from llmops.bus.topology import GUARDRAIL_EVENTS
from llmops.guardrails.events import Asked
from llmops.guardrails.placeholders import Pseudonyms
from llmops.guardrails.policy import Policy
from llmops.guardrails.store import PolicyMirror
from llmops.logging import get_logger
from llmops.service import Loaded

log = get_logger(__name__)


class FailedClosed(Exception):
    """The text could not be checked in time (or at all) and the policy fails closed."""


@dataclass(slots=True)
class ContextOutcome:
    passages: list[str]  # as they may go into the prompt ("" for a blocked one)
    blocked: list[int]
    verdicts: list[Verdict]
    action: str  # block if any passage was blocked, redact if any was redacted


@dataclass(slots=True)
class TextCheck:
    """What to scan: one text, or passages one by one (context)."""

    direction: str
    texts: Sequence[str]
    passages: Sequence[str] = ()
    json_schema: dict[str, Any] | None = None
    final: bool = True
    memo: dict[str, Any] = field(default_factory=dict)


class Checker:
    def __init__(
        self,
        scanners: Loaded[ScannerCache],
        policies: PolicyMirror,
        events: Loaded[EventPublisher],
        workers: int,
    ) -> None:
        self._scanners = scanners
        self._policies = policies
        self._events = events
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="scan")
        self._shadows: set[asyncio.Task[None]] = set()

    def runs(self, policy: Policy, direction: str) -> list[RuleRun]:
        return self._scanners.value.compiled(policy).runs[direction]

    async def scan(
        self, policy: Policy, check: TextCheck, runs: Sequence[RuleRun] | None = None
    ) -> list[tuple[str, list[Verdict]]]:
        """Each text's normalised form and verdicts, within the policy's time budget."""
        runs = self.runs(policy, check.direction) if runs is None else runs
        progress = [Progress() for _ in check.texts]

        def work() -> list[tuple[str, list[Verdict]]]:
            return [
                scan_text(
                    runs,
                    text,
                    passages=check.passages,
                    json_schema=check.json_schema,
                    final=check.final,
                    memo=check.memo,
                    progress=progress[i],
                )
                for i, text in enumerate(check.texts)
            ]

        future = asyncio.get_running_loop().run_in_executor(self._pool, work)
        try:
            return await asyncio.wait_for(asyncio.shield(future), policy.time_budget_ms / 1000)
        except TimeoutError:
            for p in progress:
                p.give_up()
            why = f"not run within the policy's time budget ({policy.time_budget_ms:g} ms)"
            log.warning(
                "check.over_budget", policy=policy.policy_id, budget_ms=policy.time_budget_ms
            )
            return [
                (text, [*p.verdicts, *unscanned_verdicts(runs, p.verdicts, why)])
                for text, p in zip(check.texts, progress, strict=True)
            ]

    async def prepare(self, runs: Sequence[RuleRun], check: TextCheck) -> None:
        """Let scanners compute what they need of the passages ahead of the text (in a worker)."""
        item = ScanInput("", check.passages, memo=check.memo)

        def work() -> None:
            for run in runs:
                prepare = getattr(run.scanner, "prepare", None)
                if prepare is not None:
                    prepare(item)

        await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def check_text(
        self, policy: Policy, check: TextCheck, asked: Asked, pseudonyms: Pseudonyms
    ) -> Outcome:
        ((normalized, verdicts),) = await self.scan(policy, check)
        outcome = decide(normalized, verdicts, pseudonyms, original=check.texts[0])
        self._guard_fail_mode(policy, outcome.action, outcome.verdicts)
        self.publish(outcome.verdicts, policy, check.direction, outcome.action, asked)
        self.shadow(policy, check, asked)
        return outcome

    async def check_context(self, policy: Policy, check: TextCheck, asked: Asked) -> ContextOutcome:
        scanned = await self.scan(policy, check)
        pseudonyms = Pseudonyms()
        result = ContextOutcome([], [], [], "allow")
        for i, (normalized, verdicts) in enumerate(scanned):
            outcome = decide(normalized, verdicts, pseudonyms, original=check.texts[i])
            for verdict in verdicts:
                verdict.passage = i
            result.verdicts.extend(verdicts)
            if outcome.action == "block":
                result.blocked.append(i)
                result.passages.append("")
            else:
                result.passages.append(outcome.text)
            result.action = stronger(result.action, outcome.action)
        self._guard_fail_mode(policy, result.action, result.verdicts)
        self.publish(result.verdicts, policy, check.direction, result.action, asked)
        self.shadow(policy, check, asked)
        return result

    def _guard_fail_mode(self, policy: Policy, action: str, verdicts: Sequence[Verdict]) -> None:
        if (
            action != "block"
            and policy.fail_mode == "closed"
            and any(v.unscanned for v in verdicts)
        ):
            raise FailedClosed(
                f"guardrails could not check the text in time ({policy.time_budget_ms:g} ms) "
                "and the policy fails closed"
            )

    def publish(
        self,
        verdicts: Sequence[Verdict],
        policy: Policy,
        direction: str,
        action: str,
        asked: Asked,
        *,
        shadow: bool = False,
    ) -> None:
        for event in events_for(verdicts, policy, direction, action, asked, shadow=shadow):
            self._events.value.emit(GUARDRAIL_EVENTS, event)

    def shadow(self, policy: Policy, check: TextCheck, asked: Asked) -> None:
        """Run the policy's shadow beside it, after the reply: it records, it never decides."""
        if policy.shadow is None:
            return
        shadow = self._policies.policy(policy.tenant, policy.shadow)
        if shadow is None:
            return
        task = asyncio.create_task(self._run_shadow(shadow, check, asked))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _run_shadow(self, shadow: Policy, check: TextCheck, asked: Asked) -> None:
        try:
            shadow_check = TextCheck(
                check.direction, check.texts, check.passages, check.json_schema, check.final
            )
            scanned = await self.scan(shadow, shadow_check)
            action, verdicts = "allow", []
            for normalized, found in scanned:
                outcome = decide(normalized, found, Pseudonyms())
                action = stronger(action, outcome.action)
                verdicts.extend(found)
            self.publish(verdicts, shadow, check.direction, action, asked, shadow=True)
        except Exception as exc:
            log.warning("shadow.failed", policy=shadow.policy_id, error=type(exc).__name__)

    async def close(self) -> None:
        for task in list(self._shadows):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

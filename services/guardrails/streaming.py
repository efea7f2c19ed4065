"""An answer checked while it streams: held back until a scanner has seen it, never longer.

Pieces are held until a sentence is complete (`last_sentence_end`), then that
sentence is scanned and released: an entity or a secret split across two
pieces is whole by then, and a placeholder (`<PERSON_1>`) never straddles a
release. A sentence that runs past `max_holdback_chars` is released up to its
last space before a tail short enough to hold any entity still completing; a
finding that would straddle that cut moves the cut back before it. JSON
answers are checked as a prefix at every release, so a broken stream stops
early. Placeholders from the question's check are restored in what is
released, after leaks in the model's own text were redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from guardrails.checker import Checker, FailedClosed, TextCheck
from guardrails.engine import Verdict, decide, stronger
from guardrails.sentences import last_sentence_end
from guardrails.verdicts import verdict_proto
from llmops.guardrails.events import Asked
from llmops.guardrails.placeholders import Pseudonyms, restore
from llmops.guardrails.policy import Policy
from llmops.v1 import guardrails_pb2

_TAIL = 64  # held back when a sentence is cut for length: the longest entity still completing


@dataclass
class OutputStream:
    checker: Checker
    policy: Policy
    asked: Asked
    passages: list[str]
    json_schema: dict[str, Any] | None
    mapping: dict[str, str]
    _held: str = ""
    _released: str = ""  # the model's text released so far (before restoring)
    _verdicts: list[Verdict] = field(default_factory=list)
    _memo: dict[str, Any] = field(default_factory=dict)
    _finished: bool = False
    _action: str = "allow"

    def __post_init__(self) -> None:
        self._pseudonyms = Pseudonyms(self.mapping)
        runs = self.checker.runs(self.policy, "output")
        self._json = [r for r in runs if r.name == "json_schema"]
        self._runs = [r for r in runs if r.name != "json_schema"]
        ahead = TextCheck("output", [], self.passages, memo=self._memo)
        self._prepared = asyncio.ensure_future(self.checker.prepare(self._runs, ahead))

    async def feed(self, piece: str) -> list[guardrails_pb2.StreamCheckResponse]:
        if self._finished:
            return []
        self._held += piece
        cut = last_sentence_end(self._held)
        if cut == 0 and len(self._held) <= self.policy.max_holdback_chars:
            return []
        return await self._release(cut or None, final=False)

    async def end(self) -> list[guardrails_pb2.StreamCheckResponse]:
        if self._finished:
            return []
        ends = bool(self._held or self._json)  # a JSON answer is validated whole at its end
        replies = await self._release(len(self._held), final=True) if ends else []
        if not self._finished:
            replies.append(self._reply(done=True))
            self._finish()
        return replies

    async def _release(
        self, cut: int | None, final: bool
    ) -> list[guardrails_pb2.StreamCheckResponse]:
        """Scan and release the held text up to `cut` (None: a sentence too long to hold)."""
        if cut is None:  # cut at a space before the tail
            limit = len(self._held) - _TAIL
            space = max(self._held.rfind(" ", 0, limit), self._held.rfind("\n", 0, limit))
            cut = space + 1 if space > 0 else limit
            ((_, whole),) = await self._scan(self._held)
            cut = _before_straddling(whole, cut)
        scope = self._held[:cut]
        ((normalized, verdicts),) = await self._scan(scope)
        if self._json:
            ((_, json_verdicts),) = await self.checker.scan(
                self.policy,
                TextCheck(
                    "output",
                    [self._released + scope],
                    json_schema=self.json_schema,
                    final=final,
                    memo=self._memo,  # the prefix checker reads only what is new
                ),
                self._json,
            )
            verdicts = verdicts + json_verdicts
        self._verdicts.extend(verdicts)
        outcome = decide(normalized, verdicts, self._pseudonyms, original=scope)
        self._action = stronger(self._action, outcome.action)
        unscanned = any(v.unscanned for v in verdicts)
        if outcome.action != "block" and self.policy.fail_mode == "closed" and unscanned:
            self._finish()
            raise FailedClosed(
                "guardrails could not check the answer in time and the policy fails closed"
            )
        if outcome.action == "block":
            reply = self._reply(verdicts=verdicts)
            reply.blocked, reply.reason = True, outcome.reason
            self._finish()
            return [reply]
        self._held = self._held[len(scope) :]
        self._released += scope
        reply = self._reply(restore(outcome.text, self.mapping), verdicts)
        reply.unrestored = outcome.text
        return [reply]

    async def _scan(self, text: str) -> list[tuple[str, list[Verdict]]]:
        with contextlib.suppress(Exception):  # a failed preparation is redone by the scan
            await self._prepared
        check = TextCheck("output", [text], self.passages, memo=self._memo)
        return await self.checker.scan(self.policy, check, self._runs)

    def _reply(
        self, released: str = "", verdicts: list[Verdict] | None = None, done: bool = False
    ) -> guardrails_pb2.StreamCheckResponse:
        return guardrails_pb2.StreamCheckResponse(
            released=released,
            verdicts=[verdict_proto(v) for v in verdicts or ()],
            done=done,
            policy_id=self.policy.policy_id,
            policy_version=self.policy.version,
            consumed=len(self._released),
        )

    def _finish(self) -> None:
        """Record the whole answer's verdicts once (and let the shadow look at it)."""
        if self._finished:
            return
        self._finished = True
        self.checker.publish(self._verdicts, self.policy, "output", self._action, self.asked)
        answer = self._released + self._held
        if answer:
            self.checker.shadow(
                self.policy, TextCheck("output", [answer], self.passages), self.asked
            )

    def close(self) -> None:
        """The caller went away: what was checked so far is still recorded."""
        self._prepared.cancel()
        with contextlib.suppress(Exception):
            self._finish()


def _before_straddling(verdicts: list[Verdict], cut: int) -> int:
    """`cut` moved back before any finding that crosses it."""
    for verdict in verdicts:
        for span in verdict.spans:
            if span.start < cut < span.end:
                cut = span.start
    return max(cut, 1)

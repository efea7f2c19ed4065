"""Drift, per tenant: recent questions and online scores against a reference window.

The recent window is the last `drift_recent_s`, the reference the
`drift_reference_s` before it. Both are kept in memory as bounded samples
(`windows.TimeReservoir`), fed by two ephemeral ordered consumers of the EVENTS
stream that start `reference + recent` ago: at start-up they replay what the
windows hold (so a restart or a new replica loses nothing), then follow live
traffic. Every interaction with a question counts, whatever the scoring sample
rate; only the questions a reservoir keeps are embedded (after the replay, so
questions pushed out during it never cost an embedding). Scores come from the
EvaluationEvents of kind `online`, whichever replica published them.

Tests: MMD with a permutation p-value on question embeddings (`questions`), PSI
and KS on each evaluator's scores (`score:<evaluator>`); a signal with fewer than
`drift_min_samples` on either side is skipped and the reply says why. Every
`drift_interval_s` each tenant is checked and drifted signals are published as
DriftEvents; their ids name the tenant, signal, method and interval, so
replicas checking the same interval publish one event (JetStream de-duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from evaluation.sampling import share_of
from evaluation.settings import EvaluationSettings
from evaluation.windows import TimeReservoir
from llmops.bus.publisher import event_time
from llmops.bus.topology import DRIFT_EVENTS, EVALUATION_EVENTS, EVENTS_STREAM, INTERACTION_EVENTS
from llmops.evaluation.drift import DriftResult, ks_test, mmd_test, psi
from llmops.evaluation.scorers import ServiceScorer
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.v1 import events_pb2

log = get_logger(__name__)
QUESTIONS = "questions"
ONLINE = "online"
_ID_SPACE = uuid.UUID("8d2e4b61-0f7a-4c3e-a5d9-1b6c7e2f9a34")
_REPLAY_MARGIN_S = 60.0  # events arrive after their time: start the replay a little earlier

DRIFT_CHECKS = Counter(
    "llmops_drift_checks_total", "drift tests run, by method and outcome", ["method", "outcome"]
)
DRIFT_EVENTS_SEEN = Counter(
    "llmops_drift_events_seen_total", "events the drift windows read, by kind", ["kind"]
)


@dataclass
class _Question:
    text: str
    vector: npt.NDArray[np.float32] | None = None
    evicted: bool = False


def _embedded(question: _Question) -> bool:
    return question.vector is not None


@dataclass
class _TenantWindows:
    questions: TimeReservoir[_Question]
    scores: dict[str, TimeReservoir[float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.questions) or any(self.scores.values())


@dataclass(frozen=True)
class Windows:
    """The two windows at `now`, as bucket ranges [first, end) and times."""

    reference_first: int
    recent_first: int
    end: int
    width_s: float
    now: float

    @property
    def reference_start(self) -> float:
        return self.reference_first * self.width_s

    @property
    def recent_start(self) -> float:
        return self.recent_first * self.width_s


@dataclass
class DriftOutcome:
    results: list[events_pb2.DriftEvent]
    skipped: list[str]


class DriftWatch:
    def __init__(
        self,
        settings: EvaluationSettings,
        scorer: Loaded[ServiceScorer],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._scorer = scorer
        self._clock = clock
        self._width_s = settings.drift_recent_s / settings.drift_buckets
        self._capacity = math.ceil(settings.drift_max_samples / settings.drift_buckets)
        self._reference_buckets = math.ceil(settings.drift_reference_s / self._width_s)
        self._tenants: dict[str, _TenantWindows] = {}
        self._to_embed: asyncio.Queue[_Question] = asyncio.Queue()
        self._replaying: set[str] = set()
        self._caught_up = asyncio.Event()
        self._subscriptions: list[JetStreamContext.PushSubscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._js: JetStreamContext | None = None

    # -- lifecycle ------------------------------------------------------------
    async def start(self, js: JetStreamContext) -> None:
        self._js = js
        since = self.windows(self._clock()).reference_start - _REPLAY_MARGIN_S
        opt_start = dt.datetime.fromtimestamp(since, dt.UTC)
        feeds = ((INTERACTION_EVENTS, self._on_interaction), (EVALUATION_EVENTS, self._on_score))
        self._replaying = {subject for subject, _ in feeds}
        for subject, handle in feeds:
            sub = await js.subscribe(
                subject,
                stream=EVENTS_STREAM.name,
                cb=self._feed(subject, handle),
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=opt_start
                ),
            )
            self._subscriptions.append(sub)
            info = await sub.consumer_info()
            if not info.num_pending and not (info.delivered and info.delivered.stream_seq):
                self._replayed(subject)  # nothing in the windows yet
        self._tasks = [
            asyncio.create_task(self._embed_forever(), name="drift-embed"),
            asyncio.create_task(self._check_forever(), name="drift-check"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def windows(self, now: float) -> Windows:
        current = math.floor(now / self._width_s)
        recent_first = current - self._settings.drift_buckets + 1
        return Windows(
            reference_first=recent_first - self._reference_buckets,
            recent_first=recent_first,
            end=current + 1,
            width_s=self._width_s,
            now=now,
        )

    # -- feeding the windows ----------------------------------------------------
    def _feed(
        self, subject: str, handle: Callable[[bytes], None]
    ) -> Callable[[Msg], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            try:
                handle(msg.data)
            except DecodeError:
                DRIFT_EVENTS_SEEN.labels("malformed").inc()
            if subject in self._replaying and not msg.metadata.num_pending:
                self._replayed(subject)

        return on_msg

    def _replayed(self, subject: str) -> None:
        self._replaying.discard(subject)
        if not self._replaying and not self._caught_up.is_set():
            log.info("drift.windows_rebuilt", tenants=len(self._tenants))
            self._caught_up.set()

    def _place(self, seconds: int, nanos: int) -> float | None:
        """The event's time, clamped to now; None when it is older than both windows."""
        now = self._clock()
        at = min(seconds + nanos / 1e9, now)
        return None if at < self.windows(now).reference_start else at

    def _tenant(self, tenant: str) -> _TenantWindows:
        found = self._tenants.get(tenant)
        if found is None:
            found = _TenantWindows(TimeReservoir(self._width_s, self._capacity))
            self._tenants[tenant] = found
        return found

    def _on_interaction(self, data: bytes) -> None:
        event = events_pb2.InteractionEvent.FromString(data)
        question = event.question.strip()
        at = self._place(event.time.seconds, event.time.nanos)
        if not question or at is None:
            DRIFT_EVENTS_SEEN.labels("interaction_unused").inc()
            return
        DRIFT_EVENTS_SEEN.labels("interaction").inc()
        windows = self._tenant(event.tenant or "default")
        item = _Question(question)
        key = share_of(f"drift:{event.event_id or event.request_id}")
        kept, evicted = windows.questions.offer(at, key, item)
        if evicted is not None:
            evicted.evicted = True
        if kept:
            self._to_embed.put_nowait(item)

    def _on_score(self, data: bytes) -> None:
        event = events_pb2.EvaluationEvent.FromString(data)
        at = self._place(event.time.seconds, event.time.nanos)
        if event.kind != ONLINE or not event.evaluator or at is None:
            DRIFT_EVENTS_SEEN.labels("evaluation_unused").inc()
            return
        DRIFT_EVENTS_SEEN.labels("evaluation").inc()
        scores = self._tenant(event.tenant or "default").scores
        reservoir = scores.get(event.evaluator)
        if reservoir is None:
            reservoir = scores[event.evaluator] = TimeReservoir(self._width_s, self._capacity)
        reservoir.offer(at, share_of(f"drift:{event.event_id}"), event.score)

    async def _embed_forever(self) -> None:
        """Embed kept questions in batches, once the replay is over."""
        await self._caught_up.wait()
        while True:
            batch = [await self._to_embed.get()]
            while len(batch) < self._settings.drift_embed_batch and not self._to_embed.empty():
                batch.append(self._to_embed.get_nowait())
            todo = [q for q in batch if not q.evicted and q.vector is None]
            try:
                if todo:
                    vectors = await self._scorer.value.embed([q.text for q in todo])
                    for question, vector in zip(todo, vectors, strict=True):
                        question.vector = vector
            except Exception as exc:  # the embedding service is away: try again later
                log.warning("drift.embed_failed", questions=len(todo), error=repr(exc))
                for question in todo:
                    self._to_embed.put_nowait(question)
                await asyncio.sleep(1.0)
            finally:
                for _ in batch:
                    self._to_embed.task_done()

    async def _embedded(self) -> None:
        """Wait (a bounded time) for the questions kept so far to be embedded."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._to_embed.join(), self._settings.evaluation_timeout_s)

    # -- checking -------------------------------------------------------------
    async def _check_forever(self) -> None:
        await self._caught_up.wait()
        while True:
            await asyncio.sleep(self._settings.drift_interval_s)
            now = self._clock()
            slot = math.floor(now / self._settings.drift_interval_s)
            for tenant in list(self._tenants):
                try:
                    outcome = await self.check(tenant, slot=slot)
                    await self.publish([r for r in outcome.results if r.drifted])
                except Exception as exc:
                    log.error("drift.check_failed", tenant=tenant, error=repr(exc))
            self._forget_before(self.windows(now).reference_first)

    def _forget_before(self, first: int) -> None:
        for tenant, windows in list(self._tenants.items()):
            windows.questions.prune(first)
            for reservoir in windows.scores.values():
                reservoir.prune(first)
            if not windows:
                del self._tenants[tenant]

    async def check(self, tenant: str, slot: int | None = None) -> DriftOutcome:
        """Test every signal of `tenant` now; `slot` (the check interval) makes event ids
        that replicas share."""
        await self._caught_up.wait()
        await self._embedded()
        win = self.windows(self._clock())
        state = self._tenants.get(tenant) or _TenantWindows(
            TimeReservoir(self._width_s, self._capacity)
        )
        limit = self._settings.drift_max_samples
        outcome = DriftOutcome([], [])
        reference_q = state.questions.sample(
            win.reference_first, win.recent_first, limit, _embedded
        )
        recent_q = state.questions.sample(win.recent_first, win.end, limit, _embedded)
        if self._enough(QUESTIONS, len(reference_q), len(recent_q), outcome):
            result = await asyncio.to_thread(
                mmd_test,
                np.stack([q.vector for q in reference_q if q.vector is not None]),
                np.stack([q.vector for q in recent_q if q.vector is not None]),
                alpha=self._settings.drift_alpha,
                n_permutations=self._settings.drift_permutations,
                max_samples=limit,
            )
            outcome.results.append(self._event(tenant, QUESTIONS, result, win, slot))
        for evaluator, reservoir in sorted(state.scores.items()):
            signal = f"score:{evaluator}"
            reference = reservoir.sample(win.reference_first, win.recent_first, limit)
            recent = reservoir.sample(win.recent_first, win.end, limit)
            if not self._enough(signal, len(reference), len(recent), outcome):
                continue
            for result in (
                psi(reference, recent, threshold=self._settings.drift_psi_threshold),
                ks_test(reference, recent, alpha=self._settings.drift_alpha),
            ):
                outcome.results.append(self._event(tenant, signal, result, win, slot))
        for event in outcome.results:
            DRIFT_CHECKS.labels(event.method, "drifted" if event.drifted else "stable").inc()
        return outcome

    def _enough(self, signal: str, n_reference: int, n_recent: int, outcome: DriftOutcome) -> bool:
        needed = self._settings.drift_min_samples
        if n_reference >= needed and n_recent >= needed:
            return True
        outcome.skipped.append(
            f"{signal}: {n_reference} reference and {n_recent} recent samples,"
            f" {needed} needed on each side"
        )
        DRIFT_CHECKS.labels("any", "skipped").inc()
        return False

    def _event(
        self, tenant: str, signal: str, result: DriftResult, win: Windows, slot: int | None
    ) -> events_pb2.DriftEvent:
        event_id = (
            str(uuid.uuid5(_ID_SPACE, f"{tenant}:{signal}:{result.method}:{slot}"))
            if slot is not None
            else str(uuid.uuid4())
        )
        return events_pb2.DriftEvent(
            event_id=event_id,
            time=event_time(win.now),
            tenant=tenant,
            signal=signal,
            method=result.method,
            statistic=result.statistic,
            p_value=result.p_value,
            threshold=result.threshold,
            drifted=result.drifted,
            reference_start=event_time(win.reference_start),
            reference_end=event_time(win.recent_start),
            recent_start=event_time(win.recent_start),
            recent_end=event_time(win.now),
            n_reference=result.n_reference,
            n_recent=result.n_recent,
        )

    async def publish(self, results: Sequence[events_pb2.DriftEvent]) -> None:
        if self._js is None:
            raise RuntimeError("the drift watch is not started")
        for event in results:
            await self._js.publish(
                DRIFT_EVENTS, event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id}
            )
            if event.drifted:
                log.warning(
                    "drift.detected",
                    tenant=event.tenant,
                    signal=event.signal,
                    method=event.method,
                    statistic=event.statistic,
                    p_value=event.p_value,
                    n_reference=event.n_reference,
                    n_recent=event.n_recent,
                )

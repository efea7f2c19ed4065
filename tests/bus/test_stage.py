"""The stage runner against a real nats-server: acks, retries, dead letters, keep-alive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from llmops.bus.stage import Delivery, PoisonMessage, Stage, StageOptions, Unavailable
from llmops.bus.topology import (
    ANALYTICS_CONSUMER,
    DOCS_INGEST,
    INGESTION_CONSUMER,
    METERING_CONSUMER,
    ensure_topology,
)
from llmops.v1 import events_pb2
from tests.support import nats_server


@pytest.fixture
async def js(tmp_path: Path) -> AsyncIterator[JetStreamContext]:
    with nats_server(tmp_path / "js") as url:
        nc = await nats.connect(url)
        jetstream = nc.jetstream()
        await ensure_topology(jetstream)
        yield jetstream
        await nc.close()


class Recorder:
    """A handler that applies `behaviour` to each message and records every delivery."""

    def __init__(self, behaviour: Callable[[bytes, int], BaseException | None]) -> None:
        self.behaviour = behaviour
        self.seen: list[tuple[bytes, int]] = []
        self.dead: list[tuple[bytes, str]] = []

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        for d in batch:
            self.seen.append((d.data, d.deliveries))
            error = self.behaviour(d.data, d.deliveries)
            if error is not None:
                d.fail(error)

    async def on_dead_letter(self, d: Delivery, reason: str) -> None:
        self.dead.append((d.data, reason))


async def run_stage(
    js: JetStreamContext,
    recorder: Recorder,
    payloads: list[bytes],
    seconds: float,
    options: StageOptions | None = None,
) -> list[events_pb2.DeadLetter]:
    stage = Stage(
        "test",
        INGESTION_CONSUMER,
        recorder,
        lambda: js,
        options or StageOptions(max_deliver=3, backoff_s=(0.1,), fetch_timeout_s=0.2),
        recorder.on_dead_letter,
        lambda: js._nc,  # bulk pulls (linger_s) publish their own pull requests
    )
    letters: list[events_pb2.DeadLetter] = []

    async def on_letter(msg: nats.aio.msg.Msg) -> None:
        letter = events_pb2.DeadLetter()
        letter.ParseFromString(msg.data)
        letters.append(letter)

    sub = await js._nc.subscribe("llmops.dlq.test", cb=on_letter)
    await stage.start()
    for p in payloads:
        await js.publish(DOCS_INGEST, p, headers={"x-test": "1"})
    await asyncio.sleep(seconds)
    await stage.stop()
    await sub.unsubscribe()
    info = await js.consumer_info(INGESTION_CONSUMER.stream.name, INGESTION_CONSUMER.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # every message settled
    return letters


async def test_success_is_acked_once(js: JetStreamContext) -> None:
    recorder = Recorder(lambda data, n: None)
    letters = await run_stage(js, recorder, [b"a", b"b", b"c"], 1.0)
    assert sorted(recorder.seen) == [(b"a", 1), (b"b", 1), (b"c", 1)]
    assert letters == [] and recorder.dead == []


async def test_poison_goes_to_the_dead_letter_subject_at_once(js: JetStreamContext) -> None:
    recorder = Recorder(lambda data, n: PoisonMessage("bad bytes", tenant="t", doc_id="d"))
    letters = await run_stage(js, recorder, [b"poison"], 1.0)
    assert recorder.seen == [(b"poison", 1)]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.reason, letter.payload, letter.stage) == ("bad bytes", b"poison", "test")
    assert (letter.tenant, letter.doc_id, letter.deliveries) == ("t", "d", 1)
    assert letter.headers["x-test"] == "1" and letter.subject == DOCS_INGEST
    assert letter.error_type == "PoisonMessage"
    assert recorder.dead == [(b"poison", "bad bytes")]


async def test_transient_errors_are_retried_until_they_succeed(js: JetStreamContext) -> None:
    recorder = Recorder(lambda data, n: RuntimeError("store down") if n < 3 else None)
    letters = await run_stage(js, recorder, [b"flaky"], 2.0)
    assert recorder.seen == [(b"flaky", 1), (b"flaky", 2), (b"flaky", 3)]
    assert letters == []


async def test_persistent_errors_are_dead_lettered_after_max_deliver(js: JetStreamContext) -> None:
    recorder = Recorder(lambda data, n: RuntimeError("store down"))
    letters = await run_stage(js, recorder, [b"doomed"], 2.0)
    assert [n for _, n in recorder.seen] == [1, 2, 3]
    assert len(letters) == 1
    assert letters[0].reason == "gave up after 3 deliveries: store down"
    assert letters[0].error_type == "RuntimeError"


async def test_a_failing_batch_retries_every_message(js: JetStreamContext) -> None:
    calls: list[int] = []

    class Exploding(Recorder):
        async def __call__(self, batch: Sequence[Delivery]) -> None:
            calls.append(len(batch))
            await super().__call__(batch)
            if all(d.deliveries == 1 for d in batch):
                raise ConnectionError("NATS went away")

    recorder = Exploding(lambda data, n: None)
    await run_stage(js, recorder, [b"x", b"y"], 2.0)
    assert sorted(d for d, n in recorder.seen if n == 2) == [b"x", b"y"]


async def test_slow_batches_are_kept_alive_not_redelivered(js: JetStreamContext) -> None:
    class Slow(Recorder):
        async def __call__(self, batch: Sequence[Delivery]) -> None:
            await super().__call__(batch)
            await asyncio.sleep(2.5)  # longer than ack_wait: in_progress must hold it

    recorder = Slow(lambda data, n: None)
    options = StageOptions(max_deliver=3, ack_wait_s=1.0, backoff_s=(0.1,), fetch_timeout_s=0.2)
    await run_stage(js, recorder, [b"slow"], 3.5, options)
    assert recorder.seen == [(b"slow", 1)]


async def test_unavailable_waits_past_max_deliver_and_is_never_dead_lettered(
    js: JetStreamContext,
) -> None:
    """A store that is down is not the message's fault: it is retried until the store is back."""
    recorder = Recorder(lambda _data, n: Unavailable("store down") if n <= 4 else None)
    letters = await run_stage(js, recorder, [b"wait-for-me"], seconds=2.5)
    assert letters == [] and recorder.dead == []
    assert [n for _, n in recorder.seen] == [1, 2, 3, 4, 5]  # max_deliver is 3


async def test_linger_fills_a_batch_up_to_its_size(js: JetStreamContext) -> None:
    sizes: list[int] = []

    class Sizes(Recorder):
        async def __call__(self, batch: Sequence[Delivery]) -> None:
            sizes.append(len(batch))
            await super().__call__(batch)

    options = StageOptions(batch_size=10, linger_s=1.0, fetch_timeout_s=0.2)
    await run_stage(js, Sizes(lambda *_: None), [b"%d" % i for i in range(25)], 3.5, options)
    assert sizes == [10, 10, 5]


def test_a_consumer_redelivers_sooner_than_the_setting_never_later() -> None:
    # The event writers' batches come back within seconds of a crash...
    assert METERING_CONSUMER.redelivery_s(60.0) == 5.0
    assert ANALYTICS_CONSUMER.redelivery_s(60.0) == 10.0
    # ...a stage without its own delay takes the setting, and a shorter setting wins.
    assert INGESTION_CONSUMER.redelivery_s(60.0) == 60.0
    assert ANALYTICS_CONSUMER.redelivery_s(3.0) == 3.0

"""Dead letters over gRPC (`DeadLetters`, the servicer on a real grpc.aio server) against a
real nats-server, with the platform's stage runner for ingestion, analytics, metering and
evaluation: list and read letters, fix the cause, replay once; a second replay is refused
and nothing is handled twice; an interaction letter goes back to its one stage only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import pytest
from nats.js import JetStreamContext

from ingestion.deadletters import DeadLettersServicer
from llmops.bus.stage import Delivery, PoisonMessage, Stage, StageOptions
from llmops.bus.topology import (
    ANALYTICS_CONSUMER,
    DOCS_INGEST,
    DOCUMENT_EVENTS,
    EVALUATION_CONSUMER,
    INGESTION_CONSUMER,
    INTERACTION_EVENTS,
    METERING_CONSUMER,
    Consumer,
    dlq_subject,
)
from llmops.deadletters import NOT_FOUND, REPLAY_OF
from llmops.grpcutil import channel
from llmops.ids import UNKNOWN_TENANT
from llmops.v1 import deadletters_pb2, deadletters_pb2_grpc, events_pb2
from tests.support import free_port

TIMEOUT_S = 10
QUIET_S = 0.6  # how long "nothing more arrives" is watched for (stages fetch every 0.1 s)


@dataclass
class Handled:
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class Recorder:
    """A stage's handler: refuses the payloads in `broken` (with their tenant), records the rest."""

    broken: dict[bytes, str] = field(default_factory=dict)
    handled: list[Handled] = field(default_factory=list)

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        for d in batch:
            if d.data in self.broken:
                d.fail(PoisonMessage("cannot parse it", tenant=self.broken[d.data], doc_id="d1"))
            else:
                self.handled.append(Handled(d.msg.subject, d.data, d.headers))

    def times(self, data: bytes) -> int:
        return sum(h.data == data for h in self.handled)


@dataclass
class Rig:
    js: JetStreamContext
    stub: deadletters_pb2_grpc.DeadLettersStub
    stages: dict[str, Recorder]

    async def letter_for(self, payload: bytes) -> deadletters_pb2.DeadLetterEntry:
        """The newest letter holding `payload`, once there is one."""
        for _ in range(TIMEOUT_S * 20):
            found = [e for e in await self.every_letter() if self._payload(e) == payload]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no dead letter for {payload!r}")

    def _payload(self, entry: deadletters_pb2.DeadLetterEntry) -> bytes:
        return self._payloads[entry.id]

    async def every_letter(
        self, stage: str = "", tenant: str = ""
    ) -> list[deadletters_pb2.DeadLetterEntry]:
        page = await self.stub.ListDeadLetters(
            deadletters_pb2.ListDeadLettersRequest(stage=stage, tenant=tenant, page_size=1000)
        )
        for e in page.letters:  # lists leave payloads out: read them one by one
            if e.id not in self._payloads:
                got = await self.stub.GetDeadLetter(deadletters_pb2.GetDeadLetterRequest(id=e.id))
                self._payloads[e.id] = got.letter.payload
        return list(page.letters)

    _payloads: dict[int, bytes] = field(default_factory=dict)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(TIMEOUT_S * 20):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition never held")


@pytest.fixture(scope="module")
async def rig(js: JetStreamContext) -> AsyncIterator[Rig]:
    consumers: list[Consumer] = [
        INGESTION_CONSUMER,
        ANALYTICS_CONSUMER,
        METERING_CONSUMER,
        EVALUATION_CONSUMER,
    ]
    stages = {c.durable: Recorder() for c in consumers}
    options = StageOptions(max_deliver=2, backoff_s=(0.1,), fetch_timeout_s=0.1)
    runners = [Stage(c.durable, c, stages[c.durable], lambda: js, options) for c in consumers]
    for runner in runners:
        await runner.start()
    server = grpc.aio.server()
    deadletters_pb2_grpc.add_DeadLettersServicer_to_server(DeadLettersServicer(lambda: js), server)
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    async with channel(addr) as ch:
        yield Rig(js, deadletters_pb2_grpc.DeadLettersStub(ch), stages)
    await server.stop(None)
    for runner in runners:
        await runner.stop()


def _unique(label: str) -> bytes:
    return f"{label}-{uuid.uuid4().hex[:8]}".encode()


async def _replay(rig: Rig, *ids: int) -> deadletters_pb2.ReplayResponse:
    outcome: deadletters_pb2.ReplayResponse = await rig.stub.Replay(
        deadletters_pb2.ReplayRequest(ids=ids)
    )
    return outcome


async def test_a_fixed_document_is_handled_once_and_a_second_replay_is_refused(rig: Rig) -> None:
    ingestion = rig.stages["ingestion"]
    payload = _unique("doc")
    ingestion.broken[payload] = "acme"
    # Its original Nats-Msg-Id is still inside LLMOPS_DOCS_IN's duplicate window.
    await rig.js.publish(DOCS_INGEST, payload, headers={"Nats-Msg-Id": payload.decode()})
    entry = await rig.letter_for(payload)
    letter = entry.letter
    assert (letter.stage, letter.subject, letter.tenant, letter.doc_id) == (
        "ingestion",
        DOCS_INGEST,
        "acme",
        "d1",
    )
    assert letter.reason == "cannot parse it" and letter.error_type == "PoisonMessage"
    assert letter.payload == b"" and entry.payload_bytes == len(payload)  # lists leave it out
    full = await rig.stub.GetDeadLetter(deadletters_pb2.GetDeadLetterRequest(id=entry.id))
    assert full.letter.payload == payload and full.letter.headers["Nats-Msg-Id"]

    del ingestion.broken[payload]  # the cause is fixed
    outcome = await _replay(rig, entry.id)
    assert list(outcome.replayed) == [entry.id] and not outcome.refused
    await until(lambda: ingestion.times(payload) == 1)
    handled = next(h for h in ingestion.handled if h.data == payload)
    assert handled.subject == DOCS_INGEST  # as from where it first came
    assert handled.headers[REPLAY_OF] == str(entry.id)

    again = await _replay(rig, entry.id)
    assert not again.replayed and [(r.id, r.reason) for r in again.refused] == [
        (entry.id, NOT_FOUND)
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rig.stub.GetDeadLetter(deadletters_pb2.GetDeadLetterRequest(id=entry.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await asyncio.sleep(QUIET_S)
    assert ingestion.times(payload) == 1


async def test_an_interaction_letter_goes_back_to_metering_only(rig: Rig) -> None:
    metering = rig.stages["metering"]
    others = [rig.stages["analytics"], rig.stages["evaluation"]]
    payload = _unique("interaction")
    metering.broken[payload] = "acme"
    await rig.js.publish(INTERACTION_EVENTS, payload)
    entry = await rig.letter_for(payload)
    assert entry.letter.stage == "metering"
    await until(lambda: all(o.times(payload) == 1 for o in others))

    del metering.broken[payload]
    assert list((await _replay(rig, entry.id)).replayed) == [entry.id]
    await until(lambda: metering.times(payload) == 1)
    assert next(h for h in metering.handled if h.data == payload).subject == INTERACTION_EVENTS
    await asyncio.sleep(QUIET_S)
    assert [o.times(payload) for o in others] == [1, 1]  # analytics and evaluation: once
    assert metering.times(payload) == 1


async def test_a_letter_failing_again_is_dead_lettered_again_once(rig: Rig) -> None:
    payload = _unique("still-broken")
    rig.stages["ingestion"].broken[payload] = "acme"
    await rig.js.publish(DOCS_INGEST, payload)
    first = await rig.letter_for(payload)
    assert list((await _replay(rig, first.id)).replayed) == [first.id]
    for _ in range(TIMEOUT_S * 20):  # the old letter is gone, one new one takes its place
        second = await rig.letter_for(payload)
        if second.id != first.id:
            break
        await asyncio.sleep(0.05)
    assert second.id > first.id
    full = await rig.stub.GetDeadLetter(deadletters_pb2.GetDeadLetterRequest(id=second.id))
    assert full.letter.headers[REPLAY_OF] == str(first.id)
    await asyncio.sleep(QUIET_S)
    assert [e.id for e in await rig.every_letter() if rig._payload(e) == payload] == [second.id]


async def test_concurrent_replays_of_one_letter_publish_it_once(rig: Rig) -> None:
    ingestion = rig.stages["ingestion"]
    payload = _unique("raced")
    ingestion.broken[payload] = "acme"
    await rig.js.publish(DOCS_INGEST, payload)
    entry = await rig.letter_for(payload)
    del ingestion.broken[payload]
    outcomes = await asyncio.gather(*(_replay(rig, entry.id) for _ in range(3)))
    assert sum(len(o.replayed) for o in outcomes) == 1
    assert sum(len(o.refused) for o in outcomes) == 2
    await until(lambda: ingestion.times(payload) == 1)
    await asyncio.sleep(QUIET_S)
    assert ingestion.times(payload) == 1


async def test_replay_all_of_one_tenant_and_stage_leaves_the_others(rig: Rig) -> None:
    ingestion, metering = rig.stages["ingestion"], rig.stages["metering"]
    mine = [_unique("mine"), _unique("mine")]
    theirs, unknown, metered = _unique("theirs"), _unique("unknown"), _unique("metered")
    ingestion.broken.update({mine[0]: "t-all", mine[1]: "t-all", theirs: "t-other"})
    ingestion.broken[unknown] = ""
    metering.broken[metered] = "t-all"
    for p in (*mine, theirs, unknown):
        await rig.js.publish(DOCS_INGEST, p)
    await rig.js.publish(INTERACTION_EVENTS, metered)
    letters = {p: await rig.letter_for(p) for p in (*mine, theirs, unknown, metered)}

    listed = await rig.every_letter(tenant=UNKNOWN_TENANT)
    assert letters[unknown].id in {e.id for e in listed}
    assert all(e.letter.tenant == "" for e in listed)
    assert {e.id for e in await rig.every_letter(tenant="t-all", stage="ingestion")} == {
        letters[p].id for p in mine
    }

    for p in mine:
        del ingestion.broken[p]
    outcome = await rig.stub.Replay(
        deadletters_pb2.ReplayRequest(all=True, stage="ingestion", tenant="t-all")
    )
    assert sorted(outcome.replayed) == sorted(letters[p].id for p in mine)
    await until(lambda: all(ingestion.times(p) == 1 for p in mine))
    left = {e.id for e in await rig.every_letter()}
    assert {letters[p].id for p in (theirs, unknown, metered)} <= left
    assert not {letters[p].id for p in mine} & left


async def test_pages_follow_each_other_to_the_end(rig: Rig) -> None:
    payloads = [_unique("paged") for _ in range(3)]
    for p in payloads:
        rig.stages["ingestion"].broken[p] = "t-pages"
        await rig.js.publish(DOCS_INGEST, p)
    expected = [(await rig.letter_for(p)).id for p in payloads]
    seen: list[int] = []
    after = 0
    while True:
        page = await rig.stub.ListDeadLetters(
            deadletters_pb2.ListDeadLettersRequest(tenant="t-pages", page_size=2, after_id=after)
        )
        seen += [e.id for e in page.letters]
        if not page.next_after_id:
            break
        after = page.next_after_id
    assert seen == sorted(expected)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.ListDeadLetters(deadletters_pb2.ListDeadLettersRequest(stage="nope")),
        lambda s: s.ListDeadLetters(deadletters_pb2.ListDeadLettersRequest(tenant="../etc")),
        lambda s: s.ListDeadLetters(deadletters_pb2.ListDeadLettersRequest(page_size=-1)),
        lambda s: s.Replay(deadletters_pb2.ReplayRequest(ids=[1], all=True)),
        lambda s: s.Replay(deadletters_pb2.ReplayRequest()),
        lambda s: s.Replay(deadletters_pb2.ReplayRequest(ids=[1], tenant="acme")),
        lambda s: s.Replay(deadletters_pb2.ReplayRequest(all=True, tenant="Acme")),
    ],
)
async def test_bad_requests_are_invalid_arguments(rig: Rig, call: Callable[..., object]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(rig.stub)  # type: ignore[misc]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


async def test_an_unknown_id_is_not_found(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rig.stub.GetDeadLetter(deadletters_pb2.GetDeadLetterRequest(id=10**9))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    outcome = await _replay(rig, 10**9)
    assert [r.reason for r in outcome.refused] == [NOT_FOUND]


async def test_a_letter_no_consumer_of_its_stage_took_is_refused(rig: Rig) -> None:
    """Never sent to a consumer that would misread it (a second stage of a service)."""
    letter = events_pb2.DeadLetter(
        stage="ingestion", subject=DOCUMENT_EVENTS + ".failed", payload=_unique("event")
    )
    ack = await rig.js.publish(dlq_subject("ingestion"), letter.SerializeToString())
    outcome = await _replay(rig, ack.seq)
    assert [r.reason for r in outcome.refused] == [
        "stage 'ingestion' has no consumer of 'llmops.events.document.failed' to replay it to"
    ]
    assert ack.seq in {e.id for e in await rig.every_letter()}  # kept

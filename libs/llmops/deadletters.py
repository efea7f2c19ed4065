"""Dead letters made operable: list, read and replay the letters of LLMOPS_DLQ.

Shared by `llmops dlq` (straight over NATS) and the ingestion service's
`DeadLetters` gRPC service, so both refuse and replay alike. A letter's id is its
sequence in LLMOPS_DLQ.

Replay publishes the letter's payload and headers on its consumer's replay
subject (`Consumer.replay_subject`): only the stage that failed it takes it
again, as if from the subject it first came on, though other consumers of that
stream (analytics beside metering) filter on that subject too. Its `Nats-Msg-Id`
becomes `dlq-<id>`: the original one would be swallowed by the stream's
duplicate window, and two replays of one letter at once become one message.
Once JetStream confirmed the publish, the letter is deleted, so replaying it
again is refused as not found.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import BadRequestError, NotFoundError

from llmops.bus import topology
from llmops.bus.topology import DLQ, DLQ_STREAM, Consumer, dlq_subject
from llmops.ids import UNKNOWN_TENANT, check_tenant
from llmops.v1 import deadletters_pb2, events_pb2

# A stage dead-letters under its service's name, which is its durable consumer's name.
STAGES: dict[str, Consumer] = {
    c.durable: c for c in vars(topology).values() if isinstance(c, Consumer)
}
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
REPLAY_OF = "Llmops-Replay-Of"  # header on a replayed message: the letter's id
NOT_FOUND = "not found (already replayed?)"
_NO_SUCH_SEQUENCE = 10043  # JetStream's error deleting a message that is gone


class InvalidRequest(ValueError):
    """A stage, tenant or combination of arguments no letter can match."""


class LetterNotFound(LookupError):
    def __init__(self, letter_id: int) -> None:
        super().__init__(f"dead letter {letter_id} {NOT_FOUND}")


def check_stage(stage: str) -> str:
    if stage and stage not in STAGES:
        raise InvalidRequest(f"unknown stage {stage!r}: one of {', '.join(sorted(STAGES))}")
    return stage


def check_tenant_filter(tenant: str) -> str:
    """'' (every tenant), UNKNOWN_TENANT (letters whose tenant is unknown) or a tenant id."""
    if tenant in ("", UNKNOWN_TENANT):
        return tenant
    try:
        return check_tenant(tenant)
    except ValueError as exc:
        raise InvalidRequest(f"{exc}; or {UNKNOWN_TENANT}: letters of no known tenant") from None


def tenant_of(letter: events_pb2.DeadLetter) -> str:
    return letter.tenant or UNKNOWN_TENANT


def _matches(letter: events_pb2.DeadLetter, tenant: str) -> bool:
    return not tenant or tenant_of(letter) == tenant


def _entry(letter_id: int, data: bytes, with_payload: bool) -> deadletters_pb2.DeadLetterEntry:
    letter = events_pb2.DeadLetter.FromString(data)
    size = len(letter.payload)
    if not with_payload:
        letter.ClearField("payload")
    return deadletters_pb2.DeadLetterEntry(id=letter_id, letter=letter, payload_bytes=size)


async def _scan(
    js: JetStreamContext, stage: str, tenant: str, after_id: int
) -> AsyncIterator[deadletters_pb2.DeadLetterEntry]:
    """Matching letters after `after_id`, oldest first, without their payloads."""
    subject = dlq_subject(stage) if stage else f"{DLQ}.>"
    seq = after_id + 1
    while True:
        try:
            msg = await js.get_msg(DLQ_STREAM.name, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return
        assert msg.seq is not None and msg.data is not None
        entry = _entry(msg.seq, msg.data, with_payload=False)
        if _matches(entry.letter, tenant):
            yield entry
        seq = msg.seq + 1


async def list_letters(
    js: JetStreamContext, request: deadletters_pb2.ListDeadLettersRequest
) -> deadletters_pb2.ListDeadLettersResponse:
    """One page of letters; `next_after_id` is 0 when no matching letter follows it."""
    stage, tenant = check_stage(request.stage), check_tenant_filter(request.tenant)
    if request.page_size < 0:
        raise InvalidRequest(f"page_size {request.page_size}: at least 0 (0: {DEFAULT_PAGE_SIZE})")
    size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    page = deadletters_pb2.ListDeadLettersResponse()
    async for entry in _scan(js, stage, tenant, request.after_id):
        if len(page.letters) == size:  # one more matches: there is a next page
            page.next_after_id = page.letters[-1].id
            break
        page.letters.append(entry)
    return page


async def get_letter(js: JetStreamContext, letter_id: int) -> deadletters_pb2.DeadLetterEntry:
    """The letter with its payload, or LetterNotFound."""
    if letter_id <= 0:  # JetStream would read 0 as "no sequence given"
        raise LetterNotFound(letter_id)
    try:
        msg = await js.get_msg(DLQ_STREAM.name, seq=letter_id)
    except NotFoundError:
        raise LetterNotFound(letter_id) from None
    if msg.data is None or not (msg.subject or "").startswith(f"{DLQ}."):
        raise LetterNotFound(letter_id)
    return _entry(letter_id, msg.data, with_payload=True)


async def replay(
    js: JetStreamContext, request: deadletters_pb2.ReplayRequest
) -> deadletters_pb2.ReplayResponse:
    """Replay the given letters, or every letter matching stage and tenant (`all`).

    Each letter is replayed or refused with its reason; one refusal stops nothing.
    """
    if request.all == bool(request.ids):
        raise InvalidRequest("give letter ids or all, not both and not neither")
    if request.ids and (request.stage or request.tenant):
        raise InvalidRequest("stage and tenant select letters only with all")
    ids: Sequence[int] = request.ids
    if request.all:
        stage, tenant = check_stage(request.stage), check_tenant_filter(request.tenant)
        ids = [e.id async for e in _scan(js, stage, tenant, 0)]
    response = deadletters_pb2.ReplayResponse()
    for letter_id in dict.fromkeys(ids):  # an id given twice is replayed once
        refusal = await _replay_one(js, letter_id)
        if refusal:
            response.refused.add(id=letter_id, reason=refusal)
        else:
            response.replayed.append(letter_id)
    return response


async def _replay_one(js: JetStreamContext, letter_id: int) -> str:
    """'' once the letter is republished and deleted, else why not."""
    try:
        letter = (await get_letter(js, letter_id)).letter
    except LetterNotFound:
        return NOT_FOUND
    consumer = STAGES.get(letter.stage)
    if consumer is None or not _takes(consumer.filter_subject, letter.subject):
        # e.g. a letter of a stage that no longer exists, or moved to another subject
        return f"stage {letter.stage!r} has no consumer of {letter.subject!r} to replay it to"
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("Nats-")}
    headers[Header.MSG_ID] = f"dlq-{letter_id}"
    headers[REPLAY_OF] = str(letter_id)
    ack = await js.publish(
        consumer.replay_subject(letter.subject),
        letter.payload,
        stream=consumer.stream.name,
        headers=headers,
    )
    try:
        await js.delete_msg(DLQ_STREAM.name, letter_id)
    except BadRequestError as exc:  # gone: a concurrent replay of it deleted it first
        if exc.err_code != _NO_SUCH_SEQUENCE:
            raise
    if ack.duplicate:  # published by a concurrent (or interrupted) replay of it: not twice
        return "already replayed"
    return ""


def _takes(filter_subject: str, subject: str) -> bool:
    """Whether a consumer filtering on `filter_subject` (with `*` and `>`) takes `subject`."""
    wanted, tokens = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or token not in ("*", tokens[i]):
            return False
    return len(wanted) == len(tokens)

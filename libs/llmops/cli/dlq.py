"""`llmops dlq`: list, show and replay dead letters (LLMOPS_DLQ), straight over NATS.

LLMOPS_NATS_URL when it is set, else the running local platform's, like
`llmops ingest`. The work is llmops.deadletters', which the ingestion service's
`DeadLetters` gRPC service shares, so both refuse and replay alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

import click
from google.protobuf.json_format import MessageToDict
from nats.js import JetStreamContext

from llmops import deadletters
from llmops.ids import UNKNOWN_TENANT
from llmops.v1 import deadletters_pb2, events_pb2

from .guardrails import _jetstream, _print_json, _print_rows, checked_by, json_option

T = TypeVar("T")
SHOWN_PAYLOAD_BYTES = 4096  # a longer (or binary) payload is shown by size and digest
REASON_CHARS = 200  # of a reason, on its one line of a list
LIST_HEADER = (
    "id", "stage", "time", "tenant", "doc_id", "error_type", "reason", "deliveries", "payload_bytes"
)  # fmt: skip


def _run(work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    """`work` over JetStream; the library's refusals become click's errors (exit 1)."""

    async def go() -> T:
        async with _jetstream() as js:
            return await work(js)

    try:
        return asyncio.run(go())
    except (deadletters.InvalidRequest, deadletters.LetterNotFound) as exc:
        raise click.ClickException(str(exc)) from None


stage_option = click.option(
    "--stage",
    default="",
    callback=checked_by(deadletters.check_stage),
    help=f"only this stage's letters ({', '.join(sorted(deadletters.STAGES))})",
)
tenant_option = click.option(
    "--tenant",
    default="",
    callback=checked_by(deadletters.check_tenant_filter),
    help=f"only this tenant's letters ({UNKNOWN_TENANT}: those of no known tenant)",
)


def _dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _time(letter: events_pb2.DeadLetter) -> str:
    return letter.time.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


@click.group()
def dlq() -> None:
    """Dead letters: messages a stage refused or gave up on, kept until replayed."""


@dlq.command("list")
@stage_option
@tenant_option
@click.option("--page-size", type=click.IntRange(1, deadletters.MAX_PAGE_SIZE), default=100)
@click.option("--after-id", type=click.IntRange(0), default=0, help="the previous page's last id")
@json_option
def list_letters(stage: str, tenant: str, page_size: int, after_id: int, as_json: bool) -> None:
    """Letters, oldest first, without their payloads."""
    request = deadletters_pb2.ListDeadLettersRequest(
        stage=stage, tenant=tenant, page_size=page_size, after_id=after_id
    )
    page = _run(lambda js: deadletters.list_letters(js, request))
    if as_json:
        _print_json(_dict(page))
        return
    _print_rows(
        LIST_HEADER,
        [
            (
                str(e.id),
                e.letter.stage,
                _time(e.letter),
                deadletters.tenant_of(e.letter),
                e.letter.doc_id or "-",
                e.letter.error_type,
                _one_line(e.letter.reason),
                str(e.letter.deliveries),
                str(e.payload_bytes),
            )
            for e in page.letters
        ],
    )
    if page.next_after_id:
        click.echo(f"more: --after-id {page.next_after_id}", err=True)


@dlq.command()
@click.argument("letter_id", metavar="ID", type=click.IntRange(1))
@click.option(
    "--payload",
    "payload_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="write the payload, byte for byte, to this file",
)
@json_option
def show(letter_id: int, payload_path: Path | None, as_json: bool) -> None:
    """One letter: where it came from, why it was refused, its headers and payload."""
    entry = _run(lambda js: deadletters.get_letter(js, letter_id))
    letter = entry.letter
    if payload_path is not None:
        payload_path.write_bytes(letter.payload)
    if as_json:
        _print_json(_dict(entry))
        return
    for field, value in (
        ("id", str(entry.id)),
        ("stage", letter.stage),
        ("time", _time(letter)),
        ("tenant", deadletters.tenant_of(letter)),
        ("doc_id", letter.doc_id or "-"),
        ("subject", letter.subject),
        ("error_type", letter.error_type),
        ("reason", letter.reason),
        ("deliveries", str(letter.deliveries)),
        ("trace_id", letter.trace_id or "-"),
    ):
        click.echo(f"{field}: {value}")
    click.echo("headers:" + ("" if letter.headers else " -"))
    for name, value in sorted(letter.headers.items()):
        click.echo(f"  {name}: {value}")
    click.echo(payload_summary(letter.payload))


def payload_summary(payload: bytes) -> str:
    """The payload itself when it is short UTF-8 text, else its size and SHA-256."""
    if len(payload) <= SHOWN_PAYLOAD_BYTES:
        with contextlib.suppress(UnicodeDecodeError):
            text = payload.decode()
            if all(c.isprintable() or c in "\n\r\t" for c in text):
                return f"payload ({len(payload)} bytes):\n{text}"
    return f"payload: {len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()}"


@dlq.command()
@click.argument("letter_ids", metavar="[ID]...", nargs=-1, type=click.IntRange(1))
@click.option("--all", "replay_all", is_flag=True, help="every letter matching --stage, --tenant")
@stage_option
@tenant_option
@json_option
def replay(
    letter_ids: tuple[int, ...], replay_all: bool, stage: str, tenant: str, as_json: bool
) -> None:
    """Send letters back through their stage once, then drop them from the DLQ.

    Exits 1 when any letter was refused (e.g. not found: already replayed).
    """
    if replay_all == bool(letter_ids):
        raise click.UsageError("give letter ids or --all")
    if letter_ids and (stage or tenant):
        raise click.UsageError("--stage and --tenant select letters only with --all")
    request = deadletters_pb2.ReplayRequest(
        ids=letter_ids, all=replay_all, stage=stage, tenant=tenant
    )
    outcome = _run(lambda js: deadletters.replay(js, request))
    if as_json:
        _print_json(_dict(outcome))
    else:
        for replayed_id in outcome.replayed:
            click.echo(f"replayed {replayed_id}")
        for refusal in outcome.refused:
            click.echo(f"refused {refusal.id}: {refusal.reason}", err=True)
        if not outcome.replayed and not outcome.refused:
            click.echo("no letters matched")
    sys.exit(1 if outcome.refused else 0)

"""`llmops docs`: what is in the index, per tenant: list, show, delete.

`list` and `show` ask the ingestion service's document catalog over gRPC
(LLMOPS_INGESTION_ADDR, else the running local platform's); `delete` publishes
a DeleteDocument to `llmops.docs.delete` on NATS, as every other delete does.
Tables become a header line and tab-separated lines when stdout is not a terminal.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC
from typing import Any, NoReturn

import click
import grpc
from google.protobuf.json_format import MessageToDict

from llmops.bus.events import status_name
from llmops.docclient import DocumentClient
from llmops.grpcutil import channel
from llmops.ids import check_collection, check_doc_id
from llmops.v1 import events_pb2, ingestion_pb2, ingestion_pb2_grpc

from .guardrails import (
    _address,
    _nats_url,
    _print_json,
    _print_rows,
    checked_by,
    json_option,
    tenant_option,
)

LIST_HEADER = (
    "doc_id",
    "collection",
    "status",
    "version",
    "versions",
    "chunks",
    "tokens",
    "bytes",
    "updated",
    "last_error",
)
RPC_TIMEOUT_S = 60.0  # a page reads every record of the tenant (docs/document-catalog.md)


def _ingestion_addr() -> str:
    return _address("ingestion_addr", lambda state: state.grpc["ingestion"])


def _updated(info: ingestion_pb2.DocumentInfo) -> str:
    return info.updated.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def document_row(info: ingestion_pb2.DocumentInfo) -> list[str]:
    return [
        info.doc_id,
        info.collection,
        status_name(info.status),
        str(info.version),
        str(info.versions),
        str(info.chunks),
        str(info.tokens),
        str(info.content_bytes),
        _updated(info),
        info.last_error,
    ]


def document_dict(info: ingestion_pb2.DocumentInfo) -> dict[str, Any]:
    """Every field, zeros included (a script reads `chunks: 0`, not a missing key)."""
    data = MessageToDict(
        info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    data["status"] = status_name(info.status)
    return data


def _fail(exc: grpc.aio.AioRpcError) -> NoReturn:
    click.echo(f"{exc.code().name}: {exc.details()}", err=True)
    sys.exit(1)


@click.group()
def docs() -> None:
    """What is in the index: each document's status, versions, chunks, size and last error."""


@docs.command("list")
@tenant_option
@click.option(
    "--collection",
    default="",
    help="only this collection",
    callback=checked_by(lambda c: c and check_collection(c)),
)
@click.option("--include-deleted", is_flag=True, help="list deleted documents too")
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--page-token", default="", help="next_page_token of the previous page")
@click.option("--all", "all_pages", is_flag=True, help="every page, not only the first")
@json_option
def list_documents(
    tenant: str,
    collection: str,
    include_deleted: bool,
    page_size: int,
    page_token: str,
    all_pages: bool,
    as_json: bool,
) -> None:
    """The tenant's documents, by doc id, a page at a time."""
    request = ingestion_pb2.ListDocumentsRequest(
        tenant=tenant,
        collection=collection,
        page_size=page_size,
        page_token=page_token,
        include_deleted=include_deleted,
    )
    try:
        documents, next_token = asyncio.run(_list(_ingestion_addr(), request, all_pages))
    except grpc.aio.AioRpcError as exc:
        _fail(exc)
    if as_json:
        _print_json(
            {"documents": [document_dict(d) for d in documents], "next_page_token": next_token}
        )
        return
    _print_rows(LIST_HEADER, [document_row(d) for d in documents])
    if next_token:  # on stderr: the rows on stdout stay a clean table
        click.echo(f"more documents: --page-token {next_token}", err=True)


async def _list(
    address: str, request: ingestion_pb2.ListDocumentsRequest, all_pages: bool
) -> tuple[list[ingestion_pb2.DocumentInfo], str]:
    documents: list[ingestion_pb2.DocumentInfo] = []
    async with channel(address) as ch:
        stub = ingestion_pb2_grpc.IngestionStub(ch)
        while True:
            reply = await stub.ListDocuments(request, timeout=RPC_TIMEOUT_S)
            documents.extend(reply.documents)
            if not (all_pages and reply.next_page_token):
                return documents, reply.next_page_token
            request.page_token = reply.next_page_token


@docs.command()
@click.argument("doc_id", callback=checked_by(check_doc_id))
@tenant_option
@json_option
def show(doc_id: str, tenant: str, as_json: bool) -> None:
    """One document: its latest outcome, version, chunks, size and last error."""
    request = ingestion_pb2.GetDocumentRequest(tenant=tenant, doc_id=doc_id)
    try:
        info = asyncio.run(_get(_ingestion_addr(), request))
    except grpc.aio.AioRpcError as exc:
        _fail(exc)
    data = document_dict(info)
    if as_json:
        _print_json(data)
        return
    data["updated"] = _updated(info)
    _print_rows(("field", "value"), [(k, str(v)) for k, v in data.items()])


async def _get(
    address: str, request: ingestion_pb2.GetDocumentRequest
) -> ingestion_pb2.DocumentInfo:
    async with channel(address) as ch:
        stub = ingestion_pb2_grpc.IngestionStub(ch)
        info: ingestion_pb2.DocumentInfo = await stub.GetDocument(request, timeout=RPC_TIMEOUT_S)
        return info


@docs.command()
@click.argument("doc_id", callback=checked_by(check_doc_id))
@tenant_option
@click.option("--wait", is_flag=True, help="return once the index removed it")
@click.option("--timeout", default=120.0, show_default=True, help="seconds --wait waits")
def delete(doc_id: str, tenant: str, wait: bool, timeout: float) -> None:
    """Remove a document from the index (it stays listed as deleted: `list --include-deleted`)."""
    sys.exit(asyncio.run(_delete(_nats_url(), tenant, doc_id, wait, timeout)))


async def _delete(nats_url: str, tenant: str, doc_id: str, wait: bool, timeout_s: float) -> int:
    client = await DocumentClient.connect(nats_url)
    try:
        if wait:
            await client.watch()
        await client.delete(tenant, doc_id)
        click.echo(f"delete of {tenant}/{doc_id} published")
        if not wait:
            return 0
        outcomes = await client.wait_for([(tenant, doc_id)], timeout_s)
    except TimeoutError as exc:
        click.echo(f"timed out: {exc}", err=True)
        return 2
    finally:
        await client.close()
    event = outcomes[(tenant, doc_id)]
    click.echo(f"{tenant}/{doc_id}: {status_name(event.status)} {event.reason}".rstrip())
    return 0 if event.status != events_pb2.DOCUMENT_STATUS_FAILED else 1

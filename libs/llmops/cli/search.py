"""`llmops search`: ranked chunks over gRPC."""

from __future__ import annotations

import json

import grpc
from rich.console import Console
from rich.table import Table

from llmops.grpcutil import channel
from llmops.v1 import retrieval_pb2, retrieval_pb2_grpc

_MODES = {
    "hybrid": retrieval_pb2.SEARCH_MODE_HYBRID,
    "dense": retrieval_pb2.SEARCH_MODE_DENSE,
    "sparse": retrieval_pb2.SEARCH_MODE_SPARSE,
}


async def run_search(
    address: str,
    query: str,
    tenant: str,
    top_k: int,
    collection: str,
    filters: dict[str, str],
    mode: str,
    as_json: bool,
) -> int:
    request = retrieval_pb2.SearchRequest(
        tenant=tenant,
        query=query,
        top_k=top_k,
        collection=collection,
        filters=filters,
        mode=_MODES[mode],
    )
    console = Console()
    async with channel(address) as ch:
        try:
            reply = await retrieval_pb2_grpc.RetrievalStub(ch).Search(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            console.print(f"[red]search failed: {exc.code().name}: {exc.details()}[/red]")
            return 1
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "rank": i + 1,
                        "score": h.score,
                        "doc_id": h.doc_id,
                        "source": h.source,
                        "heading": h.heading,
                        "chunk_id": h.chunk_id,
                        "text": h.text,
                    }
                    for i, h in enumerate(reply.hits)
                ],
                indent=2,
            )
        )
        return 0
    if not reply.hits:
        console.print(f"no results for tenant {tenant!r}")
        return 0
    table = Table(title=f"{len(reply.hits)} results in {reply.took_ms:.1f} ms", show_lines=True)
    for col in ("#", "score", "source", "text"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(reply.hits, 1):
        where = h.source or h.doc_id
        if h.heading:
            where += f"\n{h.heading}"
        text = h.text if len(h.text) <= 400 else h.text[:400] + "…"
        table.add_row(str(i), f"{h.score:.4f}", where, text)
    console.print(table)
    return 0

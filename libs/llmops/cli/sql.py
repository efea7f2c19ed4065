"""`llmops sql`: read-only SQL over the analytics tables, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from llmops.grpcutil import channel
from llmops.queryrows import rows_of
from llmops.v1 import analytics_pb2, analytics_pb2_grpc


async def run_sql(
    address: str,
    key: str,
    sql: str,
    parameters: dict[str, str],
    output: str,
    max_rows: int,
    timeout_s: float,
) -> int:
    request = analytics_pb2.QueryRequest(
        sql=sql, parameters=parameters, max_rows=max_rows, timeout_s=timeout_s
    )
    errors = Console(stderr=True)
    async with channel(address) as ch:
        try:
            reply = await analytics_pb2_grpc.AnalyticsStub(ch).Query(
                request, metadata=(("authorization", f"Bearer {key}"),), timeout=timeout_s + 5
            )
        except grpc.aio.AioRpcError as exc:
            errors.print(f"[red]query failed: {exc.code().name}: {exc.details()}[/red]")
            return 1
    names = [c.name for c in reply.columns]
    rows = rows_of(reply)
    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[_text(v) for v in row] for row in rows])
    elif output == "json":
        print(json.dumps([dict(zip(names, row, strict=True)) for row in rows], indent=2))
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*("NULL" if v is None else _text(v) for v in row))
        Console().print(table)
    scope = f"tenant {reply.tenant}" if reply.tenant else "all tenants"
    errors.print(f"{len(rows)} rows in {reply.elapsed_ms:.1f} ms ({scope})")
    if reply.truncated:
        errors.print(f"[yellow]only the first {len(rows)} rows: add a LIMIT or aggregate[/yellow]")
    return 0


def _text(value: Any) -> str:
    """A cell as text: arrays and maps as JSON, the rest as they print."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)

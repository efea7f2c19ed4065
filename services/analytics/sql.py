"""Read-only SQL for analysts, enforced by ClickHouse itself.

Every query runs with `readonly=1` (ClickHouse refuses writes, DDL, table
functions that write, and any change of a setting, including the ones
below), a time limit and a row limit. For a tenant-scoped key two more
guards apply, both decided by ClickHouse's own parser, not by ours:

* `EXPLAIN QUERY TREE` lists every table and table function the query reads;
  anything but the analytics tables (system tables, `file()`, `url()`...) is
  refused;
* `additional_table_filters` adds `tenant = '<tenant>'` to every read of
  every analytics table, in subqueries and joins too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from llmops.v1 import analytics_pb2

_TABLE_RE = re.compile(r"^\s*TABLE id: \d+.*\btable_name: ([^\s,]+)", re.MULTILINE)
_TABLE_FUNCTION_RE = re.compile(r"^\s*TABLE_FUNCTION id: \d+.*\btable_function_name: (\S+)", re.M)
# A SELECT, maybe after comments and parentheses (the message for anything else is clearer
# than the syntax error EXPLAIN would give; ClickHouse's readonly still enforces it).
_SELECT_RE = re.compile(r"^(?:\s|\(|--[^\n]*(?:\n|$)|/\*.*?\*/)*(SELECT|WITH)\b", re.I | re.S)
_READ_ONLY = {164, 497}  # READONLY, ACCESS_DENIED
_TIMEOUT = {159}  # TIMEOUT_EXCEEDED
_TOO_BIG = {158, 241, 307, 396}  # TOO_MANY_ROWS, MEMORY_LIMIT_EXCEEDED, TOO_MANY_BYTES, ...
_EXACT_INT = 2**53


class QueryError(Exception):
    """A query refused or failed, with the gRPC code the caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_rows: int
    timeout_s: float


class SqlRunner:
    """Runs analysts' queries on a small pool of clients (each call blocks: run it in a thread).

    A client whose query failed is replaced: chDB applies some statements'
    settings with SET and cannot undo a `readonly` it set, so a refused
    INSERT would leave that handle read-only for every later query.
    """

    def __init__(
        self, connect: Callable[[], Client], size: int, database: str, tenant_tables: list[str]
    ) -> None:
        self._connect = connect
        self._pool: queue.Queue[Client] = queue.Queue()
        for _ in range(size):
            self._pool.put(connect())
        self._tables = frozenset(f"{database}.{t}" for t in tenant_tables)

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait().close()

    @contextlib.contextmanager
    def _client(self) -> Iterator[Client]:
        client = self._pool.get()
        try:
            yield client
        except Exception:
            client.close()
            try:
                client = self._connect()
            finally:
                self._pool.put(client)
            raise
        self._pool.put(client)

    def run(
        self, sql: str, parameters: Mapping[str, str], limits: Limits, tenant: str | None
    ) -> analytics_pb2.QueryReply:
        sql = sql.strip().rstrip(";").strip()
        if not sql:
            raise QueryError(grpc.StatusCode.INVALID_ARGUMENT, "empty query")
        started = time.perf_counter()
        settings: dict[str, Any] = {}
        with self._client() as client:
            try:
                if tenant is not None:
                    self._check_tables(client, sql, parameters, limits)
                    settings["additional_table_filters"] = self._filters(tenant)
                settings["max_execution_time"] = max(1, round(limits.timeout_s))
                settings["max_result_rows"] = limits.max_rows + 1
                settings["result_overflow_mode"] = "break"
                settings["readonly"] = 1  # last: once set, no other setting may change
                result = client.query(sql, parameters=dict(parameters), settings=settings)
                columns = [
                    analytics_pb2.Column(name=n, type=t.name)
                    for n, t in zip(result.column_names, result.column_types, strict=True)
                ]
                if not columns:  # chDB sends no header for an empty result: ask for it
                    described = client.query(
                        f"DESCRIBE TABLE ({sql})", parameters=dict(parameters), settings=settings
                    )
                    columns = [
                        analytics_pb2.Column(name=str(r[0]), type=str(r[1]))
                        for r in described.result_rows
                    ]
            except ClickHouseError as exc:
                raise _query_error(exc, limits) from None
        rows = result.result_rows
        reply = analytics_pb2.QueryReply(
            columns=columns, truncated=len(rows) > limits.max_rows, tenant=tenant or ""
        )
        for row in rows[: limits.max_rows]:
            reply.rows.add().extend([_cell(v) for v in row])
        reply.elapsed_ms = (time.perf_counter() - started) * 1000
        return reply

    def _check_tables(
        self, client: Client, sql: str, parameters: Mapping[str, str], limits: Limits
    ) -> None:
        if not _SELECT_RE.match(sql):
            raise QueryError(
                grpc.StatusCode.PERMISSION_DENIED,
                "a tenant's key may run SELECT queries only: the analytics SQL API is read-only",
            )
        tree = "\n".join(
            str(r[0])
            for r in client.query(
                f"EXPLAIN QUERY TREE {sql}",
                parameters=dict(parameters),
                settings={"max_execution_time": max(1, round(limits.timeout_s)), "readonly": 1},
            ).result_rows
        )
        functions = _TABLE_FUNCTION_RE.findall(tree)
        others = sorted(set(_TABLE_RE.findall(tree)) - self._tables)
        if functions or others:
            found = ", ".join([f"{f}()" for f in functions] + others)
            raise QueryError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a tenant's key may read only the analytics tables "
                f"({', '.join(sorted(t.split('.', 1)[1] for t in self._tables))}); "
                f"this query reads {found}",
            )

    def _filters(self, tenant: str) -> str:
        # The tenant matched TENANT_RE when its key was made: no quote can appear in it.
        condition = f"tenant = \\'{tenant}\\'"
        return "{" + ", ".join(f"'{t}': '{condition}'" for t in sorted(self._tables)) + "}"


def _query_error(exc: ClickHouseError, limits: Limits) -> QueryError:
    if isinstance(exc, OperationalError):
        return QueryError(grpc.StatusCode.UNAVAILABLE, f"ClickHouse unavailable: {exc}")
    code = getattr(exc, "code", None)
    message = str(exc).strip()[:2000]
    if code in _READ_ONLY:
        return QueryError(
            grpc.StatusCode.PERMISSION_DENIED,
            "the analytics SQL API is read-only: writes, DDL and setting changes are refused "
            f"({message})",
        )
    if code in _TIMEOUT:
        return QueryError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the query ran past its {limits.timeout_s:g} s limit ({message})",
        )
    if code in _TOO_BIG:
        return QueryError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
    if isinstance(exc, DatabaseError):
        return QueryError(grpc.StatusCode.INVALID_ARGUMENT, message)
    return QueryError(grpc.StatusCode.INTERNAL, message)


def _cell(value: Any) -> Any:
    """A ClickHouse value as a protobuf Value: exact where JSON numbers would not be."""
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return value if -_EXACT_INT <= value <= _EXACT_INT else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _cell(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal):
        return str(value)
    return str(value)  # UUID, IP addresses, ...

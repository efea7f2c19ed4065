"""The chDB-backed ClickHouse HTTP stand-in, driven by clickhouse-connect's real HTTP client."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tests.clickhouse_http import ClickHouseHttp

COLUMNS = ["id", "tenant", "ts", "tags"]
DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id UInt64,
    tenant LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    tags Array(String)
) ENGINE = MergeTree ORDER BY (tenant, id)
"""


def rows(start: int, n: int, tenant: str) -> list[list[object]]:
    return [
        [
            i,
            tenant,
            datetime(2024, 1, 1, 0, 0, i % 60, 1000 * (i % 1000), tzinfo=UTC),
            [f"t{i}", "x"],
        ]
        for i in range(start, start + n)
    ]


def make_table(client: Client, table: str) -> None:
    client.command("CREATE DATABASE IF NOT EXISTS analytics")
    client.command(DDL.format(table=table))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHttp]:
    with ClickHouseHttp(tmp_path_factory.mktemp("clickhouse")) as ch:
        yield ch


@pytest.fixture
def client(server: ClickHouseHttp) -> Iterator[Client]:
    c = clickhouse_connect.get_client(dsn=server.url)
    yield c
    c.close()


def test_ping_and_headers(server: ClickHouseHttp) -> None:
    with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as r:
        assert r.read() == b"Ok.\n"
    with urllib.request.urlopen(f"{server.url}/?query=SELECT%201&query_id=q1", timeout=5) as r:
        assert r.read() == b"1\n"
        assert r.headers["X-ClickHouse-Query-Id"] == "q1"
        assert r.headers["X-ClickHouse-Format"] == "TabSeparated"
        assert "read_rows" in r.headers["X-ClickHouse-Summary"]


def test_insert_and_query_types(client: Client) -> None:
    make_table(client, "analytics.events")
    summary = client.insert("analytics.events", rows(0, 100, "a"), column_names=COLUMNS)
    assert summary.written_rows == 100
    client.insert("analytics.events", rows(100, 5, "b"), column_names=COLUMNS)

    result = client.query(
        "SELECT id, tenant, ts, tags, toTypeName(tenant) FROM analytics.events "
        "WHERE id IN {ids:Array(UInt64)} ORDER BY id",
        parameters={"ids": [1, 101]},
    )
    assert result.column_names == ("id", "tenant", "ts", "tags", "toTypeName(tenant)")
    assert [t.name for t in result.column_types[:4]] == [
        "UInt64",
        "LowCardinality(String)",
        "DateTime64(3, 'UTC')",
        "Array(String)",
    ]
    first = result.result_rows[0]
    assert first[0] == 1 and first[1] == "a" and first[3] == ["t1", "x"]
    assert first[4] == "LowCardinality(String)"
    assert first[2].replace(tzinfo=UTC) == datetime(2024, 1, 1, 0, 0, 1, 1000, tzinfo=UTC)
    assert [r[1] for r in result.result_rows] == ["a", "b"]
    assert client.command("SELECT count() FROM analytics.events") == 105
    assert client.raw_query("SELECT uniqExact(tenant) FROM analytics.events") == b"2\n"
    raw = client.raw_query("SELECT id FROM analytics.events WHERE id < 2 ORDER BY id", fmt="CSV")
    assert raw == b"0\n1\n"


def test_compression_variants(server: ClickHouseHttp) -> None:
    for compress in (True, "zstd", "gzip", False):
        c = clickhouse_connect.get_client(dsn=server.url, compress=compress)
        try:
            make_table(c, "analytics.comp")
            c.insert("analytics.comp", rows(0, 3000, str(compress)), column_names=COLUMNS)
            got = c.query(
                "SELECT count(), max(length(tags)) FROM analytics.comp WHERE tenant = {t:String}",
                parameters={"t": str(compress)},
            ).result_rows
            assert got == [(3000, 2)]
        finally:
            c.close()


def test_readonly_setting_refuses_insert(client: Client) -> None:
    make_table(client, "analytics.ro")
    with pytest.raises(DatabaseError) as info:
        client.insert(
            "analytics.ro", rows(0, 1, "a"), column_names=COLUMNS, settings={"readonly": 1}
        )
    assert getattr(info.value, "code", None) == 164
    assert "READONLY" in str(info.value)
    with pytest.raises(DatabaseError, match="READONLY"):
        client.command("INSERT INTO analytics.ro (id) VALUES (1)", settings={"readonly": 1})
    with pytest.raises(DatabaseError, match="READONLY"):
        client.command("DROP TABLE analytics.ro", settings={"readonly": 1})
    # the setting applied to those requests only
    client.insert("analytics.ro", rows(0, 1, "a"), column_names=COLUMNS)
    assert client.command("SELECT count() FROM analytics.ro") == 1


def test_additional_table_filters_with_readonly(client: Client) -> None:
    make_table(client, "analytics.scoped")
    client.insert("analytics.scoped", rows(0, 3, "a") + rows(3, 4, "b"), column_names=COLUMNS)
    settings = {
        "readonly": 1,
        "additional_table_filters": {"analytics.scoped": "tenant = 'b'"},
    }
    result = client.query(
        "SELECT DISTINCT tenant, count() FROM analytics.scoped GROUP BY tenant", settings=settings
    )
    assert result.result_rows == [("b", 4)]
    limited = {"max_result_rows": 2, "result_overflow_mode": "throw", "readonly": 1}
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM analytics.scoped", settings=limited)
    assert getattr(info.value, "code", None) == 396  # TOO_MANY_ROWS_OR_BYTES


def test_errors_sessions_and_form_encoding(server: ClickHouseHttp, client: Client) -> None:
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM analytics.missing")
    assert getattr(info.value, "code", None) == 60  # UNKNOWN_TABLE
    with pytest.raises(DatabaseError) as info:
        client.command("SELEC 1")
    assert getattr(info.value, "code", None) == 62  # SYNTAX_ERROR
    client.command("SET max_threads = 3")  # persists in the client's HTTP session
    assert client.command("SELECT getSetting('max_threads')") == 3
    other = clickhouse_connect.get_client(dsn=server.url, form_encode_query_params=True)
    try:
        assert other.command("SELECT getSetting('max_threads')") != 3
        got = other.query("SELECT {s:String}, {n:UInt8}", parameters={"s": "hé", "n": 7})
        assert got.result_rows == [("hé", 7)]
    finally:
        other.close()


def test_outage_stop_kill_pause_restart(tmp_path: Path) -> None:
    ch = ClickHouseHttp(tmp_path / "ch").start()
    try:
        client = clickhouse_connect.get_client(dsn=ch.url, send_receive_timeout=2)
        make_table(client, "analytics.durable")
        client.insert("analytics.durable", rows(0, 10, "a"), column_names=COLUMNS)

        ch.stop()
        with pytest.raises(OperationalError):
            client.query("SELECT count() FROM analytics.durable")
        with pytest.raises(OperationalError):
            client.insert("analytics.durable", rows(10, 1, "a"), column_names=COLUMNS)
        ch.start()
        assert client.command("SELECT count() FROM analytics.durable") == 10
        client.insert("analytics.durable", rows(10, 5, "a"), column_names=COLUMNS)

        ch.kill()  # SIGKILL: committed inserts survive
        with pytest.raises(OperationalError):
            client.command("SELECT 1")
        ch.start()
        assert client.command("SELECT count() FROM analytics.durable") == 15

        ch.pause()  # SIGSTOP: connections hang until the client times out
        began = time.monotonic()
        with pytest.raises(OperationalError):
            client.query("SELECT count() FROM analytics.durable")
        assert time.monotonic() - began < 10
        ch.resume()
        assert client.command("SELECT count() FROM analytics.durable") == 15
        client.close()
    finally:
        ch.stop()

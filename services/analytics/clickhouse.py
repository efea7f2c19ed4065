"""One way to reach ClickHouse: a server over HTTP, or chDB embedded in this process.

Both go through clickhouse-connect, so the writer, the migrations and the SQL
API have one code path and one DDL. chDB allows one engine per process: the
analytics service is the only process that opens it, which is also why SQL
reaches ClickHouse through this service's Query API and not around it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from analytics.settings import AnalyticsSettings

__all__ = ["ClickHouseError", "connect", "describe"]


def connect(settings: AnalyticsSettings, *, database: str | None = None) -> Client:
    """A client on the configured ClickHouse; raises ClickHouseError when it is unreachable."""
    if settings.clickhouse_url:
        return clickhouse_connect.get_client(
            dsn=settings.clickhouse_url,
            database=database or "default",
            autogenerate_session_id=False,  # a pool of clients queries concurrently
            connect_timeout=5,
            send_receive_timeout=max(30, int(settings.analytics_query_timeout_s) + 5),
        )
    path = settings.chdb_dir.resolve()
    path.mkdir(parents=True, exist_ok=True)
    # Inserts send their protobuf schema as text, and chDB keeps a copy of each in the
    # working directory's __cache__/ (whatever format_schema_path says): a few KB, once.
    return clickhouse_connect.get_client(dsn=f"chdb://{path}", database=database)


def describe(settings: AnalyticsSettings) -> str:
    """Where ClickHouse is, for logs: the host, never the credentials."""
    if not settings.clickhouse_url:
        return f"chdb://{settings.chdb_dir}"
    url = urlsplit(settings.clickhouse_url)
    return f"{url.scheme}://{url.hostname}:{url.port or ''}"

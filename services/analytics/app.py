"""Analytics service: events from JetStream into ClickHouse; read-only SQL over gRPC.

One writer at a time (llmops.lease): redelivery checks and rollup repair are
exact only with one. A second replica is a standby until the first stops or
its lease lapses, then takes over the durable consumer. On a ClickHouse
server the standby answers SQL meanwhile (ready); embedded chDB opens in one
process only, so there the standby waits for the lease before opening it
(alive, not ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from clickhouse_connect.driver.client import Client

from analytics.clickhouse import ClickHouseError, connect, describe
from analytics.grpc_api import AnalyticsServicer
from analytics.schema import apply_retention, load_migrations, migrate
from analytics.settings import AnalyticsSettings
from analytics.sql import SqlRunner
from analytics.writer import EventWriter
from llmops.apikeys import KeyDirectory
from llmops.bus.topology import ANALYTICS_CONSUMER
from llmops.lease import WriterLease
from llmops.logging import get_logger
from llmops.service import Loaded, ServiceApp
from llmops.v1 import analytics_pb2, analytics_pb2_grpc

log = get_logger(__name__)
STAGE = "analytics"
SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["Analytics"].full_name
PROBE_INTERVAL_S = 2.0


def open_database(settings: AnalyticsSettings) -> Client:
    """Create the database if needed, migrate it, set retention; a client on it."""
    with contextlib.closing(connect(settings)) as admin:
        admin.command(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse_database}")
    client = connect(settings, database=settings.clickhouse_database)
    migrate(client, load_migrations(settings.migrations_dir))
    apply_retention(client, settings.analytics_raw_ttl_days, settings.analytics_rollup_ttl_days)
    return client


def tenant_tables(client: Client) -> list[str]:
    """Tables (and views) with a `tenant` column: what a tenant-scoped key may read."""
    return [
        str(r[0])
        for r in client.query(
            "SELECT DISTINCT table FROM system.columns "
            "WHERE database = currentDatabase() AND name = 'tenant' ORDER BY table"
        ).result_rows
    ]


class Health:
    """Readiness follows ClickHouse: NOT_SERVING while inserts or probes fail."""

    def __init__(self, app: ServiceApp, where: str) -> None:
        self._app = app
        self._where = where
        self.ok = True

    async def report(self, ok: bool) -> None:
        if ok == self.ok:
            return
        self.ok = ok
        if ok:
            log.info("analytics.clickhouse_recovered", clickhouse=self._where)
        else:
            log.error("analytics.clickhouse_unreachable", clickhouse=self._where)
        if self._app.grpc is not None:
            await self._app.grpc.set_serving(ok)


def create_app(settings: AnalyticsSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.analytics_addr,
        metrics_port=settings.analytics_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    where = describe(settings)
    health = Health(app, where)
    client: Loaded[Client] = Loaded("the ClickHouse client")
    runner: Loaded[SqlRunner] = Loaded("the SQL runner")
    keys = KeyDirectory()
    lease = WriterLease(STAGE, on_lost=app.request_stop)
    writer = EventWriter(client, settings.analytics_outage_hold_s, health.report, lease.held)
    probe: list[asyncio.Task[None]] = []

    async def load() -> None:
        if settings.clickhouse_url is None:  # embedded: the lease holder alone opens it
            await lease.acquire(app.js)
        delay = 0.5
        while True:  # ClickHouse down at start: stay NOT_SERVING; events wait in JetStream
            try:
                writer_client = await asyncio.to_thread(open_database, settings)
                tables = await asyncio.to_thread(tenant_tables, writer_client)
                sql = await asyncio.to_thread(
                    SqlRunner,
                    functools.partial(connect, settings, database=settings.clickhouse_database),
                    settings.analytics_query_concurrency,
                    settings.clickhouse_database,
                    tables,
                )
                break
            except ClickHouseError as exc:
                log.warning("analytics.clickhouse_unavailable", clickhouse=where, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        client.set(writer_client)
        runner.set(sql)
        await keys.start(app.js)
        probe.append(asyncio.create_task(_probe(writer_client, health)))
        log.info("analytics.clickhouse_ready", clickhouse=where, tables=tables)

    async def close() -> None:
        for task in probe:
            task.cancel()
        await keys.stop()
        if (c := client.take()) is not None:
            c.close()
        if (r := runner.take()) is not None:
            r.close()
        await lease.release()  # after closing: an embedded successor can open the files

    async def writer_lease() -> None:
        if not lease.held():
            await lease.acquire(app.js)

    app.on_startup(load)
    app.on_shutdown(close)
    app.add_stage(
        ANALYTICS_CONSUMER,
        writer.handle,
        batch_size=settings.analytics_batch_size,
        linger_s=settings.analytics_flush_interval_s,
        starts_after=writer_lease,
    )
    app.add_grpc(
        lambda server: analytics_pb2_grpc.add_AnalyticsServicer_to_server(
            AnalyticsServicer(settings, keys, runner), server
        )
    )
    return app


async def _probe(client: Client, health: Health) -> None:
    """Notice an outage (and the recovery) even when no events arrive."""
    while True:
        await asyncio.sleep(PROBE_INTERVAL_S)
        try:
            await asyncio.to_thread(client.command, "SELECT 1")
            await health.report(True)
        except ClickHouseError:
            await health.report(False)

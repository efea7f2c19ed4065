"""The rollups the materialized views keep, and their repair when a view missed a batch.

An INSERT into a table with materialized views is not atomic: the event
table's part is committed first, then each view's. A crash in between (the
embedded engine dies with the process; a server can fail the view's insert)
leaves events stored but never rolled up, and the writer skips them when
they come again. So when a redelivered event turns out to be stored, each
rollup fed by its table is recomputed from that table for the (tenant,
bucket) rows those events fall in: delete them, then insert the view's own
SELECT (read from ClickHouse, so the rollup is defined once, in its
migration) limited to those rows. Exact only while no other writer inserts
into the same rows meanwhile: the service runs one writer (docs/analytics.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from analytics.tables import EVENTS_WHERE, INTERACTIONS, USAGE
from llmops.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Rollup:
    table: str
    view: str
    source: str
    bucket: str  # the rollup's time column (its TTL counts from it)
    bucket_of: str  # the function the view applies to the source's `time` to make it


ROLLUPS = (
    Rollup("usage_daily", "usage_daily_mv", USAGE.table, "day", "toDate"),
    Rollup("latency_hourly", "latency_hourly_mv", INTERACTIONS.table, "hour", "toStartOfHour"),
)


class RollupRepair:
    """Recomputes rollup rows from their event table; reads the views on first use."""

    def __init__(self) -> None:
        self._inserts: dict[str, str | None] | None = None

    def repair(self, client: Client, source: str, events: dict[str, Any]) -> None:
        """Make every rollup of `source` exact for the buckets of `events` (EVENTS_WHERE's)."""
        if self._inserts is None:
            self._inserts = _inserts(client)
        for rollup in ROLLUPS:
            if rollup.source != source:
                continue
            insert = self._inserts[rollup.table]
            if insert is None:
                log.warning(
                    "analytics.rollup_not_repaired",
                    rollup=rollup.table,
                    tenants=events["tenants"],
                    from_ms=events["lo"],
                    to_ms=events["hi"],
                )
                continue
            where = (
                f"(tenant, {rollup.bucket}) IN (SELECT tenant, {rollup.bucket_of}(time) "
                f"FROM {source} WHERE {EVENTS_WHERE})"
            )
            client.command(
                f"DELETE FROM {rollup.table} WHERE {where}",
                parameters=events,
                settings={"lightweight_deletes_sync": 2},
            )
            client.command(f"{insert} WHERE {where}", parameters=events)
            log.info("analytics.rollup_repaired", rollup=rollup.table, events=len(events["ids"]))


def _inserts(client: Client) -> dict[str, str | None]:
    """Per rollup, `INSERT INTO rollup SELECT ... FROM (its view's SELECT)`, or None.

    None on a cluster: there the rollup is a Distributed table over per-shard ones,
    which DELETE cannot reach (deploy/clickhouse/cluster.md: repairing by hand).
    """
    tables = {
        str(name): (str(engine), str(select))
        for name, engine, select in client.query(
            "SELECT name, engine, as_select FROM system.tables "
            "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
            parameters={"names": [n for r in ROLLUPS for n in (r.table, r.view)]},
        ).result_rows
    }
    columns: dict[str, list[str]] = {}
    for table, column in client.query(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() "
        "AND table IN {tables:Array(String)} ORDER BY position",
        parameters={"tables": [r.table for r in ROLLUPS]},
    ).result_rows:
        columns.setdefault(str(table), []).append(str(column))
    inserts: dict[str, str | None] = {}
    for r in ROLLUPS:
        names = ", ".join(columns.get(r.table, []))
        engine = tables.get(r.table, ("", ""))[0]
        view = tables.get(r.view)
        inserts[r.table] = (
            f"INSERT INTO {r.table} ({names}) SELECT {names} FROM ({view[1]})"
            if view is not None and "MergeTree" in engine
            else None
        )
    return inserts

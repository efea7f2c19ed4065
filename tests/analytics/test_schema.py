"""Migrations and retention against embedded chDB (the same DDL a server gets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from google.protobuf.descriptor import Descriptor

from analytics.protoschema import descriptor
from analytics.rollups import ROLLUPS
from analytics.schema import (
    MigrationError,
    apply_retention,
    load_migrations,
    migrate,
)
from analytics.settings import AnalyticsSettings
from analytics.tables import EVENT_TABLES


def _engine(ch: Client, table: str) -> str:
    return str(
        ch.query(
            "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
            "AND name = {t:String}",
            parameters={"t": table},
        ).result_rows[0][0]
    )


def test_migrations_are_applied_once_and_recorded(ch: Client, settings: AnalyticsSettings) -> None:
    migrations = load_migrations(settings.migrations_dir)
    recorded = ch.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(m.version, m.name) for m in migrations] == [tuple(r) for r in recorded.result_rows]
    assert migrate(ch, migrations) == []  # a second start applies nothing
    tables = {r[0] for r in ch.query("SHOW TABLES").result_rows}
    assert {t.table for t in EVENT_TABLES} | {"usage_daily", "latency_hourly"} <= tables
    engine = _engine(ch, "interactions")
    assert "ReplacingMergeTree" in engine
    assert "PARTITION BY toYYYYMM(time)" in engine
    assert "ORDER BY (tenant, time, event_id)" in engine


def test_an_edited_applied_migration_stops_the_start(
    ch: Client, settings: AnalyticsSettings, tmp_path: Path
) -> None:
    for m in load_migrations(settings.migrations_dir):
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(ch, load_migrations(tmp_path))


def test_a_new_migration_is_applied_in_order(
    ch: Client, settings: AnalyticsSettings, tmp_path: Path
) -> None:
    for m in load_migrations(settings.migrations_dir):
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)
    (tmp_path / "9000_extra.sql").write_text(
        "-- a later change\nALTER TABLE feedback ADD COLUMN IF NOT EXISTS rating UInt8;\n"
    )
    applied = migrate(ch, load_migrations(tmp_path))
    assert [m.version for m in applied] == [9000]
    columns = {r[0] for r in ch.query("DESCRIBE TABLE feedback").result_rows}
    assert "rating" in columns


def test_badly_named_migrations_are_refused(tmp_path: Path) -> None:
    (tmp_path / "create_things.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_retention_follows_the_settings(ch: Client) -> None:
    apply_retention(ch, raw_days=30, rollup_days=400)
    assert "TTL toDateTime(time) + toIntervalDay(30)" in _engine(ch, "interactions")
    assert "TTL day + toIntervalDay(400)" in _engine(ch, "usage_daily")
    apply_retention(ch, raw_days=0, rollup_days=400)
    assert " TTL " not in _engine(ch, "interactions")
    assert "TTL hour + toIntervalDay(400)" in _engine(ch, "latency_hourly")


def test_retention_leaves_tables_that_are_not_merge_trees_alone(ch: Client) -> None:
    """On a cluster the names are Distributed tables; their TTLs live on the local tables."""
    ch.command("RENAME TABLE feedback TO feedback_local")
    ch.command(
        "CREATE TABLE feedback AS feedback_local "
        "ENGINE = Merge(currentDatabase(), '^feedback_local$')"
    )
    apply_retention(ch, raw_days=30, rollup_days=0)  # no ALTER on the Merge table: no error
    assert "TTL" not in _engine(ch, "feedback")
    assert "TTL toDateTime(time) + toIntervalDay(30)" in _engine(ch, "interactions")


def test_each_rollup_spec_matches_its_view(ch: Client) -> None:
    """The repair recomputes a rollup's buckets with `bucket_of`: it must be the view's own.
    Every other view is an event table's input view (the writer's checks cover those)."""
    selects = dict(
        ch.query(
            "SELECT name, as_select FROM system.tables WHERE database = currentDatabase() "
            "AND engine = 'MaterializedView'"
        ).result_rows
    )
    inputs = {f"{t.input}_mv": t for t in EVENT_TABLES}
    assert set(selects) == {r.view for r in ROLLUPS} | set(inputs)
    for view, t in inputs.items():
        assert selects[view].endswith(f" FROM {ch.database}.{t.input}"), view
    for r in ROLLUPS:
        assert f"SELECT {r.bucket_of}(time) AS {r.bucket}, tenant," in selects[r.view]
        assert f" FROM {ch.database}.{r.source} " in selects[r.view]


def _is_field(message: Descriptor, column: str) -> bool:
    """Whether ClickHouse's Protobuf format reads `column` from a field of `message`
    (a nested message's field as `outer_inner`)."""
    for f in message.fields:
        if column == f.name:
            return True
        inner = column.removeprefix(f"{f.name}_")
        if f.message_type is not None and inner != column and _is_field(f.message_type, inner):
            return True
    return False


def test_each_input_column_is_a_field_of_its_message(ch: Client) -> None:
    """ClickHouse fills a column that names no field with its default, silently: a
    misspelt input column would store empty values, so each must name a field."""
    for t in EVENT_TABLES:
        columns = [str(r[0]) for r in ch.query(f"DESCRIBE TABLE {t.input}").result_rows]
        assert {"event_id", "tenant", "time_seconds", "time_nanos"} <= set(columns), t.input
        strays = [c for c in columns if not _is_field(descriptor(t.message), c)]
        assert not strays, f"{t.input}: {strays} are no fields of {t.message.__name__}"

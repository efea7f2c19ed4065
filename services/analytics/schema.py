"""Ordered SQL migrations, applied at start and recorded in `schema_migrations`.

Files are `NNNN_name.sql` under `deploy/clickhouse/migrations/`; each runs
once, in order. An applied file that changed since is refused at start (a
schema change is a new file). Statements use IF NOT EXISTS, so two replicas
starting together cannot break each other. Retention (TTL) is a setting, not
a migration: `apply_retention` moves each table to the configured TTL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from analytics.rollups import ROLLUPS
from analytics.tables import EVENT_TABLES
from llmops.logging import get_logger

log = get_logger(__name__)
MIGRATIONS_TABLE = "schema_migrations"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations folder or the database's record of it is inconsistent: do not start."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements: `--` comment lines dropped, split on `;` at line ends."""
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def load_migrations(folder: Path) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migrations share a number")
    if not migrations:
        raise MigrationError(f"{folder}: no migrations found")
    return migrations


def migrate(client: Client, migrations: list[Migration]) -> list[Migration]:
    """Apply the migrations not applied yet, in order; return them."""
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt32, name String, "
        "checksum String, applied_at DateTime('UTC') DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    applied = {
        int(version): str(checksum)
        for version, checksum in client.query(
            f"SELECT version, checksum FROM {MIGRATIONS_TABLE} FINAL"
        ).result_rows
    }
    done = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied: add a new migration instead of editing an applied one"
                )
            continue
        for statement in migration.statements():
            client.command(statement)
        client.insert(
            MIGRATIONS_TABLE,
            [(migration.version, migration.name, migration.checksum)],
            column_names=["version", "name", "checksum"],
        )
        log.info("clickhouse.migrated", version=migration.version, name=migration.name)
        done.append(migration)
    return done


def apply_retention(client: Client, raw_days: int, rollup_days: int) -> None:
    """Set each table's TTL to the configured days (0: keep forever), only where it differs."""
    engines = {
        str(name): str(engine)
        for name, engine in client.query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    }
    wanted = {t.table: ("toDateTime(time)", raw_days) for t in EVENT_TABLES}
    wanted.update({r.table: (r.bucket, rollup_days) for r in ROLLUPS})
    for table, (column, days) in wanted.items():
        engine = engines.get(table, "")
        if "MergeTree" not in engine:  # a cluster's Distributed table: TTLs live on local tables
            continue
        ttl = f"TTL {column} + toIntervalDay({days})"
        if days and ttl not in engine:
            client.command(f"ALTER TABLE {table} MODIFY TTL {column} + INTERVAL {days} DAY")
            log.info("clickhouse.ttl_set", table=table, days=days)
        elif not days and " TTL " in engine:
            client.command(f"ALTER TABLE {table} REMOVE TTL")
            log.info("clickhouse.ttl_removed", table=table)

"""Numbered SQL migrations: ``schema/NNNN_name.sql``, applied in order, each in its own
transaction together with its record, and checksummed so that an applied file cannot change
silently. A session-level advisory lock keeps two migrators from racing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from engine.errors import MigrationError, MigrationMissing, MigrationTampered

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schema"
_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5041524C4F  # "PARLO"

_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationState:
    version: int
    name: str
    checksum: str | None
    applied_at: datetime | None

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


def discover(schema_dir: Path = SCHEMA_DIR) -> list[Migration]:
    if not schema_dir.is_dir():
        raise MigrationMissing(f"schema directory {schema_dir} does not exist")
    found: list[Migration] = []
    for path in sorted(schema_dir.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILENAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_lowercase_name.sql")
        found.append(Migration(int(match["version"]), match["name"], path, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        dupes = sorted({v for v in versions if versions.count(v) > 1})
        raise MigrationError(f"two migration files share version {dupes[0]:04d} in {schema_dir}")
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationMissing(f"migration {expected:04d} is missing from {schema_dir} (found {migration.filename} next)")
    return found


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
    return {r["version"]: r for r in rows}


def _check_history(migrations: list[Migration], applied: dict[int, asyncpg.Record]) -> None:
    on_disk = {m.version: m for m in migrations}
    for version, row in applied.items():
        migration = on_disk.get(version)
        if migration is None:
            raise MigrationMissing(
                f"migration {version:04d}_{row['name']}.sql is recorded as applied but its file is missing; restore it"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationTampered(
                f"{migration.filename} was changed after it was applied (checksum {row['checksum'][:12]} → "
                f"{migration.checksum[:12]}); restore the original and put the change in a new migration"
            )


async def status(conn: asyncpg.Connection, schema_dir: Path = SCHEMA_DIR) -> list[MigrationState]:
    migrations = discover(schema_dir)
    applied = await _applied(conn)
    _check_history(migrations, applied)
    return [
        MigrationState(m.version, m.name, m.checksum, applied[m.version]["applied_at"] if m.version in applied else None)
        for m in migrations
    ]


async def migrate(
    conn: asyncpg.Connection,
    schema_dir: Path = SCHEMA_DIR,
    on_progress: Callable[[Migration, int, int], None] | None = None,
) -> list[Migration]:
    """Apply every pending migration. Returns the ones applied now; an error leaves none half-applied."""
    migrations = discover(schema_dir)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_HISTORY_DDL)
        applied = await _applied(conn)
        _check_history(migrations, applied)
        pending = [m for m in migrations if m.version not in applied]
        done: list[Migration] = []
        for index, migration in enumerate(pending, start=1):
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version, migration.name, migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.filename} failed and was rolled back: {exc}") from None
            done.append(migration)
            if on_progress is not None:
                on_progress(migration, index, len(pending))
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)

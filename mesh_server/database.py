"""Async database engines and alembic migrations, for any service's models.

PostgreSQL via asyncpg in production; SQLite via aiosqlite as the embedded default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, event, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, CursorResult, Result, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mesh_server.tasks import run_to_end

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
T = TypeVar("T")


class NotMigrated(Exception):
    """The database's schema is not at the migrations' head."""


def async_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    url = async_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS / service))
    config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return config


def upgrade(service: str, url: str, revision: str = "head") -> None:
    """Run the service's migrations up to `revision` (blocking; call from a thread in async code)."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(service, url), revision)


def downgrade(service: str, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(service, url), revision)


async def ensure_migrated(engine: AsyncEngine, service: str, url: str) -> None:
    """Raise NotMigrated, saying what to run, unless the schema is at head."""
    head = ScriptDirectory.from_config(alembic_config(service, url)).get_current_head()

    def current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        revision = await connection.run_sync(current)
    if revision != head:
        raise NotMigrated(
            f"the {service} database is at revision {revision or 'none (empty)'}, not at {head}; "
            f"run `{service}-svc migrate --database-url <url>` first, or serve with --migrate"
        )


async def open_migrated(service: str, url: str, migrate: bool) -> AsyncEngine:
    """An engine on a database at the migrations' head (migrating first when asked); NotMigrated
    otherwise."""
    if migrate:
        await asyncio.to_thread(upgrade, service, url)
    engine = create_engine(url)
    try:
        await ensure_migrated(engine, service, url)
    except BaseException:
        await engine.dispose()
        raise
    return engine


def run_migrations(metadata: MetaData) -> None:
    """The body of every service's alembic env.py: run the migrations on an async engine."""
    from alembic import context

    def run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        url = context.config.get_main_option("sqlalchemy.url")
        assert url is not None, "alembic's sqlalchemy.url is set by upgrade()"
        engine = create_engine(url)
        async with engine.connect() as connection:
            await connection.run_sync(run)
            await connection.commit()
        await engine.dispose()

    asyncio.run(main())


def changed_rows(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (its result is a cursor result; the ORM's
    `session.execute` is typed as returning any result)."""
    return cast("CursorResult[Any]", result).rowcount


async def insert_new(session: AsyncSession, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` into `table` (an ORM class), skipping those whose key is there already."""
    dialect_insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    await session.execute(dialect_insert(table).on_conflict_do_nothing(), rows)


async def write(sessions: async_sessionmaker[AsyncSession], work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` in one transaction that runs to its end even if the caller is cancelled meanwhile
    (the cancellation is raised after it): a cancelled RPC or task never leaves a transaction open
    (on SQLite, one left open holds the only write lock) nor a write half done."""

    async def transaction() -> T:
        async with sessions.begin() as session:
            return await work(session)

    return await run_to_end(transaction())


class HealthProbeRow(Protocol):
    """A service's one-row table that health checks write to (`probe_id`, `probed_at`)."""

    probe_id: Any
    probed_at: Any

    def __init__(self, *, probe_id: int, probed_at: datetime) -> None: ...


async def probe_write(sessions: async_sessionmaker[AsyncSession], table: type[HealthProbeRow]) -> str | None:
    """None when the database takes a write (a row updated and committed), else why not: a
    database that answers reads but refuses writes (read-only, disk full) is not healthy."""

    async def touch(session: AsyncSession) -> None:
        now = datetime.now(UTC)
        updated = await session.execute(update(table).where(table.probe_id == 1).values(probed_at=now))
        if getattr(updated, "rowcount", 0) == 0:  # an UPDATE's result is a CursorResult
            session.add(table(probe_id=1, probed_at=now))

    try:
        await write(sessions, touch)
    except IntegrityError:
        return None  # another replica inserted the row first: the write went through
    except (SQLAlchemyError, OSError) as error:
        return f"database cannot be written: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return None

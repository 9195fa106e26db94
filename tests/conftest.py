"""Fixtures shared by the suite: databases (SQLite and a throwaway PostgreSQL) and running services."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support import postgres

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[postgres.Cluster]:
    try:
        cluster = postgres.start_cluster()
    except RuntimeError as error:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {error}")
        pytest.skip(f"SKIPPED LOUDLY: PostgreSQL tests need a server: {error}")
    yield cluster
    postgres.remove(cluster)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_cluster").new_database("t")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def pg_url(pg_cluster: postgres.Cluster) -> str:
    return pg_cluster.new_database("t")


async def start_content(database_url: str, storage_dir: Path, **overrides):
    """Start a real Content Service on 127.0.0.1 with an ephemeral port."""
    from content_svc.app import start
    from content_svc.settings import ContentSettings

    overrides.setdefault("listen", "127.0.0.1:0")
    settings = ContentSettings(database_url=database_url, storage_dir=storage_dir, migrate=True, **overrides)
    return await start(settings)


@pytest.fixture
def blob_store() -> str:
    """Where `content_app` keeps content bytes; the content tests run both (they override this)."""
    return "filesystem"


@pytest_asyncio.fixture
async def content_app(database_url: str, tmp_path: Path, blob_store: str) -> AsyncIterator:
    """A real Content Service on each database backend."""
    app = await start_content(database_url, tmp_path / "blobs", blob_store=blob_store)
    yield app
    await app.stop()


@pytest_asyncio.fixture
async def sqlite_content_app(sqlite_url: str, tmp_path: Path) -> AsyncIterator:
    """A real Content Service on the embedded default (SQLite, local files)."""
    app = await start_content(sqlite_url, tmp_path / "blobs")
    yield app
    await app.stop()


async def start_cj(database_url: str, content_address: str, **overrides):
    """Start a real CJ Service on 127.0.0.1 with an ephemeral port."""
    from cj_svc.app import start
    from cj_svc.settings import CJSettings

    settings = CJSettings(
        listen="127.0.0.1:0",
        database_url=database_url,
        content_address=content_address,
        migrate=True,
        retry_base_seconds=0.01,
        **overrides,
    )
    return await start(settings)


@pytest.fixture
def cj_database_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second database on the same backend as `database_url`, for the CJ Service."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'cj.db'}"
    return request.getfixturevalue("pg_cluster").new_database("cj")


@pytest_asyncio.fixture
async def mesh(content_app, cj_database_url: str) -> AsyncIterator:
    """Content and CJ services on each backend; the simulated judge by default."""
    from tests.support.mesh import Mesh

    running = Mesh(content_app, cj_database_url)
    await running.start_cj(judge_provider="simulated")
    yield running
    await running.stop()

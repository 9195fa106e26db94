"""Migrated schema == models, on SQLite and PostgreSQL (catches enum-vs-text drift), both ways."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from mesh_common.error_codes import ErrorCode
from mesh_server import database

SERVICES = {
    "content": "content_svc.models",
    "cj": "cj_svc.models",
}


async def schema_differences(url: str, service: str) -> list:
    import importlib

    metadata = importlib.import_module(SERVICES[service]).Base.metadata
    engine = database.create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_migrated_schema_equals_models_and_migrations_reverse(database_url: str, service: str) -> None:
    await asyncio.to_thread(database.upgrade, service, database_url)
    assert await schema_differences(database_url, service) == []
    await asyncio.to_thread(database.downgrade, service, database_url)
    differences = await schema_differences(database_url, service)
    assert differences, "downgrade to base left the tables in place"
    await asyncio.to_thread(database.upgrade, service, database_url)
    assert await schema_differences(database_url, service) == []


@pytest.mark.postgres
async def test_every_error_code_round_trips_through_comparisons_error_code(pg_url: str) -> None:
    from huleedu.common.v1 import common_pb2

    await asyncio.to_thread(database.upgrade, "cj", pg_url)
    engine = database.create_engine(pg_url)
    names = [n.removeprefix("ERROR_CODE_") for n in common_pb2.ErrorCode.keys() if n != "ERROR_CODE_UNSPECIFIED"]
    try:
        async with engine.begin() as connection:
            column = await connection.execute(
                text(
                    "SELECT data_type, character_maximum_length FROM information_schema.columns "
                    "WHERE table_name = 'comparisons' AND column_name = 'error_code'"
                )
            )
            assert tuple(column.one()) == ("character varying", 100)
            await connection.execute(
                text(
                    "INSERT INTO batches (batch_id, request_id, request_fingerprint, batch_label, state, state_reason,"
                    " language, course_code, user_id, org_id, judge_provider, judge_model, judge_system_prompt,"
                    " prompt_text, instructions, comparison_budget, wave, comparisons_done, comparisons_failed,"
                    " correlation_id, created_at, updated_at) VALUES ('b' || repeat('0', 31), 'r', 'f', 'l', 'RUNNING',"
                    " '', '', '', '', '', 'simulated', '', '', '', '', 10, 0, 0, 0, '', now(), now())"
                )
            )
            for index, name in enumerate(names):
                await connection.execute(
                    text(
                        "INSERT INTO comparisons (comparison_id, batch_id, wave, essay_a_id, essay_b_id, status,"
                        " error_code, attempts, request_correlation_id, provider, model, created_at)"
                        " VALUES (:id, 'b' || repeat('0', 31), 1, 'a', 'b', 'FAILED', :code, 1, '', '', '', now())"
                    ),
                    {"id": f"{index:032x}", "code": name},
                )
            stored = (
                await connection.execute(text("SELECT error_code FROM comparisons ORDER BY comparison_id"))
            ).scalars()
            assert list(stored) == names
    finally:
        await engine.dispose()
    assert len(names) == len(ErrorCode) == 16


async def test_scores_stored_before_the_service_served_intervals_get_score_plus_minus_1_96_se(
    database_url: str,
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.ext.asyncio import async_sessionmaker

    from cj_svc.models import Batch, BatchEssay

    await asyncio.to_thread(database.upgrade, "cj", database_url)
    engine = database.create_engine(database_url)
    now = datetime.now(UTC)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            session.add(Batch(batch_id="b" * 32, request_id="r", request_fingerprint="f" * 64, batch_label="old",
                              state="COMPLETED", judge_provider="MOCK", comparison_budget=10, created_at=now,
                              updated_at=now))  # fmt: skip
            await session.flush()
            session.add(BatchEssay(batch_id="b" * 32, position=0, essay_id="scored", text_storage_id="t" * 32,
                                   score=1.0, standard_error=0.5))  # fmt: skip
            session.add(BatchEssay(batch_id="b" * 32, position=1, essay_id="unscored", text_storage_id="u" * 32))
    finally:
        await engine.dispose()
    # back to before intervals were stored, then forwards again, as an existing database is migrated
    await asyncio.to_thread(database.downgrade, "cj", database_url, "0010")
    await asyncio.to_thread(database.upgrade, "cj", database_url)
    engine = database.create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT essay_id, score_low_95, score_high_95 FROM batch_essays ORDER BY essay_id")
            )
            stored = {essay_id: (low, high) for essay_id, low, high in rows}
    finally:
        await engine.dispose()
    assert stored["scored"] == (pytest.approx(1.0 - 1.96 * 0.5), pytest.approx(1.0 + 1.96 * 0.5))
    assert stored["unscored"] == (None, None)

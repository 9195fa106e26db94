"""Alembic environment of the CJ Service database (async engines, both backends)."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from cj_svc.models import Base
from mesh_server.database import create_engine

target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(run)
        await connection.commit()
    await engine.dispose()


asyncio.run(main())

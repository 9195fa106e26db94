"""Alembic environment of the CJ Service database (async engines, both backends)."""

from cj_svc.models import Base
from mesh_server.database import run_migrations

run_migrations(Base.metadata)

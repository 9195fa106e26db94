"""Alembic environment of the Content Service database (async engines, both backends)."""

from content_svc.models import Base
from mesh_server.database import run_migrations

run_migrations(Base.metadata)

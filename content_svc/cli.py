"""`content-svc serve` and `content-svc migrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from content_svc.settings import ContentSettings
from mesh_server import database, logs
from mesh_server.cli import run_service

app = typer.Typer(help="The CJ mesh Content Service: stores texts, hands out storage ids.", no_args_is_help=True)
_defaults = ContentSettings()

DatabaseUrl = Annotated[
    str, typer.Option(envvar="CONTENT_SVC_DATABASE_URL", help="sqlite:///path or postgresql://user@host/db")
]


@app.command()
def serve(
    listen: Annotated[
        str, typer.Option(envvar="CONTENT_SVC_LISTEN", help="host:port (port 0 picks one)")
    ] = _defaults.listen,
    database_url: DatabaseUrl = _defaults.database_url,
    storage_dir: Annotated[Path, typer.Option(envvar="CONTENT_SVC_STORAGE_DIR")] = _defaults.storage_dir,
    max_object_bytes: Annotated[int, typer.Option(envvar="CONTENT_SVC_MAX_OBJECT_BYTES")] = _defaults.max_object_bytes,
    metrics_listen: Annotated[
        str, typer.Option(envvar="CONTENT_SVC_METRICS_LISTEN", help="host:port for /metrics; empty: off")
    ] = _defaults.metrics_listen,
    migrate: Annotated[
        bool, typer.Option("--migrate", envvar="CONTENT_SVC_MIGRATE", help="migrate the database first")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", envvar="CONTENT_SVC_LOG_JSON")] = False,
    log_level: Annotated[str, typer.Option(envvar="CONTENT_SVC_LOG_LEVEL")] = _defaults.log_level,
    ready_file: Annotated[Path | None, typer.Option(help="write the bound addresses here as JSON once serving")] = None,
) -> None:
    """Serve huleedu.content.v1.ContentService until SIGTERM or SIGINT."""
    from content_svc.app import start

    logs.configure(log_level, log_json)
    settings = ContentSettings(
        listen=listen,
        database_url=database_url,
        storage_dir=storage_dir,
        max_object_bytes=max_object_bytes,
        metrics_listen=metrics_listen,
        migrate=migrate,
        log_json=log_json,
        log_level=log_level,
    )
    run_service(lambda: start(settings), ready_file, "content-svc")


@app.command()
def migrate(database_url: DatabaseUrl = _defaults.database_url) -> None:
    """Bring the database schema to the newest revision."""
    database.upgrade("content", database_url)
    typer.echo(f"content database migrated: {database_url}")

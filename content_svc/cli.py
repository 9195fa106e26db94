"""`content-svc serve` and `content-svc migrate`."""

from __future__ import annotations

from dataclasses import fields
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


def _opt(name: str, help_text: str = "") -> typer.models.OptionInfo:
    return typer.Option(envvar=f"CONTENT_SVC_{name.upper()}", help=help_text)


@app.command()
def serve(
    listen: Annotated[str, _opt("listen", "host:port (port 0 picks one)")] = _defaults.listen,
    database_url: DatabaseUrl = _defaults.database_url,
    storage_dir: Annotated[Path, _opt("storage_dir")] = _defaults.storage_dir,
    max_object_bytes: Annotated[int, _opt("max_object_bytes")] = _defaults.max_object_bytes,
    metrics_listen: Annotated[
        str, _opt("metrics_listen", "host:port for /metrics; empty: off")
    ] = _defaults.metrics_listen,
    migrate: Annotated[
        bool, typer.Option("--migrate", envvar="CONTENT_SVC_MIGRATE", help="migrate the database first")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", envvar="CONTENT_SVC_LOG_JSON")] = False,
    log_level: Annotated[str, _opt("log_level")] = _defaults.log_level,
    tokens: Annotated[str, _opt("tokens", "'<sha256>:role[:user],...' (cj-svc hash-token); empty: open")] = "",
    tls_cert: Annotated[str, _opt("tls_cert", "PEM certificate: serve TLS")] = "",
    tls_key: Annotated[str, _opt("tls_key", "PEM key of --tls-cert")] = "",
    tls_client_ca: Annotated[str, _opt("tls_client_ca", "PEM CA: require client certificates it signed")] = "",
    ready_file: Annotated[Path | None, typer.Option(help="write the bound addresses here as JSON once serving")] = None,
) -> None:
    """Serve huleedu.content.v1.ContentService until SIGTERM or SIGINT."""
    from content_svc.app import start

    logs.configure(log_level, log_json)
    given = dict(locals())
    settings = ContentSettings(**{f.name: given[f.name] for f in fields(ContentSettings) if f.name in given})
    run_service(lambda: start(settings), ready_file, "content-svc")


@app.command()
def migrate(database_url: DatabaseUrl = _defaults.database_url) -> None:
    """Bring the database schema to the newest revision."""
    database.upgrade("content", database_url)
    typer.echo(f"content database migrated: {database_url}")

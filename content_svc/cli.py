"""`content-svc serve` and `content-svc migrate`."""

from __future__ import annotations

import enum
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


class BlobStoreKind(enum.StrEnum):
    filesystem = "filesystem"
    database = "database"


DEFAULT_BLOB_STORE = BlobStoreKind(_defaults.blob_store)
BlobStoreOption = Annotated[
    BlobStoreKind,
    _opt(
        "blob_store",
        "where content bytes live: filesystem (files under --storage-dir) or database (rows of --database-url; "
        "for several replicas on one PostgreSQL)",
    ),
]


@app.command()
def serve(
    listen: Annotated[str, _opt("listen", "host:port (port 0 picks one)")] = _defaults.listen,
    database_url: DatabaseUrl = _defaults.database_url,
    blob_store: BlobStoreOption = DEFAULT_BLOB_STORE,
    storage_dir: Annotated[
        Path, _opt("storage_dir", "blob files, with --blob-store filesystem")
    ] = _defaults.storage_dir,
    max_object_bytes: Annotated[int, _opt("max_object_bytes")] = _defaults.max_object_bytes,
    max_text_bytes: Annotated[
        int, _opt("max_text_bytes", "largest text (every kind but SOURCE_DOCUMENT)")
    ] = _defaults.max_text_bytes,
    max_uploads: Annotated[int, _opt("max_uploads", "Upload streams open at once")] = _defaults.max_uploads,
    max_uploads_per_connection: Annotated[
        int, _opt("max_uploads_per_connection", "Upload streams open at once on one connection")
    ] = _defaults.max_uploads_per_connection,
    upload_idle_seconds: Annotated[
        float, _opt("upload_idle_seconds", "refuse an upload that sends nothing for this long")
    ] = _defaults.upload_idle_seconds,
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
    given = {**locals(), "blob_store": blob_store.value}
    settings = ContentSettings(**{f.name: given[f.name] for f in fields(ContentSettings) if f.name in given})
    run_service(lambda: start(settings), ready_file, "content-svc")


@app.command()
def migrate(database_url: DatabaseUrl = _defaults.database_url) -> None:
    """Bring the database schema to the newest revision."""
    database.upgrade("content", database_url)
    typer.echo(f"content database migrated: {database_url}")


@app.command()
def check(
    database_url: DatabaseUrl = _defaults.database_url,
    blob_store: BlobStoreOption = DEFAULT_BLOB_STORE,
    storage_dir: Annotated[Path, _opt("storage_dir")] = _defaults.storage_dir,
    repair: Annotated[
        bool, typer.Option("--repair", help="remove blobs no row points at; rows' states are always updated")
    ] = False,
    verify: Annotated[bool, typer.Option(help="hash every blob (--no-verify: check sizes only)")] = True,
    orphan_grace_seconds: Annotated[
        float, typer.Option(help="leave blobs without a row younger than this (an upload may be committing)")
    ] = 600.0,
) -> None:
    """Check every stored object against its blob, and every blob against the database.

    Exits 0 when everything is intact, 1 when damaged or missing content (or, without --repair,
    blobs without a row) remain: upload those files again to repair them."""
    import asyncio

    from content_svc.app import blob_store_of
    from content_svc.store import ContentStore

    async def main() -> bool:
        engine = await database.open_migrated("content", database_url, migrate=False)
        try:
            blobs = blob_store_of(blob_store.value, storage_dir, engine)
            report = await ContentStore(engine, blobs).check(verify, repair, orphan_grace_seconds)
        finally:
            await engine.dispose()
        for problem in report.damaged:
            typer.echo(f"{problem.state.lower()}: {problem.storage_id}: {problem.reason}")
        for storage_id in report.orphans:
            typer.echo(f"{'removed' if repair else 'no row'}: blob {storage_id} has no row")
        for storage_id in report.recent_orphans:
            typer.echo(f"in flight: blob {storage_id} has no row yet (younger than {orphan_grace_seconds:g} s)")
        for storage_id in report.restored:
            typer.echo(f"intact again: {storage_id}")
        typer.echo(
            f"checked {report.rows} stored objects ({'hashed' if verify else 'sizes only'}) and {report.blobs} blob "
            f"files: {len(report.damaged)} damaged or missing, {len(report.orphans)} blobs without a row"
            f"{' (removed)' if repair and report.orphans else ''}"
        )
        if report.damaged:
            typer.echo("repair: upload the same files again (cj-runner run does); they keep their storage ids")
        return not report.damaged and (repair or not report.orphans)

    raise typer.Exit(0 if asyncio.run(main()) else 1)

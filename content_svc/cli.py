"""`content-svc serve` and `content-svc migrate`."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from content_svc.settings import BlobStoreKind, ContentSettings
from mesh_server import database
from mesh_server.cli import serve_command, started_by

app = typer.Typer(help="The CJ mesh Content Service: stores texts, hands out storage ids.", no_args_is_help=True)
_defaults = ContentSettings()

DatabaseUrl = Annotated[
    str, typer.Option(envvar="CONTENT_SVC_DATABASE_URL", help="sqlite:///path or postgresql://user@host/db")
]
BlobStoreOption = Annotated[
    BlobStoreKind,
    typer.Option(
        envvar="CONTENT_SVC_BLOB_STORE",
        help=next(f for f in fields(ContentSettings) if f.name == "blob_store").metadata["help"],
    ),
]


serve_command(
    app, ContentSettings, "CONTENT_SVC_", "content-svc", started_by("content_svc.app"),
    "Serve huleedu.content.v1.ContentService until SIGTERM or SIGINT.",
)  # fmt: skip


@app.command()
def migrate(database_url: DatabaseUrl = _defaults.database_url) -> None:
    """Bring the database schema to the newest revision."""
    database.upgrade("content", database_url)
    typer.echo(f"content database migrated: {database_url}")


@app.command()
def check(
    database_url: DatabaseUrl = _defaults.database_url,
    blob_store: BlobStoreOption = _defaults.blob_store,
    storage_dir: Annotated[Path, typer.Option(envvar="CONTENT_SVC_STORAGE_DIR")] = _defaults.storage_dir,
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

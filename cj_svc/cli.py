"""`cj-svc serve`, `cj-svc migrate`, `cj-svc hash-token`."""

from __future__ import annotations

from typing import Annotated

import typer

from cj_svc.settings import CJSettings
from mesh_server import database
from mesh_server.auth import hash_token
from mesh_server.cli import serve_command, started_by

app = typer.Typer(
    help="The CJ mesh CJ Service: assignments, anchors, batches, comparisons, results.", no_args_is_help=True
)
_d = CJSettings()

DatabaseUrl = Annotated[
    str, typer.Option(envvar="CJ_SVC_DATABASE_URL", help="sqlite:///path or postgresql://user@host/db")
]


serve_command(
    app, CJSettings, "CJ_SVC_", "cj-svc", started_by("cj_svc.app"),
    "Serve huleedu.cj.v1.AdminService and AssessmentService until SIGTERM or SIGINT.",
)  # fmt: skip


@app.command()
def migrate(database_url: DatabaseUrl = _d.database_url) -> None:
    """Bring the database schema to the newest revision."""
    database.upgrade("cj", database_url)
    typer.echo(f"cj database migrated: {database_url}")


@app.command("hash-token")
def hash_token_command(token: str) -> None:
    """Print the sha256 of a token, for CJ_SVC_TOKENS (the token itself is never stored)."""
    typer.echo(hash_token(token))

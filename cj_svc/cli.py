"""`cj-svc serve`, `cj-svc migrate`, `cj-svc hash-token`."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from cj_svc.settings import CJSettings
from mesh_common.tokens import secret
from mesh_server import database, logs
from mesh_server.auth import hash_token
from mesh_server.cli import run_service

app = typer.Typer(
    help="The CJ mesh CJ Service: assignments, anchors, batches, comparisons, results.", no_args_is_help=True
)
_d = CJSettings()

DatabaseUrl = Annotated[
    str, typer.Option(envvar="CJ_SVC_DATABASE_URL", help="sqlite:///path or postgresql://user@host/db")
]


def _opt(name: str, help_text: str = "") -> typer.models.OptionInfo:
    return typer.Option(envvar=f"CJ_SVC_{name.upper()}", help=help_text)


@app.command()
def serve(
    listen: Annotated[str, _opt("listen", "host:port (port 0 picks one)")] = _d.listen,
    database_url: DatabaseUrl = _d.database_url,
    content_address: Annotated[
        str,
        _opt("content_address", "the Content Service's host:port (replicas: host:port,host:port or dns:///name:port)"),
    ] = _d.content_address,
    metrics_listen: Annotated[str, _opt("metrics_listen", "host:port for /metrics; empty: off")] = _d.metrics_listen,
    migrate: Annotated[
        bool, typer.Option("--migrate", envvar="CJ_SVC_MIGRATE", help="migrate the database first")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", envvar="CJ_SVC_LOG_JSON")] = False,
    log_level: Annotated[str, _opt("log_level")] = _d.log_level,
    tokens: Annotated[
        str, _opt("tokens", "'<sha256>:admin+user[:user id],...' (see hash-token); empty: open")
    ] = _d.tokens,
    tls_cert: Annotated[str, _opt("tls_cert", "PEM certificate: serve TLS")] = "",
    tls_key: Annotated[str, _opt("tls_key", "PEM key of --tls-cert")] = "",
    tls_client_ca: Annotated[str, _opt("tls_client_ca", "PEM CA: require client certificates it signed")] = "",
    content_tls_ca: Annotated[str, _opt("content_tls_ca", "PEM CA of the Content Service's certificate")] = "",
    content_tls_cert: Annotated[str, _opt("content_tls_cert", "PEM client certificate for the Content Service")] = "",
    content_tls_key: Annotated[str, _opt("content_tls_key", "PEM key of --content-tls-cert")] = "",
    content_token: Annotated[
        str, _opt("content_token", "bearer token for the Content Service (prefer --content-token-file)")
    ] = "",
    content_token_file: Annotated[
        str, _opt("content_token_file", "file whose first line is the Content Service's bearer token")
    ] = "",
    judge_provider: Annotated[
        str, _opt("judge_provider", "heuristic, simulated, openai or anthropic")
    ] = _d.judge_provider,
    judge_model: Annotated[str, _opt("judge_model")] = _d.judge_model,
    openai_base_url: Annotated[str, _opt("openai_base_url", "any OpenAI-compatible server")] = _d.openai_base_url,
    openai_api_key_env: Annotated[
        str, _opt("openai_api_key_env", "environment variable holding the key")
    ] = _d.openai_api_key_env,
    anthropic_base_url: Annotated[str, _opt("anthropic_base_url")] = _d.anthropic_base_url,
    anthropic_api_key_env: Annotated[str, _opt("anthropic_api_key_env")] = _d.anthropic_api_key_env,
    simulated_latency_ms: Annotated[float, _opt("simulated_latency_ms")] = _d.simulated_latency_ms,
    simulated_failure_rate: Annotated[float, _opt("simulated_failure_rate")] = _d.simulated_failure_rate,
    simulated_failure_code: Annotated[str, _opt("simulated_failure_code")] = _d.simulated_failure_code,
    simulated_scores_file: Annotated[str, _opt("simulated_scores_file")] = _d.simulated_scores_file,
    batch_concurrency: Annotated[
        int, _opt("batch_concurrency", "judge calls in flight per batch")
    ] = _d.batch_concurrency,
    service_concurrency: Annotated[
        int, _opt("service_concurrency", "judge calls in flight in all")
    ] = _d.service_concurrency,
    replica_id: Annotated[
        str, _opt("replica_id", "this replica's id, distinct per replica on one database; default: host name")
    ] = _d.replica_id,
    lease_seconds: Annotated[
        float, _opt("lease_seconds", "a batch whose replica stops renewing is taken over after this")
    ] = _d.lease_seconds,
    ready_file: Annotated[Path | None, typer.Option(help="write the bound addresses here as JSON once serving")] = None,
) -> None:
    """Serve huleedu.cj.v1.AdminService and AssessmentService until SIGTERM or SIGINT."""
    from cj_svc.app import start

    logs.configure(log_level, log_json)
    given = dict(locals())
    try:
        given["content_token"] = secret(content_token, content_token_file, "--content-token")
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    settings = CJSettings(**{f.name: given[f.name] for f in fields(CJSettings) if f.name in given})
    run_service(lambda: start(settings), ready_file, "cj-svc")


@app.command()
def migrate(database_url: DatabaseUrl = _d.database_url) -> None:
    """Bring the database schema to the newest revision."""
    database.upgrade("cj", database_url)
    typer.echo(f"cj database migrated: {database_url}")


@app.command("hash-token")
def hash_token_command(token: str) -> None:
    """Print the sha256 of a token, for CJ_SVC_TOKENS (the token itself is never stored)."""
    typer.echo(hash_token(token))

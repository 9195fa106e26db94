"""What every service's settings hold: where it listens, its database, logs, tokens and TLS.

Each service's settings dataclass extends `ServiceSettings`; each field carries its help text
(`setting(default, help)`), from which `mesh_server.cli.serve_command` makes the `serve` command's
flag and environment variable. A field is declared once and is settable both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mesh_common.tls import TlsFiles


def setting(default: Any, help_text: str) -> Any:
    """A settings field with its default and the help its flag shows."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ServiceSettings:
    listen: str = setting("127.0.0.1:0", "host:port to serve on (port 0 picks one)")
    database_url: str = setting("", "sqlite:///path or postgresql://user@host/db")
    migrate: bool = setting(False, "migrate the database to the newest revision before serving")
    metrics_listen: str = setting("", "host:port for Prometheus /metrics; empty: off")
    log_json: bool = setting(False, "log JSON lines instead of text")
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    grace_seconds: float = setting(5.0, "on SIGTERM, seconds calls in flight may take to finish")
    tokens: str = setting(
        "",
        "'<sha256>:role+role[:user id],...' (the sha256 from `cj-svc hash-token`); empty: no authentication "
        "(bind to loopback)",
    )
    tls_cert: str = setting("", "PEM certificate: serve TLS")
    tls_key: str = setting("", "PEM key of --tls-cert")
    tls_client_ca: str = setting("", "PEM CA: require client certificates it signed (mutual TLS)")

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_client_ca)

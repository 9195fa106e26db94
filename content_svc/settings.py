"""The Content Service's settings: one object, filled from flags or CONTENT_SVC_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mesh_common.tls import TlsFiles

MiB = 1024 * 1024


@dataclass(frozen=True)
class ContentSettings:
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///var/content/content.db"
    # Where content bytes live: "filesystem" (files under storage_dir, the embedded default) or
    # "database" (rows of the service's database: any number of replicas can serve one store).
    blob_store: str = "filesystem"
    storage_dir: Path = Path("var/content/blobs")
    max_object_bytes: int = 64 * MiB
    # Every kind but CONTENT_KIND_SOURCE_DOCUMENT is text, limited to this size.
    max_text_bytes: int = 1 * MiB
    # Upload streams open at once, in all and per connection; seconds an upload may send nothing.
    max_uploads: int = 256
    max_uploads_per_connection: int = 64
    upload_idle_seconds: float = 30.0
    # host:port for Prometheus /metrics; empty to not serve metrics.
    metrics_listen: str = ""
    migrate: bool = False
    log_json: bool = False
    log_level: str = "INFO"
    grace_seconds: float = 5.0
    # `<sha256>:role+role[:user],...` (see `cj-svc hash-token`); empty: no authentication.
    tokens: str = ""
    # TLS: this server's certificate and key (PEM); a client CA makes it mutual TLS.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_client_ca)

"""The Content Service's settings: one object; each field is a `content-svc serve` flag and a
CONTENT_SVC_* environment variable (see mesh_server.cli.serve_command)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from mesh_server.settings import ServiceSettings, setting

MiB = 1024 * 1024


class BlobStoreKind(enum.StrEnum):
    filesystem = "filesystem"
    database = "database"


@dataclass(frozen=True)
class ContentSettings(ServiceSettings):
    listen: str = setting("127.0.0.1:50051", "host:port to serve on (port 0 picks one)")
    database_url: str = setting("sqlite:///var/content/content.db", "sqlite:///path or postgresql://user@host/db")
    blob_store: BlobStoreKind = setting(
        BlobStoreKind.filesystem,
        "where content bytes live: filesystem (files under --storage-dir, the embedded default) or database "
        "(rows of --database-url: any number of replicas can serve one store on PostgreSQL)",
    )
    storage_dir: Path = setting(Path("var/content/blobs"), "blob files, with --blob-store filesystem")
    max_object_bytes: int = setting(64 * MiB, "largest object (bytes)")
    max_text_bytes: int = setting(1 * MiB, "largest text (bytes): every kind but CONTENT_KIND_SOURCE_DOCUMENT")
    max_uploads: int = setting(256, "Upload streams open at once, in all")
    max_uploads_per_connection: int = setting(64, "Upload streams open at once on one connection")
    upload_idle_seconds: float = setting(30.0, "refuse an upload that sends nothing for this long")

"""Start the mesh's services as separate processes for benchmarks (real CLI, SQLite under a temp dir)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.processes import wait_for_ready_file  # noqa: E402

BIN = Path(sys.executable).parent
PIDS: dict[str, int] = {}  # address -> process id of the services started here
METRICS_PORTS: dict[str, int] = {}  # address -> port of its Prometheus /metrics, where it serves them


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None):
    with tempfile.TemporaryDirectory(prefix="cjmesh-bench-") as tmp:
        ready = Path(tmp) / "ready.json"
        proc = subprocess.Popen(
            [*args, "--ready-file", str(ready)],
            cwd=tmp,
            env={**os.environ, **(env or {})},
            stderr=subprocess.DEVNULL,
        )
        try:
            announced = wait_for_ready_file(ready, proc)
            PIDS[announced["address"]] = proc.pid
            if announced.get("metrics_port"):
                METRICS_PORTS[announced["address"]] = announced["metrics_port"]
            yield announced, Path(tmp)
        finally:
            proc.terminate()
            proc.wait(30)


@contextmanager
def content_service(database_url: str | None = None, blob_store: str = "filesystem"):
    with tempfile.TemporaryDirectory(prefix="cjmesh-content-") as data:
        url = database_url or f"sqlite:///{data}/content.db"
        args = [str(BIN / "content-svc"), "serve", "--listen", "127.0.0.1:0", "--migrate", "--database-url", url,
                "--blob-store", blob_store, "--storage-dir", f"{data}/blobs", "--log-level", "WARNING",
                "--metrics-listen", "127.0.0.1:0"]  # fmt: skip
        with process(args) as (ready, _):
            yield ready["address"]


@contextmanager
def cj_service(content_address: str, database_url: str | None = None, extra: list[str] | None = None):
    with tempfile.TemporaryDirectory(prefix="cjmesh-cj-") as data:
        url = database_url or f"sqlite:///{data}/cj.db"
        args = [str(BIN / "cj-svc"), "serve", "--listen", "127.0.0.1:0", "--migrate", "--database-url", url,
                "--content-address", content_address, "--log-level", "WARNING", *(extra or [])]  # fmt: skip
        with process(args) as (ready, _):
            yield ready["address"]

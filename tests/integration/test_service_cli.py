"""Both services' command lines, started as an operator would: what they say and where they write."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.processes import BIN, wait_for_ready_file


@pytest.mark.parametrize("service", ["content-svc", "cj-svc"])
def test_a_service_without_tokens_warns_and_makes_its_ready_file_folder(service: str, tmp_path) -> None:
    ready = tmp_path / "not" / "yet" / "there" / "ready.json"
    args = [str(BIN / service), "serve", "--listen", "127.0.0.1:0", "--migrate",
            "--database-url", f"sqlite:///{tmp_path}/{service}.db", "--ready-file", str(ready)]  # fmt: skip
    args += (
        ["--storage-dir", str(tmp_path / "blobs")] if service == "content-svc" else ["--content-address", "127.0.0.1:1"]
    )
    log = tmp_path / "log.txt"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=out)
        try:
            address = wait_for_ready_file(ready, process)["address"]
        finally:
            process.terminate()
            process.wait(15)
    assert address.startswith("127.0.0.1:")
    assert json.loads(ready.read_text())["address"] == address
    assert "no tokens configured: every RPC is open to anyone who reaches" in log.read_text()

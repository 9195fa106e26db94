"""Both services' command lines, started as an operator would: what they say and where they write."""

from __future__ import annotations

import json
import subprocess
from dataclasses import fields

import pytest
import typer
from typer.testing import CliRunner

from cj_svc.settings import CJSettings
from content_svc.settings import ContentSettings
from mesh_server.cli import serve_command
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


@pytest.mark.parametrize(
    ("settings_type", "prefix"), [(ContentSettings, "CONTENT_SVC_"), (CJSettings, "CJ_SVC_")], ids=["content", "cj"]
)
def test_every_setting_is_a_documented_flag_and_an_environment_variable(settings_type, prefix, monkeypatch) -> None:
    started: list = []

    async def capture(settings):
        started.append(settings)
        raise ValueError("captured")  # run_service reports it and exits 2, as for unusable settings

    app = typer.Typer()
    serve_command(app, settings_type, prefix, "svc", capture, "serve")
    app.command("other")(lambda: None)  # two commands, so `serve` is addressed by name as in the services
    shown = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}).output
    for field in fields(settings_type):
        assert "--" + field.name.replace("_", "-") in shown and f"{prefix}{field.name.upper()}" in shown, field.name
        assert field.metadata.get("help"), f"{field.name} has no help text"
    # A flag and an environment variable reach the settings; a boolean has its --no- form.
    monkeypatch.setenv(f"{prefix}GRACE_SECONDS", "7.5")
    result = CliRunner().invoke(app, ["serve", "--log-level", "WARNING", "--no-migrate"])
    assert result.exit_code == 2 and "captured" in result.output
    assert (started[-1].grace_seconds, started[-1].log_level, started[-1].migrate) == (7.5, "WARNING", False)

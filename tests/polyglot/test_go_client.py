"""The protos serve other languages: a Go client (protoc-gen-go, protoc-gen-go-grpc and grpc-go, as
Debian packages them) generated from protos/ with no M flags, against real servers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.polyglot import assert_client_did_it_all
from tests.support.tools import ROOT, run

CLIENT = Path(__file__).with_name("go_client") / "main.go"
# Debian's golang-google-grpc-dev, golang-google-genproto-dev and golang-google-protobuf-dev
# install their sources here (GOPATH layout); .ci/run installs them.
DEBIAN_GOPATH = Path("/usr/share/gocode")
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")


def go_toolchain_or_skip() -> None:
    missing = [name for name in TOOLS if shutil.which(name) is None]
    if not (DEBIAN_GOPATH / "src" / "google.golang.org" / "grpc").is_dir():
        missing.append("golang-google-grpc-dev")
    if missing:
        message = f"the Go client test needs {', '.join(missing)} (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(f"SKIPPED LOUDLY: {message}")


async def test_go_client_uploads_submits_watches_reads_results_and_violations(mesh, tmp_path) -> None:
    go_toolchain_or_skip()
    gopath = tmp_path / "gopath"
    (gopath / "src").mkdir(parents=True)
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    generated = await run(
        "protoc", f"-I{ROOT / 'protos'}", f"-I{ROOT / 'third_party'}", f"--go_out={gopath / 'src'}",
        f"--go-grpc_out={gopath / 'src'}", *protos, "buf/validate/validate.proto", timeout=60,
    )  # fmt: skip
    assert generated.code == 0, generated.output  # each file's go_package says where it goes
    (gopath / "src" / "cjmesh" / "goclient").mkdir(parents=True)
    shutil.copy(CLIENT, gopath / "src" / "cjmesh" / "goclient" / "main.go")
    env = {"GO111MODULE": "off", "GOPATH": f"{gopath}:{DEBIAN_GOPATH}", "GOCACHE": str(tmp_path / "go-cache"),
           "GOFLAGS": "", "HOME": str(tmp_path)}  # fmt: skip
    built = await run("go", "build", "-o", str(tmp_path / "goclient"), "cjmesh/goclient", env=env, timeout=240)
    assert built.code == 0, built.output
    result = await run(
        str(tmp_path / "goclient"),
        env={"CONTENT_ADDRESS": mesh.content_app.address, "CJ_ADDRESS": mesh.cj_app.address},
        timeout=90,
    )
    assert result.code == 0, result.output
    assert_client_did_it_all(json.loads(result.stdout), refused_as="InvalidArgument")

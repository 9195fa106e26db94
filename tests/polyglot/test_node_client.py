"""The protos serve other languages: a Node.js client (grpc-js + proto-loader, loading protos/ directly)
against real servers."""

from __future__ import annotations

import json
from pathlib import Path

import google.rpc

from tests.support.polyglot import assert_client_did_it_all
from tests.support.tools import ROOT, run

CLIENT = Path(__file__).with_name("client.js")


async def test_node_client_uploads_submits_watches_reads_results_and_violations(mesh) -> None:
    google_protos = Path(google.rpc.__path__[0]).parent.parent  # googleapis-common-protos ships google/rpc/*.proto
    env = {
        "CONTENT_ADDRESS": mesh.content_app.address,
        "CJ_ADDRESS": mesh.cj_app.address,
        "PROTO_DIRS": ":".join(str(p) for p in (ROOT / "protos", ROOT / "third_party", google_protos)),
        "NODE_PATH": str(ROOT / "node_modules"),
    }
    result = await run("node", str(CLIENT), env=env, timeout=90)
    assert result.code == 0, result.output
    assert_client_did_it_all(json.loads(result.stdout), refused_as="INVALID_ARGUMENT")

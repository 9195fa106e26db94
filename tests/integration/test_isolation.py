"""Whose is it: with tokens on, batches and content belong to their caller, request ids are the
caller's own, and no answer tells another user what exists. Real servers, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass

import grpc
import pytest
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from mesh_server.auth import hash_token
from tests.conftest import start_cj, start_content
from tests.support.cj import submit_request
from tests.support.content import download, upload
from tests.support.grpc_client import channel
from tests.support.providers import provider_server

TOKENS = {
    "ada": ("admin-secret", "admin+user"),
    "bob": ("bob-secret", "user"),
    "carol": ("carol-secret", "user"),  # bob's organisation
    "eve": ("eve-secret", "user"),
    "audrey": ("auditor-secret", "auditor"),
}
ORGS = {"bob": "school-1", "carol": "school-1", "eve": "school-2"}
TEXTS = [f"Essay {i}: the harbour at dawn, the boats, the gulls and the long walk home." for i in range(4)]


def token_spec(include_service: bool) -> str:
    entries = [f"{hash_token(secret)}:{roles}:{user}:{ORGS.get(user, '')}" for user, (secret, roles) in TOKENS.items()]
    if include_service:
        entries.append(f"{hash_token('cj-service-secret')}:service:cj-svc")
    return ",".join(entries)


def as_user(user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[user][0]}"),)


@dataclass
class SecuredMesh:
    content: content_pb2_grpc.ContentServiceStub
    assessment: assessment_pb2_grpc.AssessmentServiceStub
    cj_channel: grpc.aio.Channel


@pytest.fixture
async def secured(database_url, cj_database_url, tmp_path):
    content_app = await start_content(database_url, tmp_path / "blobs", tokens=token_spec(include_service=True))
    cj_app = await start_cj(cj_database_url, content_app.address, judge_provider="simulated",
                            tokens=token_spec(include_service=False), content_token="cj-service-secret")  # fmt: skip
    async with channel(content_app.address) as content_channel, channel(cj_app.address) as cj_channel:
        yield SecuredMesh(
            content_pb2_grpc.ContentServiceStub(content_channel),
            assessment_pb2_grpc.AssessmentServiceStub(cj_channel),
            cj_channel,
        )
    await cj_app.stop()
    await content_app.stop()


async def store(mesh: SecuredMesh, user: str, texts: list[str]) -> list[str]:
    response = await mesh.content.BatchUpload(
        content_pb2.BatchUploadRequest(
            items=[content_pb2.BatchUploadItem(kind=1, content_type="text/plain", content=t.encode()) for t in texts]
        ),
        metadata=as_user(user),
    )
    return [r.storage_id for r in response.results]


async def code_and_details(call) -> tuple[grpc.StatusCode, str]:
    try:
        result = await call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


async def test_batches_are_their_owners_and_no_answer_leaks_another_users(secured) -> None:
    bob_ids = await store(secured, "bob", TEXTS)
    request_id = str(uuid.uuid4())
    bobs = (
        await secured.assessment.SubmitBatch(submit_request(bob_ids, request_id=request_id), metadata=as_user("bob"))
    ).batch
    eve = as_user("eve")
    unknown = uuid.uuid4().hex
    for batch_id in (bobs.batch_id, unknown):  # someone else's batch answers exactly like no batch
        calls = {
            "GetBatch": lambda b: secured.assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=b), metadata=eve),
            "GetBatchResults": lambda b: secured.assessment.GetBatchResults(
                assessment_pb2.GetBatchResultsRequest(batch_id=b), metadata=eve
            ),
            "ListComparisons": lambda b: secured.assessment.ListComparisons(
                assessment_pb2.ListComparisonsRequest(batch_id=b), metadata=eve
            ),
            "CancelBatch": lambda b: secured.assessment.CancelBatch(
                assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=b), metadata=eve
            ),
        }
        for name, make in calls.items():
            code, details = await code_and_details(make(batch_id))
            assert code == grpc.StatusCode.NOT_FOUND, (name, batch_id, code)
            assert details == f"no batch {batch_id} among the batches you may see", name
        watch = secured.assessment.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch_id), metadata=eve)
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            async for _ in watch:
                pass
        assert watched.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await secured.assessment.ListBatches(assessment_pb2.ListBatchesRequest(), metadata=eve)
    assert list(listed.batches) == []
    with pytest.raises(grpc.aio.AioRpcError) as token:  # bob's batch id as a page token tells eve nothing either
        await secured.assessment.ListBatches(assessment_pb2.ListBatchesRequest(page_token=bobs.batch_id), metadata=eve)
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # The same request id from another user is another request: eve gets her own batch.
    eve_ids = await store(secured, "eve", TEXTS)
    assert eve_ids == bob_ids  # the same bytes, stored once; now eve's to read as well
    eves = await secured.assessment.SubmitBatch(submit_request(eve_ids, request_id=request_id), metadata=eve)
    assert eves.created and eves.batch.batch_id != bobs.batch_id

    # The admin sees and may cancel both; the auditor sees both and may cancel only its own.
    for viewer in ("ada", "audrey"):
        seen = await secured.assessment.ListBatches(assessment_pb2.ListBatchesRequest(), metadata=as_user(viewer))
        assert {b.batch_id for b in seen.batches} == {bobs.batch_id, eves.batch.batch_id}
        got = await secured.assessment.GetBatch(
            assessment_pb2.GetBatchRequest(batch_id=bobs.batch_id), metadata=as_user(viewer)
        )
        assert got.batch.user_id == "bob"
    code, details = await code_and_details(
        secured.assessment.CancelBatch(
            assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=bobs.batch_id),
            metadata=as_user("audrey"),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "only its owner or an admin" in details
    code, _ = await code_and_details(
        secured.assessment.CancelBatch(
            assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=bobs.batch_id),
            metadata=as_user("ada"),
        )
    )
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION)  # or it had finished already
    mine = await secured.assessment.ListBatches(assessment_pb2.ListBatchesRequest(), metadata=as_user("bob"))
    assert [b.batch_id for b in mine.batches] == [bobs.batch_id]


async def test_content_is_read_by_its_uploaders_and_their_organisation_only(secured) -> None:
    text = b"A private essay, uploaded by bob, about his grandmother's kitchen."
    stored = await upload(secured.content, text, metadata=as_user("bob"))
    digest = hashlib.sha256(text).hexdigest()
    unknown = uuid.uuid4().hex
    eve = as_user("eve")
    for storage_id in (stored.storage_id, unknown):  # bob's content answers exactly like no content
        code, details = await code_and_details(
            secured.content.Get(content_pb2.GetRequest(storage_id=storage_id), metadata=eve)
        )
        assert code == grpc.StatusCode.NOT_FOUND and details.startswith(f"no content with storage id {storage_id};")
        with pytest.raises(grpc.aio.AioRpcError) as downloaded:
            await download(secured.content, storage_id, metadata=eve)
        assert downloaded.value.code() == grpc.StatusCode.NOT_FOUND
    stat = await secured.content.Stat(content_pb2.StatRequest(storage_ids=[stored.storage_id]), metadata=eve)
    assert list(stat.found) == [] and list(stat.missing_storage_ids) == [stored.storage_id]
    batch = await secured.content.BatchGet(content_pb2.BatchGetRequest(storage_ids=[stored.storage_id]), metadata=eve)
    assert list(batch.items) == [] and list(batch.missing_storage_ids) == [stored.storage_id]
    found = await secured.content.FindByChecksum(content_pb2.FindByChecksumRequest(sha256s=[digest]), metadata=eve)
    assert list(found.matches) == [] and list(found.missing_sha256s) == [digest]  # no guessing what is stored

    # eve's essays may not point at bob's content, which the CJ Service would otherwise read for her
    eve_ids = await store(secured, "eve", TEXTS[:1])
    code, details = await code_and_details(
        secured.assessment.SubmitBatch(submit_request([eve_ids[0], stored.storage_id]), metadata=eve)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "is not in the Content Service" in details

    # carol is in bob's organisation; ada is an admin
    for reader in ("carol", "ada"):
        got = await secured.content.Get(content_pb2.GetRequest(storage_id=stored.storage_id), metadata=as_user(reader))
        assert got.content == text
    # eve uploads the same bytes: to her they are new (nothing says bob had them); then she may read them
    again = await upload(secured.content, text, metadata=eve)
    assert again.storage_id == stored.storage_id and not again.deduplicated
    assert (await upload(secured.content, text, metadata=eve)).deduplicated  # her own, from now on
    got = await secured.content.Get(content_pb2.GetRequest(storage_id=stored.storage_id), metadata=eve)
    assert got.content == text


async def test_concurrent_submits_with_one_request_id_are_exactly_idempotent(secured) -> None:
    ids = await store(secured, "bob", TEXTS)
    request_id = str(uuid.uuid4())
    labels = [f"variant {i % 4}" for i in range(20)]  # 4 bodies, 5 calls each
    bob = as_user("bob")

    async def submit(label: str):
        try:
            response = await secured.assessment.SubmitBatch(
                submit_request(ids, request_id=request_id, batch_label=label), metadata=bob
            )
        except grpc.aio.AioRpcError as error:
            return label, error.code(), None, False
        return label, grpc.StatusCode.OK, response.batch.batch_id, response.created

    outcomes = await asyncio.gather(*(submit(label) for label in labels))
    created = [o for o in outcomes if o[3]]
    assert len(created) == 1
    winner_label, _, winner_id, _ = created[0]
    for label, code, batch_id, _ in outcomes:
        if label == winner_label:
            assert (code, batch_id) == (grpc.StatusCode.OK, winner_id)
        else:
            assert code == grpc.StatusCode.ALREADY_EXISTS, (label, code)
    # The same UUID in capitals is the same request id.
    upper = await secured.assessment.SubmitBatch(
        submit_request(ids, request_id=request_id.upper(), batch_label=winner_label), metadata=bob
    )
    assert upper.batch.batch_id == winner_id and not upper.created
    # Fields this service does not know (a newer client's) do not make it another request.
    raw = submit_request(ids, request_id=request_id, batch_label=winner_label).SerializeToString() + b"\x98\x06\x01"
    call = secured.cj_channel.unary_unary(
        "/huleedu.cj.v1.AssessmentService/SubmitBatch",
        request_serializer=lambda data: data,
        response_deserializer=assessment_pb2.SubmitBatchResponse.FromString,
    )
    newer = await call(raw, metadata=bob)
    assert newer.batch.batch_id == winner_id and not newer.created
    listed = await secured.assessment.ListBatches(assessment_pb2.ListBatchesRequest(), metadata=bob)
    assert len(listed.batches) == 1


async def test_an_open_mesh_stays_open(mesh) -> None:
    """Without tokens nothing is filed under anyone: every caller sees every batch and all content."""
    ids = await store_open(mesh)
    submitted = await mesh.assessment.SubmitBatch(submit_request(ids, user_id="bob"))
    listed = await mesh.assessment.ListBatches(assessment_pb2.ListBatchesRequest())
    assert [b.batch_id for b in listed.batches] == [submitted.batch.batch_id]
    got = await mesh.content.Get(content_pb2.GetRequest(storage_id=ids[0]))
    assert got.metadata.kind == common_pb2.CONTENT_KIND_ESSAY_TEXT


async def store_open(mesh) -> list[str]:
    from tests.support.cj import store_texts

    return await store_texts(mesh.content, TEXTS)


async def test_tokens_from_files_keep_secrets_off_the_command_line(tmp_path, sqlite_url) -> None:
    """`cj-svc --content-token-file` and `cj-runner --token-file`: no secret in `ps` or shell history."""
    from tests.support.processes import ServiceProcess
    from tests.support.tools import run, tool

    content_app = await start_content(sqlite_url, tmp_path / "blobs", tokens=token_spec(include_service=True))
    (tmp_path / "cj.token").write_text("cj-service-secret\n")
    (tmp_path / "bob.token").write_text("bob-secret\n")
    cj = ServiceProcess(
        "cj-svc",
        ["--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{tmp_path}/cj.db", "--migrate",
         "--content-address", content_app.address, "--tokens", token_spec(include_service=False),
         "--content-token-file", str(tmp_path / "cj.token"), "--judge-provider", "simulated"],
        tmp_path,
    )  # fmt: skip
    try:
        cj_address = await cj.start()
        ps = await run("ps", "-eo", "args")
        assert "cj-service-secret" not in ps.stdout and "bob-secret" not in ps.stdout
        from tests.runner.test_runner_cli import essays_folder

        folder = essays_folder(tmp_path, n=3)
        result = await run(
            tool("cj-runner"), "--content-address", content_app.address, "--cj-address", cj_address,
            "--token-file", str(tmp_path / "bob.token"), "run", str(folder), "--budget", "3",
            "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), timeout=90,
        )  # fmt: skip
        assert result.code == 0, result.output
        both = await run(tool("cj-runner"), "--token", "x", "--token-file", str(tmp_path / "bob.token"), "plan",
                         str(folder))  # fmt: skip
        assert both.code == 2 and "not both" in both.output
    finally:
        await cj.stop()
        await content_app.stop()


async def test_the_bearer_scheme_is_case_insensitive(secured) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        listed = await secured.assessment.ListBatches(
            assessment_pb2.ListBatchesRequest(), metadata=(("authorization", f"{scheme} bob-secret"),)
        )
        assert list(listed.batches) == []
    with pytest.raises(grpc.aio.AioRpcError) as basic:
        await secured.assessment.ListBatches(
            assessment_pb2.ListBatchesRequest(), metadata=(("authorization", "Basic bob-secret"),)
        )
    assert basic.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_runner_with_a_wrong_token_exits_2_with_one_clear_message(tmp_path, sqlite_url) -> None:
    from tests.runner.test_runner_cli import essays_folder
    from tests.support.tools import run, tool

    content_app = await start_content(sqlite_url, tmp_path / "blobs", tokens=token_spec(include_service=True))
    cj_app = await start_cj(f"sqlite:///{tmp_path}/cj.db", content_app.address, judge_provider="simulated",
                            tokens=token_spec(include_service=False), content_token="cj-service-secret")  # fmt: skip
    try:
        folder = str(essays_folder(tmp_path, n=3))
        for command in (["run", folder, "--cache-dir", str(tmp_path / "cache")], ["admin", "list-scales"]):
            result = await run(
                tool("cj-runner"), "--content-address", content_app.address, "--cj-address", cj_app.address,
                "--token", "not-the-token", *command, timeout=60,
            )  # fmt: skip
            assert result.code == 2, (command, result.output)
            assert "unauthenticated" in result.output and "--token" in result.output, command
            assert "Traceback" not in result.output
    finally:
        await cj_app.stop()
        await content_app.stop()


async def test_a_cj_service_whose_content_token_is_refused_says_so(tmp_path, sqlite_url) -> None:
    content_app = await start_content(sqlite_url, tmp_path / "blobs", tokens=token_spec(include_service=True))
    cj_app = await start_cj(f"sqlite:///{tmp_path}/cj.db", content_app.address, judge_provider="simulated",
                            tokens=token_spec(include_service=False), content_token="not-the-service-token")  # fmt: skip
    try:
        async with channel(content_app.address) as content_channel, channel(cj_app.address) as cj_channel:
            content = content_pb2_grpc.ContentServiceStub(content_channel)
            stored = [(await upload(content, text.encode(), metadata=as_user("bob"))).storage_id for text in TEXTS]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await assessment_pb2_grpc.AssessmentServiceStub(cj_channel).SubmitBatch(
                    submit_request(stored), metadata=as_user("bob")
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "refused the CJ Service's token; check cj-svc's --content-token" in refused.value.details()
        assert "check that content-svc is running" not in refused.value.details()
    finally:
        await cj_app.stop()
        await content_app.stop()


async def test_judge_answers_are_reused_among_one_users_batches_only(database_url, cj_database_url, tmp_path) -> None:
    """Whether a pair was judged before would tell one user what another submitted: with tokens on,
    a paid answer is reused for its user's next batch, and asked again for anyone else's."""
    with provider_server() as provider:
        content_app = await start_content(database_url, tmp_path / "blobs", tokens=token_spec(include_service=True))
        cj_app = await start_cj(cj_database_url, content_app.address, judge_provider="openai",
                                openai_base_url=provider.url, tokens=token_spec(include_service=False),
                                content_token="cj-service-secret")  # fmt: skip
        reused = []
        try:
            async with channel(content_app.address) as content_channel, channel(cj_app.address) as cj_channel:
                mesh = SecuredMesh(content_pb2_grpc.ContentServiceStub(content_channel),
                                   assessment_pb2_grpc.AssessmentServiceStub(cj_channel), cj_channel)  # fmt: skip
                for user in ("bob", "bob", "eve"):
                    storage_ids = await store(mesh, user, TEXTS)
                    request = submit_request(storage_ids, comparison_budget=4, seed=1)
                    batch = (await mesh.assessment.SubmitBatch(request, metadata=as_user(user))).batch
                    async with asyncio.timeout(30):
                        while batch.state != assessment_pb2.BATCH_STATE_COMPLETED:
                            await asyncio.sleep(0.05)
                            batch = (await mesh.assessment.GetBatch(
                                assessment_pb2.GetBatchRequest(batch_id=batch.batch_id), metadata=as_user(user))).batch  # fmt: skip
                    comparisons = (await mesh.assessment.ListComparisons(
                        assessment_pb2.ListComparisonsRequest(batch_id=batch.batch_id), metadata=as_user(user))).comparisons  # fmt: skip
                    reused.append([c.cached for c in comparisons])
        finally:
            await cj_app.stop()
            await content_app.stop()
    bob_first, bob_again, eve = reused
    assert len(bob_first) == 4 and not any(bob_first)
    assert all(bob_again) and len(bob_again) == 4  # the same user's rerun: nothing paid twice
    assert not any(eve) and provider.calls == 8  # another user's batch of the same texts: asked again

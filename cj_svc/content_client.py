"""The CJ Service's way to the Content Service: the generated async stub, correlation id passed on."""

from __future__ import annotations

import grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from cj_svc.references import Held
from mesh_common.correlation import PropagatingClientInterceptor
from mesh_common.error_codes import ErrorCode
from mesh_common.tls import TlsFiles, open_channel
from mesh_server import errors
from mesh_server.auth import Principal, behalf_metadata


class ContentClient:
    def __init__(self, address: str, tls: TlsFiles | None = None, token: str = "", timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = open_channel(address, tls, interceptors=[PropagatingClientInterceptor(token)])
        self.stub = content_pb2_grpc.ContentServiceStub(self.channel)

    def _unavailable(self, error: grpc.aio.AioRpcError) -> errors.DomainError:
        """The Content Service cannot be used: said as what it is (gone, or refusing this service's token)."""
        if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            why = "refused the CJ Service's token; check cj-svc's --content-token (it needs the `service` role there)"
        elif error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            why = "did not answer; check that content-svc is running"
        else:
            why = "failed"
        return errors.Unavailable(
            f"the Content Service at {self.address} {why} ({error.code().name}: {error.details()})",
            error_code=ErrorCode.CONTENT_SERVICE_ERROR,
        )

    def _damaged(self, error: grpc.aio.AioRpcError) -> errors.DomainError:
        return errors.DataLoss(
            f"the Content Service holds damaged content: {error.details()}", error_code=ErrorCode.CONTENT_DAMAGED
        )

    async def held(self, storage_ids: list[str], behalf: Principal | None = None) -> dict[str, Held]:
        """What the Content Service holds of these ids, each blob hashed (Stat with verify): kind,
        size and state; ids it never held are absent. With `behalf`, as seen by that caller: what
        it may not read is absent too."""
        wanted = list(dict.fromkeys(storage_ids))
        held: dict[str, Held] = {}
        for start in range(0, len(wanted), 10_000):
            try:
                response = await self.stub.Stat(
                    content_pb2.StatRequest(storage_ids=wanted[start : start + 10_000], verify=True),
                    timeout=self.timeout,
                    metadata=behalf_metadata(behalf),
                )
            except grpc.aio.AioRpcError as error:
                raise self._unavailable(error) from None
            for meta in (*response.found, *response.damaged):
                held[meta.storage_id] = Held(
                    kind=common_pb2.ContentKind.Name(meta.kind),
                    size=meta.size,
                    state=content_pb2.ContentState.Name(meta.state).removeprefix("CONTENT_STATE_"),
                )
        return held

    async def text(self, storage_id: str) -> str:
        """The stored content as text (UTF-8, undecodable bytes replaced)."""
        try:
            response = await self.stub.Get(content_pb2.GetRequest(storage_id=storage_id), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise errors.FailedPrecondition(
                    f"content {storage_id} is not in the Content Service", error_code=ErrorCode.RESOURCE_NOT_FOUND
                ) from None
            if error.code() == grpc.StatusCode.DATA_LOSS:
                raise self._damaged(error) from None
            raise self._unavailable(error) from None
        return str(response.content.decode("utf-8", errors="replace"))

    async def texts(self, storage_ids: list[str]) -> dict[str, str]:
        """Many texts by BatchGet (storage id -> text), asking again for what did not fit in one
        response; FailedPrecondition naming the ids the Content Service does not hold."""
        wanted, found = list(dict.fromkeys(storage_ids)), {}
        while wanted:
            try:
                response = await self.stub.BatchGet(
                    content_pb2.BatchGetRequest(storage_ids=wanted[:1000]), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DATA_LOSS:
                    raise self._damaged(error) from None
                raise self._unavailable(error) from None
            if response.missing_storage_ids:
                raise errors.FailedPrecondition(
                    f"content {', '.join(response.missing_storage_ids[:20])} is not in the Content Service",
                    error_code=ErrorCode.RESOURCE_NOT_FOUND,
                )
            for item in response.items:
                found[item.metadata.storage_id] = item.content.decode("utf-8", errors="replace")
            if not response.items and response.deferred_storage_ids:  # one text larger than a response
                too_big = response.deferred_storage_ids[0]
                found[too_big] = await self.text(too_big)
            wanted = [i for i in wanted if i not in found]
        return found

    async def ready(self) -> str | None:
        """None when the Content Service answers."""
        try:
            await self.stub.Stat(content_pb2.StatRequest(storage_ids=["0" * 32]), timeout=2)
        except grpc.aio.AioRpcError as error:
            return f"content service at {self.address}: {error.code().name}"
        return None

    async def close(self) -> None:
        await self.channel.close()

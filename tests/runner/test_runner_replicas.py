"""The runner against several Content Service replicas when one of them dies while it answers."""

from __future__ import annotations

import grpc

from runner.client import MeshClient
from runner.inventory import read_item


class DiesWhileAnswering(grpc.GenericRpcHandler):
    """A content replica that fails every call with UNAVAILABLE. Its first BatchUpload fails after
    the response headers went out, as a replica killed while answering does: grpc's retry policy may
    not send such a call again (it has committed). Every other call fails before any answer, which
    the channel's retry policy sends to another replica by itself."""

    def __init__(self) -> None:
        self.failed_while_answering = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method.rsplit("/", 1)[-1]

        async def fail(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if method == "BatchUpload" and not self.failed_while_answering:
                self.failed_while_answering += 1
                await context.send_initial_metadata(())
            await context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")

        return grpc.unary_unary_rpc_method_handler(fail)


async def test_a_batch_upload_cut_off_while_answering_is_sent_again(mesh, tmp_path) -> None:
    dying = DiesWhileAnswering()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((dying,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        folder = tmp_path / "students"
        folder.mkdir()
        items = []
        for i in range(600):  # three BatchUpload calls of 200
            (folder / f"essay {i:03d}.txt").write_text(f"Essay {i} about harbours and bridges. " * 30)
            items.append((read_item(folder / f"essay {i:03d}.txt"), "student"))
        both = f"{mesh.content_app.address},127.0.0.1:{port}"
        async with MeshClient(both, mesh.cj_app.address) as client:
            stored, uploaded, failures = await client.storage_ids_for(items, tmp_path / "cache")
            assert dying.failed_while_answering == 1  # the cut-off call happened ...
            assert failures == {} and uploaded == 600  # ... and was sent again: nothing is missing
            assert set(stored) == {item.sha256 for item, _ in items}
            assert set((await client.find_by_checksum(stored)).values()) == set(stored.values())
    finally:
        await server.stop(None)

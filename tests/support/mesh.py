"""A running mesh for tests: real Content and CJ servers and stubs to talk to them."""

from __future__ import annotations

import grpc
from huleedu.cj.v1 import admin_pb2_grpc, assessment_pb2_grpc
from huleedu.content.v1 import content_pb2_grpc


class Mesh:
    def __init__(self, content_app, cj_database_url: str) -> None:
        self.content_app = content_app
        self.cj_database_url = cj_database_url
        self.cj_app = None
        self.channels: list[grpc.aio.Channel] = []

    async def start_cj(self, **overrides):
        from tests.conftest import start_cj

        self.cj_app = await start_cj(self.cj_database_url, self.content_app.address, **overrides)
        cj = grpc.aio.insecure_channel(self.cj_app.address)
        content = grpc.aio.insecure_channel(self.content_app.address)
        self.channels += [cj, content]
        self.admin = admin_pb2_grpc.AdminServiceStub(cj)
        self.assessment = assessment_pb2_grpc.AssessmentServiceStub(cj)
        self.content = content_pb2_grpc.ContentServiceStub(content)
        return self.cj_app

    async def restart_cj(self, **overrides):
        await self.stop_cj()
        return await self.start_cj(**overrides)

    async def stop_cj(self) -> None:
        for channel in self.channels:
            await channel.close()
        self.channels = []
        if self.cj_app is not None:
            await self.cj_app.stop()
            self.cj_app = None

    async def stop(self) -> None:
        await self.stop_cj()

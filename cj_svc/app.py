"""Assembles the CJ Service: database, Content Service client, judges, workflow, gRPC server."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from huleedu.cj.v1 import admin_pb2, admin_pb2_grpc, assessment_pb2, assessment_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from cj_svc.admin import AdminStore
from cj_svc.admin_service import AdminService
from cj_svc.assessment_service import AssessmentService
from cj_svc.batches import Batches
from cj_svc.content_client import ContentClient
from cj_svc.models import HealthProbe
from cj_svc.settings import CJSettings
from cj_svc.workflow import Workflow
from mesh_common.tokens import secret
from mesh_server import database
from mesh_server.metrics import serve_metrics
from mesh_server.server import MeshServer, Registration

log = logging.getLogger("cj_svc")

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
ASSESSMENT_SERVICE = assessment_pb2.DESCRIPTOR.services_by_name["AssessmentService"].full_name


@dataclass
class CJApp:
    settings: CJSettings
    server: MeshServer
    content: ContentClient
    engine: AsyncEngine
    workflow: Workflow
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return self.server.address

    async def stop(self) -> None:
        # RPCs drain while the batches reach a safe point: the two graces overlap.
        await asyncio.gather(self.server.stop(), self.workflow.stop())
        await self.content.close()
        await self.engine.dispose()


async def start(settings: CJSettings) -> CJApp:
    if not 0.5 <= settings.target_reliability <= 0.99:
        raise ValueError(f"--target-reliability must be from 0.5 to 0.99, not {settings.target_reliability:g}")
    content_token = secret(settings.content_token, settings.content_token_file, "--content-token")
    engine = await database.open_migrated("cj", settings.database_url, settings.migrate)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    content = ContentClient(settings.content_address, settings.content_tls, content_token)
    batches = Batches(sessions, content, settings.judge_provider, settings.default_budget_per_essay)
    workflow = Workflow(settings, sessions, content, batches)

    async def readiness() -> str | None:
        return await database.probe_write(sessions, HealthProbe) or await content.ready()

    server = MeshServer.of(
        settings,
        [
            Registration(
                admin_pb2_grpc.add_AdminServiceServicer_to_server,
                AdminService(AdminStore(sessions, content)),
                ADMIN_SERVICE,
            ),
            Registration(
                assessment_pb2_grpc.add_AssessmentServiceServicer_to_server,
                AssessmentService(workflow, batches),
                ASSESSMENT_SERVICE,
            ),
        ],
        readiness=readiness,
        roles={ADMIN_SERVICE: "admin"},
    )
    await server.start()
    await workflow.start()
    return CJApp(settings, server, content, engine, workflow, serve_metrics(settings.metrics_listen))

"""The contracts stay clean: buf lint, buf format, buf breaking, and generated/ matches protos/."""

from __future__ import annotations

import sys

from tests.support.tools import ROOT, run, tool


async def test_buf_lint_is_clean() -> None:
    result = await run(tool("buf"), "lint")
    assert result.code == 0, result.output


async def test_buf_format_is_clean() -> None:
    result = await run(tool("buf"), "format", "--diff", "--exit-code")
    assert result.code == 0, result.output


async def test_no_breaking_change_against_the_previous_commit() -> None:
    result = await run(str(ROOT / "scripts" / "buf_breaking.sh"))
    assert result.code == 0, result.output


async def test_generated_code_is_not_stale() -> None:
    result = await run(sys.executable, str(ROOT / "scripts" / "generate.py"), "--check")
    assert result.code == 0, result.output


def test_generated_packages_import_without_path_edits() -> None:
    import buf.validate.validate_pb2
    import huleedu.cj.v1.admin_pb2_grpc
    import huleedu.cj.v1.assessment_pb2_grpc
    import huleedu.content.v1.content_pb2_grpc

    assert huleedu.cj.v1.assessment_pb2_grpc.AssessmentServiceStub
    assert huleedu.cj.v1.admin_pb2_grpc.AdminServiceStub
    assert huleedu.content.v1.content_pb2_grpc.ContentServiceStub
    assert buf.validate.validate_pb2.Violations

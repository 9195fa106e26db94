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


def test_every_rpc_message_field_and_enum_value_of_the_protos_is_explained(tmp_path) -> None:
    """A comment on each, read from the compiled protos' source info (UNSPECIFIED values excepted)."""
    import importlib.resources

    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    out = tmp_path / "protos.bin"
    files = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{ROOT / 'protos'}", f"-I{ROOT / 'third_party'}", f"-I{well_known}",
            "--include_source_info", f"--descriptor_set_out={out}", *files]  # fmt: skip
    assert protoc.main(args) == 0
    bare = []
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        commented = {tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()}
        # Paths in source info: 4 message_type, 2 field, 5 enum_type, 2 value, 6 service, 2 method.
        declared = []
        for m, message in enumerate(file.message_type):
            declared.append(((4, m), message.name))
            declared += [((4, m, 2, f), f"{message.name}.{field.name}") for f, field in enumerate(message.field)]
        for e, enum in enumerate(file.enum_type):
            declared.append(((5, e), enum.name))
            declared += [((5, e, 2, v), value.name) for v, value in enumerate(enum.value)]
        for s, service in enumerate(file.service):
            declared.append(((6, s), service.name))
            declared += [((6, s, 2, r), f"{service.name}.{method.name}") for r, method in enumerate(service.method)]
        bare += [
            f"{file.name}: {name}"
            for path, name in declared
            if path not in commented and not name.endswith("_UNSPECIFIED")
        ]
    assert not bare, f"{len(bare)} without a comment: {bare[:20]}"

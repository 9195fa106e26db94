"""Hostile input: hypothesis-generated requests, and their bytes mutated, sent to every RPC of both
services running as real processes. No call may end INTERNAL or UNKNOWN, no process may die, health
stays SERVING, and a rejected request stores nothing.

FUZZ_EXAMPLES sets the number of cases (2,000 by default; `make fuzz` runs more).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from huleedu.cj.v1 import admin_pb2, assessment_pb2
from huleedu.content.v1 import content_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from content_svc.blobs import PROBE_NAME
from tests.support.processes import wait_for_ready_file

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
BIN = Path(sys.executable).parent
METHODS = [
    method
    for module in (content_pb2, admin_pb2, assessment_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
F = descriptor.FieldDescriptor

# Strings that look almost right are the interesting ones: ids of the wrong length or case, checksums
# where ids belong, scale keys and grades, paths, very long and non-ASCII text.
STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "0" * 32,
            "f" * 32,
            "F" * 32,
            "a" * 64,
            "g" * 32,
            "../../etc/passwd",
            "x" * 300,
            "é" * 40,
            "eng5_np_legacy_9_step",
            "swedish_8_anchor",
            "B",
            "F+",
            "E-",
            "0",
            "-1",
            "null",
            "\x00",
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "text/plain; charset=utf-8",
        ]
    ),  # fmt: skip
)
SCALARS = {
    F.TYPE_STRING: STRINGS,
    F.TYPE_BYTES: st.binary(max_size=64),
    F.TYPE_BOOL: st.booleans(),
    F.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_UINT32: st.integers(0, 2**32 - 1),
    F.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    F.TYPE_UINT64: st.integers(0, 2**64 - 1),
    F.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    F.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    F.TYPE_FLOAT: st.floats(allow_nan=True, allow_infinity=True, width=32),
    F.TYPE_ENUM: st.integers(-3, 12),  # defined values and unknown ones (proto3 enums are open)
}


@st.composite
def messages(draw, message: descriptor.Descriptor, depth: int = 0):  # type: ignore[no-untyped-def]
    """A message of this type with a random subset of its fields set to random values."""
    built = message_factory.GetMessageClass(message)()
    for field in message.fields:
        if not draw(st.booleans()):
            continue
        if field.type == F.TYPE_MESSAGE:
            if depth >= 2:
                continue
            if field.message_type.GetOptions().map_entry:
                key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
                if key.type in SCALARS and value.type in SCALARS:
                    for k, v in draw(st.dictionaries(SCALARS[key.type], SCALARS[value.type], max_size=3)).items():
                        getattr(built, field.name)[k] = v
                continue
            values = draw(st.lists(messages(field.message_type, depth + 1), min_size=1, max_size=3))
            if field.is_repeated:
                getattr(built, field.name).extend(values)
            else:
                getattr(built, field.name).CopyFrom(values[0])
        elif field.is_repeated:
            getattr(built, field.name).extend(draw(st.lists(SCALARS[field.type], max_size=4)))
        else:
            setattr(built, field.name, draw(SCALARS[field.type]))
    return built


@st.composite
def mutated(draw, payload: bytes) -> bytes:  # type: ignore[no-untyped-def]
    """The bytes of a message, damaged: a byte flipped, cut short, bytes inserted, or replaced."""
    data = bytearray(payload)
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "replace"]))
    if kind == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=16))
    else:
        data = bytearray(draw(st.binary(max_size=64)))
    return bytes(data)


@dataclass
class Mesh:
    root: Path
    content: grpc.Channel
    cj: grpc.Channel
    processes: list[subprocess.Popen]

    def stored(self) -> tuple[int, ...]:
        """What requests can store: content rows and blob files, assignments, anchors, batches."""
        with sqlite3.connect(self.root / "content.db") as content, sqlite3.connect(self.root / "cj.db") as cj:
            rows = [content.execute("SELECT count(*) FROM content_objects").fetchone()[0]]
            rows += [cj.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed table names
                     for t in ("assignments", "anchors", "batches", "batch_essays")]  # fmt: skip
        # The health check's probe file comes and goes on its own.
        blobs = sum(1 for p in (self.root / "blobs").rglob("*") if p.is_file() and p.name != PROBE_NAME)
        return (*rows, blobs)


def serve(command: str, args: list[str], root: Path) -> tuple[subprocess.Popen, str]:
    ready = root / f"{command}.ready.json"
    log = (root / f"{command}.log").open("ab")
    process = subprocess.Popen(
        [str(BIN / command), "serve", "--listen", "127.0.0.1:0", "--migrate", "--log-level", "WARNING", *args,
         "--ready-file", str(ready)], cwd=root, stdout=log, stderr=log,
    )  # fmt: skip
    return process, wait_for_ready_file(ready, process)["address"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("fuzz")
    content, content_address = serve(
        "content-svc", ["--database-url", f"sqlite:///{root}/content.db", "--storage-dir", str(root / "blobs")], root
    )
    cj, cj_address = serve(
        "cj-svc", ["--database-url", f"sqlite:///{root}/cj.db", "--content-address", content_address,
                   "--judge-provider", "simulated"], root,
    )  # fmt: skip
    with grpc.insecure_channel(content_address) as content_channel, grpc.insecure_channel(cj_address) as cj_channel:
        yield Mesh(root, content_channel, cj_channel, [content, cj])
    for process in (cj, content):
        process.terminate()
        process.wait(30)


def call(mesh: Mesh, method: descriptor.MethodDescriptor, payloads: list[bytes]) -> grpc.StatusCode:
    channel = mesh.content if method.containing_service.full_name.startswith("huleedu.content") else mesh.cj
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming:
            channel.stream_unary(path)(iter(payloads), timeout=10)
        elif method.server_streaming:
            for _ in channel.unary_stream(path)(payloads[0], timeout=2):
                pass
        else:
            channel.unary_unary(path)(payloads[0], timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(data=st.data())
def test_every_rpc_survives_generated_and_mutated_requests(mesh: Mesh, data) -> None:
    method = data.draw(st.sampled_from(METHODS), label="method")
    count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
    payloads = [data.draw(messages(method.input_type)).SerializeToString() for _ in range(count)]
    if data.draw(st.booleans(), label="mutate"):
        i = data.draw(st.integers(0, count - 1))
        payloads[i] = data.draw(mutated(payloads[i]))
    before = mesh.stored()
    code = call(mesh, method, payloads)
    assert code not in NEVER, f"{method.full_name} answered {code.name}"
    if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return  # watching a batch that is still running: the stream was fine until we hung up
    if code != grpc.StatusCode.OK:
        assert mesh.stored() == before, f"{method.full_name} was refused ({code.name}) but stored something"


def test_both_services_alive_and_serving_after_fuzzing(mesh: Mesh) -> None:
    assert all(process.poll() is None for process in mesh.processes)
    for channel in (mesh.content, mesh.cj):
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_bytes_that_are_no_message_get_invalid_argument(mesh: Mesh) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        mesh.content.unary_unary("/huleedu.content.v1.ContentService/BatchUpload")(b"\x00", timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid huleedu.content.v1.BatchUploadRequest message" in refused.value.details()

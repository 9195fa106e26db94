"""The one error mapper: validation failures and domain errors -> rich `google.rpc.Status`.

Validation failures become INVALID_ARGUMENT with `google.rpc.BadRequest` field violations and the
original `buf.validate.Violations`; domain errors become their own code with `google.rpc.ErrorInfo`
whose reason is our `ErrorCode` name. grpcurl, Python and Node clients all decode these.
"""

from __future__ import annotations

import errno

import grpc
import protovalidate
import sqlalchemy.exc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from huleedu.common.v1 import common_pb2

from mesh_common.error_codes import ErrorCode
from mesh_common.violations import describe, field_path, printable, violations_of
from mesh_server import errors
from mesh_server.errors import DomainError

ERROR_DOMAIN = "huleedu.cj-mesh"
# The contract's value of each error code (the same names, prefixed).
ERROR_CODE_VALUES = {code: common_pb2.ErrorCode.Value(f"ERROR_CODE_{code}") for code in ErrorCode}


def error_code_value(code: str) -> common_pb2.ErrorCode.ValueType:
    """The contract's ErrorCode for a code the mesh reports or stored; ValueError for any other."""
    return ERROR_CODE_VALUES[ErrorCode(code)]


def _pack(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def error_detail(error: DomainError, service: str, operation: str, correlation_id: str) -> common_pb2.ErrorDetail:
    """A domain error as the contract's ErrorDetail: how an item of a batch call fails without
    failing the call (BatchUpload's per-item results)."""
    detail = common_pb2.ErrorDetail(
        error_code=error_code_value(error.error_code),
        message=error.message,
        correlation_id=correlation_id,
        service=service,
        operation=operation,
        details=error.metadata,
    )
    if error.field:
        detail.details["field"] = error.field
    return detail


def validation_status(error: protovalidate.ValidationError) -> grpc.Status:
    violations = violations_of(error)
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=field_path(v), description=printable(v.message), reason=v.rule_id
            )
            for v in violations.violations
        ]
    )
    info = error_details_pb2.ErrorInfo(reason=ErrorCode.VALIDATION_ERROR, domain=ERROR_DOMAIN)
    message = f"invalid request: {describe(violations)}"
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message=message[:2000],
            details=[_pack(bad_request), _pack(info), _pack(violations)],
        )
    )


def domain_status(error: DomainError) -> grpc.Status:
    code = grpc.StatusCode[error.kind.value]
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=error.error_code, domain=ERROR_DOMAIN, metadata=error.metadata))
    ]
    if error.field:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=error.field, description=error.message, reason=error.error_code
                        )
                    ]
                )
            )
        )
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=details))


def as_domain_error(error: BaseException) -> BaseException:
    """Infrastructure faults as domain errors: a full disk, an unreachable database or file system."""
    if isinstance(error, DomainError):
        return error
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return errors.storage_full()
    if isinstance(
        error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, ConnectionError, TimeoutError)
    ):
        return errors.Unavailable(f"a backing store is unavailable ({type(error).__name__}); retry later")
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return errors.Unavailable("the database connection was lost; retry later")
    if isinstance(error, OSError):
        return errors.Unavailable(f"storage fault ({error.strerror or type(error).__name__}); retry later")
    return error


def internal_status(correlation_id: str) -> grpc.Status:
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INTERNAL,
            message=f"internal error; the server log has the details under correlation id {correlation_id}",
            details=[_pack(error_details_pb2.ErrorInfo(reason=ErrorCode.PROCESSING_ERROR, domain=ERROR_DOMAIN))],
        )
    )

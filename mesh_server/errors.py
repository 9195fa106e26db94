"""Domain errors: raised by service code, turned into gRPC statuses by one mapper.

Pure Python on purpose: domain code raises these without importing grpc. Each error carries an
`error_code` (a `mesh_common.error_codes.ErrorCode`), a message
that says what is wrong and how to fix it, and optionally the request field at fault.
"""

from __future__ import annotations

import enum

from mesh_common.error_codes import ErrorCode


class Kind(enum.Enum):
    """The gRPC status an error maps to (names equal grpc.StatusCode names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"


class DomainError(Exception):
    kind = Kind.INTERNAL
    default_error_code = ErrorCode.PROCESSING_ERROR

    def __init__(
        self,
        message: str,
        *,
        error_code: ErrorCode | None = None,
        field: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code or self.default_error_code
        self.field = field
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    kind = Kind.INVALID_ARGUMENT
    default_error_code = ErrorCode.VALIDATION_ERROR


class NotFound(DomainError):
    kind = Kind.NOT_FOUND
    default_error_code = ErrorCode.RESOURCE_NOT_FOUND


class AlreadyExists(DomainError):
    kind = Kind.ALREADY_EXISTS
    default_error_code = ErrorCode.INVALID_REQUEST


class FailedPrecondition(DomainError):
    kind = Kind.FAILED_PRECONDITION
    default_error_code = ErrorCode.VALIDATION_ERROR


class ResourceExhausted(DomainError):
    kind = Kind.RESOURCE_EXHAUSTED
    default_error_code = ErrorCode.QUOTA_EXCEEDED


class Unavailable(DomainError):
    kind = Kind.UNAVAILABLE
    default_error_code = ErrorCode.SERVICE_UNAVAILABLE


class DataLoss(DomainError):
    """Stored data that is damaged or gone: retrying will not help, repairing will."""

    kind = Kind.DATA_LOSS
    default_error_code = ErrorCode.CONTENT_DAMAGED


class Unauthenticated(DomainError):
    kind = Kind.UNAUTHENTICATED
    default_error_code = ErrorCode.AUTHENTICATION_ERROR


class PermissionDenied(DomainError):
    kind = Kind.PERMISSION_DENIED
    default_error_code = ErrorCode.AUTHORIZATION_ERROR


def storage_full() -> ResourceExhausted:
    """The one message for a full disk, whichever layer notices it."""
    return ResourceExhausted("the storage is full; free space and retry", error_code=ErrorCode.PROCESSING_ERROR)

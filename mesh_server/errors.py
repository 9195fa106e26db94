"""Domain errors: raised by service code, turned into gRPC statuses by one mapper.

Pure Python on purpose: domain code raises these without importing grpc. Each error carries an
`error_code` (an `huleedu.common.v1.ErrorCode` name without its `ERROR_CODE_` prefix), a message
that says what is wrong and how to fix it, and optionally the request field at fault.
"""

from __future__ import annotations

import enum


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
    default_error_code = "PROCESSING_ERROR"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
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
    default_error_code = "VALIDATION_ERROR"


class NotFound(DomainError):
    kind = Kind.NOT_FOUND
    default_error_code = "RESOURCE_NOT_FOUND"


class AlreadyExists(DomainError):
    kind = Kind.ALREADY_EXISTS
    default_error_code = "INVALID_REQUEST"


class FailedPrecondition(DomainError):
    kind = Kind.FAILED_PRECONDITION
    default_error_code = "VALIDATION_ERROR"


class ResourceExhausted(DomainError):
    kind = Kind.RESOURCE_EXHAUSTED
    default_error_code = "QUOTA_EXCEEDED"


class Unavailable(DomainError):
    kind = Kind.UNAVAILABLE
    default_error_code = "SERVICE_UNAVAILABLE"


class DataLoss(DomainError):
    """Stored data that is damaged or gone: retrying will not help, repairing will."""

    kind = Kind.DATA_LOSS
    default_error_code = "CONTENT_DAMAGED"


class Unauthenticated(DomainError):
    kind = Kind.UNAUTHENTICATED
    default_error_code = "AUTHENTICATION_ERROR"


class PermissionDenied(DomainError):
    kind = Kind.PERMISSION_DENIED
    default_error_code = "AUTHORIZATION_ERROR"


def storage_full() -> ResourceExhausted:
    """The one message for a full disk, whichever layer notices it."""
    return ResourceExhausted("the storage is full; free space and retry", error_code="PROCESSING_ERROR")

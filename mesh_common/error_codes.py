"""Every error code the mesh reports: the `huleedu.common.v1.ErrorCode` names without their
`ERROR_CODE_` prefix. Stored as this text (never a database enum type) and sent in
`google.rpc.ErrorInfo.reason`; `mesh_server.status.error_code_value` turns one into the contract's
enum, and a test holds the two lists equal."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # The request
    VALIDATION_ERROR = "VALIDATION_ERROR"  # a field breaks the contract's rules; the field is named
    INVALID_REQUEST = "INVALID_REQUEST"  # well formed, but cannot be done as asked (a duplicate, say)
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"  # what the request names does not exist (or is not the caller's)
    # Who asks
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"  # no valid token, or a judge provider refused its key
    AUTHORIZATION_ERROR = "AUTHORIZATION_ERROR"  # a valid token without the right to do this
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # a size or count limit of the service
    # The services and their stores
    PROCESSING_ERROR = "PROCESSING_ERROR"  # an unexpected failure inside a service
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"  # a service or its database is down or stopping
    CONTENT_SERVICE_ERROR = "CONTENT_SERVICE_ERROR"  # the CJ Service could not use the Content Service
    CONTENT_DAMAGED = "CONTENT_DAMAGED"  # stored content no longer matches its sha256, or is gone
    # The judge (a comparison's error)
    LLM_CONFIGURATION_ERROR = "LLM_CONFIGURATION_ERROR"  # the judge asked for is not configured on this service
    RATE_LIMIT = "RATE_LIMIT"  # the provider asked to slow down (retried with backoff)
    TIMEOUT = "TIMEOUT"  # the provider did not answer in time (retried)
    CONNECTION_ERROR = "CONNECTION_ERROR"  # the provider could not be reached (retried)
    EXTERNAL_SERVICE_ERROR = "EXTERNAL_SERVICE_ERROR"  # the provider failed (HTTP 5xx)
    PARSING_ERROR = "PARSING_ERROR"  # the provider's answer was not the verdict asked for

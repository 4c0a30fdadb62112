"""The one table that turns domain errors into gRPC statuses with rich details."""

from __future__ import annotations

import grpc
import sqlalchemy.exc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tollgate.shared import errors

DOMAIN = "tollgate.dev"
# Statuses travel in HTTP/2 trailers, which peers cap at a few KiB: a request with thousands of bad
# fields is answered with the first ones and a count, never with trailers too big to deliver.
MAX_VIOLATIONS = 20
MAX_MESSAGE = 1024

# Order matters: the first matching class wins.
_STATUS_BY_ERROR: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    # A value the database refuses (a NUL byte in text, a number out of range): the caller's input.
    (sqlalchemy.exc.DataError, grpc.StatusCode.INVALID_ARGUMENT),
    # The database went away or the pool is exhausted: the caller may retry.
    (sqlalchemy.exc.OperationalError, grpc.StatusCode.UNAVAILABLE),
    (sqlalchemy.exc.InterfaceError, grpc.StatusCode.UNAVAILABLE),
    (sqlalchemy.exc.TimeoutError, grpc.StatusCode.UNAVAILABLE),
]


def status_for(error: BaseException) -> status_pb2.Status | None:
    """The google.rpc.Status for a known error, or None for a bug."""
    for error_type, code in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return _status(code, error)
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return _status(grpc.StatusCode.UNAVAILABLE, error)
    return None


def _status(code: grpc.StatusCode, error: BaseException) -> status_pb2.Status:
    if isinstance(error, errors.TollgateError):
        message, reason = error.message, error.reason
    elif code == grpc.StatusCode.INVALID_ARGUMENT:
        message, reason = "a value in the request is not storable (e.g. a NUL character)", "INVALID_VALUE"
    else:
        message, reason = "database unavailable", "DATABASE_UNAVAILABLE"
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))]
    if isinstance(error, errors.InvalidArgument):
        shown = error.violations[:MAX_VIOLATIONS]
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field[:200], description=v.description[:200])
            for v in shown
        ]
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."
    if isinstance(error, errors.InvalidArgument) and len(error.violations) > MAX_VIOLATIONS:
        message += f" (and {len(error.violations) - MAX_VIOLATIONS} more bad fields)"
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def abort(context: grpc.ServicerContext, status: status_pb2.Status) -> None:
    """End the call with a rich status (raises, as context.abort does)."""
    context.abort_with_status(rpc_status.to_status(status))

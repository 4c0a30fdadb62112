"""Domain error bases shared by both services; pure Python, mapped to gRPC once in grpc_errors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path and what is wrong with it."""

    field: str
    description: str


class TollgateError(Exception):
    """Base of every error a use case raises on purpose; `reason` is a stable UPPER_SNAKE code."""

    reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class InvalidArgument(TollgateError, ValueError):
    """The request is malformed; `violations` say which fields and why."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation] | FieldViolation, *, reason: str | None = None):
        items = [violations] if isinstance(violations, FieldViolation) else list(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in items), reason=reason)
        self.violations = items


class NotFound(TollgateError, LookupError):
    """The request names something that does not exist."""

    reason = "NOT_FOUND"


class AlreadyExists(TollgateError):
    """The request would create something that exists already."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(TollgateError):
    """The system is not in a state in which the request can be answered."""

    reason = "FAILED_PRECONDITION"


class OutOfRange(TollgateError):
    """The answer would not fit the contract's types (e.g. a total beyond int64); a narrower request may."""

    reason = "OUT_OF_RANGE"


class Unauthenticated(TollgateError):
    """The call carries no valid credential."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(TollgateError):
    """The credential may not do this, or not for this tenant."""

    reason = "PERMISSION_DENIED"


class ResourceExhausted(TollgateError):
    """The request exceeds a limit of the server (a message larger than it accepts)."""

    reason = "RESOURCE_EXHAUSTED"


class Unavailable(TollgateError):
    """A dependency (database, another service) cannot be reached now; retrying later may work."""

    reason = "UNAVAILABLE"


def require(condition: bool, field: str, description: str) -> None:
    """Raise InvalidArgument for `field` unless `condition` holds."""
    if not condition:
        raise InvalidArgument(FieldViolation(field, description))

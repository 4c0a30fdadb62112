"""Checks of request fields shared by Usage's calls; each failure is a field violation (INVALID_ARGUMENT)."""

from __future__ import annotations

from tollgate.services.usage.domain.admission import MAX_ID_LENGTH
from tollgate.shared import clock, tenant_ids
from tollgate.shared.errors import FieldViolation, InvalidArgument, require

MIN_US, MAX_US = clock.MIN_MICROS, clock.MAX_MICROS


def check_tenant(tenant_id: str) -> None:
    """The tenant a call names, in the format both services share (shared/tenant_ids.py)."""
    problem = tenant_ids.problem(tenant_id)
    require(problem is None, "tenant_id", problem or "")


def check_text(field: str, value: str, *, required: bool = False) -> None:
    require(bool(value) or not required, field, "is required")
    require(
        len(value) <= MAX_ID_LENGTH and "\x00" not in value,
        field,
        f"must be at most {MAX_ID_LENGTH} characters without NUL",
    )


def check_instant(field: str, micros: int | None) -> None:
    """An optional instant: absent, or within the years a Timestamp can hold."""
    require(micros is None or MIN_US <= micros <= MAX_US, field, "must be a timestamp between years 1 and 9999")


def required_instant(field: str, micros: int | None) -> int:
    """An instant the call must give, checked; returned as present, so the caller holds an int."""
    if micros is None:
        raise InvalidArgument(FieldViolation(field, "is required"))
    check_instant(field, micros)
    return micros

"""proto3 JSON to a message, fast for the shapes callers send: the standard library's json (C) and one upb
constructor call, instead of json_format's field-by-field walk in Python, which took most of the CPU of an
HTTP/JSON RecordEvents batch (bench/RESULTS.md, 2026-12-05).

Whatever it is not certain to read exactly as json_format does makes it give up, and the body is read again by
json_format, whose message or error is then the answer: a field it does not know (or both spellings of one), a
duplicate key, null, NaN or Infinity, an escaped surrogate, a value of another JSON type than the field's
(1.0 for an integer, "5" for an enum), two members of a oneof, bytes, float32, a map other than string to
string, a well-known type other than Timestamp and Struct, a timestamp not in the plain RFC 3339 form, nesting
deeper than MAX_DEPTH. upb's constructor refuses a wrong Python type or an out-of-range number by itself.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

# Well under json_format's limit of 100 nested messages, counting a Struct's levels twice (Struct and Value).
MAX_DEPTH = 30
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_INTEGER = re.compile(r"-?[0-9]+")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH = datetime(1970, 1, 1)
_TIMESTAMP_SECONDS = (-62135596800, 253402300799)  # 0001-01-01 to 9999-12-31, as json_format checks
_INTEGERS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}

Convert = Callable[[Any, int], Any]


class _Unsure(Exception):
    """json_format must decide."""


def parse(data: bytes, message_class: type[Message]) -> Message:
    """The message `data` (proto3 JSON, UTF-8) holds, as json_format.Parse reads it (unknown fields refused)."""
    message = _read(data, message_class)
    if message is None:
        message = json_format.Parse(data, message_class(), ignore_unknown_fields=False)
    return message


def _read(data: bytes, message_class: type[Message]) -> Message | None:
    """The fast path: the message, or None when json_format must read it."""
    try:
        if _ESCAPED_SURROGATE.search(data):
            return None
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        return message_class(**_fields(document, message_class.DESCRIPTOR, 1))
    except Exception:  # noqa: BLE001 - any doubt, any refusal: json_format reads it and says why
        return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise _Unsure
    return document


def _no_constant(name: str) -> Any:
    raise _Unsure


# Per message type: JSON key (either spelling) -> (field name, its conversion or None to pass the value to upb
# as it is, its oneof or None).
_PLANS: dict[str, dict[str, tuple[str, Convert | None, Any]]] = {}


def _fields(document: Any, descriptor: Descriptor, depth: int) -> dict[str, Any]:
    """The constructor's keyword arguments for one message."""
    if type(document) is not dict or depth > MAX_DEPTH:
        raise _Unsure
    plan = _PLANS.get(descriptor.full_name) or _plan(descriptor)
    arguments: dict[str, Any] = {}
    oneofs = set()
    for key, value in document.items():
        name, convert, oneof = plan[key]  # KeyError: a field it does not have
        if value is None or name in arguments:
            raise _Unsure
        if oneof is not None:
            if oneof in oneofs:
                raise _Unsure
            oneofs.add(oneof)
        arguments[name] = value if convert is None else convert(value, depth)
    return arguments


def _plan(descriptor: Descriptor) -> dict[str, tuple[str, Convert | None, Any]]:
    plan = {}
    for field in descriptor.fields:
        convert = _converter(field)
        entry = (field.name, None if convert is _as_is else convert, field.containing_oneof)
        plan[field.json_name] = plan[field.name] = entry
    _PLANS[descriptor.full_name] = plan
    return plan


def _converter(field: FieldDescriptor) -> Convert:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        if key.type == value.type == FieldDescriptor.TYPE_STRING:
            return _string_map
        return _unsure
    one = _single(field)
    if field.is_repeated:

        def repeated(value: Any, depth: int) -> list[Any]:
            if type(value) is not list:
                raise _Unsure
            return [one(item, depth) for item in value]

        return repeated
    return one


def _single(field: FieldDescriptor) -> Convert:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        message = field.message_type
        if message.full_name == "google.protobuf.Timestamp":
            return _timestamp
        if message.full_name == "google.protobuf.Struct":
            return _struct
        if message.full_name.startswith("google.protobuf."):
            return _unsure
        return lambda value, depth: _fields(value, message, depth + 1)
    if kind in _INTEGERS:
        return _integer
    if kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM):
        return _as_is  # upb refuses anything but a str (or an enum's int or name)
    if kind == FieldDescriptor.TYPE_BOOL:
        return _boolean
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _double
    return _unsure


def _unsure(value: Any, depth: int) -> Any:
    raise _Unsure


def _as_is(value: Any, depth: int) -> Any:
    return value


def _integer(value: Any, depth: int) -> int:
    if type(value) is int:
        return value
    if type(value) is str and _INTEGER.fullmatch(value):
        return int(value)  # int64 and friends travel as strings in proto3 JSON
    raise _Unsure


def _boolean(value: Any, depth: int) -> bool:
    if type(value) is not bool:
        raise _Unsure
    return value


def _double(value: Any, depth: int) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Unsure
    return float(value)


def _string_map(value: Any, depth: int) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Unsure
    return value  # upb refuses a value that is not a str


def _timestamp(value: Any, depth: int) -> Timestamp:
    """json_format's arithmetic (Timestamp.FromJsonString) on the one form it is sure of, without strptime."""
    if type(value) is not str:
        raise _Unsure
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _Unsure
    year, month, day, hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    delta = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second)) - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    if sign:
        offset = (int(offset_hours) * 60 + int(offset_minutes)) * 60
        seconds += -offset if sign == "+" else offset
    nanos = round(float("0." + fraction) * 1e9) if fraction else 0
    if not _TIMESTAMP_SECONDS[0] <= seconds <= _TIMESTAMP_SECONDS[1]:
        raise _Unsure
    return Timestamp(seconds=seconds, nanos=nanos)


def _struct(value: Any, depth: int) -> Struct:
    if type(value) is not dict or not _shallow(value, depth + 1):
        raise _Unsure
    struct = Struct()
    struct.update(value)  # JSON null, bool, number, string, object and array to Value, as json_format maps them
    return struct


def _shallow(value: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if type(value) is dict:
        return all(_shallow(item, depth + 2) for item in value.values())
    if type(value) is list:
        return all(_shallow(item, depth + 2) for item in value)
    return True

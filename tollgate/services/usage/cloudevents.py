"""POST /v1/events on Usage's HTTP port: CloudEvents in, RecordEvents' verdicts out (docs/api.md, CloudEvents).

Transport only. The CloudEvents SDK reads each event (structured `application/cloudevents+json`, a batch
`application/cloudevents-batch+json`, or binary mode: `ce-*` headers and an `application/json` body); this module
maps it onto a RecordEventsRequest and hands that, as binary protobuf, to the RecordEvents RPC path of the same
HTTP server. So the event meets the interceptor (token, scope, request id, log line, metrics) and the ingest use
case exactly as a RecordEvents call does, and the answer is RecordEvents' response as JSON.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from tollgate.services.usage.domain.admission import MAX_BATCH, MAX_ID_LENGTH
from tollgate.shared import auth, grpc_errors, tenant_ids
from tollgate.shared.errors import FieldViolation, InvalidArgument, ResourceExhausted, TollgateError
from tollgate.usage.v1 import usage_pb2 as pb

PATH = "/v1/events"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BINARY = "application/json"  # binary mode: the attributes in ce-* headers, `data` the body
CONTENT_TYPES = (STRUCTURED, BATCH, BINARY)
REQUIRED = ("specversion", "id", "source", "type")
TENANT_EXTENSION = "tenantid"
# What `data` may hold, in either spelling proto3 JSON accepts; anything else is refused by name, as an unknown
# field of a JSON RPC body is, so a typo never silently drops a value.
DATA_FIELDS = {
    "quantity": "quantity",
    "actor_id": "actor_id",
    "actorId": "actor_id",
    "dimensions": "dimensions",
    "metadata": "metadata",
    "correlation_id": "correlation_id",
    "correlationId": "correlation_id",
}
INT64 = (-(2**63), 2**63 - 1)
INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}")
JSON_TYPE = JSONFormat.JSON_CONTENT_TYPE_PATTERN
FORMAT = JSONFormat()
# Headers of the caller that must not reach the RPC: its body is protobuf we wrote, uncompressed, and its answer
# must come back uncompressed for us to turn into JSON.
NOT_FORWARDED = ("HTTP_CONTENT_ENCODING", "HTTP_ACCEPT_ENCODING", "HTTP_CONNECT_", "HTTP_CE_")
CONNECT_STATUS = {"invalid_argument": HTTPStatus.BAD_REQUEST, "resource_exhausted": HTTPStatus.TOO_MANY_REQUESTS}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def event_id(source: str, id_: str) -> str:
    """The Tollgate event_id of the CloudEvent (source, id): CloudEvents makes the pair unique, so a redelivery
    maps to the same event_id (DUPLICATE) and the same id from two sources to two. Readable while it fits the
    128 characters of an event_id; the length of `source` makes the split unambiguous."""
    readable = f"ce:{len(source)}:{source}:{id_}"
    if len(readable) <= MAX_ID_LENGTH:
        return readable
    pair = f"{len(source)}:{source}:{id_}".encode("utf-8", "surrogatepass")
    return f"ce:sha256:{hashlib.sha256(pair).hexdigest()}"


@dataclass(frozen=True)
class Converted:
    """One CloudEvent as the event RecordEvents takes, and the tenant its extension names (None: none)."""

    event: pb.UsageEvent
    tenant: str | None


def structured(body: Any, field: str, violations: list[FieldViolation]) -> Converted | None:
    """One structured-mode event (a JSON value of the body) read by the SDK and converted; None, with
    `violations` added to, when it is not a CloudEvent Tollgate can take. `field` prefixes the names."""
    if not isinstance(body, dict):
        violations.append(FieldViolation(field or "body", "must be a JSON object: one CloudEvent"))
        return None
    before = len(violations)
    # The SDK makes up a specversion, an id and a time an event lacks; an id made up would defeat deduplication.
    for name in REQUIRED:
        if name not in body:
            violations.append(FieldViolation(_at(field, name), "is required (CloudEvents 1.0)"))
    if "data_base64" in body:
        violations.append(FieldViolation(_at(field, "data_base64"), "must not be used: data is a JSON object"))
    if "time" in body and not isinstance(body["time"], str):
        violations.append(FieldViolation(_at(field, "time"), "must be an RFC 3339 string"))
    if len(violations) > before:
        return None
    return _convert(lambda: FORMAT.read(CloudEvent, json.dumps(body)), "time" in body, field, violations)


def binary(headers: Mapping[str, str], body: bytes, violations: list[FieldViolation]) -> Converted | None:
    """The binary-mode event of a request: attributes in ce-* headers (percent-encoded), data the JSON body."""
    for name in REQUIRED:
        if f"ce-{name}" not in headers:
            violations.append(FieldViolation(f"ce-{name}", "is required (CloudEvents 1.0 binary mode)"))
    if violations:
        return None
    message = HTTPMessage(headers=dict(headers), body=body)
    return _convert(lambda: from_binary(message, FORMAT, CloudEvent), "ce-time" in headers, "ce-", violations)


def _at(field: str, name: str) -> str:
    if field == "ce-":
        return "data" if name == "data" else f"ce-{name}"
    return f"{field}.{name}" if field else name


def _convert(read: Callable[[], Any], timed: bool, field: str, violations: list[FieldViolation]) -> Converted | None:
    """The SDK's event, validated by the SDK (required attributes, types, specversion 1.0, extension names), then
    mapped: type the metric, time occurred_at, source with id the event_id, data the rest."""
    before = len(violations)
    try:
        ce = read()
    except CloudEventValidationError as error:
        for name, problems in error.errors.items():
            violations.append(FieldViolation(_at(field, name), "; ".join(str(p) for p in problems)[:200]))
        return None
    except RecursionError:
        violations.append(FieldViolation(_at(field, "data"), "is nested too deeply"))
        return None
    except (ValueError, TypeError, OverflowError) as error:  # dateutil's reading of time
        violations.append(FieldViolation(_at(field, "time"), f"is not an RFC 3339 instant: {error}"[:200]))
        return None
    event = pb.UsageEvent()
    for name, value, target in (
        ("type", ce.get_type(), "metric"),
        ("source", ce.get_source(), "source_service"),
    ):
        _set_text(event, target, value, _at(field, name), violations)
    _text_ok(ce.get_id(), _at(field, "id"), violations)
    if len(violations) == before:
        event.event_id = event_id(ce.get_source(), ce.get_id())
    if timed:
        try:
            event.occurred_at.FromDatetime(ce.get_time())
        except (ValueError, OverflowError) as error:
            violations.append(FieldViolation(_at(field, "time"), f"is not a representable instant: {error}"[:200]))
    # A CloudEvent without time is well formed: the event is REJECTED MISSING_FIELD occurred_at, per event, as a
    # RecordEvents event without occurred_at is.
    content_type = ce.get_datacontenttype()
    if content_type is not None and not JSON_TYPE.match(content_type):
        violations.append(FieldViolation(_at(field, "datacontenttype"), "must be a JSON type: data is a JSON object"))
    data = ce.get_data()
    if not isinstance(data, dict):
        violations.append(FieldViolation(_at(field, "data"), "must be a JSON object holding at least quantity"))
        return None
    _data(event, data, _at(field, "data"), violations)
    if not event.actor_id and ce.get_subject() is not None:
        _set_text(event, "actor_id", ce.get_subject(), _at(field, "subject"), violations)
    tenant = ce.get_extension(TENANT_EXTENSION)
    if tenant is not None:
        problem = tenant_ids.problem(tenant) if isinstance(tenant, str) else "must be a string"
        if problem is not None:
            violations.append(FieldViolation(_at(field, TENANT_EXTENSION), problem))
    return Converted(event, tenant) if len(violations) == before else None


def _data(event: pb.UsageEvent, data: dict, field: str, violations: list[FieldViolation]) -> None:
    """quantity (required: an integer, or a string of one as proto3 JSON writes int64), actor_id, dimensions (an
    object of strings), metadata (an object), correlation_id."""
    seen: set[str] = set()
    for key, value in data.items():
        name = DATA_FIELDS.get(key)
        path = f"{field}.{key}"
        if name is None:
            violations.append(FieldViolation(path, f"is not a field of a usage event: {', '.join(DATA_FIELDS)}"))
            continue
        if name in seen:
            violations.append(FieldViolation(path, "is given twice (in both spellings)"))
            continue
        seen.add(name)
        if name == "quantity":
            _quantity(event, value, path, violations)
        elif name == "dimensions":
            _dimensions(event, value, path, violations)
        elif name == "metadata":
            _metadata(event, value, path, violations)
        elif isinstance(value, str):
            _set_text(event, name, value, path, violations)
        else:
            violations.append(FieldViolation(path, "must be a string"))
    if "quantity" not in seen:
        violations.append(FieldViolation(f"{field}.quantity", "is required: how much was used, an integer"))


def _quantity(event: pb.UsageEvent, value: Any, path: str, violations: list[FieldViolation]) -> None:
    if isinstance(value, str) and INTEGER_TEXT.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        violations.append(FieldViolation(path, "must be an integer (a JSON number or a string of digits)"))
    elif not INT64[0] <= value <= INT64[1]:
        violations.append(FieldViolation(path, "is out of the int64 range"))
    else:
        # Zero, negative or past 10^12 is admission's to judge: REJECTED per event, as over RecordEvents.
        event.quantity = value


def _dimensions(event: pb.UsageEvent, value: Any, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(value, dict):
        violations.append(FieldViolation(path, "must be a JSON object of strings"))
        return
    for key, text in value.items():
        if not isinstance(text, str):
            violations.append(FieldViolation(f"{path}.{key}", "must be a string"))
        elif _text_ok(key, f"{path}.{key}", violations) and _text_ok(text, f"{path}.{key}", violations):
            event.dimensions[key] = text


def _metadata(event: pb.UsageEvent, value: Any, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(value, dict):
        violations.append(FieldViolation(path, "must be a JSON object"))
        return
    metadata = struct_pb2.Struct()
    try:
        metadata.update(value)
    except (ValueError, TypeError, RecursionError) as error:
        violations.append(FieldViolation(path, f"cannot be held: {error}"[:200]))
        return
    event.metadata.CopyFrom(metadata)


def _text_ok(value: str, path: str, violations: list[FieldViolation]) -> bool:
    """JSON's \\ud800 escapes make strings that are no text: refused by name, never an encoding error later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        violations.append(FieldViolation(path, "holds a lone surrogate escape: not text"))
        return False
    return True


def _set_text(event: pb.UsageEvent, target: str, value: str, path: str, violations: list[FieldViolation]) -> None:
    if _text_ok(value, path, violations):
        setattr(event, target, value)


def request_of(converted: list[Converted], caller_tenant: str | None, field_of: Callable[[int], str]) -> bytes:
    """The RecordEventsRequest of a batch, as binary protobuf. Each event's tenant is its tenantid extension,
    else the tenant of a tenant token; a platform token must name it, and one batch belongs to one tenant. A
    tenant token naming another tenant is refused by RecordEvents' own check (PERMISSION_DENIED)."""
    tenants = [c.tenant if c.tenant is not None else caller_tenant for c in converted]
    for index, tenant in enumerate(tenants):
        if tenant is None:
            why = "is required with a platform token: the tenant the event belongs to"
            raise InvalidArgument(FieldViolation(field_of(index) + TENANT_EXTENSION, why))
        if tenant != tenants[0]:
            why = f"names {tenant!r}, another tenant than the batch's first event ({tenants[0]!r}): send one batch each"
            raise InvalidArgument(FieldViolation(field_of(index) + TENANT_EXTENSION, why))
    return pb.RecordEventsRequest(tenant_id=tenants[0] or "", events=[c.event for c in converted]).SerializeToString()


class EventsApp:
    """The WSGI application of POST /v1/events, made around the RPC router (http.RouteFactory)."""

    def __init__(
        self, rpc: WSGIApp, *, authenticator: auth.Authenticator, record_path: str, scope: str, max_body_bytes: int
    ):
        self._rpc, self._authenticator = rpc, authenticator
        self._record_path, self._scope, self._max = record_path, scope, max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            message = f"{environ.get('REQUEST_METHOD')} {PATH}: events are sent with POST"
            return _answer(start_response, HTTPStatus.METHOD_NOT_ALLOWED, "unimplemented", message, ("allow", "POST"))
        content_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        encoding = environ.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
        if content_type not in CONTENT_TYPES or encoding != "identity":
            what = f"content type {content_type[:100]!r}" if content_type not in CONTENT_TYPES else "a compressed body"
            message = f"{what} is not taken on {PATH}: send {', '.join(CONTENT_TYPES)} (binary mode), uncompressed"
            accept = ("accept-post", ", ".join(CONTENT_TYPES))
            return _answer(start_response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unimplemented", message, accept)
        try:
            body = _read(environ, self._max)
        except TollgateError as error:
            return _error(start_response, error)
        caller = self._caller(environ)
        if caller is None:
            # Refused credentials are the interceptor's to answer: the same status, log line and metrics.
            return self._forward(environ, start_response, b"")
        try:
            request = self._request(environ, content_type, body, caller.tenant_id)
        except TollgateError as error:
            return _error(start_response, error)
        return self._forward(environ, start_response, request)

    def _caller(self, environ: dict[str, Any]) -> auth.Principal | None:
        """The caller when its token may record events (a lookup the interceptor repeats from its cache)."""
        try:
            principal = self._authenticator.authenticate(environ.get("HTTP_AUTHORIZATION"))
            auth.require_scope(principal, self._scope)
        except auth.REFUSALS:
            return None
        return principal

    def _request(self, environ: dict[str, Any], content_type: str, body: bytes, tenant: str | None) -> bytes:
        violations: list[FieldViolation] = []
        if content_type == BINARY:
            headers = _ce_headers(environ) | {"content-type": environ.get("CONTENT_TYPE", BINARY)}
            one = binary(headers, body, violations)
            return _checked([one] if one else [], violations, tenant, lambda _i: "ce-")
        value = _json(body)
        if content_type == STRUCTURED:
            one = structured(value, "", violations)
            return _checked([one] if one else [], violations, tenant, lambda _i: "")
        if not isinstance(value, list):
            raise InvalidArgument(FieldViolation("body", "must be a JSON array of CloudEvents (a batch)"))
        if not 1 <= len(value) <= MAX_BATCH:
            raise InvalidArgument(FieldViolation("body", f"has {len(value)} events; a batch holds 1 to {MAX_BATCH}"))
        converted = [structured(item, f"[{i}]", violations) for i, item in enumerate(value)]
        return _checked([c for c in converted if c], violations, tenant, lambda i: f"[{i}].")

    def _forward(self, environ: dict[str, Any], start_response: Callable[..., Any], request: bytes) -> list[bytes]:
        """RecordEvents through the RPC router with `request` as binary protobuf; its answer as JSON."""
        inner = {key: value for key, value in environ.items() if not key.startswith(NOT_FORWARDED)}
        if "HTTP_CONNECT_TIMEOUT_MS" in environ:
            inner["HTTP_CONNECT_TIMEOUT_MS"] = environ["HTTP_CONNECT_TIMEOUT_MS"]
        inner |= {
            "PATH_INFO": self._record_path,
            "CONTENT_TYPE": "application/proto",
            "CONTENT_LENGTH": str(len(request)),
            "wsgi.input": io.BytesIO(request),
        }
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            answer["status"], answer["headers"] = status, headers
            return lambda _data: None

        chunks = self._rpc(inner, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = answer["status"], answer["headers"]
        kept = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length", "content-encoding")]
        if status.startswith("200"):
            try:
                response = pb.RecordEventsResponse.FromString(body)
            except DecodeError:  # never from our own RPC; said plainly rather than as a verdict-less 200
                return _answer(start_response, HTTPStatus.BAD_GATEWAY, "internal", "RecordEvents answered no message")
            body = json_format.MessageToJson(response, indent=None).encode()
        start_response(status, [("content-type", "application/json"), ("content-length", str(len(body))), *kept])
        return [body]


def _checked(
    converted: list[Converted], violations: list[FieldViolation], tenant: str | None, field_of: Callable[[int], str]
) -> bytes:
    if violations:
        raise InvalidArgument(violations)
    return request_of(converted, tenant, field_of)


def _ce_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The ce-* headers of the request, by their lower-case names ('ce-specversion')."""
    return {key[5:].lower().replace("_", "-"): value for key, value in environ.items() if key.startswith("HTTP_CE_")}


def _json(body: bytes) -> Any:
    """The body as strict JSON (NaN and Infinity are not JSON), or INVALID_ARGUMENT saying why not."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(body, parse_constant=refuse)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidArgument(FieldViolation("body", f"is not JSON: {error}"[:200])) from None


def _read(environ: dict[str, Any], limit: int) -> bytes:
    """The request body, reading no more than `limit` bytes: past it, RESOURCE_EXHAUSTED as an RPC's body."""
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidArgument(FieldViolation("content-length", "is not a number")) from None
        if size > limit:
            raise _too_large(size, limit)
        parts, total = [], 0
        while total < size and (chunk := stream.read(size - total)):
            parts.append(chunk)
            total += len(chunk)
        return b"".join(parts)
    parts, total = [], 0
    while chunk := stream.read(min(65536, limit + 1 - total)):
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_large(total, limit)
    return b"".join(parts)


def _too_large(size: int, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"request body of {size} bytes is larger than the {limit} this server accepts; send smaller batches"
    )


def _error(start_response: Callable[..., Any], error: TollgateError) -> list[bytes]:
    """A refusal before RecordEvents runs, as a Connect error with the details the interceptor would send."""
    status = grpc_errors.status_for(error)
    assert status is not None  # every TollgateError has its status
    code = "resource_exhausted" if isinstance(error, ResourceExhausted) else "invalid_argument"
    details = [
        {"type": d.type_url.rpartition("/")[2], "value": base64.b64encode(d.value).decode().rstrip("=")}
        for d in status.details
    ]
    return _answer(start_response, CONNECT_STATUS[code], code, status.message, details=details)


def _answer(
    start_response: Callable[..., Any],
    status: HTTPStatus,
    code: str,
    message: str,
    *headers: tuple[str, str],
    details: list[dict] | None = None,
) -> list[bytes]:
    body = json.dumps({"code": code, "message": message} | ({"details": details} if details else {})).encode()
    start_response(
        f"{status.value} {status.phrase}",
        [("content-type", "application/json"), ("content-length", str(len(body))), *headers],
    )
    return [body]


def route(
    *, authenticator: auth.Authenticator, record_path: str, scope: str, max_body_bytes: int
) -> Callable[[WSGIApp], WSGIApp]:
    """The http.RouteFactory of POST /v1/events."""
    return lambda rpc: EventsApp(
        rpc, authenticator=authenticator, record_path=record_path, scope=scope, max_body_bytes=max_body_bytes
    )

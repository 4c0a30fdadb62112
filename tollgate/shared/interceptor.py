"""One server interceptor for the rules every call follows: request id, authentication,
scope check, message size, error mapping, a JSON log line, RED metrics."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status
from prometheus_client import Counter

from tollgate.shared import auth, credentials, grpc_errors, logs, metrics, tracing
from tollgate.shared.errors import FieldViolation, InvalidArgument, ResourceExhausted

log = logging.getLogger("tollgate.shared.interceptor")

# Health and reflection answer without a token (Kubernetes probes, grpcurl list/describe).
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
REQUEST_ID = "x-request-id"
# go-grpc-prometheus's grpc_type label, by whether requests and responses stream.
GRPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}


class CallInterceptor(grpc.ServerInterceptor):
    """Wraps each handler; `method_scopes` maps '/pkg.Service/Method' to the scope it needs.

    `server` names the service in every log line ("usage", "policy"); a request message larger than
    `max_message_bytes` is answered RESOURCE_EXHAUSTED, counted and logged like any other call.
    """

    def __init__(
        self, *, authenticator: auth.Authenticator, method_scopes: dict[str, str], server: str, max_message_bytes: int
    ):
        self._authenticator = authenticator
        self._method_scopes = method_scopes
        self.server = server
        self.max_message_bytes = max_message_bytes
        # Wrapped handlers are built once per method: intercept_service runs on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, Counter]] = {}
        self._lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is None:
            handler = continuation(handler_call_details)
            if handler is None or method.lstrip("/").partition("/")[0] in OPEN_SERVICES:
                return handler
            call = _Call(self, method, GRPC_TYPES[handler.request_streaming, handler.response_streaming])
            known = _wrap(handler, call), call.started
            with self._lock:
                self._wrapped[method] = known
        wrapped, started = known
        # Counted on arrival, before gRPC reads the request: a call the transport refuses before any
        # handler runs (beyond its hard message bound, over the concurrency limit) is still counted here.
        started.inc()
        return wrapped

    def authorize(self, method: str, metadata: dict):
        principal = self._authenticator.authenticate(metadata.get("authorization"))
        scope = self._method_scopes.get(method)
        if scope is None:
            raise auth.AccessRefused(
                f"no credential may call {method}", why="no scope grants the method", token_id=principal.token_id
            )
        auth.require_scope(principal, scope)
        return principal


def _wrap(handler: grpc.RpcMethodHandler, call: _Call) -> grpc.RpcMethodHandler:
    # Requests arrive as bytes and are parsed inside the wrapper: gRPC's own parsing would answer a
    # malformed body INTERNAL, where it is the caller's error (INVALID_ARGUMENT).
    one = _parser(handler.request_deserializer, call.max_message_bytes)
    each = _stream_parser(handler.request_deserializer, call.max_message_bytes)
    serializers = (None, _serializer(handler.response_serializer))
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(call.unary(handler.unary_unary, one), *serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(call.unary(handler.stream_unary, each), *serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(call.streaming(handler.unary_stream, one), *serializers)
    return grpc.stream_stream_rpc_method_handler(call.streaming(handler.stream_stream, each), *serializers)


def _serializer(serialize):
    """The response's serializer, which passes a response a handler already encoded (bytes, as kept encodings
    are) as it is."""
    if serialize is None:
        return None
    return lambda response: response if type(response) is bytes else serialize(response)


def _parser(deserializer, max_bytes: int):
    """Bytes -> request message; a body larger than `max_bytes` is RESOURCE_EXHAUSTED, one that is not a
    message INVALID_ARGUMENT."""

    def parse(raw: bytes):
        if len(raw) > max_bytes:
            raise ResourceExhausted(
                f"request message of {len(raw)} bytes is larger than the {max_bytes} "
                f"this server accepts; send smaller batches"
            )
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except DecodeError as error:
            raise InvalidArgument(FieldViolation("request", f"is not a valid message: {error}")) from None

    return parse


def _stream_parser(deserializer, max_bytes: int):
    parse = _parser(deserializer, max_bytes)
    return lambda messages: (parse(raw) for raw in messages)


class _Call:
    """The per-method wrapper: everything that does not change between calls is computed once."""

    def __init__(self, interceptor: CallInterceptor, method: str, grpc_type: str):
        self._interceptor, self._method, self._type = interceptor, method, grpc_type
        self._service, _, self._name = method.lstrip("/").partition("/")
        self.max_message_bytes = interceptor.max_message_bytes
        self.started = metrics.RPC_STARTED.labels(grpc_type, self._service, self._name)
        self._seconds = metrics.RPC_SECONDS.labels(grpc_type, self._service, self._name)
        self._handled: dict[grpc.StatusCode, Counter] = {}

    def unary(self, behavior, parse):
        def wrapped(request, context):
            started, state = time.perf_counter(), _CallState()
            try:
                self._begin(context, state)
                return behavior(parse(request), context)
            except Exception as error:  # noqa: BLE001 - the one place errors become statuses
                self._fail(error, context, state)
            finally:
                self._end(context, started, state)

        return wrapped

    def streaming(self, behavior, parse):
        def wrapped(request, context):
            started, state = time.perf_counter(), _CallState()
            try:
                self._begin(context, state)
                yield from behavior(parse(request), context)
            except Exception as error:  # noqa: BLE001
                self._fail(error, context, state)
            finally:
                self._end(context, started, state)

        return wrapped

    def _begin(self, context, state: _CallState) -> None:
        """Stamp the request id (sent back with the trailers), then authenticate (raises when refused)."""
        metadata = dict(context.invocation_metadata())
        state.request_id = (metadata.get(REQUEST_ID) or "")[:128] or uuid.uuid4().hex
        context.set_trailing_metadata(((REQUEST_ID, state.request_id),))
        state.principal = self._interceptor.authorize(self._method, metadata)
        state.token = auth.set_principal(state.principal)

    def _fail(self, error: Exception, context, state: _CallState) -> None:
        if isinstance(error, auth.REFUSALS):
            state.refusal = error
        if isinstance(error, grpc.RpcError) and not context.is_active():
            # The request stream broke under the handler: the peer went away, or the transport cut a message
            # beyond its hard bound. Nobody is left to answer, and no bug of ours is involved.
            context.set_code(grpc.StatusCode.CANCELLED)
            return
        status = grpc_errors.status_for(error)
        if status is not None:
            rich = rpc_status.to_status(status)
            context.abort_with_status(_with_request_id(rich, state.request_id))
        if context.code() is not None:  # the servicer aborted on purpose
            raise error
        log.exception(
            "unhandled error in %s",
            self._method,
            extra={
                "fields": {
                    "service": self._interceptor.server,
                    "grpc_service": self._service,
                    "grpc_method": self._name,
                    "request_id": state.request_id,
                    **logs.trace_ids(),
                }
            },
        )
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _end(self, context, started: float, state: _CallState) -> None:
        elapsed = time.perf_counter() - started
        if state.token is not None:
            auth.reset_principal(state.token)
        code = context.code() or grpc.StatusCode.OK
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = metrics.RPC_HANDLED.labels(self._type, self._service, self._name, code.name)
        counter.inc()
        self._seconds.observe(elapsed)
        tracing.annotate_call(state.request_id, code)
        # A refused call is a WARNING, so it shows at every level an operator would run at.
        level = logging.INFO if state.refusal is None else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"fields": self._log_fields(context, code, elapsed, state)})

    def _log_fields(self, context, code: grpc.StatusCode, elapsed: float, state: _CallState) -> dict:
        """The call's log line: who (the credential id, never its secret), what, how it ended, and why refused."""
        principal, refusal = state.principal, state.refusal
        fields = {
            "service": self._interceptor.server,
            "grpc_service": self._service,
            "grpc_method": self._name,
            "code": code.name,
            "duration_ms": round(elapsed * 1000, 3),
            "request_id": state.request_id,
            **logs.trace_ids(),
            "tenant": credentials.tenant_label(principal.tenant_id) if principal else "",
            "token_id": principal.token_id if principal else (refusal.token_id if refusal else ""),
            "peer": context.peer(),
        }
        if refusal is not None:
            fields["refused"] = refusal.why
        return fields


def _with_request_id(status, request_id: str):
    """The status with the request id beside its rich details in the trailers."""
    return status._replace(trailing_metadata=(*status.trailing_metadata, (REQUEST_ID, request_id)))


class _CallState:
    __slots__ = ("request_id", "principal", "token", "refusal")

    def __init__(self):
        self.request_id, self.principal, self.token, self.refusal = "", None, None, None

"""One server interceptor for the rules every call follows: request id, authentication,
scope check, error mapping, a JSON log line, RED metrics."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from shared import auth, grpc_errors, metrics
from shared.errors import FieldViolation, InvalidArgument, PermissionDenied

log = logging.getLogger("tollgate.rpc")

# Health and reflection answer without a token (Kubernetes probes, grpcurl list/describe).
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")
REQUEST_ID = "x-request-id"


class CallInterceptor(grpc.ServerInterceptor):
    """Wraps each handler; `method_scopes` maps '/pkg.Service/Method' to the scope it needs."""

    def __init__(self, *, authenticator: auth.Authenticator, method_scopes: dict[str, str]):
        self._authenticator = authenticator
        self._method_scopes = method_scopes
        # Wrapped handlers are built once per method: intercept_service runs on every call.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or method.lstrip("/").partition("/")[0] in OPEN_SERVICES:
            return handler
        wrapped = _wrap(handler, _Call(self, method))
        with self._lock:
            self._wrapped[method] = wrapped
        return wrapped

    def authorize(self, method: str, metadata: dict):
        principal = self._authenticator.authenticate(metadata.get("authorization"))
        scope = self._method_scopes.get(method)
        if scope is None:
            raise PermissionDenied(f"no credential may call {method}")
        auth.require_scope(principal, scope)
        return principal


def _wrap(handler: grpc.RpcMethodHandler, call: "_Call") -> grpc.RpcMethodHandler:
    # Requests arrive as bytes and are parsed inside the wrapper: gRPC's own parsing would answer a
    # malformed body INTERNAL, where it is the caller's error (INVALID_ARGUMENT).
    one, each = _parser(handler.request_deserializer), _stream_parser(handler.request_deserializer)
    serializers = (None, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(call.unary(handler.unary_unary, one), *serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(call.unary(handler.stream_unary, each), *serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(call.streaming(handler.unary_stream, one), *serializers)
    return grpc.stream_stream_rpc_method_handler(call.streaming(handler.stream_stream, each), *serializers)


def _parser(deserializer):
    """Bytes -> request message; a body that is not one is INVALID_ARGUMENT."""
    if deserializer is None:
        return lambda raw: raw

    def parse(raw: bytes):
        try:
            return deserializer(raw)
        except DecodeError as error:
            raise InvalidArgument(FieldViolation("request", f"is not a valid message: {error}")) from None
    return parse


def _stream_parser(deserializer):
    parse = _parser(deserializer)
    return lambda messages: (parse(raw) for raw in messages)


class _Call:
    """The per-method wrapper: everything that does not change between calls is computed once."""

    def __init__(self, interceptor: CallInterceptor, method: str):
        self._interceptor, self._method = interceptor, method
        self._service, _, self._name = method.lstrip("/").partition("/")
        self._seconds = metrics.RPC_SECONDS.labels(self._service, self._name)
        self._handled: dict[grpc.StatusCode, object] = {}

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

    def _begin(self, context, state: "_CallState") -> None:
        """Stamp the request id (sent back with the trailers), then authenticate (raises when refused)."""
        metadata = dict(context.invocation_metadata())
        state.request_id = (metadata.get(REQUEST_ID) or "")[:128] or uuid.uuid4().hex
        context.set_trailing_metadata(((REQUEST_ID, state.request_id),))
        state.principal = self._interceptor.authorize(self._method, metadata)
        state.token = auth.set_principal(state.principal)

    def _fail(self, error: Exception, context, state: "_CallState") -> None:
        status = grpc_errors.status_for(error)
        if status is not None:
            rich = rpc_status.to_status(status)
            context.abort_with_status(_with_request_id(rich, state.request_id))
        if context.code() is not None:  # the servicer aborted on purpose
            raise error
        log.exception("unhandled error in %s", self._method, extra={"fields": {
            "method": self._method, "request_id": state.request_id}})
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _end(self, context, started: float, state: "_CallState") -> None:
        elapsed = time.perf_counter() - started
        if state.token is not None:
            auth.reset_principal(state.token)
        code = context.code() or grpc.StatusCode.OK
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = metrics.RPC_HANDLED.labels(self._service, self._name, code.name)
        counter.inc()
        self._seconds.observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            principal = state.principal
            log.info("rpc", extra={"fields": {
                "service": self._service, "method": self._name, "code": code.name,
                "duration_ms": round(elapsed * 1000, 3), "request_id": state.request_id,
                "tenant": (principal.tenant_id or "*") if principal else "", "peer": context.peer(),
            }})


def _with_request_id(status, request_id: str):
    """The status with the request id beside its rich details in the trailers."""
    return status._replace(trailing_metadata=(*status.trailing_metadata, (REQUEST_ID, request_id)))


class _CallState:
    __slots__ = ("request_id", "principal", "token")

    def __init__(self):
        self.request_id, self.principal, self.token = "", None, None

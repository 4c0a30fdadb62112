"""One server interceptor for the rules every call follows: request id, authentication,
scope check, error mapping, a JSON log line, RED metrics."""

from __future__ import annotations

import logging
import time
import uuid

import grpc

from shared import auth, grpc_errors, metrics
from shared.errors import PermissionDenied, TollgateError

log = logging.getLogger("tollgate.rpc")

# Health and reflection answer without a token (Kubernetes probes, grpcurl list/describe).
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")


class CallInterceptor(grpc.ServerInterceptor):
    """Wraps each handler; `method_scopes` maps '/pkg.Service/Method' to the scope it needs."""

    def __init__(self, *, authenticator: auth.Authenticator, method_scopes: dict[str, str]):
        self._authenticator = authenticator
        self._method_scopes = method_scopes

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        service, _, name = method.lstrip("/").partition("/")
        if service in OPEN_SERVICES:
            return handler
        call = _Call(self, method, service, name)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                call.unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                call.unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                call.streaming(handler.unary_stream), handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            call.streaming(handler.stream_stream), handler.request_deserializer, handler.response_serializer)

    def authorize(self, method: str, context: grpc.ServicerContext):
        metadata = dict(context.invocation_metadata())
        principal = self._authenticator.authenticate(metadata.get("authorization"))
        scope = self._method_scopes.get(method)
        if scope is None:
            raise PermissionDenied(f"no credential may call {method}")
        auth.require_scope(principal, scope)
        return principal


class _Call:
    def __init__(self, interceptor: CallInterceptor, method: str, service: str, name: str):
        self._interceptor, self._method, self._service, self._name = interceptor, method, service, name

    def unary(self, behavior):
        def wrapped(request, context):
            started, state = time.perf_counter(), _CallState()
            try:
                self._begin(context, state)
                return behavior(request, context)
            except Exception as error:  # noqa: BLE001 - the one place errors become statuses
                self._fail(error, context)
            finally:
                self._end(context, started, state)
        return wrapped

    def streaming(self, behavior):
        def wrapped(request, context):
            started, state = time.perf_counter(), _CallState()
            try:
                self._begin(context, state)
                yield from behavior(request, context)
            except Exception as error:  # noqa: BLE001
                self._fail(error, context)
            finally:
                self._end(context, started, state)
        return wrapped

    def _begin(self, context, state: "_CallState") -> None:
        """Stamp the request id, then authenticate (raises when the call is refused)."""
        metadata = dict(context.invocation_metadata())
        state.request_id = (metadata.get("x-request-id") or "")[:128] or uuid.uuid4().hex
        context.send_initial_metadata((("x-request-id", state.request_id),))
        state.principal = self._interceptor.authorize(self._method, context)
        state.token = auth.set_principal(state.principal)

    def _fail(self, error: Exception, context) -> None:
        status = grpc_errors.status_for(error)
        if status is not None:
            grpc_errors.abort(context, status)
        if context.code() is not None:  # the servicer aborted on purpose
            raise error
        log.exception("unhandled error in %s", self._method, extra={"fields": {"method": self._method}})
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _end(self, context, started: float, state: "_CallState") -> None:
        elapsed = time.perf_counter() - started
        if state.token is not None:
            auth.reset_principal(state.token)
        code = context.code() or grpc.StatusCode.OK
        metrics.observe(self._service, self._name, code.name, elapsed)
        principal = state.principal
        log.info("rpc", extra={"fields": {
            "service": self._service, "method": self._name, "code": code.name,
            "duration_ms": round(elapsed * 1000, 3), "request_id": state.request_id,
            "tenant": (principal.tenant_id or "*") if principal else "", "peer": context.peer(),
        }})


class _CallState:
    __slots__ = ("request_id", "principal", "token")

    def __init__(self):
        self.request_id, self.principal, self.token = "", None, None

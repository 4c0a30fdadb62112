"""Every RPC of a service over HTTP/1.1 as well: the Connect protocol (JSON or binary protobuf) and gRPC-Web.

No second implementation and no extra hop: each route runs the handler the gRPC server runs, wrapped by the
same CallInterceptor (token and scope, request id, error mapping to rich details, log line, grpc_server_*
metrics), with a context object that speaks the part of grpc.ServicerContext the interceptor and the
servicers use. The generated `*_connect.py` applications decode and encode the wire formats; cheroot serves
them on a thread pool with HTTP/1.1 keep-alive. See docs/api.md (HTTP/JSON) for what a caller sees.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, NoReturn

import grpc
from cheroot import errors as cheroot_errors
from cheroot import wsgi
from cheroot.makefile import StreamReader, StreamWriter
from cheroot.server import HTTPConnection
from cheroot.ssl import Adapter
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.trace import TracerProvider
from protobuf.wkt import Any as WireAny

from tollgate.shared import proto_json, tracing
from tollgate.shared.config import ConfigError
from tollgate.shared.interceptor import CallInterceptor
from tollgate.shared.tls import ServerTls

DETAILS_KEY = "grpc-status-details-bin"
ROUTE_HINT = "RPCs are POST /<package>.<Service>/<Method>, e.g. /tollgate.usage.v1.UsageService/RecordEvents"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# A plain route (POST /v1/events) is made around the Router, so it may hand a request it translated to an RPC
# path: the RPC's interceptor (token, scope, request id, log line, metrics) then judges it like any call.
RouteFactory = Callable[[WSGIApp], WSGIApp]


class RawProtoCodec:
    """application/proto: the body goes to the interceptor as bytes, so a malformed or oversized message
    is refused by the same parser, with the same status and details, as over gRPC."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> bytes:
        return bytes(data)


class JsonCodec:
    """application/json: proto3 JSON in (either field spelling; an unknown field is refused, so a typo never
    silently drops a value), lowerCamelCase out; handed to the interceptor as wire bytes."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(message, indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> bytes:
        # json_format's reading, errors included, with its Python walk skipped where proto_json is sure of the result.
        return proto_json.parse(bytes(data), message_class).SerializeToString()


CODECS = [RawProtoCodec(), JsonCodec()]


# The connection whose request this worker thread is serving (set by _WholeBodyGateway): the WSGI application, and
# so the Connect runtime's RequestContext, never sees the socket.
_serving = threading.local()


class HttpContext:
    """The grpc.ServicerContext surface the interceptor and servicers use, over one Connect request."""

    def __init__(self, ctx: RequestContext):
        self._ctx = ctx
        self._connection: HTTPConnection | None = getattr(_serving, "connection", None)
        self._code: grpc.StatusCode | None = None
        self._metadata = tuple((key.lower(), value) for key, value in ctx.request_headers.allitems())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        # Unary Connect has no trailers a curl user sees: the request id goes back as a response header.
        for key, value in metadata:
            if key != DETAILS_KEY and isinstance(value, str):
                self._ctx.response_headers[key] = value

    def time_remaining(self) -> float | None:
        remaining = self._ctx.timeout_ms
        return None if remaining is None else max(0.0, remaining / 1000.0)

    def peer(self) -> str:
        return f"http:{self._ctx.client_address or ''}"

    def is_active(self) -> bool:
        """False once the client has closed the connection: a server stream that waits for news (a watch) learns
        of a departed caller without writing to it. Readable with nothing to read is the peer's close; bytes are
        a request sent ahead on the same connection (or, over TLS, any record), so the caller is taken as there."""
        connection = self._connection
        if connection is None:
            return True
        sock = connection.socket
        try:
            if connection.rfile.has_data() or not select.select([sock], [], [], 0)[0]:
                return True
            return socket.socket.recv(sock, 1, socket.MSG_PEEK) != b""
        except (OSError, ValueError):  # closed under us
            return False

    def add_callback(self, callback) -> bool:
        """grpc's: `callback` when the call ends. A Connect call's end is not known here (a watch over HTTP sees its
        caller leave at its next poll, `is_active`): nothing is registered, as grpc answers for a call already over."""
        return False

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        pass

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self._code = code
        raise ConnectError(connect_code(code), details)

    def abort_with_status(self, status: Any) -> NoReturn:
        self._code = status.code
        self.set_trailing_metadata(status.trailing_metadata)
        raise ConnectError(connect_code(status.code), status.details, details=_details_of(status.trailing_metadata))


def connect_code(code: grpc.StatusCode) -> Code:
    """The Connect code of a gRPC status code (the same names, but for the spelling of CANCELLED)."""
    return Code.CANCELED if code is grpc.StatusCode.CANCELLED else Code[code.name]


def _details_of(trailing_metadata: Iterable[tuple[str, str | bytes]]) -> list[ErrorDetail]:
    """The google.rpc details (ErrorInfo, BadRequest, ...) of a rich status, as Connect error details."""
    for key, value in trailing_metadata:
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            return [ErrorDetail(WireAny(type_url=d.type_url, value=d.value)) for d in status.details]
    return []


class _Collector:
    """Stands in for grpc.Server while a generated add_*Servicer_to_server registers its handlers."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.registered.update({f"/{service}/{name}": handler for name, handler in handlers.items()})

    def handler(self, method: str) -> grpc.RpcMethodHandler:
        if method in self.registered:
            return self.registered[method]
        for generic in self.generic:
            found = generic.service(_Details(method))
            if found is not None:
                return found
        raise LookupError(f"no servicer registered {method}")


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str):
        self.method = method
        self.invocation_metadata = ()


def snake_case(name: str) -> str:
    """'RecordEvents' -> 'record_events': the method names of the generated Connect service protocols."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def service_apps(
    registrations: Iterable[tuple[Callable, object]],
    service_names: Iterable[str],
    interceptor: CallInterceptor,
    *,
    read_max_bytes: int,
) -> dict[str, WSGIApp]:
    """'/<service>/<Method>' -> the generated Connect WSGI application of its service, every method bound to the
    interceptor-wrapped gRPC handler (the method list comes from the service descriptor, so none is missed)."""
    collector = _Collector()
    for add, servicer in registrations:
        add(servicer, collector)
    apps: dict[str, WSGIApp] = {}
    for full_name in service_names:
        descriptor = descriptor_pool.Default().FindServiceByName(full_name)
        module = importlib.import_module(descriptor.file.name.removesuffix(".proto").replace("/", ".") + "_connect")
        methods = {}
        for method in descriptor.methods:
            path = f"/{full_name}/{method.name}"
            output = message_factory.GetMessageClass(method.output_type)
            methods[snake_case(method.name)] = _bind(interceptor, path, collector.handler(path), output)
        application = getattr(module, f"{descriptor.name}WSGIApplication")
        app = application(SimpleNamespace(**methods), read_max_bytes=read_max_bytes, codecs=CODECS)
        apps |= {f"/{full_name}/{method.name}": app for method in descriptor.methods}
    return apps


def _bind(
    interceptor: CallInterceptor, path: str, handler: grpc.RpcMethodHandler, output: type[Message]
) -> Callable[..., Any]:
    """One Connect endpoint function: asks the interceptor for its wrapped handler on every call (so the call
    is counted as started, as over gRPC) and runs it with an HttpContext. A response the handler gives already
    encoded (bytes) is read into its `output` message, which the codec writes as JSON or protobuf."""
    details = _Details(path)

    def wrapped() -> grpc.RpcMethodHandler:
        return interceptor.intercept_service(lambda _details: handler, details)

    if handler.unary_unary or handler.stream_unary:

        def unary(request: Any, ctx: RequestContext) -> Message:
            call = wrapped()
            behavior = call.unary_unary or call.stream_unary
            response = behavior(request, HttpContext(ctx))
            return output.FromString(response) if type(response) is bytes else response

        return unary

    def streaming(request: Any, ctx: RequestContext) -> Iterator[Message]:
        call = wrapped()
        behavior = call.unary_stream or call.stream_stream
        yield from behavior(request, HttpContext(ctx))

    return streaming


# Connect unary, Connect streaming and gRPC-Web, each with JSON or binary protobuf. Plain gRPC needs HTTP/2
# trailers, which WSGI has not: it belongs on the gRPC port.
CONTENT_TYPES = (
    "application/json",
    "application/proto",
    "application/connect+json",
    "application/connect+proto",
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web+json",
)


class Router:
    """Routes each exact path to its application: the RPCs, and later plain routes (POST /v1/events) by `add`.

    What no RPC can take is answered here with a JSON body that says why: an unknown path (404), a method
    other than POST (405), a content type the RPCs do not speak (415).
    """

    def __init__(self, rpcs: Mapping[str, WSGIApp]):
        self._routes = dict(rpcs)
        self._rpcs = frozenset(rpcs)

    def add(self, path: str, app: WSGIApp) -> None:
        """A plain route: it checks its own method and content type."""
        self._routes[path] = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        app = self._routes.get(path)
        if app is None:
            return _refuse(start_response, HTTPStatus.NOT_FOUND, "not_found", f"no route {path[:200]}; {ROUTE_HINT}")
        if path not in self._rpcs:
            return app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            message = f"{environ.get('REQUEST_METHOD')} {path[:200]}: RPCs are called with POST"
            return _refuse(start_response, HTTPStatus.METHOD_NOT_ALLOWED, "unimplemented", message, ("allow", "POST"))
        content_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if content_type not in CONTENT_TYPES:
            message = f"content type {content_type[:100]!r} is not one of {', '.join(CONTENT_TYPES)}"
            accept = ("accept-post", ", ".join(CONTENT_TYPES))
            return _refuse(start_response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unimplemented", message, accept)
        return app(environ, start_response)


def _refuse(
    start_response: Callable[..., Any], status: HTTPStatus, code: str, message: str, *headers: tuple[str, str]
) -> list[bytes]:
    """A refusal before any RPC runs, in the shape of a Connect error."""
    body = json.dumps({"code": code, "message": message}).encode()
    start_response(
        f"{status.value} {status.phrase}",
        [("content-type", "application/json"), ("content-length", str(len(body))), *headers],
    )
    return [body]


HTTPS_ENVIRON = {"wsgi.url_scheme": "https", "HTTPS": "on"}
PLAIN_HTTP_ON_TLS = json.dumps(
    {"code": "invalid_argument", "message": "this port speaks HTTPS only: call it with https://"}
).encode()


class _TlsAdapter(Adapter):
    """TLS for cheroot from `contexts` (ServerTls.ssl_contexts), asked at each accept so that rotated files
    serve new connections. Only the wrapping happens on cheroot's accept loop: the handshake runs on the worker
    thread that serves the connection (_TlsConnection), so a client that connects and stays silent holds one
    worker for the timeout, as over plaintext, instead of every new connection."""

    def __init__(self, contexts: Callable[[], ssl.SSLContext]):
        super().__init__(None, None)
        self._contexts = contexts

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        try:
            wrapped = self._contexts().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as error:
            raise cheroot_errors.FatalSSLAlert(*error.args) from error
        return wrapped, dict(HTTPS_ENVIRON)

    def get_environ(self) -> dict[str, str]:
        return dict(HTTPS_ENVIRON)

    def makefile(self, sock: socket.socket, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE) -> Any:
        return (StreamReader if "r" in mode else StreamWriter)(sock, mode, bufsize)


# A worker that has answered on a kept-alive connection waits this long for the same connection's next request
# before handing the connection back to cheroot's selector thread. A caller's next call (a client making calls one
# after another) is then read by the worker that is already awake, instead of waking the selector thread and then
# a worker for it: two thread hand-offs fewer, each a chance to wait for a core or the GIL. It only happens while
# every other connection is being served (none parked with the selector, none queued for a worker): the selector
# thread is one Python thread among many, so with more connections than that a lingering worker would serve its
# own connection ahead of the parked ones. A request arriving on a new connection waits this long at most.
LINGER_SECONDS = 0.002


class _Server(wsgi.Server):
    """cheroot's WSGI server, knowing which kept-alive connections are parked with its selector thread."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.parked: set[_Connection] = set()


class _Connection(HTTPConnection):
    """A connection whose worker serves its next request itself when it comes within LINGER_SECONDS."""

    server: _Server

    def communicate(self) -> bool:
        self.server.parked.discard(self)
        while super().communicate():
            if not self._next_request_soon():
                self.server.parked.add(self)
                return True
        return False

    def close(self) -> None:
        self.server.parked.discard(self)  # an idle connection expired by the selector thread
        super().close()

    def _next_request_soon(self) -> bool:
        server = self.server
        if not server.ready or server.parked or server.requests.qsize:
            return False
        if self.rfile.has_data() or (isinstance(self.socket, ssl.SSLSocket) and self.socket.pending()):
            return True
        poller = select.poll()
        try:
            poller.register(self.socket, select.POLLIN)
            return bool(poller.poll(LINGER_SECONDS * 1000))
        except (OSError, ValueError):  # closed under us: the selector path finds out and closes it
            return False


class _TlsConnection(_Connection):
    """A connection that finishes its TLS handshake before its first request, on its worker thread."""

    _handshaken = False

    def communicate(self) -> bool:
        if not self._handshaken:
            try:
                self.socket.do_handshake()
            except ssl.SSLError as error:
                if error.reason == "HTTP_REQUEST":
                    # Plain HTTP to a TLS port: say so in plain HTTP, rather than leave curl with an empty reply.
                    _send_plain(self.socket, "400 Bad Request", PLAIN_HTTP_ON_TLS)
                return False  # an untrusted or missing client certificate, a bad hello: closed, nothing served
            except OSError:
                return False
            self._handshaken = True
        return bool(super().communicate())


def _send_plain(sock: socket.socket, status: str, body: bytes) -> None:
    """Answer in plaintext on the socket beneath the TLS layer that never started, then read what the client
    still sends (briefly) before the close: closing on unread bytes would reset the connection, answer unread."""
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    with contextlib.suppress(OSError):
        socket.socket.sendall(sock, (head + "connection: close\r\n\r\n").encode() + body)
        socket.socket.shutdown(sock, socket.SHUT_WR)
        sock.settimeout(1.0)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and socket.socket.recv(sock, 65536):
            pass


class _WholeBodyGateway(wsgi.Gateway_10):
    """cheroot's WSGI gateway, but a response the application returns whole (a list of bytes: every unary RPC,
    every refusal) gets its content-length: the Connect runtime sets none, and cheroot would send it chunked,
    in three writes (headers, body, last chunk) the client reads chunk by chunk, instead of two."""

    def respond(self) -> None:
        _serving.connection = self.req.conn
        try:
            self._respond()
        finally:
            _serving.connection = None

    def _respond(self) -> None:
        response = self.req.server.wsgi_app(self.env, self.start_response)
        self._drain()
        if isinstance(response, list) and self.started_response:
            framing = {name.lower() for name, _ in self.req.outheaders} & {b"content-length", b"transfer-encoding"}
            if not framing:
                self.req.outheaders.append((b"Content-Length", str(sum(map(len, response))).encode()))
        try:
            for chunk in filter(None, response):
                if not isinstance(chunk, bytes):
                    raise ValueError("WSGI Applications must yield bytes")
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()

    def _drain(self) -> None:
        """Read and drop what the application left of the request body (one refused past the message limit), up
        to the server's own bound, before answering. cheroot does so itself for a body of known length on a
        connection it keeps, not for a chunked one: the rest is then read as the next request, refused, and the
        connection closed on unread bytes, which resets it, so a client still sending fails on its send before it
        reads the answer."""
        with contextlib.suppress(cheroot_errors.MaxSizeExceeded):
            while self.req.rfile.read(65536):
                pass


class HttpServer:
    """cheroot on its own threads: `port` is the bound port (useful when asked for port 0). With `tls` enabled
    the port speaks HTTPS only, and with its client CA only to clients presenting a certificate it issued."""

    def __init__(
        self,
        app: WSGIApp,
        host: str,
        port: int,
        *,
        threads: int,
        max_body_bytes: int,
        name: str,
        tls: ServerTls | None = None,
    ):
        # The listen backlog is the kernel's limit, not cheroot's 5: a burst of new connections (clients
        # starting together) would overflow 5 and see resets or SYN retries of a second or more.
        self._server = _Server(
            (host, port),
            app,
            numthreads=threads,
            server_name=f"tollgate-{name}",
            timeout=30,
            request_queue_size=socket.SOMAXCONN,
        )
        self._server.gateway = _WholeBodyGateway
        # cheroot closes a kept-alive connection once 10 others are parked (its default limit): a client keeping
        # more (callers in flight) would reconnect every few calls. Idle ones close after `timeout`; the process's
        # file limit bounds the rest.
        self._server.keep_alive_conn_limit = None  # type: ignore[assignment]  # cheroot reads None as no limit
        self._server.ConnectionClass = _Connection
        # cheroot answers 413 itself past this hard bound; the Connect runtime refuses anything above the
        # message limit below it (resource_exhausted), reading no more than that into memory.
        self._server.max_request_body_size = max_body_bytes
        if tls is not None and tls.enabled:
            self._server.ssl_adapter = _TlsAdapter(tls.ssl_contexts())
            self._server.ConnectionClass = _TlsConnection
        try:
            # cheroot sets SO_REUSEADDR, never SO_REUSEPORT: a port another process listens on is refused here.
            self._server.prepare()
        except OSError as error:
            raise ConfigError(f"{name.upper()}_HTTP_PORT {port} cannot be listened on at {host}: {error}") from None
        self.port: int = self._server.bind_addr[1]
        self._thread = threading.Thread(target=self._server.serve, name=f"{name}-http", daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Stop accepting, let requests in flight end for up to `grace` seconds."""
        self._server.shutdown_timeout = grace
        self._server.stop()
        self._thread.join(timeout=grace + 1)


def serve(
    registrations: Iterable[tuple[Callable, object]],
    service_names: Iterable[str],
    interceptor: CallInterceptor,
    *,
    host: str,
    port: int,
    threads: int,
    max_message_bytes: int,
    name: str,
    routes: Mapping[str, RouteFactory] | None = None,
    tls: ServerTls | None = None,
    tracer_provider: TracerProvider | None = None,
) -> HttpServer:
    """Start the HTTP server of a service on host:port (0 picks a free port), with TLS when `tls` is enabled;
    calls are spans of `tracer_provider` (None: the process's), as on the gRPC port."""
    apps = service_apps(registrations, service_names, interceptor, read_max_bytes=max_message_bytes)
    # The hard bound leaves room for a JSON body to be refused by the runtime with a Connect error.
    router = Router(apps)
    for path, make in (routes or {}).items():
        router.add(path, make(router))
    app = tracing.http_tracing(router, {*apps, *(routes or {})}, tracer_provider)
    return HttpServer(app, host, port, threads=threads, max_body_bytes=2 * max_message_bytes, name=name, tls=tls)

"""The server builder both services use: gRPC (health, reflection, interceptor, limits), the same RPCs over
HTTP (shared/http.py), metrics, shutdown."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tollgate.shared import http, logs, metrics, tracing
from tollgate.shared.auth import Authenticator
from tollgate.shared.config import ConfigError, process_env
from tollgate.shared.interceptor import CallInterceptor
from tollgate.shared.tls import ServerTls

log = logging.getLogger("tollgate.shared.server")

# Health name that says only "this process is alive": liveness and startup probes use it, so a
# database outage takes pods out of rotation (readiness) without restarting them.
LIVENESS = "liveness"

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a full batch of 1,000 events with 4 KiB metadata fits
# The interceptor refuses a request above MAX_MESSAGE_BYTES itself, so the refusal is counted and logged
# like any call; gRPC's own bound sits above it only to cap the memory one message may take, and a call
# it cuts never reaches a handler (it shows in grpc_server_started_total alone).
TRANSPORT_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", TRANSPORT_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC turns SO_REUSEPORT on by default: a second process on the same port would silently share its calls.
    ("grpc.so_reuseport", 0),
]


@dataclass
class ServerSpec:
    """What a service plugs into the common server."""

    name: str  # short name for logs: "usage" or "policy"
    registrations: list[tuple[Callable, object]]  # (add_XServicer_to_server, servicer)
    service_names: list[str]  # full names, for health and reflection
    method_scopes: dict[str, str]
    authenticator: Authenticator
    ready: Callable[[], bool]  # database reachable and migrated
    background: list[Callable[[threading.Event], None]] = field(default_factory=list)
    # Plain HTTP routes beside the RPCs ('/v1/events'), each made around the RPC router (http.RouteFactory).
    http_routes: dict[str, http.RouteFactory] = field(default_factory=dict)


@dataclass
class RunningServer:
    """A started server; `port` is the bound port (useful when asked for port 0)."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    metrics_port: int | None
    stopping: threading.Event
    _threads: list[threading.Thread]
    _metrics_http: WSGIServer | None
    _service_names: list[str]
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    http_port: int | None = None
    _http: http.HttpServer | None = None
    health_port: int | None = None

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING first, then drain in-flight calls for up to `grace` seconds."""
        self.health.enter_graceful_shutdown()
        self.stopping.set()
        # Both transports drain together: the gRPC stop returns at once, the HTTP stop waits for its calls.
        stopped = self.server.stop(grace)
        if self._http is not None:
            self._http.stop(grace)
        stopped.wait()
        for thread in self._threads:
            thread.join(timeout=grace)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        for callback in self.on_stop:
            callback()


def build_server(
    spec: ServerSpec,
    *,
    address: str,
    max_workers: int = 16,
    metrics_port: int | None = None,
    health_interval: float = 2.0,
    http_port: int | None = None,
    tracer_provider=None,
    tls: ServerTls | None = None,
    health_port: int | None = None,
) -> RunningServer:
    """Build and start the server on `address` ('host:0' picks a free port), and the same RPCs over HTTP on
    `http_port` of the same host unless it is None. gRPC calls are spans of `tracer_provider` (None: the
    process's, see tracing.install). With `tls` enabled the gRPC port speaks only TLS; `health_port` (0: any
    free one) answers grpc.health.v1 alone, in plaintext, for probes that cannot present a certificate."""
    # One interceptor for both transports: the same authentication, logs and metrics for every call.
    interceptor = CallInterceptor(
        authenticator=spec.authenticator,
        method_scopes=spec.method_scopes,
        server=spec.name,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{spec.name}-rpc"),
        # Tracing first, so it is outermost: our interceptor's log line and every handler run inside the span.
        interceptors=[tracing.server_tracing(tracer_provider), interceptor],
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=max_workers * 8,
    )
    for add, servicer in spec.registrations:
        add(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*spec.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    try:
        if tls is not None and tls.enabled:
            port = server.add_secure_port(address, tls.grpc_credentials())
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio's "Failed to bind", which says no more
        why = "in use by another process, or not an address of this host"
        raise ConfigError(f"{spec.name.upper()}_PORT cannot be listened on at {address}: {why}") from None
    if port == 0:
        raise OSError(f"cannot bind {address}")
    stopping = threading.Event()
    health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    _set_health(health_servicer, spec.service_names, spec.ready)
    threads = [_thread(f"{spec.name}-health", _watch_health, health_servicer, spec, stopping, health_interval)]
    threads += [_thread(f"{spec.name}-job", job, stopping) for job in spec.background]
    metrics_http, bound_metrics_port = (None, None)
    if metrics_port is not None:
        try:
            metrics_http, bound_metrics_port = metrics.serve_http(metrics_port, _host_of(address))
        except OSError as error:
            server.stop(None)
            where = f"{_host_of(address)}:{metrics_port}"
            raise ConfigError(f"{spec.name.upper()}_METRICS_PORT cannot be listened on at {where}: {error}") from None
    http_server, health_server = None, None
    try:
        if http_port is not None:
            http_server = http.serve(
                spec.registrations,
                spec.service_names,
                interceptor,
                host=_host_of(address),
                port=http_port,
                threads=max_workers,
                max_message_bytes=MAX_MESSAGE_BYTES,
                name=spec.name,
                routes=spec.http_routes,
                tls=tls,
                tracer_provider=tracer_provider,
            )
        if health_port is not None:
            health_server = _health_only(health_servicer, _host_of(address), health_port, spec.name)
    except ConfigError:  # a port in use: release the ones already taken before saying so
        server.stop(None)
        if http_server is not None:
            http_server.stop(0)
        if metrics_http is not None:
            metrics_http.shutdown()
            metrics_http.server_close()
        raise
    server.start()
    for thread in threads:
        thread.start()
    bound_http_port = http_server.port if http_server else None
    fields = {"service": spec.name, "port": port, "http_port": bound_http_port, "metrics_port": bound_metrics_port}
    if health_server is not None:
        fields["health_port"] = health_server[1]
    fields["tls"] = "mutual" if tls and tls.client_ca_file else "on" if tls and tls.enabled else "off"
    log.info("serving", extra={"fields": fields})
    running = RunningServer(
        server,
        port,
        health_servicer,
        bound_metrics_port,
        stopping,
        threads,
        metrics_http,
        spec.service_names,
        http_port=bound_http_port,
        _http=http_server,
    )
    if health_server is not None:
        # Stopped last: probes keep hearing NOT_SERVING while the main port drains.
        running.health_port = health_server[1]
        running.on_stop.insert(0, lambda: health_server[0].stop(0))
    return running


def _health_only(servicer: health.HealthServicer, host: str, port: int, name: str) -> tuple[grpc.Server, int]:
    """A started plaintext server on `port` answering grpc.health.v1 from `servicer`, and nothing else."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"), options=[("grpc.so_reuseport", 0)]
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        why = "in use by another process, or not an address of this host"
        raise ConfigError(f"{name.upper()}_HEALTH_PORT cannot be listened on at {address}: {why}") from None
    if bound == 0:
        raise OSError(f"cannot bind the health port {port}")
    server.start()
    return server, bound


def _thread(name: str, target, *args) -> threading.Thread:
    return threading.Thread(target=target, args=args, name=name, daemon=True)


def _set_health(servicer: health.HealthServicer, names: Iterable[str], ready: Callable[[], bool]) -> tuple[bool, str]:
    """Check readiness and publish it; (ok, why not) — the caller logs changes, not every check."""
    try:
        ok, why = ready(), "schema is not at this build's migration head"
    except Exception as error:  # noqa: BLE001 - any failure to check means not ready
        ok, why = False, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *names]:
        servicer.set(name, status)
    return ok, "" if ok else why


def _watch_health(servicer, spec: ServerSpec, stopping: threading.Event, interval: float) -> None:
    was_ok = None
    while not stopping.wait(interval):
        ok, why = _set_health(servicer, spec.service_names, spec.ready)
        if ok != was_ok:
            fields = {"service": spec.name, "serving": ok} | ({"reason": why} if why else {})
            (log.info if ok else log.warning)("health", extra={"fields": fields})
            was_ok = ok


def serve_until_signalled(running: RunningServer, *, grace: float, drain_delay: float = 0.0) -> None:
    """Block until SIGTERM or SIGINT, then shut down gracefully (health first, then drain)."""
    received = threading.Event()

    def _on_signal(signum, _frame):
        log.info("shutdown requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        received.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not received.wait(1.0):
        pass
    running.health.enter_graceful_shutdown()
    # Give load balancers and probes time to see NOT_SERVING before connections close.
    if drain_delay:
        threading.Event().wait(drain_delay)
    running.stop(grace)
    log.info("stopped")


def main(name: str, settings_class, build: Callable) -> int:
    """The body of `python -m services.<name>`: read settings once, wire, serve until SIGTERM or Ctrl-C."""
    env = process_env()
    try:
        settings = settings_class.from_env(env)
        traces = tracing.TraceSettings.from_env(env, service=name)
    except ConfigError as error:
        print(f"{name}: configuration error: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, service=name)
    tracer_provider = tracing.install(traces)
    try:
        running = build(settings)
    except ConfigError as error:  # a file named by a setting (a TLS certificate) is read at start
        print(f"{name}: configuration error: {error}", file=sys.stderr)
        return 2
    # What the process holds once wired (modules, table metadata, descriptors) lives as long as it does: the
    # collector's full passes, which otherwise walk all of it while a call waits, walk what calls made since.
    gc.collect()
    gc.freeze()
    serve_until_signalled(running, grace=settings.grace_seconds, drain_delay=settings.drain_seconds)
    if tracer_provider is not None:
        tracer_provider.shutdown()  # exports the spans still batched
    return 0


def _host_of(address: str) -> str:
    """'127.0.0.1:50051' -> '127.0.0.1', '[::]:0' -> '::': /metrics listens where gRPC does."""
    return address.rsplit(":", 1)[0].strip("[]")

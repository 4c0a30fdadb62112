"""Traces: OpenTelemetry's gRPC interceptors on every server and on Policy's channel to Usage, and its WSGI
middleware on the HTTP ports.

The instrumentation runs for every call that brings a `traceparent`, so a caller's W3C trace reaches Usage
through Policy and the log line of a call names its trace. Spans are recorded and exported only when the
standard `OTEL_*` variables ask for it (docs/operations.md#traces); otherwise the tracer is the API's
non-recording one and no exporter exists.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import client_interceptor, server_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

from tollgate.shared.config import ConfigError, env_str

EXPORTERS = ("otlp", "console", "none")
SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
# Probes and grpcurl's describe would fill traces with calls nobody follows. A prefix test rather than the
# instrumentation's `filters`, whose Protocol checks cost more than the rest of its work on every call.
_UNTRACED = ("/grpc.health.v1.", "/grpc.reflection.")


def _traced(details: grpc.HandlerCallDetails) -> bool:
    return not details.method.startswith(_UNTRACED)


def _continues_a_trace(details: grpc.HandlerCallDetails) -> bool:
    return _traced(details) and any(key == "traceparent" for key, _ in details.invocation_metadata)


def _inside_a_trace(_call) -> bool:
    return trace.get_current_span().get_span_context().is_valid


def _recording(tracer_provider: trace.TracerProvider | None) -> bool:
    """Whether spans go anywhere: a provider given, or one `install` made the process's."""
    return tracer_provider is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@dataclass(frozen=True)
class TraceSettings:
    """Whether and where spans go; `exporter` is "" when traces are off."""

    exporter: str = ""
    service_name: str = ""
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, service: str) -> TraceSettings:
        """On when OTEL_TRACES_EXPORTER names an exporter, or an OTLP endpoint is set and it names none."""
        endpoint = env_str(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") or env_str(
            env, "OTEL_EXPORTER_OTLP_ENDPOINT", ""
        )
        exporter = env_str(env, "OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none").lower()
        if exporter not in EXPORTERS:
            raise ConfigError(f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
        sampler = env_str(env, "OTEL_TRACES_SAMPLER", cls.sampler).lower()
        if sampler not in SAMPLERS:
            raise ConfigError(f"OTEL_TRACES_SAMPLER must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        raw_arg = env_str(env, "OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            sampler_arg = float(raw_arg)
        except ValueError:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a number, got {raw_arg!r}") from None
        if not 0.0 <= sampler_arg <= 1.0:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be between 0 and 1, got {sampler_arg}")
        disabled = env_str(env, "OTEL_SDK_DISABLED", "false").lower() == "true"
        return cls(
            exporter="" if disabled or exporter == "none" else exporter,
            service_name=env_str(env, "OTEL_SERVICE_NAME", f"tollgate-{service}"),
            sampler=sampler,
            sampler_arg=sampler_arg,
        )


def install(settings: TraceSettings):
    """Make a recording tracer provider the process's own when traces are on; None (nothing set) when off."""
    if not settings.exporter:
        return None
    # Imported only here: with traces off, neither the SDK's span machinery nor the exporter is loaded.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({SERVICE_NAME: settings.service_name})
    provider = TracerProvider(resource=resource, sampler=_sampler(settings))
    exporter: SpanExporter
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Endpoint, headers, certificates, compression and timeout: the exporter reads OTEL_EXPORTER_OTLP_*.
        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _sampler(settings: TraceSettings):
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(settings.sampler_arg)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }[settings.sampler]


def server_tracing(tracer_provider: trace.TracerProvider | None = None) -> grpc.ServerInterceptor:
    """The server span of every call but health and reflection, child of the caller's traceparent.

    None: the process's tracer provider. When nothing records, only a call that brings a traceparent goes
    through the instrumentation (to carry that trace on and into the logs): the others skip its per-call work.
    """
    traced = _traced if _recording(tracer_provider) else _continues_a_trace
    return server_interceptor(tracer_provider=tracer_provider, filter_=traced)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def http_tracing(app: WSGIApp, routes: Collection[str], tracer_provider: trace.TracerProvider | None = None) -> WSGIApp:
    """`app` with a server span per HTTP call (OpenTelemetry's WSGI middleware), child of the caller's traceparent,
    and the call's RPC and log line inside it, as on the gRPC port. `routes` are the paths served: a span is
    named "POST <path>" for them and by the method alone otherwise, so that random paths make no span names.

    When nothing records, only a call that brings a traceparent goes through the middleware (as for gRPC).
    """

    def name_by_route(span: trace.Span, environ: dict[str, Any]) -> None:
        if environ.get("PATH_INFO") not in routes:
            span.update_name(str(environ.get("REQUEST_METHOD", "HTTP")))

    traced = OpenTelemetryMiddleware(app, request_hook=name_by_route, tracer_provider=tracer_provider)
    if _recording(tracer_provider):
        return traced

    def only_continued(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if "HTTP_TRACEPARENT" in environ:
            return traced(environ, start_response)
        return app(environ, start_response)

    return only_continued


def traced_channel(channel: grpc.Channel, tracer_provider: trace.TracerProvider | None = None) -> grpc.Channel:
    """The channel with a client span per call and the current trace sent along as `traceparent`.

    When nothing records, only a call made inside a caller's trace goes through the instrumentation.
    """
    traced = None if _recording(tracer_provider) else _inside_a_trace
    return intercept_channel(channel, client_interceptor(tracer_provider=tracer_provider, filter_=traced))


# The codes that say the server failed (OpenTelemetry's gRPC conventions); a refusal of bad input does not.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def annotate_call(request_id: str, code: grpc.StatusCode) -> None:
    """Name the request id and final status on the call's server span, when it is recorded.

    Our interceptor answers with abort_with_status, which the instrumentation's context does not see.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("tollgate.request_id", request_id)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_FAULTS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))

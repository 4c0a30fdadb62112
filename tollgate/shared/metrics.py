"""Prometheus RED metrics for every RPC, named and labelled as go-grpc-prometheus does, and the HTTP
endpoint that serves them."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics, start_http_server

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server (counted on arrival, before the request is read), by type, service and method.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by type, service, method and status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to complete an RPC on the server, by type, service and method.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def serve_http(port: int, host: str) -> tuple[WSGIServer, int]:
    """Start the /metrics endpoint on the gRPC server's host; returns (http_server, port) so tests may pass port 0."""
    # A *_created series per labelled child would double what Prometheus stores, for a timestamp nobody
    # graphs: rates come from the counters themselves.
    disable_created_metrics()
    http_server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return http_server, http_server.server_port

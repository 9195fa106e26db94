"""Prometheus metrics: the standard gRPC server metrics, and a separate listen address for them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end, streaming included.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def serve_metrics(listen: str) -> int:
    """Serve /metrics on `host:port` (port 0 picks one); returns the bound port, or 0 when
    `listen` is empty (no metrics served)."""
    if not listen:
        return 0
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    return int(server.server_address[1])

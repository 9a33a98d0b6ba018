"""The EST gateway's metrics: requests by operation and outcome, and their latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GatewayMetrics"]

# Seconds. An enrollment is a bus round trip through the DMS and CA workers and a
# signature: tens of milliseconds when idle, up to EST_WAIT_SECONDS before a 202.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """Counted once per request by the ``errors`` middleware (est_gateway/app.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "lamassu_est_requests_total",
            "EST requests by operation (simpleenroll, cacerts, ...) and outcome "
            "(ok, accepted, refused, unavailable, error).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "lamassu_est_request_duration_seconds",
            "Time to answer an EST request, by operation.",
            ["operation"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def observe(self, operation: str, status: int, seconds: float) -> None:
        self.requests.labels(operation, outcome(status)).inc()
        self.latency.labels(operation).observe(seconds)


def outcome(status: int) -> str:
    """An HTTP status in one word: what an operator alerts on."""
    if status == 202:
        return "accepted"
    if status < 400:
        return "ok"
    if status == 503:
        return "unavailable"
    return "refused" if status < 500 else "error"

"""Per-request correlation id, one JSON log line per request, Prometheus metrics.

Pure ASGI middleware (no BaseHTTPMiddleware): it adds no task switch per request on the hot path.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram

from exchange_core.logging import correlation_id_var

_CORRELATION_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = logging.getLogger("ingest_api.request")


class IngestMetrics:
    """Metrics in their own registry, so every app instance (and test) starts from zero."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ingest_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ingest_request_duration_seconds", "Request latency by route", ["route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.replays = Counter("ingest_idempotent_replays", "Replayed responses", registry=self.registry)
        self.conflicts = Counter(
            "ingest_idempotency_conflicts", "Idempotency key reuse refused (409)", registry=self.registry
        )
        self.accepted = Counter("ingest_records_accepted", "Records accepted", ["schema_version"],
                                registry=self.registry)


def _route_template(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware:
    """X-Correlation-ID in (validated) or generated; echoed out; logged and measured once."""

    def __init__(self, app, metrics: IngestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        supplied = None
        for name, value in scope["headers"]:
            if name == b"x-correlation-id":
                supplied = value.decode("latin-1")
                break
        correlation_id = supplied if supplied and _CORRELATION_ID_RE.match(supplied) else str(uuid.uuid4())
        token = correlation_id_var.set(correlation_id)
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", correlation_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            status = status_holder["status"]
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 2),
                    "partner_id": scope["state"].get("partner_id"),
                },
            )
            correlation_id_var.reset(token)

"""Prometheus metrics of one tokenizer app, in their own registry (every app/test starts at zero).

Labels are route templates, statuses, reason codes and key ids: never payload values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class TokenizerMetrics:
    """`requests` and `latency` are the names `ingest_api.observability`'s middleware expects."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tokenizer_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tokenizer_request_duration_seconds", "Request latency by route", ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.persons_tokenized = Counter(
            "tokenizer_persons_tokenized", "Persons tokenized by POST /v1/tokens", ["key_id"],
            registry=self.registry,
        )
        self.deidentify_results = Counter(
            "tokenizer_deidentify_results", "De-identification results by status and reason code",
            ["status", "reason_code"], registry=self.registry,
        )
        self.object_reads = Histogram(
            "tokenizer_object_read_seconds", "Raw object reads from the object store",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "tokenizer_object_store_unavailable", "Batches refused with 503: object store down",
            registry=self.registry,
        )

"""Resources: Postgres, the tokenizer and the event bus, configured per environment.

Secrets and URLs come from environment variables through `dg.EnvVar`, resolved when a run or
tick starts, never at import time. `build_resources` is called from the definitions function.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dagster as dg
import psycopg

from exchange_assets.lib.tokenizer_client import TokenizerClient
from exchange_core.event_bus import EventReader, KafkaReader, PostgresLogReader

KNOWN_ENVIRONMENTS = ("local", "test", "production")


class PostgresResource(dg.ConfigurableResource):
    """The platform database (schemas exchange and canonical; the ingest ledger read-only)."""

    database_url: str

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with psycopg.connect(self.database_url, autocommit=True,
                             application_name="exchange-pipeline") as conn:
            yield conn


class TokenizerResource(dg.ConfigurableResource):
    """The tokenizer service: the only holder of the HMAC secret and of raw PII."""

    base_url: str
    service_token: str
    timeout_s: float = 120.0
    chunk_size: int = 500

    def client(self) -> TokenizerClient:
        return TokenizerClient(self.base_url, self.service_token, timeout_s=self.timeout_s)


class EventBusResource(dg.ConfigurableResource):
    """`kafka://host:port` or `postgres` (the event_log table)."""

    event_bus_url: str
    database_url: str

    def reader(self, topics: list[str]) -> EventReader:
        if self.event_bus_url.startswith("kafka://"):
            return KafkaReader(self.event_bus_url.removeprefix("kafka://"), topics)
        if self.event_bus_url == "postgres":
            return PostgresLogReader(self.database_url, topics)
        raise ValueError("EVENT_BUS_URL must be kafka://host:port or postgres")


def build_resources(environment: str) -> dict[str, dg.ConfigurableResource]:
    """The resources for EXCHANGE_ENV; an unknown environment fails closed."""
    if environment not in KNOWN_ENVIRONMENTS:
        raise ValueError(f"unknown EXCHANGE_ENV {environment!r}; expected one of {KNOWN_ENVIRONMENTS}")
    return {
        "db": PostgresResource(database_url=dg.EnvVar("DATABASE_URL")),
        "tokenizer": TokenizerResource(
            base_url=dg.EnvVar("TOKENIZER_URL"),
            service_token=dg.EnvVar("TOKENIZER_SERVICE_TOKEN"),
        ),
        "event_bus": EventBusResource(
            event_bus_url=dg.EnvVar("EVENT_BUS_URL"), database_url=dg.EnvVar("DATABASE_URL")
        ),
    }

"""Configuration from environment variables (pydantic-settings), one class for the platform.

Every deployable reads the same names so that `exchange services env` output, docker-compose and
production manifests stay interchangeable. Nothing here is read at import time: call
`get_settings()` (cached) or build `Settings(...)` explicitly in tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["local", "test", "production"]

class Settings(BaseSettings):
    """Platform settings; every field maps to an upper-case environment variable."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    exchange_env: Environment = Field(
        "local", description="local enables `Bearer dev`; test and production do not."
    )
    database_url: str = Field(
        "postgresql://exchange@127.0.0.1:5432/exchange",
        description="libpq URL of the platform database (schemas ingest, exchange, canonical).",
    )
    object_store_url: str = Field(
        "s3://raw-objects", description="`s3://BUCKET` or `file:///absolute/path` for raw payloads."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (SeaweedFS/MinIO); None means AWS's default."
    )
    s3_region: str = Field("us-east-1", description="Region used to sign S3 requests.")
    aws_access_key_id: SecretStr | None = Field(None, description="S3 access key id.")
    aws_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    event_bus_url: str = Field(
        "postgres", description="`kafka://host:port[,host:port]` or `postgres` (event_log table)."
    )
    tokenizer_url: str = Field("http://127.0.0.1:8100", description="Base URL of the tokenizer.")
    tokenizer_service_token: SecretStr = Field(
        SecretStr("local-dev-token"), description="Service credential the tokenizer requires."
    )
    tokenizer_hmac_secret_file: Path | None = Field(
        None, description="JSON key file {active_key_id, keys: {id: secret}}; tokenizer only."
    )
    dagster_home: Path | None = Field(None, description="Dagster instance directory.")

    v1_max_body_bytes: int = Field(1 << 20, description="POST /v1/ingest body limit (413 past it).")
    v2_max_body_bytes: int = Field(16 << 20, description="POST /v2/ingest body limit.")
    idempotency_lock_timeout_ms: int = Field(
        5000,
        description="How long a duplicate request waits for an in-flight twin before a 409.",
    )
    db_pool_min_size: int = Field(2, description="Minimum DB pool connections per process.")
    db_pool_max_size: int = Field(16, description="Maximum DB pool connections per process.")
    log_level: str = Field("INFO", description="Root log level for JSON logs.")
    clock_offset_s: float = Field(
        0.0,
        description="Shifts the API's receipt clock (tests and demos that need an earlier day); "
        "refused in production.",
    )

    @model_validator(mode="after")
    def _refuse_test_only_settings_in_production(self) -> Settings:
        # Secrets are checked by the process that uses them (the tokenizer refuses a placeholder
        # service token), so the ingest API and relay need no tokenizer credential at all.
        if self.exchange_env == "production" and self.clock_offset_s:
            raise ValueError("CLOCK_OFFSET_S is for local and test environments only")
        return self

    @property
    def bus_kind(self) -> Literal["kafka", "postgres"]:
        if self.event_bus_url.startswith("kafka://"):
            return "kafka"
        if self.event_bus_url == "postgres":
            return "postgres"
        raise ValueError("EVENT_BUS_URL must be kafka://host:port or postgres")

    @property
    def kafka_bootstrap(self) -> str:
        return self.event_bus_url.removeprefix("kafka://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the process environment, read once."""
    return Settings()

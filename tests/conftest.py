"""Shared fixtures: real services from the project's harness, a fresh database per test worker."""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path

import psycopg
import pytest

from exchange_core.db import migrate
from exchange_core.logging import JsonFormatter
from exchange_core.services import harness
from exchange_core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def services_root() -> Path:
    return harness.services_root(REPO_ROOT)


@pytest.fixture(scope="session")
def services(services_root: Path) -> harness.ServicesState:
    """Postgres + SeaweedFS, started once (flock-shared by xdist workers)."""
    return harness.up(services_root, ("postgres", "s3"), log=lambda _: None)


@pytest.fixture(scope="session")
def kafka_services(services_root: Path, services) -> harness.ServicesState:
    return harness.up(services_root, ("postgres", "s3", "kafka"), log=lambda _: None)


@pytest.fixture(scope="session")
def database_url(services: harness.ServicesState, worker_id: str) -> str:
    """A database of this worker's own, migrated from scratch: tests never see each other's rows."""
    name = f"test_{worker_id}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = services.database_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(services: harness.ServicesState, database_url: str, **overrides) -> Settings:
    values = dict(
        exchange_env="test",
        database_url=database_url,
        object_store_url="s3://raw-objects",
        s3_endpoint_url=services.s3_endpoint_url,
        aws_access_key_id=services.s3_access_key,
        aws_secret_access_key=services.s3_secret_key,
        event_bus_url="postgres",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(services, database_url) -> Settings:
    return make_settings(services, database_url)


@pytest.fixture
def db(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def partner(database_url):
    """A fresh partner with its own API key (unique per test, so rows never collide)."""
    from ingest_api.partners import create_partner

    with psycopg.connect(database_url) as conn:
        created = create_partner(conn, f"partner-{uuid.uuid4().hex[:12]}")
    return created


@pytest.fixture
def captured_logs():
    """Everything logged through the root logger as JSON lines, for PII canary checks."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


@pytest.fixture(scope="session")
def worker_id(request) -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")

"""`exchange services up|down|env`: one harness for tests, the demo and developers.

State lives in `<root>/.exchange/services.json` (pids, ports, credentials). `up` is idempotent and
safe to call from several processes at once (an flock serialises it); `down` stops only the pids
it recorded. Ports derive from one base (EXCHANGE_SERVICES_PORT_BASE, default 20000) so two
checkouts on one machine can use different bases. Every derived port (SeaweedFS's gRPC ports sit
10,000 above its HTTP ports) stays below Linux's ephemeral range (32768-60999): there a client's
outgoing connection can hold the port just when a service (re)starts on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from exchange_core.services import postgres, seaweedfs
from exchange_core.services.processes import pid_alive, port_open

ALL_COMPONENTS = ("postgres", "s3", "kafka")
DATABASE = "exchange"
KAFKA_TOPICS = {
    "record.ingested.v1": 4,
    "record.ingested.v1.dlq": 1,
    "record.ingested.v2": 4,
    "record.ingested.v2.dlq": 1,
}


@dataclass
class ServicesState:
    port_base: int
    s3_access_key: str
    s3_secret_key: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def postgres_port(self) -> int:
        return self.port_base + 432

    @property
    def s3_port(self) -> int:
        return self.port_base + 333

    @property
    def kafka_port(self) -> int:
        return self.port_base + 92

    @property
    def kafka_controller_port(self) -> int:
        return self.port_base + 93

    @property
    def database_url(self) -> str:
        return f"postgresql://{postgres.SUPERUSER}@127.0.0.1:{self.postgres_port}/{DATABASE}"

    @property
    def admin_database_url(self) -> str:
        return f"postgresql://{postgres.SUPERUSER}@127.0.0.1:{self.postgres_port}/postgres"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def env(self) -> dict[str, str]:
        """Environment for the platform's processes to use these services."""
        values = {"EXCHANGE_ENV": "local"}
        if "postgres" in self.pids:
            values["DATABASE_URL"] = self.database_url
        if "s3" in self.pids:
            values |= {
                "OBJECT_STORE_URL": f"s3://{seaweedfs.BUCKET}",
                "S3_ENDPOINT_URL": self.s3_endpoint_url,
                "AWS_ACCESS_KEY_ID": self.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            }
        if "kafka" in self.pids:
            values["EVENT_BUS_URL"] = f"kafka://{self.kafka_bootstrap}"
        return values


def services_root(repo_root: Path | None = None) -> Path:
    """`.exchange/` in the working directory's project (or EXCHANGE_SERVICES_DIR)."""
    if env_dir := os.environ.get("EXCHANGE_SERVICES_DIR"):
        return Path(env_dir).resolve()
    return (repo_root or Path.cwd()).resolve() / ".exchange"


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "services.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _state_file(root: Path) -> Path:
    return root / "services.json"


def load_state(root: Path) -> ServicesState | None:
    try:
        raw = json.loads(_state_file(root).read_text())
    except (OSError, ValueError):
        return None
    return ServicesState(**raw)


def _save_state(root: Path, state: ServicesState) -> None:
    tmp = _state_file(root).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, _state_file(root))


def _new_state() -> ServicesState:
    base = int(os.environ.get("EXCHANGE_SERVICES_PORT_BASE", "20000"))
    return ServicesState(
        port_base=base,
        s3_access_key="exchange-" + secrets.token_hex(4),
        s3_secret_key=secrets.token_urlsafe(24),
    )


def up(root: Path, components: tuple[str, ...] = ALL_COMPONENTS, *, log=print) -> ServicesState:
    """Start whichever requested components are not running; return the state."""
    unknown = set(components) - set(ALL_COMPONENTS)
    if unknown:
        raise ValueError(f"unknown services: {sorted(unknown)}")
    with _locked(root):
        state = load_state(root) or _new_state()
        if "postgres" in components:
            _up_postgres(root, state, log)
        if "s3" in components:
            _up_seaweedfs(root, state, log)
        if "kafka" in components:
            _up_kafka(root, state, log)
        _save_state(root, state)
        return state


def postgres_data_dir(root: Path) -> Path:
    """`<root>/postgres`, unless the server user (root runs it as `postgres`) cannot reach that
    path (a checkout under a 0700 home or temp folder): then a folder of its own under /var/tmp,
    named after the root so each checkout keeps its own cluster."""
    preferred = root / "postgres"
    if postgres.server_user_can_reach(root):
        return preferred
    import hashlib

    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"exchange-postgres-{digest}" / "postgres"


def _up_postgres(root: Path, state: ServicesState, log) -> None:
    if pid_alive(state.pids.get("postgres")) and port_open(state.postgres_port):
        return
    started = time.monotonic()
    handle = postgres.start_postgres(postgres_data_dir(root), state.postgres_port)
    state.pids["postgres"] = handle.pid
    _ensure_database(state)
    log(f"postgres  up on 127.0.0.1:{state.postgres_port} ({time.monotonic() - started:.1f}s)")


def _ensure_database(state: ServicesState) -> None:
    import psycopg

    with psycopg.connect(state.admin_database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def _up_seaweedfs(root: Path, state: ServicesState, log) -> None:
    if pid_alive(state.pids.get("s3")) and port_open(state.s3_port):
        return
    started = time.monotonic()
    handle = seaweedfs.start_seaweedfs(
        root / "seaweedfs", state.s3_port, state.s3_access_key, state.s3_secret_key
    )
    state.pids["s3"] = handle.pid
    _wait_for_bucket(state)
    log(f"s3        up on {state.s3_endpoint_url} ({time.monotonic() - started:.1f}s)")


def _wait_for_bucket(state: ServicesState, timeout_s: float = 30) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3", endpoint_url=state.s3_endpoint_url, region_name="us-east-1",
        aws_access_key_id=state.s3_access_key, aws_secret_access_key=state.s3_secret_key,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.head_bucket(Bucket=seaweedfs.BUCKET)
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _up_kafka(root: Path, state: ServicesState, log) -> None:
    from exchange_core.services import kafka

    if pid_alive(state.pids.get("kafka")) and kafka.kafka_is_up(state.kafka_bootstrap):
        kafka.ensure_topics(state.kafka_bootstrap, KAFKA_TOPICS)
        return
    started = time.monotonic()
    handle = kafka.start_kafka(
        root / "kafka", state.kafka_port, state.kafka_controller_port, root / "cache"
    )
    state.pids["kafka"] = handle.pid
    kafka.ensure_topics(state.kafka_bootstrap, KAFKA_TOPICS)
    log(f"kafka     up on {state.kafka_bootstrap} ({time.monotonic() - started:.1f}s)")


def component_running(state: ServicesState, name: str) -> bool:
    """Whether the recorded pid of `name` is alive and its port answers."""
    ports = {"postgres": state.postgres_port, "s3": state.s3_port, "kafka": state.kafka_port}
    return pid_alive(state.pids.get(name)) and port_open(ports[name])


def stop_component(root: Path, name: str) -> None:
    """Stop one component (tests use this to simulate an outage) and forget its pid."""
    with _locked(root):
        state = load_state(root)
        if state is None or name not in state.pids:
            return
        _stop(root, name, state.pids.pop(name))
        _save_state(root, state)


def _stop(root: Path, name: str, pid: int) -> None:
    if name == "postgres":
        postgres.stop_postgres(postgres_data_dir(root), pid)
    elif name == "s3":
        seaweedfs.stop_seaweedfs(pid)
    elif name == "kafka":
        from exchange_core.services import kafka

        kafka.stop_kafka(pid)


def down(root: Path, *, log=print) -> None:
    """Stop every component this harness started (by recorded pid)."""
    with _locked(root):
        state = load_state(root)
        if state is None:
            return
        for name in ("kafka", "s3", "postgres"):
            if name in state.pids:
                _stop(root, name, state.pids.pop(name))
                log(f"{name:9} stopped")
        _save_state(root, state)


def env_lines(state: ServicesState) -> list[str]:
    """`export NAME=value` lines for a shell."""
    import shlex

    return [f"export {name}={shlex.quote(value)}" for name, value in sorted(state.env().items())]

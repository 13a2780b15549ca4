"""Deployment files: docker-compose.yml, deploy/env.example, deploy/dagster.yaml, workspace.yaml.

Two checks, no services needed:
- `docker compose config -q` with a throwaway env file, where a compose CLI is installed;
- a structural check that always runs (and stands in for the first where no compose CLI exists):
  references resolve, every interpolated variable is documented, environment names are Settings
  fields, no secret is written inline, only user-facing services publish ports, the Redpanda
  topics equal the harness's, and Dagster's instance and workspace files agree with the services.
Negative tests feed the structural check broken copies to prove it can fail.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from exchange_core.services.harness import KAFKA_TOPICS
from exchange_core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "env.example"
DAGSTER_YAML = REPO_ROOT / "deploy" / "dagster.yaml"
WORKSPACE_YAML = REPO_ROOT / "workspace.yaml"

# Services running the platform image; their environment must speak Settings.
PLATFORM_SERVICES = frozenset(
    {"migrate", "ingest-api", "relay", "tokenizer", "dagster-code", "dagster-webserver",
     "dagster-daemon"}
)
DAGSTER_SERVICES = frozenset({"dagster-code", "dagster-webserver", "dagster-daemon"})
# Service -> container ports it may publish. Nothing else is reachable from the host.
USER_FACING_PORTS = {"ingest-api": {8000}, "dagster-webserver": {3000}}
# Published only on loopback: the Dagster UI has no authentication of its own.
LOOPBACK_ONLY = frozenset({"dagster-webserver"})
# Only these platform services hold raw-bucket credentials (the relay and Dagster do not).
RAW_BUCKET_SERVICES = frozenset({"ingest-api", "tokenizer"})
RAW_BUCKET_VARIABLES = frozenset(
    {"OBJECT_STORE_URL", "S3_ENDPOINT_URL", "S3_REGION", "AWS_ACCESS_KEY_ID",
     "AWS_SECRET_ACCESS_KEY"}
)
MINIO_ROOT_SERVICES = frozenset({"minio", "minio-init"})
# Environment names that are not Settings fields but are read by code we run.
ENV_ALLOW_LIST = frozenset(
    {
        # deploy/dagster.yaml (Dagster instance storage)
        "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME",
        "DAGSTER_PG_PASSWORD",
        # sensors/__init__.py
        "EXCHANGE_SENSOR_MAX_EVENTS", "EXCHANGE_SENSOR_INTERVAL_S",
    }
)
VALID_CONDITIONS = frozenset(
    {"service_started", "service_healthy", "service_completed_successfully"}
)
SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIALS"})
SECRETS_MOUNT = "/run/secrets/"

# --- compose interpolation ---------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)
# The whole value is one required interpolation: `${NAME:?message}` (or `${NAME?message}`).
_REQUIRED_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}$")
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/:@\s]+:(?P<password>[^@\s]+)@", re.I)


class InterpolationError(ValueError):
    pass


def interpolations(text: str) -> Iterator[tuple[str, str | None, str]]:
    """(name, operator, argument) for each `${...}`/`$NAME` in `text`; `$$` is a literal `$`."""
    for match in _INTERPOLATION.finditer(text):
        if match["escaped"]:
            continue
        if match["named"]:
            yield match["named"], None, ""
            continue
        braced = _BRACED.match(match["braced"])
        if braced is None:
            raise InterpolationError(f"cannot parse interpolation ${{{match['braced']}}}")
        yield braced["name"], braced["op"], braced["arg"] or ""


def render(text: str, env: dict[str, str]) -> str:
    """Compose's substitution for the forms this file uses (no nesting)."""

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.match(match["braced"])
        if braced is None:
            raise InterpolationError(f"cannot parse interpolation ${{{match['braced']}}}")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else value
        if op in (":?", "?"):
            if empty:
                raise InterpolationError(f"{name} is required: {arg}")
            return value
        if op in (":+", "+"):
            return "" if empty else arg
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def strings(node: Any) -> Iterator[str]:
    """Every string value in a YAML tree (compose interpolates values, not keys)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


# --- loading -----------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def documented_variables() -> dict[str, str]:
    """NAME -> example value for each `NAME=value` line of deploy/env.example."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def service_environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def is_secret_name(key: str) -> bool:
    """PASSWORD, SECRET, TOKEN, KEY... anywhere in a name part (TOKENIZER is a service name)."""
    parts = [part for part in key.upper().split("_") if part != "TOKENIZER"]
    return any(word in part for part in parts for word in SECRET_WORDS)


def kafka_topics_of(compose: dict[str, Any]) -> dict[str, int]:
    init = compose["services"]["redpanda-init"]
    specs = service_environment(init).get("KAFKA_TOPICS") or ""
    topics = {}
    for spec in specs.split():
        name, _, partitions = spec.rpartition(":")
        topics[name] = int(partitions)
    return topics


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, int]]:
    """(host_ip, container port) for each published port, short or long syntax."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append((entry.get("host_ip"), int(str(entry["target"]).split("/")[0])))
            continue
        parts = re.sub(r"\$\{[^}]*\}", "X", str(entry)).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else None
        result.append((host_ip, int(parts[-1])))
    return result


# --- the structural check ----------------------------------------------------------------------


def compose_problems(compose: dict[str, Any], documented: set[str]) -> list[str]:
    """Everything wrong with a compose document, as human-readable lines (empty: fine)."""
    problems: list[str] = []
    if "version" in compose:
        problems.append("top-level `version:` is obsolete in the Compose spec")
    services: dict[str, Any] = compose.get("services") or {}
    if not services:
        return problems + ["no services"]

    # Interpolated variables are documented for the operator.
    for text in strings(compose):
        try:
            for name, _, _ in interpolations(text):
                if name not in documented:
                    problems.append(f"${{{name}}} is not documented in deploy/env.example")
        except InterpolationError as exc:
            problems.append(str(exc))

    declared_volumes = set(compose.get("volumes") or {})
    declared_secrets = set(compose.get("secrets") or {})
    declared_configs = set(compose.get("configs") or {})
    for kind in ("secrets", "configs"):
        for name, spec in (compose.get(kind) or {}).items():
            source = (spec or {}).get("file")
            if source and "$" not in source and not (REPO_ROOT / source).exists():
                problems.append(f"{kind} {name}: file {source} does not exist")

    settings_names = settings_variables()
    for name, service in services.items():
        where = f"service {name}"
        if not (service.get("image") or service.get("build")):
            problems.append(f"{where}: neither image nor build")

        for target, condition in depends_on(service).items():
            if target not in services:
                problems.append(f"{where}: depends_on unknown service {target!r}")
                continue
            if target == name:
                problems.append(f"{where}: depends on itself")
            if condition not in VALID_CONDITIONS:
                problems.append(f"{where}: depends_on {target} has invalid condition {condition!r}")
            if condition == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"{where}: waits for {target} to be healthy; it has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get(
                "restart", "no"
            ) != "no":
                problems.append(f"{where}: waits for {target} to complete, but it restarts")

        env = service_environment(service)
        for key, value in env.items():
            if value is None:
                problems.append(f"{where}: {key} is passed through from the host unchecked")
                continue
            if is_secret_name(key):
                is_file = key.endswith("_FILE") and value.startswith(SECRETS_MOUNT)
                if not (is_file or _REQUIRED_ONLY.match(value)):
                    problems.append(
                        f"{where}: {key} must be a required interpolation ${{VAR:?...}} or a "
                        f"{SECRETS_MOUNT} file, not an inline value"
                    )
            url = _URL_PASSWORD.match(value)
            if url and not _REQUIRED_ONLY.match(url["password"]):
                problems.append(f"{where}: {key} embeds a literal password")
            if key.endswith("_FILE") and value.startswith(SECRETS_MOUNT):
                secret = value.removeprefix(SECRETS_MOUNT)
                mounted = {s if isinstance(s, str) else s.get("target", s["source"])
                           for s in service.get("secrets") or []}
                if secret not in mounted:
                    problems.append(f"{where}: {key} points at secret {secret!r} it does not mount")

        if name in PLATFORM_SERVICES:
            for key in env:
                if key not in settings_names and key not in ENV_ALLOW_LIST:
                    problems.append(f"{where}: {key} is neither a Settings field nor allow-listed")
            if name not in RAW_BUCKET_SERVICES:
                for key in sorted(RAW_BUCKET_VARIABLES & set(env)):
                    problems.append(f"{where}: gets raw-bucket setting {key}")
            if any(k in settings_names - {"DAGSTER_HOME", "LOG_LEVEL"} for k in env) and env.get(
                "EXCHANGE_ENV"
            ) != "production":
                problems.append(f"{where}: EXCHANGE_ENV must be production")
        if name not in MINIO_ROOT_SERVICES:
            for key in env:
                if key.startswith("MINIO_ROOT_"):
                    problems.append(f"{where}: gets the MinIO root credential {key}")

        allowed_ports = USER_FACING_PORTS.get(name, set())
        for host_ip, port in published_ports(service):
            if port not in allowed_ports:
                problems.append(f"{where}: publishes port {port}, but is not meant for users")
            elif name in LOOPBACK_ONLY and host_ip != "127.0.0.1":
                problems.append(f"{where}: must publish {port} on 127.0.0.1 only")

        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if not source or source.startswith(("/", ".", "~")):
                if source and source.startswith(".") and not (REPO_ROOT / source).exists():
                    problems.append(f"{where}: bind mount {source} does not exist")
            elif source not in declared_volumes:
                problems.append(f"{where}: volume {source!r} is not declared")
        for secret in service.get("secrets") or []:
            secret_name = secret if isinstance(secret, str) else secret["source"]
            if secret_name not in declared_secrets:
                problems.append(f"{where}: secret {secret_name!r} is not declared")
        for config in service.get("configs") or []:
            config_name = config if isinstance(config, str) else config["source"]
            if config_name not in declared_configs:
                problems.append(f"{where}: config {config_name!r} is not declared")

    if "redpanda-init" not in services:
        problems.append("no redpanda-init service")
    elif kafka_topics_of(compose) != KAFKA_TOPICS:
        problems.append(
            f"redpanda-init topics {kafka_topics_of(compose)} != harness.KAFKA_TOPICS "
            f"{KAFKA_TOPICS}"
        )
    return problems


def dagster_wiring_problems(compose: dict[str, Any], instance: dict[str, Any],
                            workspace: dict[str, Any]) -> list[str]:
    """dagster.yaml's env vars reach every Dagster service; the workspace names the code server."""
    problems = []
    services = compose["services"]
    needed = {node["env"] for node in _env_refs(instance)}
    for name in sorted(DAGSTER_SERVICES):
        service = services.get(name)
        if service is None:
            problems.append(f"no {name} service")
            continue
        env = service_environment(service)
        for var in sorted(needed - set(env)):
            problems.append(f"{name}: dagster.yaml reads {var}, which the service does not set")
        home = env.get("DAGSTER_HOME")
        targets = {c.get("target") for c in service.get("configs") or [] if isinstance(c, dict)}
        if not home or f"{home}/dagster.yaml" not in targets:
            problems.append(f"{name}: dagster.yaml is not mounted at $DAGSTER_HOME/dagster.yaml")
        command = service.get("command") or []
        if "-w" in command and command[command.index("-w") + 1] not in targets:
            problems.append(f"{name}: its workspace file is not mounted")

    servers = [entry["grpc_server"] for entry in workspace.get("load_from") or []
               if "grpc_server" in entry]
    if len(servers) != 1:
        return problems + [f"workspace.yaml: expected one grpc_server, found {len(servers)}"]
    server = servers[0]
    code = services.get(server.get("host"))
    if code is None:
        return problems + [f"workspace.yaml: host {server.get('host')!r} is not a compose service"]
    command = [str(part) for part in code.get("command") or []]
    if command[:3] != ["dagster", "api", "grpc"]:
        problems.append(f"workspace.yaml: {server['host']} does not run `dagster api grpc`")
    if "-p" not in command or int(command[command.index("-p") + 1]) != server.get("port"):
        problems.append(f"workspace.yaml: port {server.get('port')} is not the code server's -p")
    if "-m" not in command or command[command.index("-m") + 1] != "exchange_assets.definitions":
        problems.append("the code server does not load exchange_assets.definitions")
    if server.get("location_name") != "exchange_assets":
        problems.append("workspace.yaml: location_name is not exchange_assets")
    return problems


def _env_refs(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if set(node) == {"env"}:
            yield node
        for value in node.values():
            yield from _env_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _env_refs(value)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture
def clean_settings_env(monkeypatch) -> None:
    """Settings below see only what a test passes, not this process's environment."""
    for name in settings_variables():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def operator_env(tmp_path: Path) -> dict[str, str]:
    """What an operator's .env would hold: every documented variable, secrets freshly random."""
    key_file = tmp_path / "tokenizer-keys.json"
    key_file.write_text('{"active_key_id": "k1", "keys": {"k1": "%s"}}' % secrets.token_hex(20))
    env = {}
    for name, example in documented_variables().items():
        env[name] = example or secrets.token_hex(20)
    env["TOKENIZER_HMAC_KEYS_FILE"] = str(key_file)
    return env


@pytest.fixture
def env_file(tmp_path: Path, operator_env: dict[str, str]) -> Path:
    path = tmp_path / "compose.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in operator_env.items()))
    return path


def compose_cli() -> list[str] | None:
    """`docker compose` (plugin) or a v2 `docker-compose`, if one actually works here."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for cli in candidates:
        try:
            probe = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True,
                                   timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and re.match(r"v?[2-9]\.", probe.stdout.strip()):
            return cli
    return None


# --- tests -------------------------------------------------------------------------------------


def test_compose_config_is_valid(compose, env_file: Path) -> None:
    """`docker compose config -q` where a compose CLI exists; the structural check regardless."""
    cli = compose_cli()
    if cli is not None:
        env = {k: v for k, v in os.environ.items() if k not in documented_variables()}
        result = subprocess.run(
            [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
    # Without a compose CLI (the docker client here has no compose plugin) this is the check.
    assert compose_problems(compose, set(documented_variables())) == []


def test_compose_structure(compose) -> None:
    assert compose_problems(compose, set(documented_variables())) == []


def test_env_example_documents_only_what_compose_uses(compose) -> None:
    used = {name for text in strings(compose) for name, _, _ in interpolations(text)}
    assert set(documented_variables()) == used


def test_every_secret_is_required_and_empty_in_the_example(compose) -> None:
    """A forgotten secret stops `docker compose up` instead of starting with a blank."""
    documented = documented_variables()
    for name in documented:
        # Access key ids are names, *_FILE are paths: neither is secret.
        if is_secret_name(name) and not name.endswith(("_ID", "_FILE")):
            assert documented[name] == "", f"{name} has an example value in env.example"
            forms = {op for text in strings(compose)
                     for var, op, _ in interpolations(text) if var == name}
            assert forms == {":?"}, f"{name} is interpolated as {forms}, not only ${{{name}:?...}}"


def test_platform_environments_are_valid_settings(
    compose, operator_env, clean_settings_env
) -> None:
    """Each platform service's environment, rendered as compose would, builds Settings."""
    fields = settings_variables()
    for name in sorted(PLATFORM_SERVICES):
        rendered = {key: render(value, operator_env)
                    for key, value in service_environment(compose["services"][name]).items()}
        kwargs = {key.lower(): value for key, value in rendered.items() if key in fields}
        settings = Settings(**kwargs)
        if "EVENT_BUS_URL" in rendered:
            assert settings.bus_kind == "kafka", name
        if "DATABASE_URL" in rendered:
            assert settings.database_url.endswith("@postgres:5432/exchange"), name
        if "OBJECT_STORE_URL" in rendered:
            assert settings.object_store_url == "s3://raw-objects", name


# Services that call the tokenizer and so need its credential.
TOKENIZER_CALLERS = frozenset({"tokenizer", "dagster-code"})


def test_tokenizer_credential_only_where_needed(compose) -> None:
    """Only the tokenizer and its caller (the Dagster code server) hold the service token."""
    holders = {name for name, service in compose["services"].items()
               if "TOKENIZER_SERVICE_TOKEN" in service_environment(service)}
    assert holders == TOKENIZER_CALLERS


def test_redpanda_topics_match_the_harness(compose) -> None:
    assert kafka_topics_of(compose) == KAFKA_TOPICS


def test_dagster_instance_config() -> None:
    """deploy/dagster.yaml passes Dagster's own instance schema and says what we rely on."""
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    instance = yaml.safe_load(DAGSTER_YAML.read_text())
    storage = instance["storage"]["postgres"]["postgres_db"]
    for field in ("hostname", "username", "password", "db_name"):
        assert set(storage[field]) == {"env"}, f"storage {field} must come from the environment"
    assert storage["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = instance.get("concurrency", {}).get("runs") or instance["run_coordinator"]["config"]
    assert 1 <= runs["max_concurrent_runs"] <= 8
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} \
        in runs["tag_concurrency_limits"]
    assert instance["run_retries"]["enabled"] is True
    assert instance["run_retries"]["max_retries"] == 2

    config, _ = dagster_instance_config(str(DAGSTER_YAML.parent), DAGSTER_YAML.name)
    assert "postgres" in config["storage"]
    for key in ("run_coordinator", "run_launcher", "local_artifact_storage", "compute_logs"):
        if key in config:
            class_from_code_pointer(config[key]["module"], config[key]["class"])
    # dagster-postgres is what backs `storage: postgres:` at run time.
    import dagster_postgres  # noqa: F401


def test_workspace_points_at_the_code_server(compose) -> None:
    from dagster._core.workspace.config_schema import ensure_workspace_config

    workspace = yaml.safe_load(WORKSPACE_YAML.read_text())
    ensure_workspace_config(workspace, str(WORKSPACE_YAML))
    instance = yaml.safe_load(DAGSTER_YAML.read_text())
    assert dagster_wiring_problems(compose, instance, workspace) == []


def test_dockerfile_installs_every_package() -> None:
    """One non-root python:3.11-slim image with every package pyproject installs, and contracts/."""
    import tomllib

    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    dockerignore = (REPO_ROOT / ".dockerignore").read_text().split()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    # ingest_api reads contracts/ from beside its package (payload_validation.CONTRACTS_DIR).
    for directory in sorted(packages | {"contracts"}):
        assert re.search(rf"^COPY {directory} \./{directory}$", dockerfile, re.M), directory
        assert f"!{directory}/" in dockerignore, directory
    assert "**/.env" in dockerignore


# --- the check can fail ------------------------------------------------------------------------


def _inline_secret(doc):
    doc["services"]["ingest-api"]["environment"]["AWS_SECRET_ACCESS_KEY"] = "minio-secret-123"


def _secret_with_default(doc):
    doc["services"]["tokenizer"]["environment"]["TOKENIZER_SERVICE_TOKEN"] = \
        "${TOKENIZER_SERVICE_TOKEN:-not-so-secret}"


def _literal_password_in_url(doc):
    doc["services"]["relay"]["environment"]["DATABASE_URL"] = \
        "postgresql://exchange:hunter2@postgres:5432/exchange"


def _dangling_depends_on(doc):
    doc["services"]["relay"]["depends_on"]["kafka"] = {"condition": "service_healthy"}


def _invalid_condition(doc):
    doc["services"]["relay"]["depends_on"]["migrate"] = {"condition": "service_finished"}


def _healthy_without_healthcheck(doc):
    doc["services"]["migrate"]["depends_on"] = {"minio-init": {"condition": "service_healthy"}}


def _no_image(doc):
    del doc["services"]["postgres"]["image"]


def _undocumented_variable(doc):
    doc["services"]["relay"]["environment"]["LOG_LEVEL"] = "${RELAY_LOG_LEVEL:-INFO}"


def _unknown_env_name(doc):
    doc["services"]["relay"]["environment"]["KAFKA_BOOTSTRAP"] = "redpanda:9092"


def _raw_bucket_credentials_for_the_relay(doc):
    doc["services"]["relay"]["environment"]["AWS_ACCESS_KEY_ID"] = \
        "${INGEST_S3_ACCESS_KEY_ID:?set it}"


def _published_postgres(doc):
    doc["services"]["postgres"]["ports"] = ["5432:5432"]


def _public_dagster_ui(doc):
    doc["services"]["dagster-webserver"]["ports"] = ["3000:3000"]


def _topic_drift(doc):
    env = doc["services"]["redpanda-init"]["environment"]
    env["KAFKA_TOPICS"] = env["KAFKA_TOPICS"].replace("record.ingested.v2:4",
                                                      "record.ingested.v2:1")


def _not_production(doc):
    doc["services"]["ingest-api"]["environment"]["EXCHANGE_ENV"] = "local"


def _version_key(doc):
    doc["version"] = "3.9"


BROKEN = [_inline_secret, _secret_with_default, _literal_password_in_url, _dangling_depends_on,
          _invalid_condition, _healthy_without_healthcheck, _no_image, _undocumented_variable,
          _unknown_env_name, _raw_bucket_credentials_for_the_relay, _published_postgres,
          _public_dagster_ui, _topic_drift, _not_production, _version_key]


@pytest.mark.parametrize("breakage", BROKEN, ids=[f.__name__.strip("_") for f in BROKEN])
def test_structural_check_rejects(compose, breakage) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert compose_problems(broken, set(documented_variables())) != []


def test_wiring_check_rejects_a_wrong_code_server_port(compose) -> None:
    workspace = yaml.safe_load(WORKSPACE_YAML.read_text())
    workspace["load_from"][0]["grpc_server"]["port"] = 4001
    instance = yaml.safe_load(DAGSTER_YAML.read_text())
    assert dagster_wiring_problems(compose, instance, workspace) != []
    broken = copy.deepcopy(compose)
    del broken["services"]["dagster-daemon"]["environment"]["DAGSTER_PG_PASSWORD"]
    workspace["load_from"][0]["grpc_server"]["port"] = 4000
    assert dagster_wiring_problems(broken, instance, workspace) != []

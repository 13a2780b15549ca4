# syntax=docker/dockerfile:1
# One image for every platform service: the ingest API, the outbox relay, the tokenizer, the
# migrations and the Dagster code server / webserver / daemon. docker-compose.yml chooses the
# command per service (`exchange serve ingest`, `exchange relay`, `dagster api grpc`, ...).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with the project and its pinned Dagster family ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first: this layer is rebuilt only when pyproject.toml changes, not on every edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY contracts ./contracts
COPY exchange_core ./exchange_core
COPY ingest_api ./ingest_api
COPY tokenizer ./tokenizer
COPY exchange_assets ./exchange_assets
COPY sensors ./sensors
# ingest_api reads the payload schemas from `contracts/` next to its package directory
# (ingest_api/payload_validation.py: Path(__file__).parent.parent / "contracts"), which a
# non-editable install does not carry: place them beside the installed packages, and prove it.
RUN pip install . \
 && cp -r contracts "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/contracts" \
 && python -c "from ingest_api.payload_validation import validator_for; validator_for('payloads/record.v1.schema.json')"

# --- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

# A fixed, unprivileged uid/gid: operators chown the tokenizer key file to it (deploy/env.example).
# DAGSTER_HOME (compose mounts dagster.yaml into it) and the compute-log / artifact storage are
# owned by that user, so a fresh named volume mounted there inherits the ownership.
RUN groupadd --system --gid 10001 exchange \
 && useradd --system --uid 10001 --gid exchange --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin exchange \
 && mkdir -p /opt/dagster/dagster_home /opt/dagster/storage \
 && chown -R exchange:exchange /opt/dagster

COPY --from=build /opt/venv /opt/venv

USER exchange:exchange
WORKDIR /opt/dagster
# Partner API 8000, tokenizer 8100, Dagster gRPC code server 4000, Dagster UI 3000.
EXPOSE 8000 8100 4000 3000
CMD ["exchange", "--help"]

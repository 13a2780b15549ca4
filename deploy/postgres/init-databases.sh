#!/bin/sh
# Runs once, when the postgres container initializes an empty data volume
# (/docker-entrypoint-initdb.d). Creates one non-superuser role and database for the platform
# (`exchange`: schemas ingest, exchange, canonical, created by `exchange migrate`) and one for
# Dagster's own storage (`dagster`). Passwords come from the container environment, are passed
# to psql as variables (quoted by psql, never spliced into SQL text) and are not echoed.
#
# Changing a password later: this script does not run again on an initialized volume, so
#   docker compose exec postgres psql -U postgres -c "ALTER ROLE exchange PASSWORD '...'"
# then update .env and `docker compose up -d`.
set -eu

: "${EXCHANGE_DB_PASSWORD:?EXCHANGE_DB_PASSWORD is required}"
: "${DAGSTER_PG_PASSWORD:?DAGSTER_PG_PASSWORD is required}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v exchange_password="$EXCHANGE_DB_PASSWORD" \
  -v dagster_password="$DAGSTER_PG_PASSWORD" <<'SQL'
CREATE ROLE exchange LOGIN PASSWORD :'exchange_password';
CREATE DATABASE exchange OWNER exchange;
REVOKE ALL ON DATABASE exchange FROM PUBLIC;

CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE dagster OWNER dagster;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
SQL

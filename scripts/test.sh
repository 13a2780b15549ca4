#!/usr/bin/env bash
# The whole test suite against real services, started by the project's own harness.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# Postgres, SeaweedFS and Kafka on 127.0.0.1, once for every test worker (idempotent).
exchange services up >/dev/null
status=0
python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
if [ "${CI:-}" = "true" ]; then
  exchange services down || true
fi
exit "$status"

#!/usr/bin/env bash
# Every benchmark in bench/, one after another (each prints its figures; nothing is asserted).
# Run on a quiet machine: the figures are ratios and rates measured side by side in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The ingest benchmark's closed-loop load generator.
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system package: wrk (sudo apt-get install wrk)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
export PATH="$PWD/.venv/bin:$PATH"
exchange services up >/dev/null
for bench in tokenizer_bench ingest_bench ingest_v2_bench relay_bench backfill_bench pipeline_bench; do
  echo "== bench/$bench.py" >&2
  python "bench/$bench.py"
done

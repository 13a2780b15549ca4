# The two commands a newcomer needs: `make demo` and `make test`. Both do all set-up themselves.
.PHONY: setup test demo services-up services-down openapi bench

setup:
	scripts/bootstrap.sh

test:
	scripts/test.sh

demo: setup
	.venv/bin/exchange demo

services-up: setup
	.venv/bin/exchange services up

services-down:
	.venv/bin/exchange services down

# Every benchmark in bench/ (figures in bench/README.md); needs a quiet machine.
bench:
	scripts/bench.sh

# Regenerate the reviewed API contract after a deliberate API change.
openapi: setup
	.venv/bin/python -m ingest_api.export_openapi > contracts/openapi.yaml

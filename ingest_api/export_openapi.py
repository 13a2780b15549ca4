"""Print the served OpenAPI document as YAML: `python -m ingest_api.export_openapi`.

contracts/openapi.yaml is the reviewed contract; tests/contract fails when the served document
drifts from it, so an API change is always a deliberate edit of both.
"""

from __future__ import annotations

import sys

import yaml

from exchange_core.settings import Settings
from ingest_api.app import create_app


def served_document() -> dict:
    return create_app(Settings(object_store_url="file:///nonexistent")).openapi()


def main() -> int:
    yaml.safe_dump(served_document(), sys.stdout, sort_keys=False, allow_unicode=True, width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())

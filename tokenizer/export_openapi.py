"""Print the tokenizer's served OpenAPI document as YAML: `python -m tokenizer.export_openapi`.

contracts/tokenizer.openapi.yaml is the reviewed contract; tests/contract fails when the served
document drifts from it, so an API change is always a deliberate edit of both.
"""

from __future__ import annotations

import sys

import yaml

from exchange_core.settings import Settings
from tokenizer.app import create_app


def served_document() -> dict:
    # No lifespan runs: building the document opens no store and reads or creates no key file.
    return create_app(Settings(object_store_url="file:///nonexistent")).openapi()


def main() -> int:
    yaml.safe_dump(served_document(), sys.stdout, sort_keys=False, allow_unicode=True, width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())

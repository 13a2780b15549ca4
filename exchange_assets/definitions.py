"""The code location's single root: the defs/ folder, the sensors, and cross-cutting policy."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

import sensors
from exchange_assets.defs.resources import build_resources


@dg.definitions
def defs() -> dg.Definitions:
    environment = os.environ.get("EXCHANGE_ENV", "local")
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        sensors.defs(),
        dg.Definitions(
            resources=build_resources(environment),
            # One process per run, steps in-process: a batch run's cost is its records, not
            # three Python start-ups.
            executor=dg.in_process_executor,
        ),
    )

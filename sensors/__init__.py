"""Dagster sensors (outside the autoloaded defs/ tree): the record-event sensor and the
dead-letter redrive sensor. `defs()` builds them with the configured batch size and interval."""

from __future__ import annotations

import os

import dagster as dg

from sensors.event_sensor import build_record_events_sensor
from sensors.redrive_sensor import dead_letter_redrive_sensor


def defs() -> dg.Definitions:
    max_events = int(os.environ.get("EXCHANGE_SENSOR_MAX_EVENTS", "5000"))
    interval_s = int(os.environ.get("EXCHANGE_SENSOR_INTERVAL_S", "5"))
    return dg.Definitions(sensors=[
        build_record_events_sensor(max_events=max_events, interval_s=interval_s),
        dead_letter_redrive_sensor,
    ])

"""Dead-letter redrive sensor (stopped by default): after an operator fixed the cause, turning
it on launches `redrive_dead_letters_job` for each day with open dead letters, once per state."""


import dagster as dg

from exchange_assets.defs.jobs import redrive_dead_letters_job
from exchange_assets.defs.resources import PostgresResource


@dg.sensor(
    name="dead_letter_redrive_sensor",
    job=redrive_dead_letters_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Redrives open dead letters per day; turn on after fixing their cause.",
)
def dead_letter_redrive_sensor(context: dg.SensorEvaluationContext, db: PostgresResource):
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT partition_date, count(*), max(last_failed_at) FROM exchange.dead_letter_records "
            "WHERE resolved_at IS NULL GROUP BY partition_date ORDER BY partition_date").fetchall()
    if not rows:
        return dg.SkipReason("no open dead letters")
    # The run key changes only when the day's dead letters change, so one state → one redrive.
    return [
        dg.RunRequest(run_key=f"redrive-{day.isoformat()}-{count}-{latest.timestamp():.0f}",
                      partition_key=day.isoformat())
        for day, count, latest in rows
    ]

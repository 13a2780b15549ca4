"""Daily partitions by UTC receipt date."""

import dagster as dg

# end_offset=1: today's partition exists while the day is still filling up.
daily_receipt_partitions_def = dg.DailyPartitionsDefinition(
    start_date="2025-06-01", timezone="UTC", end_offset=1
)

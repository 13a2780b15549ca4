"""Dagster code location: raw → tokenized → canonical, partitioned by UTC receipt day."""

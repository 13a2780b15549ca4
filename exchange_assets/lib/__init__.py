"""Plain pipeline logic (no Dagster imports), called by the assets and tested directly."""

"""The partner-facing ingest API (FastAPI) and the outbox relay."""

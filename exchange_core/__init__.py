"""Shared plumbing for every deployable of the exchange platform: settings, database and
migrations, object store, event bus, logging, the local-services harness and the CLI."""

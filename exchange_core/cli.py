"""`exchange`: the one console script (services, migrate, partners, serve, relay, gc-orphans, ...)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def _settings():
    from exchange_core.settings import get_settings

    return get_settings()


def cmd_services(args: argparse.Namespace) -> int:
    from exchange_core.services import harness

    root = harness.services_root()
    if args.action == "up":
        components = tuple(args.only.split(",")) if args.only else harness.ALL_COMPONENTS
        state = harness.up(root, components, log=lambda line: print(line, file=sys.stderr))
        print("\n".join(harness.env_lines(state)))
    elif args.action == "down":
        harness.down(root, log=lambda line: print(line, file=sys.stderr))
    elif args.action == "env":
        state = harness.load_state(root)
        if state is None or not state.pids:
            print("services are not running: `exchange services up`", file=sys.stderr)
            return 1
        print("\n".join(harness.env_lines(state)))
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from exchange_core.db import migrate

    applied = migrate(_settings().database_url, log=lambda line: print(line, file=sys.stderr))
    print(f"{len(applied)} migration(s) applied" if applied else "database is up to date",
          file=sys.stderr)
    return 0


def cmd_partners(args: argparse.Namespace) -> int:
    import psycopg
    import psycopg.conninfo

    from ingest_api.partners import create_partner

    database_url = _settings().database_url
    try:
        conn = psycopg.connect(database_url)
    except psycopg.OperationalError:
        where = psycopg.conninfo.conninfo_to_dict(database_url)
        print(f"cannot reach the database at {where.get('host')}:{where.get('port', 5432)} (DATABASE_URL); "
              'start the stack, or point at it with: eval "$(exchange services env)"', file=sys.stderr)
        return 2
    with conn:
        try:
            created = create_partner(conn, args.name)
        except psycopg.errors.UniqueViolation:
            print(f"a partner named {args.name!r} already exists", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps({"partner_id": created.partner_id, "api_key": created.api_key}))
    else:
        print(f"partner_id: {created.partner_id}")
        print(f"api_key:    {created.api_key}")
        print("Store the key now: it is shown only once.", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from exchange_core.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level)
    if args.service == "ingest":
        from ingest_api.app import create_app

        app = create_app(settings)
        port = args.port or 8000
    else:
        from tokenizer.app import create_app as create_tokenizer_app

        app = create_tokenizer_app(settings)
        port = args.port or 8100
    uvicorn.run(app, host=args.host, port=port, log_config=None, access_log=False,
                workers=1, timeout_graceful_shutdown=10)
    return 0


def cmd_gc_orphans(args: argparse.Namespace) -> int:
    import psycopg

    from exchange_core.gc_orphans import gc_orphans, parse_duration
    from exchange_core.object_store import open_object_store

    settings = _settings()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        report = gc_orphans(conn, open_object_store(settings),
                            older_than=parse_duration(args.older_than), dry_run=args.dry_run,
                            prefix=args.prefix)
    print(json.dumps(asdict(report)))
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from exchange_core.logging import configure_logging
    from ingest_api.outbox_relay import run_relay

    settings = _settings()
    configure_logging(settings.log_level)
    run_relay(settings, batch_size=args.batch_size, metrics_port=args.metrics_port,
              metrics_host=args.metrics_host)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    import csv

    from tokenizer.csv_tokens import CsvInputError, tokenize_csv_file
    from tokenizer.keys import KeyFileError, load_secret_file

    secret_file = args.secret_file or _settings().tokenizer_hmac_secret_file
    if secret_file is None:
        print("exchange tokens: pass --secret-file or set TOKENIZER_HMAC_SECRET_FILE",
              file=sys.stderr)
        return 2
    try:
        key = load_secret_file(Path(secret_file)).active
        report = tokenize_csv_file(Path(args.input), Path(args.output), key)
    except (KeyFileError, CsvInputError, csv.Error) as exc:  # messages carry no secret or cell
        print(f"exchange tokens: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"exchange tokens: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    rate = report.rows / report.seconds if report.seconds else 0.0
    print(f"tokenized {report.rows} rows in {report.seconds:.2f} s ({rate:,.0f} rows/s), "
          f"key_id {key.key_id}", file=sys.stderr)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from exchange_core.dev_stack import DevPorts, run_dev

    ports = DevPorts(ingest=args.ingest_port, tokenizer=args.tokenizer_port, dagster=args.dagster_port)
    return run_dev(full=args.stack == "full", ports=ports)


def cmd_demo(args: argparse.Namespace) -> int:
    from exchange_core.demo import run_demo
    from exchange_core.dev_stack import DevPorts

    ports = DevPorts(ingest=args.ingest_port, tokenizer=args.tokenizer_port, dagster=args.dagster_port)
    data = Path(args.data).resolve() if args.data else None
    return run_demo(data, exit_after=args.exit, as_json=args.json, ports=ports, full=args.stack == "full")


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", choices=["embedded", "full"], default="embedded",
                        help="embedded: file store + Postgres event log; full: SeaweedFS + Kafka")
    parser.add_argument("--ingest-port", type=int, default=8000)
    parser.add_argument("--tokenizer-port", type=int, default=8100)
    parser.add_argument("--dagster-port", type=int, default=3000)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchange", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    services = sub.add_parser("services", help="real local Postgres, SeaweedFS S3, Kafka on loopback")
    services.add_argument("action", choices=["up", "down", "env"])
    services.add_argument("--only", help="comma-separated subset of postgres,s3,kafka")
    services.set_defaults(func=cmd_services)

    sub.add_parser("migrate", help="apply pending DB migrations (idempotent)").set_defaults(func=cmd_migrate)

    partners = sub.add_parser("partners", help="manage partners")
    partners_sub = partners.add_subparsers(dest="partners_command", required=True)
    create = partners_sub.add_parser("create", help="create a partner and print its API key once")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_partners)

    serve = sub.add_parser("serve", help="run the ingest API or the tokenizer")
    serve.add_argument("service", choices=["ingest", "tokenizer"])
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    relay = sub.add_parser("relay", help="publish outbox rows to the event bus until stopped")
    relay.add_argument("--batch-size", type=int, default=2000)
    relay.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on HOST:PORT")
    relay.add_argument("--metrics-host", default="127.0.0.1",
                       help="interface for the metrics endpoint (0.0.0.0 in containers)")
    relay.set_defaults(func=cmd_relay)

    tokens = sub.add_parser("tokens", help="tokenize a person CSV locally (T1-T5 per row)")
    tokens.add_argument("--input", required=True, help="CSV with first_name,last_name,birth_date,sex,postal_code,ssn")
    tokens.add_argument("--output", required=True, help="CSV to write: [row_id|record_id,]T1..T5,key_id")
    tokens.add_argument("--secret-file", help="JSON key file or plain-text secret (default: TOKENIZER_HMAC_SECRET_FILE)")
    tokens.set_defaults(func=cmd_tokens)

    dev = sub.add_parser("dev", help="embedded stack + Dagster UI in the foreground; Ctrl-C stops all")
    _add_stack_options(dev)
    dev.set_defaults(func=cmd_dev)

    demo = sub.add_parser("demo", help="dev stack + the bundled sample data, then a summary")
    demo.add_argument("--data", help="post every *.json here instead (FHIR bundles to v2, others to v1)")
    demo.add_argument("--exit", action="store_true", help="stop the stack after the summary")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _add_stack_options(demo)
    demo.set_defaults(func=cmd_demo)

    gc = sub.add_parser("gc-orphans", help="remove raw objects that no ledger row references")
    gc.add_argument("--older-than", default="24h", help="grace period, e.g. 30m, 24h (default 24h)")
    gc.add_argument("--dry-run", action="store_true")
    gc.add_argument("--prefix", default="raw/", help="only objects under this key prefix (default raw/)")
    gc.set_defaults(func=cmd_gc_orphans)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

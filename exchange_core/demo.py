"""`exchange demo`: the dev stack, the bundled sample data posted through the partner API,
a wait until every record is canonical or dead-lettered, then a summary.

Idempotency keys are the SHA-256 of each file, so running the demo again replays instead of
duplicating: the second run reports every record as replayed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psycopg
from tqdm import tqdm

from exchange_core.dev_stack import PROJECT_ROOT, DevPorts, DevStack
from exchange_core.services import harness

DEFAULT_DATA_DIRS = (PROJECT_ROOT / "samples" / "v1", PROJECT_ROOT / "tests" / "data" / "fhir")
DEMO_PARTNER_KEY = "dev"
TERMINAL_STATUSES = {"canonical", "dead_lettered"}


@dataclass
class DemoSummary:
    posted: int = 0
    accepted: int = 0
    replayed: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    canonical: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    dagster_url: str = ""
    rejections: list[dict] = field(default_factory=list)


def sample_files(data_dir: Path | None) -> list[Path]:
    dirs = [data_dir] if data_dir else list(DEFAULT_DATA_DIRS)
    files = sorted(path for directory in dirs for path in directory.rglob("*.json"))
    if data_dir is None:
        # Reference-data bundles (no Patient) are kept for the 422 tests, not for the demo.
        files = [path for path in files if not path.name.startswith(("hospitalInformation", "practitionerInformation"))]
    return files


def route_for(document: object) -> tuple[str, str]:
    """FHIR bundles go to v2, everything else to v1."""
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        return "/v2/ingest", "application/fhir+json"
    return "/v1/ingest", "application/json"


def post_samples(client: httpx.Client, base_url: str, files: list[Path], summary: DemoSummary,
                 show_progress: bool) -> list[str]:
    record_ids: list[str] = []
    for path in tqdm(files, desc="posting", unit="record", disable=not show_progress, file=sys.stderr):
        raw = path.read_bytes()
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        endpoint, content_type = route_for(document)
        summary.posted += 1
        response = client.post(
            f"{base_url}{endpoint}", content=raw,
            headers={"Authorization": f"Bearer {DEMO_PARTNER_KEY}", "Content-Type": content_type,
                     "Idempotency-Key": "demo-" + hashlib.sha256(raw).hexdigest()})
        if response.status_code == 202:
            summary.accepted += 1
            if response.headers.get("idempotent-replayed") == "true":
                summary.replayed += 1
            record_ids.append(response.json()["record_id"])
        else:
            summary.rejected += 1
            problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
            summary.rejections.append({"file": path.name, "status": response.status_code,
                                       "type": problem.get("type", "")})
    return record_ids


def wait_until_settled(client: httpx.Client, base_url: str, record_ids: list[str], timeout_s: float,
                       show_progress: bool) -> dict[str, str]:
    """Poll the status endpoint until every record is canonical or dead-lettered."""
    statuses: dict[str, str] = {}
    pending = list(dict.fromkeys(record_ids))
    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(pending), desc="processing", unit="record", disable=not show_progress,
              file=sys.stderr) as bar:
        while pending and time.monotonic() < deadline:
            still = []
            for record_id in pending:
                response = client.get(f"{base_url}/v1/records/{record_id}",
                                      headers={"Authorization": f"Bearer {DEMO_PARTNER_KEY}"})
                status = response.json().get("status") if response.status_code == 200 else "unknown"
                statuses[record_id] = status
                if status in TERMINAL_STATUSES:
                    bar.update(1)
                else:
                    still.append(record_id)
            pending = still
            if pending:
                time.sleep(1.0)
    return statuses


def canonical_counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'canonical' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name")]
        return {table: conn.execute(f'SELECT count(*) FROM canonical."{table}" WHERE partner_id = %s',
                                    (DEMO_PARTNER_KEY,)).fetchone()[0] for table in tables}


def run_demo(data_dir: Path | None, *, exit_after: bool, as_json: bool, ports: DevPorts, full: bool,
             timeout_s: float = 900) -> int:
    started = time.monotonic()
    log = (lambda line: print(line, file=sys.stderr))
    stack = DevStack(root=harness.services_root(), full=full, ports=ports, log=log)
    files = sample_files(data_dir)
    if not files:
        print(f"no *.json files in {data_dir}", file=sys.stderr)
        return 2
    try:
        stack.prepare()
        stack.start()
        stack.wait_ready()
        summary = DemoSummary(dagster_url=stack.dagster_url)
        with httpx.Client(timeout=120) as client:
            record_ids = post_samples(client, stack.ingest_url, files, summary, show_progress=True)
            statuses = wait_until_settled(client, stack.ingest_url, record_ids, timeout_s, show_progress=True)
        summary.dead_lettered = sum(1 for s in statuses.values() if s == "dead_lettered")
        summary.canonical = canonical_counts(stack.env["DATABASE_URL"])
        summary.elapsed_s = round(time.monotonic() - started, 1)
        unsettled = sum(1 for s in statuses.values() if s not in TERMINAL_STATUSES)
        print_summary(summary, as_json, unsettled)
        if not exit_after:
            print("\nThe stack stays up for exploring; Ctrl-C stops it.", file=sys.stderr)
            _wait_for_interrupt(stack)
        return 0 if unsettled == 0 and summary.rejected == 0 else 1
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()


def print_summary(summary: DemoSummary, as_json: bool, unsettled: int) -> None:
    if as_json:
        payload = {k: v for k, v in asdict(summary).items() if k != "rejections"}
        payload["rejected_files"] = summary.rejections
        payload["unsettled"] = unsettled
        print(json.dumps(payload))
        return
    print("\nDemo summary")
    print(f"  records posted     {summary.posted}")
    print(f"  accepted           {summary.accepted} (replayed {summary.replayed})")
    print(f"  rejected           {summary.rejected}")
    print(f"  dead letters       {summary.dead_lettered}")
    for table, rows in summary.canonical.items():
        print(f"  canonical.{table:<12} {rows} rows")
    if unsettled:
        print(f"  still processing   {unsettled}")
    print(f"  elapsed            {summary.elapsed_s}s")
    print(f"  Dagster UI         {summary.dagster_url}")


def _wait_for_interrupt(stack: DevStack) -> None:
    import signal

    stop = {"requested": False}

    def _request(signum, _frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, _request)
    signal.signal(signal.SIGINT, _request)
    while not stop["requested"] and all(stack.alive().values()):
        time.sleep(0.5)

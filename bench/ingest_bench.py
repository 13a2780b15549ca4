#!/usr/bin/env python
"""Ingest API v1 throughput and latency, side by side with a bare FastAPI echo endpoint.

    .venv/bin/python bench/ingest_bench.py [--duration 20] [--rate 500] [--json] [--profile]

One run, same machine, same load generators:
  (a) ingest max throughput: wrk (closed loop, --connections), unique Idempotency-Key and
      record_id per request, a valid ~1.6 KB v1 record; counts 202 only;
  (b) ingest at a fixed rate (default 500 req/s): open-loop generator, latency from the intended
      send time (no coordinated omission), achieved rate;
  (c) the echo endpoint's max throughput the same way as (a), and at the fixed rate as in (b)
      (the latter is the generator's own floor).
Both servers are separate uvicorn processes (1 worker, uvloop + httptools) started like
`exchange serve`; the ingest API writes to the harness SeaweedFS (real S3 PUTs) and to a fresh
database on the harness Postgres (durable commits: the settings are printed).
--profile adds a run under cProfile (CPU clock per thread, boto3 worker threads included) and
prints where the server's CPU goes. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

TARGETS = {"accepted_rps": 1000.0, "p99_ms_at_rate": 50.0, "ratio": 0.45}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measured phase")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed rate for phase (b), req/s")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (max throughput)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured warm-up")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="max seconds to wait for the machine to go idle before each phase")
    parser.add_argument("--profile", action="store_true",
                        help="also run the ingest server under cProfile and print the top costs")
    parser.add_argument("--profile-duration", type=float, default=10.0)
    parser.add_argument("--profile-out", help="keep the merged pstats file here")
    parser.add_argument("--ablations", action="store_true",
                        help="also measure max throughput with parts of the request path taken out")
    parser.add_argument("--ablation-duration", type=float, default=8.0)
    parser.add_argument("--keep-objects", action="store_true",
                        help="leave the raw objects this run wrote in the bucket")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser.parse_args(argv)


def measure(name: str, groups: dict[str, int], args, fn) -> dict:
    other_before = c.wait_for_quiet(args.quiet_wait)
    c.log(f"{name} ...")
    with c.CpuMeter(groups) as meter:
        result = fn()
    ok = result["ok"]
    result["phase"] = name
    result["busy_before_cores"] = other_before
    result["cpu_cores"] = meter.cores
    result["cpu_ms_per_ok"] = {k: round(v * 1000 / ok, 3) if ok else None
                               for k, v in meter.result.items() if k not in ("machine",)}
    rps = result.get("ok_rps", result.get("achieved_ok_rps"))
    c.log(f"{name}: {rps} ok req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    return result


def run(args) -> dict:
    c.require_wrk()
    started_at = datetime.now(timezone.utc)
    state = c.start_services(("postgres", "s3"))
    prefix, suffix = c.body_template()
    body_bytes = len(prefix) + len(suffix) + len("wrk-xxxxxxxx-1-100000")
    report: dict = {"benchmark": "ingest_v1", "started_at": started_at.isoformat(),
                    "machine_cores": os.cpu_count(), "body_bytes": body_bytes,
                    "duration_s": args.duration, "rate": args.rate,
                    "connections": args.connections, "targets": TARGETS}
    with c.fresh_database(state) as url:
        report["postgres"] = c.durability(url)
        partner = c.create_bench_partner(url)
        env = c.service_env(state, url)
        auth = f"Bearer {partner.api_key}"
        pg_pid, s3_pid = state.pids.get("postgres"), state.pids.get("s3")
        sent_ok = 0
        phases = []
        try:
            with c.Server("echo", env) as echo, c.Server("ingest", env) as ingest:
                echo_spec = c.LoadSpec(echo.base_url + "/echo", "", 200, prefix, suffix)
                ingest_spec = c.LoadSpec(ingest.base_url + "/v1/ingest", auth, 202, prefix, suffix)
                echo_groups = {"server": echo.proc.pid, "postgres": pg_pid, "s3": s3_pid}
                ingest_groups = {"server": ingest.proc.pid, "postgres": pg_pid, "s3": s3_pid}

                c.log("warming up both servers (not measured)")
                c.run_wrk(echo_spec, duration_s=args.warmup, connections=args.connections)
                warm = c.run_wrk(ingest_spec, duration_s=args.warmup, connections=args.connections)
                sent_ok += warm["ok"]

                phases.append(measure("echo max (wrk)", echo_groups, args, lambda: c.run_wrk(
                    echo_spec, duration_s=args.duration, connections=args.connections)))
                phases.append(measure("ingest max (wrk)", ingest_groups, args, lambda: c.run_wrk(
                    ingest_spec, duration_s=args.duration, connections=args.connections)))
                sent_ok += phases[-1]["ok"]
                phases.append(measure(f"ingest @{args.rate:g}/s (open loop)", ingest_groups, args,
                                      lambda: c.run_openloop(ingest_spec, rate=args.rate,
                                                             duration_s=args.duration)))
                fixed = phases[-1]
                sent_ok += fixed.get("all_ok", 0)
                if fixed["achieved_ok_rps"] < 0.95 * args.rate and phases[1]["ok_rps"] > 0:
                    # Overloaded at the design rate: also show latency where the API keeps up.
                    below = max(5.0, round(0.5 * phases[1]["ok_rps"]))
                    phases.append(measure(f"ingest @{below:g}/s = 50% of max (open loop)", ingest_groups,
                                          args, lambda: c.run_openloop(ingest_spec, rate=below,
                                                                       duration_s=args.duration)))
                    sent_ok += phases[-1].get("all_ok", 0)
                phases.append(measure(f"echo @{args.rate:g}/s (open loop)", echo_groups, args,
                                      lambda: c.run_openloop(echo_spec, rate=args.rate,
                                                             duration_s=args.duration)))
            report["phases"] = phases
            report["consistency"] = check_ledger(url, partner.partner_id, phases)
            report["consistency"]["202_responses"] = sent_ok

            if args.ablations:
                report["ablations"] = ablation_runs(args, env, auth, prefix, suffix,
                                                    {"postgres": pg_pid, "s3": s3_pid})
            if args.profile:
                report["profile"] = profile_run(args, env, ingest_spec_factory=lambda base: c.LoadSpec(
                    base + "/v1/ingest", auth, 202, prefix, suffix))
        finally:
            if not args.keep_objects:
                try:
                    removed = c.delete_partner_objects(state, partner.partner_id, started_at)
                    c.log(f"removed {removed} raw objects written by this run")
                except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                    c.log(f"could not remove raw objects: {type(exc).__name__}")
    summarize(report)
    return report


def check_ledger(url: str, partner_id: str, phases: list[dict]) -> dict:
    """Every 202 must be one ledger row, one outbox row and one idempotency row (not timed)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM ingest.{table} WHERE partner_id = %s",
                                (partner_id,)).fetchone()[0]
            for table in ("ingested_records", "idempotency_keys", "audit_log")
        }
        counts["outbox_events"] = conn.execute("SELECT count(*) FROM ingest.outbox_events").fetchone()[0]
    return counts


def summarize(report: dict) -> None:
    by_name = {p["phase"]: p for p in report["phases"]}
    echo_max = next(p for n, p in by_name.items() if n.startswith("echo max"))
    ingest_max = next(p for n, p in by_name.items() if n.startswith("ingest max"))
    ingest_rate = next(p for n, p in by_name.items() if n.startswith(f"ingest @{report['rate']:g}/s"))
    below = next((p for n, p in by_name.items() if "% of max" in n), None)
    report["summary"] = {
        "ingest_accepted_rps": ingest_max["ok_rps"],
        "ingest_max_p50_ms": ingest_max["p50_ms"],
        "ingest_max_p99_ms": ingest_max["p99_ms"],
        "ingest_at_rate_achieved_rps": ingest_rate["achieved_ok_rps"],
        "ingest_at_rate_p50_ms": ingest_rate["p50_ms"],
        "ingest_at_rate_p99_ms": ingest_rate["p99_ms"],
        "echo_rps": echo_max["ok_rps"],
        "echo_at_rate_p99_ms": next((p["p99_ms"] for n, p in by_name.items() if n.startswith("echo @")), None),
        "ratio_ingest_to_echo": round(ingest_max["ok_rps"] / echo_max["ok_rps"], 3)
        if echo_max["ok_rps"] else None,
    }
    if below:
        report["summary"].update({"ingest_below_max_rate": below["target_rps"],
                                  "ingest_below_max_p50_ms": below["p50_ms"],
                                  "ingest_below_max_p99_ms": below["p99_ms"]})


def print_report(report: dict) -> None:
    rows = []
    for p in report["phases"]:
        load = f"c={p['connections']}" if p["tool"] == "wrk" else f"{p['target_rps']:g}/s"
        rps = p.get("ok_rps", p.get("achieved_ok_rps"))
        errors = (p.get("other_status", 0) + p.get("socket_errors", 0)) if p["tool"] == "wrk" else (
            p["completed"] - p["ok"] + sum(p["errors"].values()) + p["unfinished"])
        cores = p["cpu_cores"]
        rows.append([p["phase"], load, p["ok"], rps, p["p50_ms"], p["p90_ms"], p["p99_ms"],
                     p["p999_ms"], errors, cores.get("server"), cores.get("postgres"),
                     cores.get("s3"), cores.get("loadgen"), cores.get("other")])
    print()
    print(f"Ingest v1 vs echo: {report['duration_s']:g}s per phase, body {report['body_bytes']} B, "
          f"{report['machine_cores']} cores; postgres fsync={report['postgres']['fsync']} "
          f"synchronous_commit={report['postgres']['synchronous_commit']} "
          f"(PostgreSQL {report['postgres']['server_version']})")
    print(c.table(rows, ["phase", "load", "ok", "ok req/s", "p50 ms", "p90 ms", "p99 ms",
                         "p99.9 ms", "errors", "server", "postgres", "s3", "loadgen", "other"]))
    print("(server/postgres/s3/loadgen/other: CPU cores used during the phase; other = rest of the machine)")
    s = report["summary"]
    t = report["targets"]
    print()
    print(c.table([
        ["ingest accepted req/s (max)", s["ingest_accepted_rps"], f">= {t['accepted_rps']:g}",
         _verdict(s["ingest_accepted_rps"] >= t["accepted_rps"])],
        [f"ingest p99 @ {report['rate']:g} req/s (ms)", s["ingest_at_rate_p99_ms"],
         f"<= {t['p99_ms_at_rate']:g}", _verdict(s["ingest_at_rate_p99_ms"] <= t["p99_ms_at_rate"])],
        ["ingest achieved req/s @ rate", s["ingest_at_rate_achieved_rps"], f"{report['rate']:g}", ""],
        *([[f"ingest p99 @ {s['ingest_below_max_rate']:g} req/s = 50% of max (ms)",
            s["ingest_below_max_p99_ms"], "", ""]] if "ingest_below_max_rate" in s else []),
        [f"echo p99 @ {report['rate']:g} req/s (ms; generator floor)", s["echo_at_rate_p99_ms"], "", ""],
        ["ratio ingest / echo", s["ratio_ingest_to_echo"], f">= {t['ratio']:g}",
         _verdict((s["ratio_ingest_to_echo"] or 0) >= t["ratio"])],
    ], ["figure", "measured", "design target", ""]))
    ingest_max = next(p for p in report["phases"] if p["phase"].startswith("ingest max"))
    per = ingest_max["cpu_ms_per_ok"]
    print()
    print("CPU per accepted request at max throughput (ms): "
          + ", ".join(f"{k} {v}" for k, v in per.items() if v is not None))
    print(f"ledger check: {report['consistency']}")
    if "ablations" in report:
        print_ablations(report["ablations"])
    if "profile" in report:
        print_profile(report["profile"], ingest_max["cpu_ms_per_ok"].get("server"))


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --------------------------------------------------------------------------- profiling

CATEGORIES = [
    ("S3 client: boto3/botocore/urllib3", ("/botocore/", "/boto3/", "/urllib3/", "/s3transfer/")),
    ("Postgres driver: psycopg/psycopg_pool", ("/psycopg/", "/psycopg_pool/", "/psycopg_binary/")),
    ("JSON Schema validation: jsonschema", ("/jsonschema/", "/referencing/", "/rpds/",
                                            "ingest_api/payload_validation.py")),
    ("FastAPI/Starlette/pydantic", ("/fastapi/", "/starlette/", "/pydantic/", "/pydantic_core/",
                                    "/anyio/", "/typing_inspection/")),
    ("uvicorn/httptools (HTTP)", ("/uvicorn/", "/httptools/", "/h11/")),
    ("logging (JSON request lines)", ("/logging/", "exchange_core/logging.py")),
    ("metrics: prometheus_client", ("/prometheus_client/",)),
    ("event loop + thread hand-off", ("/asyncio/", "/uvloop/", "/concurrent/futures/", "/threading.py",
                                      "/queue.py", "/selectors.py", "/contextvars")),
    ("app code: ingest_api + exchange_core", ("/ingest_api/", "/exchange_core/")),
    ("stdlib: datetime/uuid/json/hashlib/...", ("/python3.", "/lib/python")),
]

KEY_FUNCTIONS = [
    ("S3 PUT (S3ObjectStore.put_new, in a worker thread)", "exchange_core/object_store.py", "put_new"),
    ("JSON Schema validation (describe_errors)", "ingest_api/payload_validation.py", "describe_errors"),
    ("request fingerprint (canonical JSON + SHA-256)", "exchange_core/canonical_json.py", "request_fingerprint"),
    ("parse JSON body (orjson)", "exchange_core/canonical_json.py", "parse_json"),
    ("idempotency lookup query (lookup_existing)", "ingest_api/intake.py", "lookup_existing"),
    ("ledger/outbox/audit inserts (_record_acceptance)", "ingest_api/intake.py", "_record_acceptance"),
    ("intake() total incl. DB + S3 hand-off", "ingest_api/intake.py", "intake"),
    ("ingest_v1 handler total", "ingest_api/routes/ingest.py", "ingest_v1"),
    ("JSON log line (JsonFormatter.format)", "exchange_core/logging.py", "format"),
    ("request middleware total (everything above it)", "ingest_api/observability.py", "__call__"),
    ("psycopg Jsonb dumps", "psycopg/types/json.py", "dump"),
    ("botocore request signing (SigV4)", "botocore/auth.py", "add_auth"),
    ("botocore HTTP send (urllib3)", "botocore/httpsession.py", "send"),
    ("botocore parse response", "botocore/parsers.py", "parse"),
    ("botocore param validation", "botocore/validate.py", "validate_parameters"),
    ("botocore event hooks (emit)", "botocore/hooks.py", "emit"),
]


def _category(func: tuple) -> str | None:
    filename = func[0]
    if filename == "~":
        return None
    for name, needles in CATEGORIES:
        if any(n in filename for n in needles):
            return name
    return "other Python"


def analyze_profile(path: str, requests: int, top: int = 25) -> dict:
    """Self CPU per category (C builtins charged to their callers' categories), inclusive CPU of
    key functions, and the top functions by self time; all in ms per accepted request."""
    stats = pstats.Stats(path).stats  # func -> (cc, nc, tt, ct, callers)
    total = sum(v[2] for v in stats.values())
    per_cat: dict[str, float] = {}

    def charge(func, amount: float, depth: int = 0) -> None:
        cat = _category(func)
        if cat is not None or depth >= 4:
            per_cat[cat or "C builtins"] = per_cat.get(cat or "C builtins", 0.0) + amount
            return
        callers = stats[func][4] if func in stats else {}
        weight = sum(v[2] for v in callers.values())
        if not callers or weight <= 0:
            per_cat["C builtins"] = per_cat.get("C builtins", 0.0) + amount
            return
        for caller, value in callers.items():
            charge(caller, amount * value[2] / weight, depth + 1)

    for func, (cc, nc, tt, ct, callers) in stats.items():
        if tt > 0:
            charge(func, tt)
    scale = 1000.0 / max(1, requests)
    categories = sorted(((k, round(v * scale, 3), round(100 * v / total, 1)) for k, v in per_cat.items()),
                        key=lambda row: -row[1])
    key_rows = []
    for label, file_part, name in KEY_FUNCTIONS:
        matches = [(f, v) for f, v in stats.items() if f[2] == name and f[0].endswith(file_part)]
        if matches:
            calls = sum(v[1] for _, v in matches)
            cum = sum(v[3] for _, v in matches)
            key_rows.append((label, round(cum * scale, 3), round(100 * cum / total, 1), calls))
    top_rows = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    return {
        "requests": requests,
        "profiled_cpu_s": round(total, 2),
        "cpu_ms_per_request": round(total * scale, 3),
        "categories": categories,
        "key_functions": key_rows,
        "top_self": [(pstats.func_std_string(f).replace(str(c.REPO_ROOT) + "/", ""), v[1],
                      round(v[2] * scale, 4), round(100 * v[2] / total, 1)) for f, v in top_rows],
    }


def profile_run(args, env: dict, ingest_spec_factory) -> dict:
    keep = args.profile_out
    path = keep or tempfile.mktemp(prefix="bench-ingest-", suffix=".pstats")
    server = c.Server("ingest", env, profile_path=path)
    with server:
        spec = ingest_spec_factory(server.base_url)
        server.start_profiling()
        c.run_wrk(spec, duration_s=2, connections=args.connections)  # warm-up (also profiled)
        result = measure("ingest max under cProfile", {"server": server.proc.pid}, args,
                         lambda: c.run_wrk(spec, duration_s=args.profile_duration,
                                           connections=args.connections))
    # Warm-up requests are in the profile too: count every request the server answered.
    answered = _count_answered(server.log_path)
    analysis = analyze_profile(path, answered or result["ok"])
    analysis["wrk_under_profile"] = {k: result[k] for k in ("ok", "ok_rps", "p50_ms", "p99_ms")}
    if not keep:
        os.unlink(path)
    else:
        analysis["pstats_file"] = keep
    try:
        os.unlink(server.log_path)
    except OSError:
        pass
    return analysis


def ablation_runs(args, env: dict, auth: str, prefix: bytes, suffix: bytes, groups: dict) -> list[dict]:
    """Max throughput with parts taken out of the server (bench-only monkeypatches, see
    _common.ABLATIONS): what a part costs, without the profiler's overhead."""
    rows = []
    variants = [""] + list(c.ABLATIONS) + [",".join(c.ABLATIONS)]
    for ablate in variants:
        with c.Server("ingest", env, ablate=ablate) as server:
            spec = c.LoadSpec(server.base_url + "/v1/ingest", auth, 202, prefix, suffix)
            c.run_wrk(spec, duration_s=2, connections=args.connections)
            label = f"without {ablate}" if ablate else "baseline (nothing removed)"
            if ablate == ",".join(c.ABLATIONS):
                label = "without all of them"
            result = measure(f"ablation: {label}", {"server": server.proc.pid, **groups}, args,
                             lambda: c.run_wrk(spec, duration_s=args.ablation_duration,
                                               connections=args.connections))
            result["ablate"] = ablate
            rows.append(result)
    return rows


def _count_answered(log_path: str) -> int:
    """The API logs one JSON line per request: count the /v1/ingest ones."""
    count = 0
    with open(log_path, "rb") as handle:
        for line in handle:
            if b'"route":"/v1/ingest"' in line:
                count += 1
    return count


def print_ablations(rows: list[dict]) -> None:
    base = rows[0]
    base_cpu = base["cpu_ms_per_ok"]["server"]
    table = []
    for r in rows:
        cpu = r["cpu_ms_per_ok"]["server"]
        table.append([r["phase"].removeprefix("ablation: "), r["ok_rps"], r["p50_ms"], r["p99_ms"],
                      cpu, round(base_cpu - cpu, 2) if r is not base else "",
                      r["cpu_ms_per_ok"].get("postgres"), r["cpu_ms_per_ok"].get("s3"),
                      r["cpu_cores"].get("other")])
    print()
    print("Ablations: the ingest server with parts taken out (bench-only monkeypatches), wrk max")
    print(c.table(table, ["variant", "ok req/s", "p50 ms", "p99 ms", "server CPU ms/req",
                          "saved ms/req", "pg ms/req", "s3 ms/req", "other cores"]))
    print("; ".join(f"{k}: {v}" for k, v in c.ABLATIONS.items()))


def print_profile(profile: dict, server_ms: float | None) -> None:
    """Shares of profiled CPU; ms/req rescaled to the unprofiled server CPU per request (cProfile
    inflates call-heavy Python several-fold, so its own ms are not real costs)."""
    print()
    w = profile["wrk_under_profile"]
    scale = (server_ms or 0) / profile["cpu_ms_per_request"] if profile["cpu_ms_per_request"] else 0
    print(f"cProfile (CPU clock per thread, worker threads included): {profile['requests']} requests, "
          f"{w['ok_rps']} req/s under the profiler, {profile['cpu_ms_per_request']} profiled ms/req; "
          f"'~ms/req' rescales shares to the unprofiled {server_ms} ms/req")
    print(c.table([[r[0], r[2], round(r[1] * scale, 2)] for r in profile["categories"]],
                  ["self CPU by component", "%", "~ms/req"]))
    print()
    print(c.table([[r[0], r[2], round(r[1] * scale, 2)] for r in profile["key_functions"]],
                  ["inclusive CPU of key functions", "%", "~ms/req"]))
    print()
    print(c.table([[r[0], r[1], r[3]] for r in profile["top_self"]],
                  ["top functions by self CPU", "calls", "%"]))


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

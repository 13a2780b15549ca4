"""`exchange dev` stopped with SIGTERM (what Ctrl-C / a supervisor sends) leaves no process behind.

It runs as a user runs it: the real console script, in a fresh working directory (so its own
`.exchange/` and its own Postgres on another port base), until it prints its banner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from exchange_core.services.processes import free_port, pid_alive
from support.process_tree import descendants

pytestmark = pytest.mark.services


def wait_for_line(process: subprocess.Popen, needle: str, timeout_s: float) -> bool:
    """True once `needle` appears on the process's stdout. A reader thread, not select(): the banner
    arrives as one write, and lines already buffered by the text wrapper never wake select() again."""
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:
            if needle in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if found.wait(timeout=1.0):
            return True
    return found.is_set()


def postmaster_pid(workdir: Path) -> int | None:
    from exchange_core.services.harness import postgres_data_dir

    try:
        return int((postgres_data_dir(workdir / ".exchange") / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def test_sigterm_stops_every_process_exchange_dev_started(tmp_path):
    # Its own port base, below the ephemeral range: the other worker's connections use ports there.
    env = {**os.environ, "EXCHANGE_SERVICES_PORT_BASE": "21000", "EXCHANGE_SENSOR_INTERVAL_S": "2"}
    env.pop("EXCHANGE_SERVICES_DIR", None)
    exchange = Path(sys.executable).parent / "exchange"
    stderr_log = (tmp_path / "dev.stderr").open("w")
    process = subprocess.Popen(
        [str(exchange), "dev", "--ingest-port", str(free_port()), "--tokenizer-port", str(free_port()),
         "--dagster-port", str(free_port())],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr_log, text=True,
        start_new_session=True)
    try:
        assert wait_for_line(process, "Ctrl-C stops everything", timeout_s=300), \
            "exchange dev did not come up:\n" + (tmp_path / "dev.stderr").read_text()[-3000:]
        started = descendants(process.pid)
        services = (tmp_path / ".exchange" / "services.json").read_text()
        postgres_pid = postmaster_pid(tmp_path)
        assert '"postgres"' in services and postgres_pid and pid_alive(postgres_pid)
        assert len(started) >= 6  # tokenizer, ingest, relay, dg dev (+ webserver, daemon, code server)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in started | {postgres_pid}):
            time.sleep(0.5)
        left = [pid for pid in started | {postgres_pid} if pid_alive(pid)]
        assert left == [], f"processes left behind: {left}"
    finally:
        stderr_log.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in descendants(process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # pg_ctl daemonizes Postgres, so it is no descendant: a failed run must not leave it
        # holding the port for the next one (SIGQUIT: immediate shutdown).
        leftover = postmaster_pid(tmp_path)
        if leftover and pid_alive(leftover):
            os.kill(leftover, signal.SIGQUIT)

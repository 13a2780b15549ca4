"""A real PostgreSQL server for local development and tests, from the machine's binaries.

Postgres refuses to run as root, and these machines run everything as root, so the server runs
as the `postgres` system user (via runuser) when we are root. Where no binaries are installed, `.ci/run`
installs Debian's postgresql package first.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from exchange_core.services.processes import log_tail, pid_alive, stop_pid, wait_for_port

SUPERUSER = "exchange"


@dataclass(frozen=True)
class PostgresHandle:
    pid: int
    port: int
    data_dir: Path

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


def find_bin_dir() -> Path | None:
    """Newest /usr/lib/postgresql/N/bin holding initdb, or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
        reverse=True,
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def server_user_can_reach(path: Path) -> bool:
    """Whether the server's user can traverse to and write under `path`."""
    if os.geteuid() != 0:
        return True
    path.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)],
                           capture_output=True)
    return probe.returncode == 0


def _chown_for_server(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_postgres(data_dir: Path, port: int, *, timeout_s: float = 60) -> PostgresHandle:
    """initdb once, then start the server on 127.0.0.1:port (TCP only); idempotent."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError(
            "no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin: "
            "install them (`apt-get install postgresql`; .ci/run does this)"
        )
    pid = _read_pid(data_dir)
    if pid and pid_alive(pid):
        return PostgresHandle(pid=pid, port=port, data_dir=data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _chown_for_server(data_dir)
        subprocess.run(
            _as_server_user([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER,
                             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"]),
            check=True, capture_output=True,
        )
        # Loopback TCP only; durable commits stay on (fsync, synchronous_commit) because the
        # ingest guarantees are only as good as the commit.
        with open(data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\nlisten_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 300\n"
                "shared_buffers = 256MB\n"
                "max_prepared_transactions = 0\n"
                "log_min_messages = warning\n"
            )
    log_file = data_dir.parent / "postgres.log"
    log_file.touch()
    _chown_for_server(log_file)
    result = subprocess.run(
        _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file),
                         "-o", f"-p {port}", "-w", "-t", str(int(timeout_s)), "start"]),
        capture_output=True, text=True,
    )
    pid = _read_pid(data_dir)
    if result.returncode != 0 or not pid or not wait_for_port(port, timeout_s=timeout_s, pid=pid):
        raise RuntimeError(f"postgres did not start: {result.stderr}\n{log_tail(log_file)}")
    return PostgresHandle(pid=pid, port=port, data_dir=data_dir)


def stop_postgres(data_dir: Path, pid: int | None = None) -> None:
    """Fast shutdown (SIGINT: abort sessions, checkpoint) of the server we started."""
    import signal

    pid = pid or _read_pid(data_dir)
    if pid:
        stop_pid(pid, "postgres", sig=signal.SIGINT, timeout_s=30)

"""Small process helpers shared by the service launchers: free ports, liveness, stop by pid."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from pathlib import Path


def pid_alive(pid: int | None) -> bool:
    """True when `pid` names a running (non-zombie) process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 is the state; a zombie has exited but not been reaped.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline_contains(pid: int, needle: str) -> bool:
    """Guard against signalling a recycled pid: check the process is the one we started."""
    try:
        return needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_pid(pid: int, needle: str, *, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Signal `pid` (only if its command line contains `needle`), wait, SIGKILL on timeout."""
    if not pid_alive(pid) or not cmdline_contains(pid, needle):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(port: int, *, timeout_s: float, pid: int | None = None) -> bool:
    """Poll until the port accepts connections; give up early if `pid` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        if pid is not None and not pid_alive(pid):
            return False
        time.sleep(0.1)
    return False


def free_port() -> int:
    """An ephemeral port that is free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_stable_port(low: int = 10000, high: int = 32000) -> int:
    """A free port below the ephemeral range, for a server that stops and restarts on the same
    port: while it is down, no outgoing connection can be handed that port by the kernel."""
    for port in random.sample(range(low, high), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{low}, {high})")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

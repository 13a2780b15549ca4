"""The local Kafka harness: a real KRaft broker starts, keeps data across a restart, and stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from exchange_core.services.kafka import (
    KAFKA_VERSION,
    ensure_kafka_jars,
    ensure_topics,
    free_port,
    kafka_is_up,
    pid_alive,
    start_kafka,
    stop_kafka,
)

pytestmark = pytest.mark.services

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".exchange" / "cache"  # the jar download is expensive: shared, not tmp_path
TOPIC = "harness.check"
PARTITIONS = 3
N = 100


def _produce(bootstrap: str) -> None:
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    })
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))

    for i in range(N):
        producer.produce(TOPIC, key=f"k{i}".encode(), value=f"msg-{i}".encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still in flight after 30s"
    assert errors == []


def _read_all(bootstrap: str, timeout_s: float = 30) -> list[str]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"harness-throwaway-{time.time_ns()}",  # required by librdkafka; never committed
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
    })
    try:
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        values: list[str] = []
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_eof) < PARTITIONS and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition())
                    continue
                if err.fatal():
                    raise AssertionError(err)
                continue  # transient, e.g. leader not yet available right after a restart
            at_eof.discard(msg.partition())
            values.append(msg.value().decode())
        return values
    finally:
        consumer.close()


@pytest.fixture
def broker_dir(tmp_path):
    started: list[int] = []
    yield tmp_path / "kafka", started
    for pid in started:
        stop_kafka(pid)


def test_kafka_harness_roundtrip_and_restart(broker_dir):
    data_dir, started = broker_dir
    libs = ensure_kafka_jars(CACHE_DIR)
    assert (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()
    port, controller_port = free_port(), free_port()

    handle = start_kafka(data_dir, port, controller_port, CACHE_DIR)
    started.append(handle.pid)
    assert handle.bootstrap == f"127.0.0.1:{port}"
    assert kafka_is_up(handle.bootstrap)
    ensure_topics(handle.bootstrap, {TOPIC: PARTITIONS})
    ensure_topics(handle.bootstrap, {TOPIC: PARTITIONS})  # idempotent
    _produce(handle.bootstrap)
    expected = sorted(f"msg-{i}" for i in range(N))
    assert sorted(_read_all(handle.bootstrap)) == expected

    stop_kafka(handle.pid)
    assert not pid_alive(handle.pid)
    assert not kafka_is_up(handle.bootstrap, timeout_s=1)

    again = start_kafka(data_dir, port, controller_port, CACHE_DIR)
    started.append(again.pid)
    assert again.data_dir == handle.data_dir
    assert sorted(_read_all(again.bootstrap)) == expected, "data did not survive the restart"

    stop_kafka(again.pid)
    assert not pid_alive(again.pid)
    assert not Path(f"/proc/{again.pid}").exists()

"""Key file parsing, the reloading key ring, dev key generation and secret hygiene."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from exchange_core.settings import Settings
from tokenizer.keys import (
    PLAIN_SECRET_KEY_ID,
    KeyFileError,
    KeyRing,
    ensure_dev_key_file,
    load_secret_file,
    open_key_ring,
    parse_key_file,
)
from tokenizer.opentoken import PersonAttributes, TokenHasher, tokenize

SECRET_1 = "first-secret-value-aaaaaaaaaaaa"
SECRET_2 = "second-secret-value-bbbbbbbbbbb"
PERSON = PersonAttributes("Ada", "Lovelace", "1985-12-10", "female", "02139", "456-78-9012")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_key_file(path: Path, active: str, keys: dict[str, str]) -> Path:
    """Atomic rewrite (temp + rename), the way an operator or a secret manager rotates."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"active_key_id": active, "keys": keys}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_file(tmp_path / "keys.json", "k1", {"k1": SECRET_1, "k2": SECRET_2})


def test_ring_exposes_active_key_id_and_its_hasher(key_file):
    ring = KeyRing(key_file)

    assert ring.key_id == "k1"
    assert tokenize(PERSON, ring.hasher) == tokenize(PERSON, TokenHasher(SECRET_1.encode()))
    snapshot = ring.active()
    assert snapshot.key_id == "k1"
    assert tokenize(PERSON, snapshot.hasher) == tokenize(PERSON, ring.hasher)


def test_rotation_by_rewriting_the_file_is_picked_up_without_a_new_ring(key_file):
    clock = FakeClock()
    ring = KeyRing(key_file, clock=clock)
    before = tokenize(PERSON, ring.hasher)

    write_key_file(key_file, "k2", {"k1": SECRET_1, "k2": SECRET_2})
    assert ring.key_id == "k1", "the file is checked at most once per second"
    clock.now += 1.0

    assert ring.key_id == "k2"
    after = tokenize(PERSON, ring.hasher)
    assert after == tokenize(PERSON, TokenHasher(SECRET_2.encode()))
    assert after["T1"] != before["T1"]
    assert ring.reloads == 1


def test_rotation_with_in_place_rewrite_of_same_size_is_picked_up(key_file):
    clock = FakeClock()
    ring = KeyRing(key_file, clock=clock)
    before = key_file.stat().st_mtime_ns
    key_file.write_text(key_file.read_text().replace('"active_key_id": "k1"', '"active_key_id": "k2"'))
    os.utime(key_file, ns=(before + 1_000_000, before + 1_000_000))  # coarse clocks: force a tick
    clock.now += 1.5

    assert ring.key_id == "k2"


def test_broken_rewrite_keeps_last_good_keys_and_recovers(key_file, caplog):
    clock = FakeClock()
    ring = KeyRing(key_file, clock=clock)
    key_file.write_text('{"active_key_id": "k2", "keys": {"k2": "' + SECRET_2)  # half written
    clock.now += 1.0

    with caplog.at_level(logging.WARNING, logger="tokenizer.keys"):
        assert ring.key_id == "k1"
        clock.now += 1.0
        assert ring.key_id == "k1"
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1  # warned once
    assert SECRET_2 not in caplog.text

    write_key_file(key_file, "k2", {"k1": SECRET_1, "k2": SECRET_2})
    clock.now += 1.0
    assert ring.key_id == "k2"


def test_secrets_never_appear_in_repr_str_or_logs(key_file, captured_logs):
    clock = FakeClock()
    ring = KeyRing(key_file, clock=clock)
    write_key_file(key_file, "k2", {"k1": SECRET_1, "k2": SECRET_2})
    clock.now += 1.0
    keys = ring.keys()
    texts = [repr(ring), str(ring), repr(keys), str(keys), repr(ring.active()),
             str(ring.active()), captured_logs.getvalue()]
    assert '"active_key_id":"k2"' in captured_logs.getvalue()  # the reload was logged
    for text in texts:
        assert SECRET_1 not in text and SECRET_2 not in text
    assert "k1" in repr(ring) and "k2" in repr(ring)


@pytest.mark.parametrize("content, message", [
    (b"not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"active_key_id": "k1", "keys": {}}', "non-empty"),
    (b'{"active_key_id": "k9", "keys": {"k1": "SECRETVALUE"}}', "active_key_id"),
    (b'{"active_key_id": "k1", "keys": {"k1": 5}}', "string"),
    (b'{"active_key_id": "bad id", "keys": {"bad id": "SECRETVALUE"}}', "key ids"),
])
def test_malformed_key_files_are_refused_without_echoing_secrets(content, message):
    with pytest.raises(KeyFileError) as raised:
        parse_key_file(content, source="keys.json")
    assert message in str(raised.value)
    assert "SECRETVALUE" not in str(raised.value)


def test_short_secrets_are_refused_when_a_minimum_applies():
    with pytest.raises(KeyFileError, match="at least 16"):
        parse_key_file(b'{"active_key_id": "k1", "keys": {"k1": "short"}}', source="f",
                       min_secret_bytes=16)


def test_plain_text_secret_file_drops_exactly_one_trailing_newline(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(b"HashingKey-for-tests-0001\n")
    keys = load_secret_file(path)
    assert keys.active_key_id == PLAIN_SECRET_KEY_ID == "default"
    expected = tokenize(PERSON, TokenHasher(b"HashingKey-for-tests-0001"))
    assert tokenize(PERSON, keys.active.hasher) == expected

    path.write_bytes(b"HashingKey-for-tests-0001\n\n")  # the second newline is part of it
    assert tokenize(PERSON, load_secret_file(path).active.hasher) != expected


def test_secret_file_may_be_a_json_key_file(key_file):
    keys = load_secret_file(key_file)
    assert keys.active_key_id == "k1" and keys.key_ids == ("k1", "k2")


def test_broken_json_secret_file_is_not_taken_as_a_plain_secret(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"active_key_id": "k1", "keys": ')
    with pytest.raises(KeyFileError, match="not valid JSON"):
        load_secret_file(path)


def test_missing_key_file_is_an_error(tmp_path):
    with pytest.raises(KeyFileError, match="no such key file"):
        KeyRing(tmp_path / "absent.json")


def test_production_without_key_file_refuses_to_start(tmp_path):
    settings = Settings(exchange_env="production", tokenizer_service_token="a-real-token-123")
    with pytest.raises(KeyFileError, match="TOKENIZER_HMAC_SECRET_FILE is required"):
        open_key_ring(settings, dev_key_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_production_refuses_short_secrets(tmp_path):
    path = write_key_file(tmp_path / "keys.json", "k1", {"k1": "short"})
    settings = Settings(exchange_env="production", tokenizer_service_token="a-real-token-123",
                        tokenizer_hmac_secret_file=path)
    with pytest.raises(KeyFileError, match="at least"):
        open_key_ring(settings)


@pytest.mark.parametrize("env", ["local", "test"])
def test_local_without_key_file_generates_a_private_dev_key_once(tmp_path, env, captured_logs):
    settings = Settings(exchange_env=env)
    ring = open_key_ring(settings, dev_key_dir=tmp_path)
    path = tmp_path / "tokenizer-keys.json"
    assert ring.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = json.loads(path.read_text())["keys"][ring.key_id]
    logged = captured_logs.getvalue()
    assert str(path) in logged and secret not in logged

    again = open_key_ring(settings, dev_key_dir=tmp_path)  # reused, so local tokens are stable
    assert tokenize(PERSON, again.hasher) == tokenize(PERSON, ring.hasher)
    assert ensure_dev_key_file(tmp_path) == path

"""HMAC key file and key ring: the tokenizer's only secret, with rotation by rewriting the file.

Key file (``TOKENIZER_HMAC_SECRET_FILE``)::

    {"active_key_id": "k2", "keys": {"k1": "<secret>", "k2": "<secret>"}}

Tokens are made with the active key and carry its id. Old keys stay in the file so a reader can
tell which key produced a stored token. The ring re-reads the file when its identity (inode,
size, mtime) changes, checked at most once per second, so rotation needs no restart. Rewrite the
file atomically (write a temp file, then rename): a half-written file is refused and the ring
keeps the last good keys until a valid file appears.

Secrets never appear in logs, exceptions or reprs: only key ids and the file path do.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import orjson

from tokenizer.opentoken import TokenHasher

log = logging.getLogger("tokenizer.keys")

DEV_KEY_FILE_NAME = "tokenizer-keys.json"
PLAIN_SECRET_KEY_ID = "default"
RELOAD_CHECK_INTERVAL_S = 1.0
# Ids are labels in responses, tables and metrics: keep them short and boring.
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Anything shorter is a typo or a placeholder, not an HMAC key; enforced outside local/test.
PRODUCTION_MIN_SECRET_BYTES = 16


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed. Messages name the path, never secrets."""


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """A consistent snapshot: the key id and the hasher of the same secret.

    Take one snapshot per batch so every token in a response carries the response's key id,
    even if the file is rotated mid-request.
    """

    key_id: str
    hasher: TokenHasher = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class KeySet:
    """All keys of one file version; the secrets live only inside the hashers."""

    active_key_id: str
    hashers: Mapping[str, TokenHasher] = field(repr=False, compare=False)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.hashers))

    @property
    def active(self) -> ActiveKey:
        return ActiveKey(self.active_key_id, self.hashers[self.active_key_id])

    def __repr__(self) -> str:
        return f"KeySet(active_key_id={self.active_key_id!r}, key_ids={self.key_ids!r})"


def parse_key_file(raw: bytes, *, source: str, min_secret_bytes: int = 1) -> KeySet:
    """Parse a JSON key file. ``source`` (a path) is the only context errors carry."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise KeyFileError(f"{source}: not valid JSON") from None
    if not isinstance(document, dict):
        raise KeyFileError(f"{source}: expected a JSON object")
    active = document.get("active_key_id")
    keys = document.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise KeyFileError(f"{source}: 'keys' must be a non-empty object of key id -> secret")
    hashers: dict[str, TokenHasher] = {}
    for key_id, secret in keys.items():
        if not _KEY_ID_RE.match(key_id):
            raise KeyFileError(f"{source}: key ids must match {_KEY_ID_RE.pattern}")
        if not isinstance(secret, str) or len(secret.encode("utf-8")) < min_secret_bytes:
            raise KeyFileError(
                f"{source}: the secret of key {key_id!r} must be a string of at least "
                f"{min_secret_bytes} byte(s)"
            )
        hashers[key_id] = TokenHasher(secret.encode("utf-8"))
    if not isinstance(active, str) or active not in hashers:
        raise KeyFileError(f"{source}: 'active_key_id' must name one of the keys")
    return KeySet(active, hashers)


def load_secret_file(path: Path) -> KeySet:
    """For `exchange tokens --secret-file`: a JSON key file, or a plain-text secret.

    Plain text: the whole content minus ONE trailing newline is the secret (key id "default").
    Content starting with ``{`` must be a valid key file: a broken JSON file silently used as a
    plain secret would produce wrong tokens that look right.
    """
    raw = _read(path)
    if raw.lstrip()[:1] == b"{":
        return parse_key_file(raw, source=str(path))
    secret = raw[:-1] if raw.endswith(b"\n") else raw
    if not secret:
        raise KeyFileError(f"{path}: the secret file is empty")
    return KeySet(PLAIN_SECRET_KEY_ID, {PLAIN_SECRET_KEY_ID: TokenHasher(secret)})


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror})") from None


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when the file is rewritten in place or replaced by a rename."""
    stat = path.stat()  # follows symlinks: a Kubernetes secret swap changes the target
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class KeyRing:
    """The keys of a key file, reloaded when the file changes (checked at most once a second).

    Thread-safe: handlers in worker threads may call it concurrently.
    """

    def __init__(
        self,
        path: Path,
        *,
        min_secret_bytes: int = 1,
        check_interval_s: float = RELOAD_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._min_secret_bytes = min_secret_bytes
        self._check_interval_s = check_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self.reloads = 0  # successful reloads after the first load (exported as a metric)
        self._identity = _file_identity_or_error(self.path)
        self._keys = parse_key_file(_read(self.path), source=str(self.path),
                                    min_secret_bytes=min_secret_bytes)
        self._checked_at = clock()
        self._refused_identity: object = None  # the file version last refused, to warn once
        _warn_if_readable_by_others(self.path)
        log.info("key file loaded", extra={"key_file": str(self.path),
                                           "active_key_id": self._keys.active_key_id,
                                           "key_count": len(self._keys.key_ids)})

    def __repr__(self) -> str:
        keys = self._keys
        return (f"KeyRing(path={str(self.path)!r}, active_key_id={keys.active_key_id!r}, "
                f"key_ids={keys.key_ids!r})")

    __str__ = __repr__

    # -- the API handlers use -------------------------------------------------------------

    def active(self) -> ActiveKey:
        """The active key as one consistent snapshot (reloading first if the file changed)."""
        return self.keys().active

    @property
    def key_id(self) -> str:
        return self.active().key_id

    @property
    def hasher(self) -> TokenHasher:
        return self.active().hasher

    def keys(self) -> KeySet:
        now = self._clock()
        if now - self._checked_at >= self._check_interval_s:
            with self._lock:
                if now - self._checked_at >= self._check_interval_s:
                    self._checked_at = now
                    self._reload_if_changed()
        return self._keys

    # -- reloading --------------------------------------------------------------------------

    def _reload_if_changed(self) -> None:
        try:
            identity = _file_identity(self.path)
        except OSError:
            self._warn_once("unreadable", "key file is unreadable; keeping the loaded keys")
            return
        if identity == self._identity:
            return
        try:
            keys = parse_key_file(_read(self.path), source=str(self.path),
                                  min_secret_bytes=self._min_secret_bytes)
        except KeyFileError as exc:
            # Probably caught mid-write; retried on the next check, logged once per version.
            self._warn_once(identity, "key file refused; keeping the loaded keys", str(exc))
            return
        previous = self._keys.active_key_id
        self._keys, self._identity, self._refused_identity = keys, identity, None
        self.reloads += 1
        log.info("key file reloaded", extra={"key_file": str(self.path),
                                             "active_key_id": keys.active_key_id,
                                             "previous_active_key_id": previous,
                                             "key_count": len(keys.key_ids)})

    def _warn_once(self, identity, message: str, reason: str | None = None) -> None:
        if identity == self._refused_identity:
            return
        self._refused_identity = identity
        log.warning(message, extra={"key_file": str(self.path), "reason": reason})


def _file_identity_or_error(path: Path) -> tuple[int, int, int, int]:
    try:
        return _file_identity(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot stat the key file ({exc.strerror})") from None


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("key file is readable by group or others; chmod 600 it",
                    extra={"key_file": str(path), "mode": oct(mode & 0o777)})


# -- startup ----------------------------------------------------------------------------------


def open_key_ring(settings, *, dev_key_dir: Path | None = None) -> KeyRing:
    """The ring for TOKENIZER_HMAC_SECRET_FILE; local/test without one gets a generated dev key.

    Outside local/test a missing key file is a startup error: tokens made with a throwaway key
    would never match anything again.
    """
    configured = settings.tokenizer_hmac_secret_file
    local = settings.exchange_env in ("local", "test")
    min_bytes = 1 if local else PRODUCTION_MIN_SECRET_BYTES
    if configured is not None:
        return KeyRing(Path(configured), min_secret_bytes=min_bytes)
    if not local:
        raise KeyFileError(
            f"TOKENIZER_HMAC_SECRET_FILE is required when EXCHANGE_ENV={settings.exchange_env}"
        )
    return KeyRing(ensure_dev_key_file(dev_key_dir or _default_dev_key_dir()))


def _default_dev_key_dir() -> Path:
    from exchange_core.services.harness import services_root

    return services_root()


def ensure_dev_key_file(directory: Path) -> Path:
    """Create ``<directory>/tokenizer-keys.json`` (0600) with a random key once; reuse it after.

    Reusing it keeps local tokens stable across restarts. Created by an exclusive link, so two
    processes starting together agree on one key.
    """
    path = directory / DEV_KEY_FILE_NAME
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    document = {"active_key_id": "dev1", "keys": {"dev1": secrets.token_urlsafe(32)}}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-keys-")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
            log.warning("generated a development tokenizer key file",
                        extra={"key_file": str(path)})
        except FileExistsError:
            pass  # another process won the race; use its key
    finally:
        os.unlink(tmp)
    return path

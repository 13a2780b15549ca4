"""Raw-object storage behind one small interface: S3 (SeaweedFS, MinIO, AWS) or a local folder.

Objects are write-once: `put_new` refuses to overwrite (S3 `If-None-Match: *`, or an exclusive
create on disk), so a raw payload can never change after its hash was recorded.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import urlparse

from exchange_core.settings import Settings


class ObjectStoreError(Exception):
    """Base class; the message never contains object contents."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The store could not be reached or failed transiently: retry later."""


class ObjectAlreadyExists(ObjectStoreError):
    """A write-once key is taken."""


class ObjectNotFound(ObjectStoreError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    last_modified: datetime


class ObjectStore(Protocol):
    def put_new(self, key: str, data: bytes, content_type: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[StoredObject]: ...
    def check(self) -> None: ...


class FileObjectStore:
    """`file:///path`: the embedded default. Writes go to a temp file, then an exclusive link."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ObjectStoreError("object key escapes the store root")
        return path

    def put_new(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # link() fails if the name exists: write-once without a race window.
            os.link(tmp, path)
        except FileExistsError as exc:
            raise ObjectAlreadyExists(key) from exc
        except OSError as exc:
            raise ObjectStoreUnavailable(f"file store write failed: {exc.strerror}") from exc
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise ObjectStoreUnavailable(f"file store read failed: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root.resolve()
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.name.startswith(".tmp-"):
                continue
            key = path.relative_to(base).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                yield StoredObject(
                    key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc)
                )

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise ObjectStoreUnavailable("file store root is not writable")


class S3ObjectStore:
    """`s3://bucket`: conditional PUT (`If-None-Match: *`) makes objects write-once."""

    def __init__(self, bucket: str, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self._client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=_secret(settings.aws_access_key_id),
            aws_secret_access_key=_secret(settings.aws_secret_access_key),
            config=Config(
                # Short timeouts and few retries: the API answers 503 quickly when S3 is down
                # rather than holding the partner's connection.
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=64,
                s3={"addressing_style": "path"},
            ),
        )

    def _call(self, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                raise ObjectAlreadyExists(kwargs.get("Key", "")) from exc
            if code in ("NoSuchKey", "404") or status == 404:
                raise ObjectNotFound(kwargs.get("Key", "")) from exc
            if status >= 500 or status == 0:
                raise ObjectStoreUnavailable(f"s3 {code or status}") from exc
            raise ObjectStoreError(f"s3 {code or status}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"s3 unreachable: {type(exc).__name__}") from exc

    def put_new(self, key: str, data: bytes, content_type: str) -> None:
        self._call(
            self._client.put_object, Key=key, Body=data, ContentType=content_type,
            IfNoneMatch="*",
        )

    def get(self, key: str) -> bytes:
        return self._call(self._client.get_object, Key=key)["Body"].read()

    def delete(self, key: str) -> None:
        self._call(self._client.delete_object, Key=key)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        token = None
        while True:
            kwargs = {"Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                yield StoredObject(item["Key"], item["Size"], item["LastModified"])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def check(self) -> None:
        self._call(self._client.head_bucket)


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def open_object_store(settings: Settings) -> ObjectStore:
    """The store OBJECT_STORE_URL names; unknown schemes fail closed."""
    url = urlparse(settings.object_store_url)
    if url.scheme == "s3" and url.netloc:
        return S3ObjectStore(url.netloc, settings)
    if url.scheme == "file" and url.path:
        return FileObjectStore(Path(url.path))
    raise ValueError("OBJECT_STORE_URL must be s3://BUCKET or file:///absolute/path")

"""The S3 blob store: blobs as objects of one bucket, under a prefix, through boto3.

Every method makes blocking HTTP requests: async callers run them in a worker
thread, as they already do for the directory store.  Keys are the directory
store's (`check_key`), checked before any request; the object's name is the
configured prefix plus the key.  What is kept where:

* the object's body is the sealed (OpenPGP-encrypted) blob, exactly;
* its user metadata ``sha256`` (header ``x-amz-meta-sha256``) is the body's
  SHA-256, the same value `write` returns and the database records; the PUT
  also carries it as ``x-amz-checksum-sha256``, so a server that checks it
  refuses a body damaged on the way;
* nothing else: no temporary objects, no multipart uploads.

Failures map onto the domain tree: a missing object is `NotFound`; a refused
connection, a timeout, a 5xx, refused credentials or a missing bucket are
`StorageUnavailable` (the SMTP layer answers ``451 4.3.0``, and the operator
reads the cause in the log); a 507 is `BlobStoreFull`.  Timeouts and retries are
bounded (`connect`), so a dead server costs seconds, not minutes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.errors import BlobStoreFull, GatewayError, NotFound, StorageUnavailable
from gateway.storage.blobstore import check_key, is_key, new_blob_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

log = logging.getLogger(__name__)

# An object store has no free-space figure: `free_bytes` reports this, so the
# disk reserve (which protects a local file system) never refuses a message.
UNBOUNDED = 2**63 - 1
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_FULL = frozenset({"QuotaExceeded", "InsufficientStorage", "XMinioStorageFull"})


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket (from the ``[blobs]`` settings)."""

    bucket: str
    endpoint: str = ""  # empty: the region's AWS endpoint
    region: str = "us-east-1"
    prefix: str = ""
    access_key: str = ""  # empty: boto3's own credential chain (instance role …)
    secret_key: str = ""
    addressing_style: str = "path"
    ca_file: Path | None = None
    timeout: float = 5.0
    max_attempts: int = 3

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return f"S3Options(bucket={self.bucket!r}, endpoint={self.endpoint!r})"


def connect(options: S3Options) -> S3Client:
    """A thread-safe S3 client with bounded timeouts and retries; makes no request yet.

    Each connect and each read waits at most ``timeout`` seconds, and a
    request is tried ``max_attempts`` times in all (botocore's "standard"
    retry mode: 5xx, throttling and connection errors, with jittered
    back-off), so a dead or frozen server is reported within seconds.
    Configured endpoint URLs in the environment or ``~/.aws`` are ignored:
    the gateway's settings alone say where blobs go.
    """
    # Not in botocore-stubs yet (botocore has it since 1.31), hence passed untyped.
    untyped: dict[str, Any] = {"ignore_configured_endpoint_urls": True}
    config = Config(
        region_name=options.region,
        connect_timeout=options.timeout,
        read_timeout=options.timeout,
        retries={"total_max_attempts": options.max_attempts, "mode": "standard"},
        max_pool_connections=16,
        s3={"addressing_style": "path" if options.addressing_style == "path" else "virtual"},
        **untyped,
    )
    session = boto3.session.Session(
        aws_access_key_id=options.access_key or None,
        aws_secret_access_key=options.secret_key or None,
        region_name=options.region,
    )
    return session.client(
        "s3",
        endpoint_url=options.endpoint or None,
        verify=str(options.ca_file) if options.ca_file else True,
        config=config,
    )


class S3BlobStore:
    """Blobs named ``YYYY/MM/DD/<uuid>.<kind>.pgp`` as objects ``<prefix>/<key>`` of ``bucket``."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._new_id = new_id

    @classmethod
    def open(cls, options: S3Options) -> S3BlobStore:
        return cls(connect(options), options.bucket, options.prefix)

    @property
    def client(self) -> S3Client:
        """The boto3 client (tests register botocore event hooks on it)."""
        return self._client

    def new_key(self, kind: str, now: datetime) -> str:
        """A fresh key for a blob of ``kind`` (raw, doc, manifest) received at ``now``."""
        return new_blob_key(kind, now, self._new_id)

    def write(self, key: str, data: bytes, *, sync_dir: bool = True, sync: bool = True) -> str:
        """PUT ``data`` as the object of ``key``; return its SHA-256 (hex).

        Returns only once the server has acknowledged the whole object, and
        S3 makes an object visible whole or not at all: there is nothing left
        to sync afterwards, so ``sync_dir`` and ``sync`` change nothing.
        """
        name = self._name(key)
        digest = hashlib.sha256(data)
        with self._errors("put", key):
            self._client.put_object(
                Bucket=self._bucket,
                Key=name,
                Body=data,
                ContentType="application/octet-stream",
                Metadata={"sha256": digest.hexdigest()},
                ChecksumSHA256=base64.b64encode(digest.digest()).decode("ascii"),
            )
        return digest.hexdigest()

    def directory_of(self, key: str) -> Path:
        """The key's day folder, as a relative path no file system call ever sees.

        Callers use it only to group `sync_directory` calls, which do nothing here.
        """
        return Path(check_key(key)).parent

    def sync_files(self, keys: Sequence[str]) -> None:
        """Nothing to do: `write` returned after the PUT was acknowledged."""
        for key in keys:
            check_key(key)

    def sync_directory(self, directory: Path) -> None:
        """Nothing to do: an object store has no directory entries to make durable."""

    def read(self, key: str) -> bytes:
        name = self._name(key)
        with self._errors("get", key):
            response = self._client.get_object(Bucket=self._bucket, Key=name)
            return response["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> bool:
        """Remove a blob; return whether it existed (deleting twice is not an error).

        S3's DELETE succeeds whether or not the object exists, so a HEAD first
        tells which.  On a bucket with versioning the data would survive as a
        noncurrent version: the README says to keep versioning off.
        """
        existed = self.exists(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=self._name(key))
        return existed

    def iter_keys(self) -> Iterator[str]:
        """Every blob key under the prefix, in sorted order; other object names are skipped.

        S3 lists names in byte order, and every name shares the prefix, so
        the keys come sorted as the directory store's do.
        """
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self._bucket, Prefix=self._prefix)
        with self._errors("list", None):
            for page in pages:
                for entry in page.get("Contents", []):
                    name = entry.get("Key", "")[len(self._prefix) :]
                    if is_key(name):
                        yield name

    def modified_at(self, key: str) -> datetime:
        """The object's Last-Modified time (when its PUT completed)."""
        return self._head(key)["LastModified"].astimezone(UTC)

    def stored_sha256(self, key: str) -> str | None:
        """The SHA-256 recorded in the object's metadata at write time (a HEAD, no body read)."""
        return self._head(key).get("Metadata", {}).get("sha256")

    def sweep_temp(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Nothing to sweep: a single PUT leaves nothing temporary behind, whatever happens.

        The store never starts multipart uploads, so none can be left over.
        """
        return 0

    def free_bytes(self) -> int:
        """`UNBOUNDED`: an object store reports no free space to keep a reserve of.

        The reserve guards a local file system against filling up; a bucket's
        quota, where there is one, answers a PUT with an error instead, which
        `write` turns into `BlobStoreFull`.
        """
        return UNBOUNDED

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _head(self, key: str) -> HeadObjectOutputTypeDef:
        name = self._name(key)
        with self._errors("head", key):
            return self._client.head_object(Bucket=self._bucket, Key=name)

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str | None) -> Iterator[None]:
        """Turn what boto3 raises into the domain's errors, logging the cause for the operator."""
        try:
            yield
        except ClientError as exc:
            raise _client_error(exc, operation, key) from None
        except (BotoCoreError, OSError) as exc:
            log.warning("S3 %s failed: %s", operation, type(exc).__name__)
            raise StorageUnavailable("blob store unavailable") from None


def _client_error(exc: ClientError, operation: str, key: str | None) -> GatewayError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if key is not None and code in _MISSING:
        return NotFound(f"blob {key} not found")
    log.warning("S3 %s refused: HTTP %s %s", operation, status, code)
    if status == 507 or code in _FULL:
        return BlobStoreFull("blob store is full")
    return StorageUnavailable("blob store unavailable")

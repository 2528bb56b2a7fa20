"""The blob-store contract, held by both backends: the directory store and S3 (a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import NotFound, StorageUnavailable
from gateway.storage.blobstore import BlobStorage, BlobStore
from gateway.storage.s3blobs import UNBOUNDED, S3BlobStore, S3Options
from tests.fixtures.seaweed import REGION, SeaweedServer

GOOD_ID = "12345678-1234-4234-8234-123456789abc"
DAY = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
BAD_KEYS = [
    "",
    "../etc/passwd",
    "/etc/passwd",
    f"2026/11/25/../../{GOOD_ID}.raw.pgp",
    f"/2026/11/25/{GOOD_ID}.raw.pgp",
    f"2026/11/25/{GOOD_ID}.exe.pgp",
    f"2026/11/25/{GOOD_ID}.raw.pgp\n",
    f"2026/11/25/{GOOD_ID}.raw.pgp?versionId=1",
    f"2026/11/25//{GOOD_ID}.raw.pgp",
]


@dataclass
class Backend:
    """A store under test, a way to plant foreign names beside its blobs, and its requests."""

    name: str
    store: BlobStorage
    plant: Callable[[str, bytes], None]
    requests: list[str] = field(default_factory=list)


def s3_store(server: SeaweedServer, prefix: str, **options: Any) -> S3BlobStore:
    return S3BlobStore.open(
        S3Options(
            bucket=server.bucket,
            endpoint=server.endpoint,
            region=REGION,
            prefix=prefix,
            access_key=server.access_key,
            secret_key=options.pop("secret_key", server.secret_key),
            timeout=options.pop("timeout", 2.0),
            max_attempts=options.pop("max_attempts", 2),
        )
    )


def count_requests(store: S3BlobStore) -> list[str]:
    """Every HTTP request the store's client sends, as "METHOD url" (a botocore event hook)."""
    sent: list[str] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(f"{request.method} {request.url}")

    store.client.meta.events.register("before-send.s3.*", record)
    return sent


@pytest.fixture(params=["dir", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "dir":
        root = tmp_path / "blobs"

        def plant_file(name: str, data: bytes) -> None:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return Backend("dir", BlobStore(root), plant_file)
    server: SeaweedServer = request.getfixturevalue("seaweed")
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    store = s3_store(server, prefix)
    raw = server.client()

    def plant_object(name: str, data: bytes) -> None:
        raw.put_object(Bucket=server.bucket, Key=f"{prefix}/{name}", Body=data)

    return Backend("s3", store, plant_object, count_requests(store))


def test_blobstore_write_returns_sha256_and_reads_back(backend: Backend) -> None:
    store = backend.store
    data = b"-----BEGIN PGP MESSAGE-----\n" + bytes(range(256)) * 300
    key = store.new_key("raw", DAY)
    assert key.startswith("2026/11/25/") and key.endswith(".raw.pgp")
    assert store.write(key, data) == hashlib.sha256(data).hexdigest()
    assert store.exists(key)
    assert store.read(key) == data
    assert store.write(key, b"") == hashlib.sha256(b"").hexdigest()
    assert store.read(key) == b""


def test_blobstore_deferred_sync_hooks_then_read(backend: Backend) -> None:
    """What the group commit does: write without syncing, then sync files and directory."""
    store = backend.store
    keys = [store.new_key("doc", DAY) for _ in range(3)]
    for number, key in enumerate(keys):
        store.write(key, b"doc %d" % number, sync=False, sync_dir=False)
    store.sync_files(keys)
    for directory in {store.directory_of(key) for key in keys}:
        store.sync_directory(directory)
    assert [store.read(key) for key in keys] == [b"doc 0", b"doc 1", b"doc 2"]


def test_blobstore_missing_key_is_not_found(backend: Backend) -> None:
    store = backend.store
    key = store.new_key("manifest", DAY)
    assert not store.exists(key)
    with pytest.raises(NotFound):
        store.read(key)
    with pytest.raises(NotFound):
        store.modified_at(key)
    assert store.delete(key) is False


def test_blobstore_delete_says_whether_it_existed(backend: Backend) -> None:
    store = backend.store
    key = store.new_key("doc", DAY)
    store.write(key, b"sealed")
    assert store.delete(key) is True
    assert not store.exists(key)
    assert store.delete(key) is False
    with pytest.raises(NotFound):
        store.read(key)
    assert list(store.iter_keys()) == []


def test_blobstore_iter_keys_sorted_and_skips_foreign_names(backend: Backend) -> None:
    store = backend.store
    kinds = ["raw", "doc", "manifest", "doc", "raw"]
    days = [DAY + timedelta(days=offset) for offset in (40, 0, 3, 0, 400)]
    keys = [store.new_key(kind, day) for kind, day in zip(kinds, days, strict=True)]
    for key in keys:
        store.write(key, key.encode())
    backend.plant("notes.txt", b"not a blob")
    backend.plant(f"2026/11/25/.{GOOD_ID}.raw.pgp.0123456789abcdef.tmp", b"temp")
    backend.plant(f"2026/11/25/{GOOD_ID}.raw", b"no .pgp")
    backend.plant(f"2026/11/25/x/{GOOD_ID}.raw.pgp", b"too deep")
    assert list(store.iter_keys()) == sorted(keys)


def test_blobstore_modified_at_is_the_write_time(backend: Backend) -> None:
    store = backend.store
    key = store.new_key("raw", DAY)
    before = datetime.now(UTC)
    store.write(key, b"sealed")
    after = datetime.now(UTC)
    written = store.modified_at(key)
    assert written.utcoffset() == timedelta(0)
    # S3's Last-Modified has whole seconds.
    assert before - timedelta(seconds=1) <= written <= after + timedelta(seconds=1)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_blobstore_invalid_key_refused_before_any_request(backend: Backend, key: str) -> None:
    store = backend.store
    operations: list[Callable[[], object]] = [
        lambda: store.write(key, b"x"),
        lambda: store.read(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.modified_at(key),
        lambda: store.directory_of(key),
        lambda: store.sync_files([key]),
    ]
    for operation in operations:
        with pytest.raises(ValueError, match="invalid blob key"):
            operation()
    assert backend.requests == []
    assert list(store.iter_keys()) == []


# -- S3 only: what is kept in the bucket, credentials, and a server that fails --------


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def test_s3_object_is_the_blob_with_its_sha256_in_metadata(
    seaweed: SeaweedServer, prefix: str
) -> None:
    store = s3_store(seaweed, prefix)
    data = b"sealed bytes" * 1000
    key = store.new_key("doc", DAY)
    digest = store.write(key, data)
    head = seaweed.client().head_object(Bucket=seaweed.bucket, Key=f"{prefix}/{key}")
    assert head["Metadata"] == {"sha256": digest}
    assert head["ContentLength"] == len(data)
    assert store.stored_sha256(key) == digest == hashlib.sha256(data).hexdigest()
    body = seaweed.client().get_object(Bucket=seaweed.bucket, Key=f"{prefix}/{key}")["Body"]
    assert body.read() == data


def test_s3_iter_keys_stays_under_its_prefix(seaweed: SeaweedServer, prefix: str) -> None:
    """A prefix is a folder: `t-1` must not list `t-10/...`."""
    mine, neighbour = s3_store(seaweed, prefix), s3_store(seaweed, prefix + "0")
    key = mine.new_key("raw", DAY)
    mine.write(key, b"mine")
    neighbour.write(neighbour.new_key("raw", DAY), b"theirs")
    seaweed.client().put_object(Bucket=seaweed.bucket, Key=key, Body=b"outside any prefix")
    assert list(mine.iter_keys()) == [key]
    assert len(list(neighbour.iter_keys())) == 1


def test_s3_wrong_secret_is_unavailable_not_a_crash(seaweed: SeaweedServer, prefix: str) -> None:
    store = s3_store(seaweed, prefix, secret_key="not-the-secret")
    key = store.new_key("raw", DAY)
    with pytest.raises(StorageUnavailable):
        store.write(key, b"x")
    with pytest.raises(StorageUnavailable):
        store.read(key)
    with pytest.raises(StorageUnavailable):
        list(store.iter_keys())
    assert not s3_store(seaweed, prefix).exists(key)


def test_s3_missing_bucket_is_unavailable(seaweed: SeaweedServer, prefix: str) -> None:
    store = S3BlobStore(s3_store(seaweed, prefix).client, "no-such-bucket", prefix)
    with pytest.raises(StorageUnavailable):
        store.write(store.new_key("raw", DAY), b"x")
    with pytest.raises(StorageUnavailable):
        store.read(store.new_key("raw", DAY))


def test_s3_free_bytes_and_sweep_make_no_request(seaweed: SeaweedServer, prefix: str) -> None:
    store = s3_store(seaweed, prefix)
    sent = count_requests(store)
    assert store.free_bytes() == UNBOUNDED
    assert store.sweep_temp(timedelta(0)) == 0
    assert sent == []


def test_s3_frozen_server_is_unavailable_within_seconds(
    seaweed_private: SeaweedServer, prefix: str
) -> None:
    store = s3_store(seaweed_private, prefix, timeout=1.0, max_attempts=2)
    seaweed_private.pause()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        store.write(store.new_key("raw", DAY), b"x" * 1000)
    assert time.monotonic() - started < 8


def test_s3_server_stopped_mid_write_is_unavailable_and_leaves_no_object(
    seaweed_private: SeaweedServer, prefix: str
) -> None:
    server = seaweed_private
    store = s3_store(server, prefix, timeout=5.0, max_attempts=2)
    kept = store.new_key("doc", DAY)
    store.write(kept, b"acknowledged before the crash")
    key = store.new_key("raw", DAY)
    outcome: dict[str, BaseException | str] = {}

    def write() -> None:
        try:
            outcome["result"] = store.write(key, b"\x42" * (48 * 1024 * 1024))
        except BaseException as exc:
            outcome["error"] = exc

    # Frozen first, so the body is still on its way when the server dies.
    server.pause()
    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(1.0)
    server.kill()
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert isinstance(outcome.get("error"), StorageUnavailable), outcome
    # A dead server: refused at once, and retried only a bounded number of times.
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        store.write(store.new_key("doc", DAY), b"x")
    with pytest.raises(StorageUnavailable):
        list(store.iter_keys())
    assert time.monotonic() - started < 8
    # Back up on the same data: what was acknowledged is there; the interrupted PUT
    # left no object, whole or partial.
    server.start()
    assert store.read(kept) == b"acknowledged before the crash"
    assert not store.exists(key)
    assert list(store.iter_keys()) == [kept]


def test_s3_refused_connection_tried_max_attempts_then_unavailable() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = S3Options(
        bucket="greffe",
        endpoint=f"http://127.0.0.1:{port}",
        access_key="AK",
        secret_key="s",
        max_attempts=3,
    )
    store = S3BlobStore.open(options)
    sent = count_requests(store)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        store.write(store.new_key("raw", DAY), b"x")
    assert len(sent) == 3
    assert time.monotonic() - started < 8

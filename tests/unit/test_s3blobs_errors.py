"""S3 answers mapped onto the domain errors (botocore's Stubber stands in for the server)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.stub import Stubber

from gateway.errors import BlobStoreFull, GatewayError, NotFound, StorageUnavailable
from gateway.storage.s3blobs import S3BlobStore, S3Options, connect

SECRET = "the-secret-never-logged"
KEY = "2026/11/25/12345678-1234-4234-8234-123456789abc.raw.pgp"


@pytest.fixture(scope="module")
def client() -> Any:
    """One client for the module (building one costs half a second); each test stubs it."""
    options = S3Options(
        bucket="greffe", endpoint="http://127.0.0.1:9", access_key="AK", secret_key=SECRET
    )
    return connect(options)


@pytest.fixture
def stubbed(client: Any) -> Iterator[tuple[S3BlobStore, Stubber]]:
    store = S3BlobStore(client, "greffe", "p")
    with Stubber(client) as stubber:
        yield store, stubber


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NotFound),
        ("NoSuchBucket", 404, StorageUnavailable),
        ("AccessDenied", 403, StorageUnavailable),
        ("SignatureDoesNotMatch", 403, StorageUnavailable),
        ("InternalError", 500, StorageUnavailable),
        ("SlowDown", 503, StorageUnavailable),
        ("XMinioStorageFull", 507, BlobStoreFull),
        ("QuotaExceeded", 403, BlobStoreFull),
    ],
)
def test_s3_get_error_maps_to_domain(
    stubbed: tuple[S3BlobStore, Stubber],
    caplog: pytest.LogCaptureFixture,
    code: str,
    status: int,
    expected: type[GatewayError],
) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", service_error_code=code, http_status_code=status)
    with caplog.at_level(logging.WARNING), pytest.raises(expected) as info:
        store.read(KEY)
    assert type(info.value) is expected
    assert "127.0.0.1" not in info.value.message and code not in info.value.message
    assert SECRET not in caplog.text


def test_s3_put_quota_is_disk_full(stubbed: tuple[S3BlobStore, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error("put_object", service_error_code="QuotaExceeded", http_status_code=507)
    with pytest.raises(BlobStoreFull):
        store.write(KEY, b"x")


def test_s3_head_404_is_absent_not_an_error(stubbed: tuple[S3BlobStore, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error("head_object", service_error_code="404", http_status_code=404)
    assert store.exists(KEY) is False


def test_s3_modified_at_is_utc(stubbed: tuple[S3BlobStore, Stubber]) -> None:
    store, stubber = stubbed
    paris = timezone(timedelta(hours=1))
    stubber.add_response(
        "head_object",
        {"LastModified": datetime(2026, 11, 25, 11, 0, tzinfo=paris), "Metadata": {}},
        {"Bucket": "greffe", "Key": f"p/{KEY}"},
    )
    written = store.modified_at(KEY)
    assert written == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert written.tzinfo is UTC


def test_s3_options_repr_hides_the_secret() -> None:
    options = S3Options(bucket="b", access_key="AK", secret_key=SECRET)
    assert SECRET not in repr(options)

"""Opening the blob store the ``[blobs]`` settings name: the data directory's, or an S3 bucket."""

from __future__ import annotations

from gateway.errors import ConfigError
from gateway.settings import BlobsSection, Settings
from gateway.storage.blobstore import BlobStorage, BlobStore


def open_blob_store(settings: Settings) -> BlobStorage:
    """The configured store; makes no request, so a command that never touches blobs pays nothing.

    boto3 is imported only for the S3 backend (it takes a while to import).
    """
    blobs = settings.blobs
    if blobs.backend == "dir":
        return BlobStore(settings.blob_dir)
    from gateway.storage.s3blobs import S3BlobStore, S3Options

    return S3BlobStore.open(
        S3Options(
            bucket=blobs.bucket,
            endpoint=blobs.endpoint,
            region=blobs.region,
            prefix=blobs.prefix,
            access_key=blobs.access_key,
            secret_key=s3_secret(blobs),
            addressing_style=blobs.addressing_style,
            ca_file=blobs.ca_file,
            timeout=blobs.timeout,
            max_attempts=blobs.max_attempts,
        )
    )


def s3_secret(blobs: BlobsSection) -> str:
    """The secret key from the config, else the first line of ``secret_key_file``, else ""."""
    if blobs.secret_key_file is None:
        return blobs.secret_key.get_secret_value()
    try:
        lines = blobs.secret_key_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"blobs.secret_key_file: {blobs.secret_key_file} is unreadable") from None
    if not lines or not lines[0].strip():
        raise ConfigError("blobs.secret_key_file: the file is empty")
    return lines[0].strip()

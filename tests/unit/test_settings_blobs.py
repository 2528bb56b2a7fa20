"""The [blobs] settings: the S3 backend's keys validated with errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.storage.blobbackend import open_blob_store, s3_secret
from gateway.storage.blobstore import BlobStore
from gateway.storage.s3blobs import S3BlobStore

S3 = "[blobs]\nbackend = 's3'\nbucket = 'greffe'\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "gateway.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_blobs_default_is_the_data_directory(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {})
    assert settings.blobs.backend == "dir"
    store = open_blob_store(settings)
    assert isinstance(store, BlobStore)
    assert store.root == tmp_path / "conf" / "var" / "blobs"


def test_blobs_s3_from_file_and_environment(tmp_path: Path) -> None:
    env = {
        "GATEWAY__BLOBS__ENDPOINT": "https://s3.example.fr:9000/",
        "GATEWAY__BLOBS__PREFIX": "/greffe/prod/",
        "GATEWAY__BLOBS__ACCESS_KEY": "AKEXAMPLE",
        "GATEWAY__BLOBS__SECRET_KEY": "s3cr3t-value",
    }
    settings = load_settings(write(tmp_path, S3), env)
    blobs = settings.blobs
    assert (blobs.backend, blobs.bucket, blobs.region) == ("s3", "greffe", "us-east-1")
    assert blobs.endpoint == "https://s3.example.fr:9000"
    assert blobs.prefix == "greffe/prod"
    assert "s3cr3t-value" not in repr(settings)
    assert isinstance(open_blob_store(settings), S3BlobStore)  # no request made


def test_blobs_secret_key_file_relative_to_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, S3 + "access_key = 'AK'\nsecret_key_file = 'secrets/s3.key'\n")
    (path.parent / "secrets").mkdir()
    (path.parent / "secrets" / "s3.key").write_text("from-a-file\nignored\n")
    settings = load_settings(path, {})
    assert settings.blobs.secret_key_file == path.parent / "secrets" / "s3.key"
    assert s3_secret(settings.blobs) == "from-a-file"


def test_blobs_secret_key_file_unreadable_names_the_key(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, S3 + "access_key='AK'\nsecret_key_file='nope'\n"), {})
    with pytest.raises(ConfigError, match=r"blobs\.secret_key_file"):
        open_blob_store(settings)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[blobs]\nbackend = 'ftp'\n", "blobs.backend"),
        ("[blobs]\nbackend = 's3'\n", "blobs.bucket: required"),
        (S3.replace("'greffe'", "'Greffe_Bucket'"), "blobs.bucket"),
        (S3 + "endpoint = 's3.example.fr'\n", "blobs.endpoint"),
        (S3 + "endpoint = 'https://s3.example.fr/path'\n", "blobs.endpoint"),
        (S3 + "endpoint = 'https://user@s3.example.fr'\n", "blobs.endpoint"),
        (S3 + "endpoint = 'http://s3.example.fr'\n", "blobs.endpoint: plain http"),
        (S3 + "prefix = 'a/../b'\n", "blobs.prefix"),
        (S3 + "prefix = 'a//b'\n", "blobs.prefix"),
        (S3 + "region = 'Paris 1'\n", "blobs.region"),
        (S3 + "access_key = 'AK'\n", "blobs.secret_key: required"),
        (S3 + "secret_key = 'x'\n", "blobs.access_key: required"),
        (S3 + "access_key='AK'\nsecret_key='x'\nsecret_key_file='f'\n", "not both"),
        (S3 + "timeout = 0\n", "blobs.timeout"),
        (S3 + "max_attempts = 0\n", "blobs.max_attempts"),
        (S3 + "colour = 'red'\n", "blobs.colour: unknown key"),
    ],
)
def test_blobs_error_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {})
    assert named in info.value.message
    assert "\n" not in info.value.message


def test_blobs_plain_http_allowed_on_loopback(tmp_path: Path) -> None:
    text = S3 + "endpoint = 'http://127.0.0.1:8333'\n"
    assert load_settings(write(tmp_path, text), {}).blobs.endpoint == "http://127.0.0.1:8333"

"""WKD: z-base-32, the direct method's hash and path, and what the directory answers."""

from __future__ import annotations

import pysequoia
import pytest

from gateway.errors import KeyRefused
from gateway.wkd import (
    KEY_MEDIA_TYPE,
    POLICY_PATH,
    WkdDirectory,
    binary_key,
    wkd_hash,
    wkd_path,
    wkd_url,
    zbase32,
)


@pytest.fixture(scope="module")
def tsk() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("Passerelle <noreply@greffe.example>",
                                  profile=pysequoia.Profile.RFC4880)  # fmt: skip


@pytest.fixture(scope="module")
def directory(tsk: pysequoia.Tsk) -> WkdDirectory:
    return WkdDirectory({"noreply@greffe.example": str(tsk.extract_certificate()).encode()})


@pytest.mark.parametrize(
    ("data", "encoded"),
    # The 24-bit examples of Zooko's z-base-32 specification; the others follow from its
    # alphabet (y is 0, 9 is 31) with the last group padded with zero bits.
    [
        (b"", ""),
        (b"\x00", "yy"),
        (b"\xff", "9h"),
        (b"\xf0\xbf\xc7", "6n9hq"),
        (b"\xd4\x7a\x04", "4t7ye"),
    ],
)
def test_zbase32_known_values(data: bytes, encoded: str) -> None:
    assert zbase32(data) == encoded


def test_wkd_hash_matches_the_draft_vector() -> None:
    # draft-koch-openpgp-webkey-service, section 3.1.
    assert wkd_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
    assert wkd_url("Joe.Doe@Example.ORG") == (
        "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
    )


def test_wkd_hash_lowercases_ascii_only() -> None:
    assert wkd_hash("NoReply") == wkd_hash("noreply")
    assert wkd_hash("É") != wkd_hash("é")  # the draft maps A-Z only


def test_wkd_path_escapes_the_local_part() -> None:
    assert wkd_path("a+b&c@greffe.example").endswith("?l=a%2Bb%26c")


@pytest.mark.parametrize("address", ["noreply", "@greffe.example", "x@", "A <a@b.example>"])
def test_wkd_path_refuses_what_is_not_an_address(address: str) -> None:
    with pytest.raises(ValueError):
        wkd_path(address)


def test_wkd_directory_serves_the_binary_key(directory: WkdDirectory, tsk: pysequoia.Tsk) -> None:
    answer = directory.lookup(wkd_path("noreply@greffe.example"), host="greffe.example")

    assert answer is not None
    assert answer.content_type == KEY_MEDIA_TYPE
    assert not answer.body.startswith(b"-----")  # binary, as the draft requires
    cert = tsk.extract_certificate()
    assert pysequoia.Cert.from_bytes(answer.body).fingerprint == cert.fingerprint
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


def test_wkd_directory_case_of_the_address_does_not_matter(directory: WkdDirectory) -> None:
    assert directory.lookup(wkd_path("NoReply@Greffe.Example")) is not None


def test_wkd_directory_answers_the_advanced_method(directory: WkdDirectory) -> None:
    path = f"/.well-known/openpgpkey/greffe.example/hu/{wkd_hash('noreply')}"

    assert directory.lookup(path, host="openpgpkey.greffe.example") is not None
    assert directory.lookup(path.replace("greffe.example", "other.example")) is None


def test_wkd_directory_policy_file(directory: WkdDirectory) -> None:
    answer = directory.lookup(POLICY_PATH, host="greffe.example:443")

    assert answer is not None and answer.body == b""
    assert directory.lookup(POLICY_PATH, host="other.example") is None


@pytest.mark.parametrize(
    "path",
    [
        f"/.well-known/openpgpkey/hu/{wkd_hash('greffier')}?l=greffier",  # another address
        "/.well-known/openpgpkey/hu/",
        "/.well-known/openpgpkey/",
        "/.well-known/openpgpkey/hu/x/y",
        "/.well-known/openpgpkey/../../etc/passwd",
        "/metrics",
    ],
)
def test_wkd_directory_unknown_paths_are_404(directory: WkdDirectory, path: str) -> None:
    assert directory.lookup(path, host="greffe.example") is None


def test_wkd_directory_other_host_is_404(directory: WkdDirectory) -> None:
    assert directory.lookup(wkd_path("noreply@greffe.example"), host="other.example") is None


def test_wkd_never_publishes_a_secret_key(tsk: pysequoia.Tsk) -> None:
    with pytest.raises(KeyRefused, match="secret"):
        binary_key(str(tsk).encode())

"""SenderAuthenticator's DKIM decisions, with keys served through the dnsfunc seam."""

from __future__ import annotations

import json

import pytest

from gateway.errors import (
    BadSignature,
    DnsTemporaryFailure,
    MultipleFrom,
    NoSignature,
    NotAligned,
)
from gateway.ingest.senderauth import MAX_SIGNATURES, SenderAuthenticator
from gateway.model import Mailbox
from tests.fixtures.dkimkeys import DkimKey, FakeDns, generate_key, sign


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return generate_key()


@pytest.fixture
def fake_dns(key: DkimKey) -> FakeDns:
    fake = FakeDns()
    for domain in (b"example.org", b"other.org"):
        fake.records[b"sel._domainkey." + domain + b"."] = key.txt_record.encode()
    return fake


def _message(sender: bytes = b"alice@example.org") -> bytes:
    return (
        b"From: " + sender + b"\r\nTo: depot@court.example\r\nSubject: dossier\r\n"
        b"Message-ID: <1@example.org>\r\n\r\nBonjour\r\n"
    )


def test_senderauth_dkim_second_signature_aligned_passes(fake_dns: FakeDns, key: DkimKey) -> None:
    raw = sign(_message(), b"sel", b"example.org", key.private_pem)
    raw = sign(raw, b"sel", b"other.org", key.private_pem)  # topmost, not aligned
    verdict = SenderAuthenticator(fake_dns).authenticate(raw)
    assert (verdict.dkim_result, verdict.dkim_domain, verdict.aligned) == (
        "pass",
        "example.org",
        True,
    )


def test_senderauth_dkim_temporary_failure_propagates(fake_dns: FakeDns, key: DkimKey) -> None:
    fake_dns.failing.add(b"sel._domainkey.example.org.")
    raw = sign(_message(), b"sel", b"example.org", key.private_pem)
    with pytest.raises(DnsTemporaryFailure):
        SenderAuthenticator(fake_dns).authenticate(raw)


def test_senderauth_dkim_temporary_failure_beats_unaligned(fake_dns: FakeDns, key: DkimKey) -> None:
    # The aligned signature might have verified: refusing permanently would be wrong.
    fake_dns.failing.add(b"sel._domainkey.example.org.")
    raw = sign(_message(), b"sel", b"example.org", key.private_pem)
    raw = sign(raw, b"sel", b"other.org", key.private_pem)
    with pytest.raises(DnsTemporaryFailure):
        SenderAuthenticator(fake_dns).authenticate(raw)


def test_senderauth_dkim_signature_count_is_bounded(fake_dns: FakeDns, key: DkimKey) -> None:
    raw = _message()
    for index in range(MAX_SIGNATURES + 3):
        raw = sign(raw, f"s{index}".encode(), b"other.org", key.private_pem)
    with pytest.raises(BadSignature):
        SenderAuthenticator(fake_dns).authenticate(raw)
    assert len(fake_dns.asked) == MAX_SIGNATURES


def test_senderauth_dkim_malformed_signature_header(fake_dns: FakeDns) -> None:
    raw = b"DKIM-Signature: v=1; garbage\r\n" + _message()
    with pytest.raises(BadSignature):
        SenderAuthenticator(fake_dns).authenticate(raw)


def test_senderauth_dkim_unaligned_message_names_domains(fake_dns: FakeDns, key: DkimKey) -> None:
    raw = sign(_message(), b"sel", b"other.org", key.private_pem)
    with pytest.raises(NotAligned) as caught:
        SenderAuthenticator(fake_dns).authenticate(raw)
    assert caught.value.message == (
        "DKIM signature from d=other.org is not aligned with From: domain example.org"
    )


def test_senderauth_dkim_from_checked_before_dkim(fake_dns: FakeDns) -> None:
    with pytest.raises(MultipleFrom):
        SenderAuthenticator(fake_dns).authenticate(_message(b"a@example.org, b@example.org"))
    assert fake_dns.asked == []


def test_senderauth_dkim_missing_signature(fake_dns: FakeDns) -> None:
    with pytest.raises(NoSignature):
        SenderAuthenticator(fake_dns).authenticate(_message())


@pytest.mark.parametrize(
    ("signer", "failing", "expected"),
    [
        (None, False, ("none", None, False)),
        (b"example.org", False, ("pass", "example.org", True)),
        (b"other.org", False, ("pass", "other.org", False)),
        (b"unpublished.org", False, ("fail", "unpublished.org", False)),
        (b"example.org", True, ("skipped", "example.org", False)),
    ],
)
def test_senderauth_dkim_optional_never_refuses(
    fake_dns: FakeDns,
    key: DkimKey,
    signer: bytes | None,
    failing: bool,
    expected: tuple[str, str | None, bool],
) -> None:
    raw = _message() if signer is None else sign(_message(), b"sel", signer, key.private_pem)
    if failing:
        fake_dns.failing.add(b"sel._domainkey." + (signer or b"") + b".")
    verdict = SenderAuthenticator(fake_dns, require_dkim=False).authenticate(raw)
    assert (verdict.dkim_result, verdict.dkim_domain, verdict.aligned) == expected
    assert verdict.from_address == Mailbox("alice", "example.org")


def test_senderauth_dkim_verdict_as_dict_is_json(fake_dns: FakeDns, key: DkimKey) -> None:
    raw = sign(_message(), b"sel", b"example.org", key.private_pem)
    verdict = SenderAuthenticator(fake_dns).authenticate(raw)
    assert json.loads(json.dumps(verdict.as_dict())) == {
        "from_address": "alice@example.org",
        "dkim_result": "pass",
        "dkim_domain": "example.org",
        "dkim_selector": "sel",
        "aligned": True,
        "reason": "DKIM signature from d=example.org verifies and is aligned",
    }

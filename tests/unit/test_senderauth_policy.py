"""The signature policy (SPEC section 4): which verifying DKIM signatures count, and the reason."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dkim
import pytest

from gateway.errors import (
    BadSignature,
    BodyLengthLimited,
    ConfigError,
    DnsTemporaryFailure,
    HeaderNotSigned,
    NotAligned,
    WeakAlgorithm,
    WeakKey,
)
from gateway.ingest.senderauth import MIN_RSA_BITS, SenderAuthenticator, SignaturePolicy
from gateway.settings import load_settings
from tests.fixtures.dkimkeys import DkimKey, FakeDns, generate_key

SIGNED = (b"from", b"to", b"subject", b"date", b"message-id")
HEAD = (
    b"From: Alice <alice@example.org>\r\nTo: depot@court.example\r\n"
    b"Subject: Compte de gestion [7K3QD-M2X9A]\r\nDate: Mon, 1 Jul 2024 10:00:00 +0200\r\n"
    b"Message-ID: <1@example.org>\r\n"
)
MESSAGE = HEAD + b"\r\nBonjour\r\n"
FORGED_PART = (
    b"--frontier\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="forged.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSVFT0YK\r\n--frontier--\r\n"
)


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return generate_key()


@pytest.fixture
def fake_dns(key: DkimKey) -> FakeDns:
    fake = FakeDns()
    for domain in (b"example.org", b"other.org"):
        fake.records[b"sel._domainkey." + domain + b"."] = key.txt_record.encode()
    return fake


def _sign(
    raw: bytes,
    key: DkimKey,
    *,
    domain: bytes = b"example.org",
    selector: bytes = b"sel",
    headers: Sequence[bytes] = SIGNED,
    **options: object,
) -> bytes:
    signature: bytes = dkim.sign(
        raw, selector, domain, key.private_pem, include_headers=list(headers), **options
    )
    return signature + raw


def _plain_dkimpy(raw: bytes, dns: FakeDns, minkey: int = 1024) -> bool:
    """Plain dkimpy's verdict on the topmost signature: shows the attack is DKIM-valid."""
    return bool(dkim.DKIM(raw, minkey=minkey).verify(idx=0, dnsfunc=dns))


def test_senderauth_policy_length_tag_with_appended_forged_pdf_refused(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # The signer hashed l=2 bytes of an empty body; the attacker appends a part.
    signed = _sign(HEAD + b"\r\n", key, length=True)
    assert b"l=2;" in signed
    forged = (
        signed.replace(b"\r\n\r\n", b'\r\nContent-Type: multipart/mixed; boundary="frontier"'
                       b"\r\n\r\n", 1)
        + b"\r\n" + FORGED_PART  # the body still starts with the 2 bytes signed
    )  # fmt: skip
    assert _plain_dkimpy(forged, fake_dns)
    fake_dns.asked.clear()
    with pytest.raises(BodyLengthLimited, match=r"d=example\.org: l= \(body length\) not accepted"):
        SenderAuthenticator(fake_dns).authenticate(forged)
    assert fake_dns.asked == []  # refused by its tags: no key lookup for it


def test_senderauth_policy_length_tag_does_not_count_but_a_full_signature_does(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    raw = _sign(_sign(MESSAGE, key), key, length=True)  # l= topmost
    verdict = SenderAuthenticator(fake_dns).authenticate(raw)
    assert (verdict.dkim_result, verdict.dkim_domain, verdict.aligned) == (
        "pass",
        "example.org",
        True,
    )


def test_senderauth_policy_rsa_sha1_refused(key: DkimKey, fake_dns: FakeDns) -> None:
    raw = _sign(MESSAGE, key, signature_algorithm=b"rsa-sha1")
    assert _plain_dkimpy(raw, fake_dns)
    fake_dns.asked.clear()
    with pytest.raises(WeakAlgorithm) as caught:
        SenderAuthenticator(fake_dns).authenticate(raw)
    assert caught.value.message == (
        "DKIM signature from d=example.org: rsa-sha1 not accepted (RFC 8301)"
    )
    assert fake_dns.asked == []


@pytest.mark.parametrize("bits", [512, 1023])
def test_senderauth_policy_rsa_key_under_1024_bits_refused(fake_dns: FakeDns, bits: int) -> None:
    small = generate_key(bits)
    fake_dns.records[b"small._domainkey.example.org."] = small.txt_record.encode()
    raw = _sign(MESSAGE, small, selector=b"small")
    assert _plain_dkimpy(raw, fake_dns, minkey=0)  # the signature itself is good
    with pytest.raises(WeakKey) as caught:
        SenderAuthenticator(fake_dns).authenticate(raw)
    assert caught.value.message == (
        f"DKIM signature from d=example.org: RSA key of {bits} bits not accepted, "
        f"{MIN_RSA_BITS} at least (RFC 8301)"
    )
    # A small key fails even when the signature is broken: it could never count.
    with pytest.raises(WeakKey):
        SenderAuthenticator(fake_dns).authenticate(raw.replace(b"Bonjour", b"Bonsoir"))


def test_senderauth_policy_rsa_key_of_1024_bits_counts(key: DkimKey, fake_dns: FakeDns) -> None:
    raw = _sign(MESSAGE, key)
    assert SenderAuthenticator(fake_dns).authenticate(raw).dkim_result == "pass"


def test_senderauth_policy_from_only_signature_refused_naming_subject(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    raw = _sign(MESSAGE, key, headers=[b"from"])
    assert _plain_dkimpy(raw, fake_dns)
    with pytest.raises(HeaderNotSigned) as caught:
        SenderAuthenticator(fake_dns).authenticate(raw)
    assert caught.value.message == (
        "DKIM signature from d=example.org: does not sign the Subject header"
    )


def test_senderauth_policy_subject_prepended_above_a_signed_one_refused(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # dkimpy signs the bottom-most Subject; the gateway reads the topmost one.
    signed = _sign(MESSAGE, key)
    forged = b"Subject: [MALLORY-CODE]\r\n" + signed
    assert _plain_dkimpy(forged, fake_dns)
    with pytest.raises(HeaderNotSigned, match=r"does not sign every Subject header \(2 in"):
        SenderAuthenticator(fake_dns).authenticate(forged)


def test_senderauth_policy_oversigned_subject_counts_and_resists_addition(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    signed = _sign(MESSAGE, key, headers=[*SIGNED, b"subject"])
    assert SenderAuthenticator(fake_dns).authenticate(signed).dkim_result == "pass"
    with pytest.raises(BadSignature):
        SenderAuthenticator(fake_dns).authenticate(b"Subject: [MALLORY-CODE]\r\n" + signed)


def test_senderauth_policy_configured_headers(key: DkimKey, fake_dns: FakeDns) -> None:
    raw = _sign(MESSAGE, key, headers=[b"from", b"subject"])
    assert SenderAuthenticator(fake_dns).authenticate(raw).dkim_result == "pass"
    strict = SenderAuthenticator(fake_dns, signed_headers=["From", "Subject", "To"])
    with pytest.raises(HeaderNotSigned, match="does not sign the To header"):
        strict.authenticate(raw)


def test_senderauth_policy_from_is_always_required() -> None:
    assert SignaturePolicy.from_names(["Subject", "subject"]).signed_headers == (
        b"from",
        b"subject",
    )
    assert SignaturePolicy().signed_headers == (b"from", b"subject")


def test_senderauth_policy_aligned_refusal_is_the_reason_given(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # The aligned signature's rule is what its sender can fix; the unaligned one is noise.
    raw = _sign(MESSAGE, key, domain=b"other.org")
    raw = _sign(raw, key, signature_algorithm=b"rsa-sha1")
    with pytest.raises(WeakAlgorithm, match=r"d=example\.org"):
        SenderAuthenticator(fake_dns).authenticate(raw)


def test_senderauth_policy_unaligned_signature_still_not_aligned(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    raw = _sign(MESSAGE, key, domain=b"other.org", signature_algorithm=b"rsa-sha1")
    raw = _sign(raw, key, domain=b"other.org")
    with pytest.raises(NotAligned):
        SenderAuthenticator(fake_dns).authenticate(raw)


def test_senderauth_policy_dns_failure_beats_a_refused_signature(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # The other signature might verify once DNS answers: refusing now would be wrong.
    fake_dns.failing.add(b"good._domainkey.example.org.")
    fake_dns.records[b"good._domainkey.example.org."] = key.txt_record.encode()
    raw = _sign(MESSAGE, key, selector=b"good")
    raw = _sign(raw, key, length=True)
    with pytest.raises(DnsTemporaryFailure):
        SenderAuthenticator(fake_dns).authenticate(raw)


def test_senderauth_policy_optional_mode_never_passes_a_refused_signature(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    raw = _sign(MESSAGE, key, length=True)
    verdict = SenderAuthenticator(fake_dns, require_dkim=False).authenticate(raw)
    assert (verdict.dkim_result, verdict.dkim_domain, verdict.aligned) == (
        "fail",
        "example.org",
        False,
    )
    assert "l= (body length) not accepted" in verdict.reason


def _settings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_senderauth_policy_setting_default_and_override(tmp_path: Path) -> None:
    assert load_settings(_settings_file(tmp_path, ""), {}).auth.signed_headers == [
        "from",
        "subject",
    ]
    configured = load_settings(
        _settings_file(tmp_path, '[auth]\nsigned_headers = ["From", " Subject ", "To", "to"]\n'),
        {},
    )
    assert configured.auth.signed_headers == ["from", "subject", "to"]
    env = {"GATEWAY__AUTH__SIGNED_HEADERS": '["from", "subject", "date"]'}
    from_env = load_settings(_settings_file(tmp_path, ""), env)
    assert from_env.auth.signed_headers == ["from", "subject", "date"]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ('["subject"]', "must include from"),
        ('["from", "sub ject"]', "not a header name"),
        ('["from", "subject:"]', "not a header name"),
        ('["from", ""]', "not a header name"),
    ],
)
def test_senderauth_policy_setting_refused(tmp_path: Path, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"auth\.signed_headers: .*{named}"):
        load_settings(_settings_file(tmp_path, f"[auth]\nsigned_headers = {value}\n"), {})

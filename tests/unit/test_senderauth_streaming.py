"""The streaming body hash gives plain dkimpy's verdicts, in a fraction of its memory."""

from __future__ import annotations

import base64
import tracemalloc
from collections.abc import Callable

import dkim
import pytest

from gateway.adapters.dkimpy import StreamingDKIM
from gateway.errors import (
    BadSignature,
    BodyLengthLimited,
    DnsTemporaryFailure,
    NoSignature,
    WeakAlgorithm,
)
from gateway.ingest.senderauth import SenderAuthenticator, single_from
from gateway.model import Mailbox
from tests.fixtures.dkimkeys import DkimKey, FakeDns, generate_key

SIGNED = [b"from", b"to", b"subject"]
CANONICALIZATIONS = [
    (b"simple", b"simple"),
    (b"relaxed", b"relaxed"),
    (b"relaxed", b"simple"),
    (b"simple", b"relaxed"),
]


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return generate_key()


@pytest.fixture
def fake_dns(key: DkimKey) -> FakeDns:
    fake = FakeDns()
    fake.records[b"sel._domainkey.example.org."] = key.txt_record.encode()
    return fake


def _message(body: bytes = b"Bonjour,\r\n\r\nci-joint  la piece.\t\r\n") -> bytes:
    return (
        b"From: Alice <alice@example.org>\r\nTo: depot@court.example\r\n"
        b"Subject: dossier 2024/123\r\nMessage-ID: <1@example.org>\r\n\r\n" + body
    )


def _sign(
    raw: bytes,
    key: DkimKey,
    canonicalize: tuple[bytes, bytes] = (b"relaxed", b"simple"),
    *,
    algorithm: bytes = b"rsa-sha256",
    length: bool = False,
) -> bytes:
    signature: bytes = dkim.sign(
        raw,
        b"sel",
        b"example.org",
        key.private_pem,
        canonicalize=canonicalize,
        include_headers=SIGNED,
        length=length,
        signature_algorithm=algorithm,
    )
    return signature + raw


def _ours(raw: bytes, dns: FakeDns) -> str:
    return SenderAuthenticator(dns, require_dkim=False).authenticate(raw).dkim_result


def _dkimpy(raw: bytes, dns: FakeDns) -> str:
    """The verdict of the topmost signature as SenderAuthenticator got it from plain dkimpy."""
    return _verdict(dkim.DKIM(raw), dns)


def _streaming(raw: bytes, dns: FakeDns) -> str:
    """The streaming verifier's verdict on the topmost signature, before the gateway's policy."""
    return _verdict(StreamingDKIM(raw, logger=dkim.get_default_logger()), dns)


def _verdict(verifier: dkim.DKIM, dns: FakeDns) -> str:
    try:
        return "pass" if verifier.verify(idx=0, dnsfunc=dns) else "fail"
    except (dkim.DKIMException, ValueError, TypeError, IndexError, KeyError):
        return "fail"


# Changes a relay might make after signing; some break the signature, some do not.
CHANGES: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda raw: raw,
    "body word": lambda raw: raw.replace(b"Bonjour", b"Bonsoir"),
    "signed header": lambda raw: raw.replace(b"dossier 2024/123", b"dossier 2024/124"),
    "unsigned header": lambda raw: raw.replace(b"<1@example.org>", b"<2@example.org>"),
    "empty lines appended": lambda raw: raw + b"\r\n\r\n\r\n",
    "whitespace lines appended": lambda raw: raw + b" \r\n\t\r\n",
    "text appended": lambda raw: raw + b"-- \r\nliste de diffusion\r\n",
    "trailing whitespace": lambda raw: raw.replace(b"Bonjour,\r\n", b"Bonjour, \t\r\n"),
    "whitespace run": lambda raw: raw.replace(b"la piece", b"la \t piece"),
    "whitespace removed": lambda raw: raw.replace(b"ci-joint  la", b"ci-joint la"),
    "final CRLF removed": lambda raw: raw[:-2],
    "header folded": lambda raw: raw.replace(b"Subject: dossier", b"Subject:\r\n dossier"),
}


@pytest.mark.parametrize("canonicalize", CANONICALIZATIONS, ids=lambda c: b"/".join(c).decode())
@pytest.mark.parametrize("change", list(CHANGES))
def test_senderauth_streaming_verdict_equals_dkimpy(
    key: DkimKey, fake_dns: FakeDns, canonicalize: tuple[bytes, bytes], change: str
) -> None:
    raw = CHANGES[change](_sign(_message(), key, canonicalize))
    assert _ours(raw, fake_dns) == _dkimpy(raw, fake_dns)


def test_senderauth_streaming_changes_cover_pass_and_fail(key: DkimKey, fake_dns: FakeDns) -> None:
    # Guards the test above: it must compare both verdicts, not "fail" with "fail".
    raw = _sign(_message(), key, (b"relaxed", b"relaxed"))
    verdicts = {name: _ours(change(raw), fake_dns) for name, change in CHANGES.items()}
    assert verdicts["none"] == verdicts["empty lines appended"] == "pass"
    assert verdicts["whitespace run"] == "pass"
    assert verdicts["body word"] == verdicts["signed header"] == "fail"


@pytest.mark.parametrize("algorithm", [b"rsa-sha256", b"rsa-sha1"])
def test_senderauth_streaming_hash_algorithms(
    key: DkimKey, fake_dns: FakeDns, algorithm: bytes
) -> None:
    raw = _sign(_message(), key, algorithm=algorithm)
    tampered = raw.replace(b"piece", b"pi\xe8ce")
    assert _streaming(raw, fake_dns) == _dkimpy(raw, fake_dns) == "pass"
    assert _streaming(tampered, fake_dns) == _dkimpy(tampered, fake_dns) == "fail"
    if algorithm == b"rsa-sha256":
        assert _ours(raw, fake_dns) == "pass"
        with pytest.raises(BadSignature):
            SenderAuthenticator(fake_dns).authenticate(tampered)
    else:  # the body hash is right, and the policy still refuses it (RFC 8301)
        with pytest.raises(WeakAlgorithm):
            SenderAuthenticator(fake_dns).authenticate(raw)


@pytest.mark.parametrize("canonicalize", CANONICALIZATIONS, ids=lambda c: b"/".join(c).decode())
def test_senderauth_streaming_length_tag(
    key: DkimKey, fake_dns: FakeDns, canonicalize: tuple[bytes, bytes]
) -> None:
    raw = _sign(_message(), key, canonicalize, length=True)
    assert b" l=" in raw or b";l=" in raw or b"\tl=" in raw
    appended = raw + b"-- \r\nappended by a mailing list\r\n"
    changed = raw.replace(b"Bonjour", b"Bonsoir")
    for candidate, expected in ((raw, "pass"), (appended, "pass"), (changed, "fail")):
        assert _streaming(candidate, fake_dns) == _dkimpy(candidate, fake_dns) == expected
        # Whatever the body hash says, the policy does not count an l= signature.
        assert _ours(candidate, fake_dns) == "fail"
        with pytest.raises(BodyLengthLimited):
            SenderAuthenticator(fake_dns).authenticate(candidate)


def test_senderauth_streaming_signatures_with_different_canonicalizations(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # Digests are cached per (canonicalization, a=, l=): each signature must get its own.
    raw = _message(b"a  b \r\n\r\n")
    for canonicalize in CANONICALIZATIONS:
        raw = _sign(raw, key, canonicalize)
    raw = _sign(raw, key, length=True)
    count = len(CANONICALIZATIONS) + 1
    verifier = StreamingDKIM(raw, logger=dkim.get_default_logger())
    assert [_verifies(verifier, idx, fake_dns) for idx in range(count)] == [True] * count
    tampered = StreamingDKIM(raw.replace(b"a  b", b"a  c"), logger=dkim.get_default_logger())
    assert [_verifies(tampered, idx, fake_dns) for idx in range(count)] == [False] * count


def _verifies(verifier: StreamingDKIM, idx: int, dns: FakeDns) -> bool:
    try:
        return bool(verifier.verify(idx=idx, dnsfunc=dns))
    except dkim.DKIMException:
        return False


def test_senderauth_streaming_dns_failure_beats_body_mismatch(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # dkimpy looks the key up before hashing the body; the order must stay so.
    fake_dns.failing.add(b"sel._domainkey.example.org.")
    raw = _sign(_message(), key).replace(b"Bonjour", b"Bonsoir")
    with pytest.raises(DnsTemporaryFailure):
        SenderAuthenticator(fake_dns).authenticate(raw)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"bh=", b"l=; bh="),  # l= without digits: dkimpy's int() fails
        (b"bh=", b"bh=AAAA"),  # bh= that is not the digest
        (b"c=relaxed/simple", b"c=relaxed/fancy"),
    ],
)
def test_senderauth_streaming_malformed_body_tags_fail(
    key: DkimKey, fake_dns: FakeDns, old: bytes, new: bytes
) -> None:
    raw = _sign(_message(), key)
    assert old in raw
    broken = raw.replace(old, new, 1)
    assert _ours(broken, fake_dns) == _streaming(broken, fake_dns) == _dkimpy(broken, fake_dns)
    assert _dkimpy(broken, fake_dns) == "fail"


def test_senderauth_streaming_ed25519(fake_dns: FakeDns) -> None:
    nacl_signing = pytest.importorskip("nacl.signing")
    signing_key = nacl_signing.SigningKey.generate()
    private = base64.b64encode(bytes(signing_key))
    public = base64.b64encode(bytes(signing_key.verify_key))
    fake_dns.records[b"ed._domainkey.example.org."] = b"v=DKIM1; k=ed25519; p=" + public
    message = _message()
    signature: bytes = dkim.sign(
        message, b"ed", b"example.org", private,
        signature_algorithm=b"ed25519-sha256", include_headers=SIGNED,
    )  # fmt: skip
    raw = signature + message
    assert _ours(raw, fake_dns) == _dkimpy(raw, fake_dns) == "pass"
    tampered = raw.replace(b"Bonjour", b"Bonsoir")
    assert _ours(tampered, fake_dns) == _dkimpy(tampered, fake_dns) == "fail"


def test_senderauth_streaming_ed25519_key_record_same_verdict(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # Runs with or without pynacl: whatever dkimpy makes of an ed25519 key, we make too.
    fake_dns.records[b"sel._domainkey.example.org."] = (
        b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    )
    raw = _sign(_message(), key).replace(b"a=rsa-sha256", b"a=ed25519-sha256")
    assert _ours(raw, fake_dns) == _dkimpy(raw, fake_dns) == "fail"


def test_senderauth_streaming_header_block_starting_with_continuation(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    # dkimpy raised IndexError on this header block, which escaped as an internal error.
    raw = b" folded\r\n" + _sign(_message(), key)
    with pytest.raises(BadSignature):
        SenderAuthenticator(fake_dns).authenticate(raw)
    with pytest.raises(NoSignature):
        SenderAuthenticator(fake_dns).authenticate(b" folded\r\n" + _message())


def _large_signed(key: DkimKey, size: int) -> bytes:
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
    return _sign(_message(line * (size // len(line))), key, (b"relaxed", b"relaxed"))


def _traced_peak(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_senderauth_streaming_memory_does_not_grow_with_the_body(
    key: DkimKey, fake_dns: FakeDns
) -> None:
    raw = _large_signed(key, 8_000_000)
    authenticator = SenderAuthenticator(fake_dns)
    assert authenticator.authenticate(raw).dkim_result == "pass"
    # dkimpy alone peaks at several times the body; the streaming check at a few pieces.
    assert _traced_peak(lambda: authenticator.authenticate(raw)) < 4_000_000
    assert _traced_peak(lambda: single_from(raw)) < 1_000_000
    assert single_from(raw) == Mailbox("alice", "example.org")

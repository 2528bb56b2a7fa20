"""Sender authentication end to end: real DNS server on loopback, TxtResolver, dkimpy."""

from __future__ import annotations

import time

import dkim
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from gateway.errors import (
    BadSignature,
    DnsTemporaryFailure,
    MultipleFrom,
    NoSignature,
    NotAligned,
    WeakAlgorithm,
    WeakKey,
)
from gateway.ingest.dns import TxtResolver
from gateway.ingest.senderauth import SenderAuthenticator
from gateway.model import Mailbox
from tests.fixtures import dnsserver
from tests.fixtures.dkimkeys import DkimKey, generate_key, sign

dns_server = dnsserver.dns_server
DnsServer = dnsserver.DnsServer

TIMEOUT = 0.5


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return generate_key()


@pytest.fixture
def published(dns_server: DnsServer, key: DkimKey) -> DnsServer:
    dns_server.records["sel._domainkey.example.org"] = [key.txt_record]
    dns_server.records["sel._domainkey.other.org"] = [key.txt_record]
    return dns_server


@pytest.fixture
def authenticator(published: DnsServer) -> SenderAuthenticator:
    resolver = TxtResolver([published.address], timeout=TIMEOUT)
    return SenderAuthenticator(resolver.dkim_dnsfunc)


def _message(sender: bytes = b"alice@example.org", body: bytes = b"Bonjour\r\n") -> bytes:
    return (
        b"From: Alice <" + sender + b">\r\nTo: depot@court.example\r\n"
        b"Subject: dossier 2024/123\r\nDate: Mon, 1 Jul 2024 10:00:00 +0200\r\n"
        b"Message-ID: <abc@example.org>\r\n\r\n" + body
    )


def test_senderauth_dns_aligned_pass(
    authenticator: SenderAuthenticator, published: DnsServer, key: DkimKey
) -> None:
    verdict = authenticator.authenticate(sign(_message(), b"sel", b"example.org", key.private_pem))
    assert verdict.from_address == Mailbox("alice", "example.org")
    assert (verdict.dkim_result, verdict.dkim_domain, verdict.dkim_selector) == (
        "pass", "example.org", "sel",
    )
    assert verdict.aligned
    assert published.queries == ["sel._domainkey.example.org"]


def test_senderauth_dns_subdomain_from_parent_signer(
    authenticator: SenderAuthenticator, key: DkimKey
) -> None:
    raw = sign(_message(b"greffe@mail.example.org"), b"sel", b"example.org", key.private_pem)
    verdict = authenticator.authenticate(raw)
    assert (verdict.dkim_result, verdict.aligned) == ("pass", True)


def test_senderauth_dns_other_domain_not_aligned(
    authenticator: SenderAuthenticator, key: DkimKey
) -> None:
    with pytest.raises(NotAligned, match=r"d=other\.org"):
        authenticator.authenticate(sign(_message(), b"sel", b"other.org", key.private_pem))


def test_senderauth_dns_missing_signature(authenticator: SenderAuthenticator) -> None:
    with pytest.raises(NoSignature):
        authenticator.authenticate(_message())


def test_senderauth_dns_body_modified_after_signing(
    authenticator: SenderAuthenticator, key: DkimKey
) -> None:
    raw = sign(_message(), b"sel", b"example.org", key.private_pem)
    with pytest.raises(BadSignature):
        authenticator.authenticate(raw.replace(b"Bonjour", b"Bonsoir"))


def test_senderauth_dns_key_not_published(
    authenticator: SenderAuthenticator, key: DkimKey
) -> None:
    raw = sign(_message(), b"gone", b"example.org", key.private_pem)
    with pytest.raises(BadSignature):
        authenticator.authenticate(raw)


def test_senderauth_dns_wrong_key_published(
    authenticator: SenderAuthenticator, published: DnsServer, key: DkimKey
) -> None:
    published.records["sel._domainkey.example.org"] = [generate_key().txt_record]
    with pytest.raises(BadSignature):
        authenticator.authenticate(sign(_message(), b"sel", b"example.org", key.private_pem))


def test_senderauth_dns_timeout_is_temporary(
    authenticator: SenderAuthenticator, published: DnsServer, key: DkimKey
) -> None:
    published.blackhole = True
    raw = sign(_message(), b"sel", b"example.org", key.private_pem)
    started = time.monotonic()
    with pytest.raises(DnsTemporaryFailure):
        authenticator.authenticate(raw)
    assert time.monotonic() - started < TIMEOUT * 4
    assert published.queries  # the query did reach the server


def test_senderauth_dns_servfail_is_temporary(
    authenticator: SenderAuthenticator, published: DnsServer, key: DkimKey
) -> None:
    published.servfail.add("sel._domainkey.example.org")
    with pytest.raises(DnsTemporaryFailure):
        authenticator.authenticate(sign(_message(), b"sel", b"example.org", key.private_pem))


def test_senderauth_dns_two_from_addresses(
    authenticator: SenderAuthenticator, key: DkimKey
) -> None:
    raw = sign(
        _message(b"alice@example.org>, Bob <bob@example.org"), b"sel", b"example.org",
        key.private_pem,
    )
    with pytest.raises(MultipleFrom):
        authenticator.authenticate(raw)


def test_senderauth_dns_dkim_not_required(published: DnsServer, key: DkimKey) -> None:
    resolver = TxtResolver([published.address], timeout=TIMEOUT)
    lenient = SenderAuthenticator(resolver.dkim_dnsfunc, require_dkim=False)
    unsigned = lenient.authenticate(_message())
    assert (unsigned.dkim_result, unsigned.aligned) == ("none", False)
    broken = sign(_message(), b"sel", b"example.org", key.private_pem).replace(b"Bon", b"Mal")
    assert lenient.authenticate(broken).dkim_result == "fail"
    good = lenient.authenticate(sign(_message(), b"sel", b"example.org", key.private_pem))
    assert (good.dkim_result, good.aligned) == ("pass", True)


def test_senderauth_dns_2048_bit_key_split_strings(published: DnsServer) -> None:
    big = generate_key(2048)
    published.records["big._domainkey.example.org"] = [big.txt_record]
    resolver = TxtResolver([published.address], timeout=TIMEOUT)
    assert resolver.dkim_dnsfunc(b"big._domainkey.example.org.") == big.txt_record.encode()
    raw = sign(_message(), b"big", b"example.org", big.private_pem)
    assert SenderAuthenticator(resolver.dkim_dnsfunc).authenticate(raw).dkim_result == "pass"


def test_senderauth_dns_prefers_dkim_record(published: DnsServer, key: DkimKey) -> None:
    published.records["sel._domainkey.example.org"] = ["google-site-verification=x", key.txt_record]
    resolver = TxtResolver([published.address], timeout=TIMEOUT)
    assert resolver.dkim_dnsfunc(b"sel._domainkey.example.org.") == key.txt_record.encode()
    assert resolver.dkim_dnsfunc(b"nothing.example.org.") is None


def test_senderauth_dns_server_answers_over_tcp(published: DnsServer, key: DkimKey) -> None:
    query = dns.message.make_query("sel._domainkey.example.org", dns.rdatatype.TXT)
    host, port = published.address.rsplit(":", 1)
    response = dns.query.tcp(query, host, port=int(port), timeout=2)
    assert b"".join(response.answer[0][0].strings) == key.txt_record.encode()


def test_senderauth_dns_truncated_udp_answer_retried_over_tcp(published: DnsServer) -> None:
    # Larger than the resolver's EDNS payload: the server truncates over UDP
    # and the resolver must fetch the record over TCP.
    value = "v=DKIM1; k=rsa; p=" + "A" * 1500
    published.records["huge._domainkey.example.org"] = [value]
    query = dns.message.make_query("huge._domainkey.example.org", dns.rdatatype.TXT)
    host, port = published.address.rsplit(":", 1)
    response = dns.query.udp(query, host, port=int(port), timeout=2)
    assert response.flags & dns.flags.TC
    resolver = TxtResolver([published.address], timeout=TIMEOUT)
    assert resolver.dkim_dnsfunc(b"huge._domainkey.example.org.") == value.encode()


def test_senderauth_dns_rsa_key_under_1024_bits_refused(published: DnsServer) -> None:
    small = generate_key(768)
    published.records["small._domainkey.example.org"] = [small.txt_record]
    resolver = TxtResolver([published.address], timeout=TIMEOUT)
    raw = sign(_message(), b"small", b"example.org", small.private_pem)
    with pytest.raises(WeakKey, match="RSA key of 768 bits not accepted"):
        SenderAuthenticator(resolver.dkim_dnsfunc).authenticate(raw)
    assert "small._domainkey.example.org" in published.queries


def test_senderauth_dns_rsa_sha1_refused_without_a_lookup(
    authenticator: SenderAuthenticator, published: DnsServer, key: DkimKey
) -> None:
    message = _message()
    signature = dkim.sign(
        message, b"sel", b"example.org", key.private_pem,
        include_headers=[b"from", b"subject"], signature_algorithm=b"rsa-sha1",
    )  # fmt: skip
    with pytest.raises(WeakAlgorithm, match="rsa-sha1 not accepted"):
        authenticator.authenticate(signature + message)
    assert published.queries == []


@pytest.mark.parametrize(
    ("author", "signer"),
    [
        (b"greffier@justice.gouv.fr", b"gouv.fr"),  # an ICANN suffix of two labels
        (b"tuteur@cabinet-durand.avocat.fr", b"avocat.fr"),  # a private suffix in .fr
        (b"alice@alice.github.io", b"github.io"),
        (b"alice@alice.github.io", b"mallory.github.io"),  # a neighbour, not a parent
    ],
)
def test_senderauth_dns_public_suffix_signer_not_aligned(
    published: DnsServer, key: DkimKey, author: bytes, signer: bytes
) -> None:
    published.records[f"sel._domainkey.{signer.decode()}"] = [key.txt_record]
    resolver = TxtResolver([published.address], timeout=TIMEOUT)
    authenticator = SenderAuthenticator(resolver.dkim_dnsfunc)
    with pytest.raises(NotAligned, match=rf"d={signer.decode()} is not aligned"):
        authenticator.authenticate(sign(_message(author), b"sel", signer, key.private_pem))
    # The same message signed by the author's own organisation passes.
    own = author.split(b"@")[1]
    published.records[f"sel._domainkey.{own.decode()}"] = [key.txt_record]
    verdict = authenticator.authenticate(sign(_message(author), b"sel", own, key.private_pem))
    assert (verdict.dkim_result, verdict.aligned) == ("pass", True)

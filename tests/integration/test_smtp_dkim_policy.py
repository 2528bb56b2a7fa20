"""DKIM attacks through a real SMTP session: each gets 550 5.7.1 naming its rule, nothing is stored.

Every attack message is DKIM-valid for plain dkimpy (asserted), so only the
gateway's signature policy or alignment can refuse it; after each refusal the
same gateway still accepts a genuine submission, and its log holds no traceback.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path

import dkim
import pytest
from sqlalchemy import func, select

from gateway.ingest.dns import TxtResolver
from gateway.storage.models import Blob, Document, Submission
from tests.fixtures.dkimkeys import DkimKey, generate_key
from tests.fixtures.gatewayserver import (
    COURT,
    DOMAIN,
    GUARDIAN,
    MEASURE,
    SELECTOR,
    SENDER_DOMAIN,
    GatewayFactory,
    World,
    is_code_mail,
    make_world,
)
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.smtpsink import SmtpSink

PDF = plain_pdf(filler=2000)
CODE_RE = re.compile(r"\b([0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5})\b")
SIGNED = (b"from", b"to", b"subject", b"date", b"message-id")
FORGED_PART = (
    b"--frontier\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="forged.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQKJeLjz9MKMSAwIG9iajw8Pj5lbmRvYmoKdHJhaWxlcjw8Pj4KJSVFT0YK\r\n"
    b"--frontier--\r\n"
)


@pytest.fixture
def clean_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The gateway (in this process) logs no traceback while it refuses the attacks."""
    caplog.set_level(logging.INFO)
    yield
    assert not [record for record in caplog.records if record.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def stored(world: World) -> tuple[int, int, int]:
    """(submissions, documents, blobs) rows in the database."""
    with world.gw.services.db.transaction() as session:
        return (
            session.scalar(select(func.count(Submission.id))) or 0,
            session.scalar(select(func.count(Document.id))) or 0,
            session.scalar(select(func.count()).select_from(Blob)) or 0,
        )


def blob_files(world: World) -> list[Path]:
    return [path for path in world.gw.services.settings.blob_dir.rglob("*") if path.is_file()]


def message(
    code: str, *, sender: str = GUARDIAN, body: bytes = b"Bonjour,\r\n", head: bytes = b""
) -> bytes:
    """An unsigned depot@ message carrying `code` in its Subject."""
    return (
        f"From: {sender}\r\nTo: depot@{DOMAIN}\r\nSubject: Compte de gestion [{code}]\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {make_msgid(domain=SENDER_DOMAIN)}\r\n".encode()
        + head
        + b"\r\n"
        + body
    )


def signed(
    world: World,
    raw: bytes,
    *,
    domain: str = SENDER_DOMAIN,
    selector: str = SELECTOR,
    key: DkimKey | None = None,
    headers: Sequence[bytes] = SIGNED,
    **options: object,
) -> bytes:
    """`raw` with a DKIM-Signature made by dkimpy with the tags asked for, its key published."""
    if key is None:
        key = world.gw.publish_key(domain, selector)
    else:
        world.gw.dns.records[f"{selector}._domainkey.{domain}"] = [key.txt_record]
    signature: bytes = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        include_headers=list(headers),
        **options,
    )
    return signature + raw


def dkimpy_verifies(world: World, raw: bytes, minkey: int = 1024) -> bool:
    """Plain dkimpy's verdict on the topmost signature, its key read from the loopback DNS."""
    resolver = TxtResolver([world.gw.dns.address], timeout=1.0)
    return bool(dkim.verify(raw, dnsfunc=resolver.dkim_dnsfunc, minkey=minkey))


def assert_refused(world: World, raw: bytes, reason: str) -> None:
    """550 5.7.1 naming `reason`, and no submission, document or blob left behind."""
    code, text = world.gw.send(raw)
    assert (code, text[:5]) == (550, "5.7.1"), text
    assert reason in text, text
    assert stored(world) == (0, 0, 0)
    assert blob_files(world) == []


def assert_genuine_accepted(world: World, code: str) -> None:
    """The gateway is still up and still accepts the guardian's real filing."""
    raw = world.gw.message(
        subject=f"Compte de gestion [{code}]",
        attachments=[("compte.pdf", "application/pdf", PDF)],
    )
    status, text = world.gw.send(raw)
    assert status == 250, text
    assert stored(world)[0] == 1


def test_body_length_tag_then_appended_forged_pdf_refused(world: World, clean_log: None) -> None:
    code = world.request_code("compte")
    # The guardian's signer hashed l=2 bytes: the canonical empty body.
    original = signed(world, message(code, body=b""), length=True)
    assert b"l=2;" in original
    forged = (
        original.replace(
            b"\r\n\r\n", b'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; '
            b'boundary="frontier"\r\n\r\n', 1,
        )
        + b"\r\n" + FORGED_PART
    )  # fmt: skip
    assert dkimpy_verifies(world, forged)
    assert_refused(world, forged, "l= (body length) not accepted")
    assert_genuine_accepted(world, code)


def test_rsa_sha1_signature_refused(world: World, clean_log: None) -> None:
    code = world.request_code("compte")
    raw = signed(world, message(code), signature_algorithm=b"rsa-sha1")
    assert dkimpy_verifies(world, raw)
    assert_refused(world, raw, f"d={SENDER_DOMAIN}: rsa-sha1 not accepted (RFC 8301)")
    assert_genuine_accepted(world, code)


def test_rsa_key_under_1024_bits_refused(world: World, clean_log: None) -> None:
    code = world.request_code("compte")
    raw = signed(world, message(code), selector="weak", key=generate_key(768))
    assert dkimpy_verifies(world, raw, minkey=512)  # a good signature, by a weak key
    assert_refused(world, raw, "RSA key of 768 bits not accepted, 1024 at least (RFC 8301)")
    assert_genuine_accepted(world, code)


def test_from_only_signature_with_code_in_subject_refused(world: World, clean_log: None) -> None:
    code = world.request_code("compte")
    raw = signed(world, message(code), headers=[b"from"])
    assert dkimpy_verifies(world, raw)
    assert_refused(world, raw, "does not sign the Subject header")
    assert_genuine_accepted(world, code)


def test_code_subject_prepended_above_signed_subject_refused(
    world: World, clean_log: None
) -> None:
    # A guardian's signed mail, replayed with a Subject on top: dkimpy verifies
    # the bottom Subject, the gateway reads the top one.
    code = world.request_code("compte")
    replayed = signed(world, message(code).replace(f"[{code}]".encode(), b"Bonjour"))
    forged = f"Subject: Compte de gestion [{code}]\r\n".encode() + replayed
    assert dkimpy_verifies(world, forged)
    assert_refused(world, forged, "does not sign every Subject header (2 in the message)")
    assert_genuine_accepted(world, code)


@pytest.mark.parametrize(
    ("address", "suffix"),
    [
        ("greffier@justice.gouv.fr", "gouv.fr"),  # an ICANN suffix of two labels
        ("tuteur@cabinet-durand.avocat.fr", "avocat.fr"),  # a private suffix under .fr
        ("tuteur@alice.github.io", "github.io"),
    ],
)
def test_public_suffix_signer_not_aligned(
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    clean_log: None,
    address: str,
    suffix: str,
) -> None:
    # The old rule took any parent of two labels for the organisation.
    world = make_world(smtp_sink, gateway_factory, court_key)
    world.gw.services.admin.add_registration(COURT, MEASURE, address, "test")
    own = address.split("@")[1]
    code = request_code_for(world, address, own)
    raw = signed(world, message(code, sender=address), domain=suffix)
    assert dkimpy_verifies(world, raw)
    assert_refused(world, raw, f"d={suffix} is not aligned with From: domain {own}")
    status, text = world.gw.send(signed(world, message(code, sender=address), domain=own))
    assert status == 250, text


def request_code_for(world: World, address: str, sign_domain: str) -> str:
    """Ask codes@ for a code as `address`, signed by `sign_domain`; read it from the relay sink."""
    before = len(world.sink.messages)
    raw = world.gw.message(
        sender=address, to=f"codes@{DOMAIN}", subject=f"CODE {COURT} {MEASURE} compte",
        sign_domain=sign_domain,
    )  # fmt: skip
    status, text = world.gw.send(raw, rcpt=f"codes@{DOMAIN}", mail_from=address)
    assert status == 250, text
    # The address's registration notice may arrive with it: pick the code's mail.
    mail = world.sink.wait_for_mail(is_code_mail, start=before, timeout=20)
    assert mail[1] == [address]
    parsed = email.message_from_bytes(mail[2], policy=email.policy.default)
    part = parsed.get_body(("plain",))
    assert isinstance(part, email.message.EmailMessage)
    found = CODE_RE.search(str(part.get_content()))
    assert found, mail[2][:2000]
    return found.group(1)


def test_configured_signed_headers_enforced(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, court_key: CourtKey, clean_log: None
) -> None:
    world = make_world(
        smtp_sink,
        gateway_factory,
        court_key,
        {"GATEWAY__AUTH__SIGNED_HEADERS": '["from", "subject", "date"]'},
    )
    code = world.request_code("compte")
    raw = signed(world, message(code), headers=[b"from", b"to", b"subject"])
    assert dkimpy_verifies(world, raw)
    assert_refused(world, raw, "does not sign the Date header")
    assert_genuine_accepted(world, code)

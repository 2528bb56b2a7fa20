"""Composed mail: DKIM verifies with the published key; receipts are PGP/MIME that gpg verifies."""

from __future__ import annotations

import email.policy
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import dkim
import jsonschema
import pytest

from gateway.app import Services
from gateway.bootstrap import initialise
from gateway.errors import ConfigError, InvalidAddress
from gateway.ingest.manifest import load_schema
from gateway.outbox.compose import MailComposer, format_fingerprint
from gateway.outbox.templates import Templates
from gateway.settings import Settings
from gateway.storage.crypto import GpgKeyring, ReceiptSigner
from gateway.wkd import wkd_hash

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
RECEIPT_VALUES = {
    "court": "TJ-PARIS",
    "measure": "12/345",
    "request_reference": "TJ-PARIS-2026-000001",
    "submission_reference": "TJ-PARIS-2026-000001/1",
    "received_at": "25/11/2026 à 09:30:00 UTC",
    "documents": "    1. compte de gestion.pdf\n       SHA-256 : " + "ab" * 32,
    "message_sha256": "cd" * 32,
    "documents_json": json.dumps(
        [{"name": "compte de gestion.pdf", "size": 5000, "sha256": "ab" * 32}]
    ),
}
REJECTION_VALUES = {
    "court": "TJ-PARIS",
    "court_name": "Tribunal judiciaire de Paris",
    "measure": "12/345",
    "reference": "TJ-PARIS-2026-000001",
    "reason": "pièce illisible",
    "notes": "",
    "code_request": "CODE TJ-PARIS 12/345",
}
CODE_VALUES = {
    "court": "TJ-PARIS",
    "measure": "12/345",
    "kind": "requête",
    "reference": "TJ-PARIS-2026-000001",
    "code": "7K3QD-M2X9A",
    "expires_at": "27/11/2026 à 09:30:00 UTC",
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A gateway home with its keys, as `gateway init` makes it (no database needed here)."""
    settings, _report = initialise(tmp_path_factory.mktemp("home") / "gateway.toml", environ={})
    return settings


@pytest.fixture(scope="module")
def composer(home: Settings) -> MailComposer:
    """The composer the gateway runs with, as the composition root builds it."""
    return Services(home, clock=lambda: NOW).composer


@pytest.fixture
def keyring(tmp_path: Path, home: Settings) -> Iterator[GpgKeyring]:
    ring = GpgKeyring(tmp_path / "gnupg")
    ring.import_public(home.signing_pub_file.read_text("ascii"))
    yield ring
    ring.close()


def published_dns(home: Settings) -> Callable[..., bytes | None]:
    record = f"v=DKIM1; k=rsa; p={home.dkim_pub_file.read_text('ascii').strip()}".encode()
    expected = f"{home.dkim_selector}._domainkey.{home.gateway.domain}."

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name.decode().rstrip(".") + "." == expected else None

    return lookup


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def signed_part(raw: bytes) -> tuple[bytes, str]:
    """Cut a multipart/signed message as a verifier does: the first part's exact bytes."""
    message = parse(raw)
    boundary = message.get_param("boundary")
    assert isinstance(boundary, str)
    delimiter = b"\r\n--" + boundary.encode()
    body = raw.split(b"\r\n\r\n", 1)[1]
    first = body.index(b"--" + boundary.encode() + b"\r\n") + len(boundary) + 4
    end = body.index(delimiter, first)
    part = body[first:end]
    signature = list(message.iter_parts())[1].get_content()
    return part, signature.decode("ascii")


def test_compose_code_verifies_with_published_dkim_key(
    composer: MailComposer, home: Settings
) -> None:
    raw = composer.compose("code", "tuteur@famille.example", **CODE_VALUES)

    assert dkim.verify(raw, dnsfunc=published_dns(home))
    signature = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "d=greffe.example" in signature and "s=greffe" in signature
    assert "c=relaxed/relaxed" in signature
    tags = re.search(r"h=([^;]+);", signature)
    assert tags is not None
    signed = {name.strip() for name in tags.group(1).replace("\r\n", "").split(":")}
    assert {"from", "to", "subject", "date", "message-id", "content-type", "mime-version"} <= signed


def test_compose_tampered_message_fails_dkim(composer: MailComposer, home: Settings) -> None:
    raw = composer.compose("code", "tuteur@famille.example", **CODE_VALUES)

    assert not dkim.verify(raw.replace(b"TJ-PARIS-2026-000001", b"TJ-PARIS-2026-000002"),
                           dnsfunc=published_dns(home))


def test_compose_headers_and_body(composer: MailComposer) -> None:
    raw = composer.compose("code", "Tuteur@Famille.example", **CODE_VALUES)
    message = parse(raw)

    assert message["From"] == "Passerelle du greffe <noreply@greffe.example>"
    assert message["To"] == "Tuteur@famille.example"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] == "Wed, 25 Nov 2026 09:30:00 +0000"
    assert re.fullmatch(r"<[0-9a-f]{32}@greffe\.example>", message["Message-ID"])
    assert message["Subject"] == "Votre numéro de saisie – mesure 12/345 (TJ-PARIS)"
    assert message.get_content_type() == "text/plain"
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert "7K3QD-M2X9A" in message.get_content()
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as it goes on the wire


def test_compose_receipt_is_pgp_mime_that_gpg_verifies(
    composer: MailComposer, home: Settings, keyring: GpgKeyring
) -> None:
    raw = composer.compose("receipt", "tuteur@famille.example", **RECEIPT_VALUES)
    message = parse(raw)

    assert message.get_content_type() == "multipart/signed"
    assert message.get_param("protocol") == "application/pgp-signature"
    assert str(message.get_param("micalg")).startswith("pgp-sha")
    part, signature = signed_part(raw)
    fingerprint = ReceiptSigner(home.signing_key_file.read_text("ascii")).fingerprint
    assert keyring.verify_detached(part, signature, fingerprint=fingerprint)
    assert not keyring.verify_detached(part.replace(b"TJ-PARIS", b"TJ-LYON"), signature)
    assert dkim.verify(raw, dnsfunc=published_dns(home))
    inner = next(message.iter_parts())
    assert inner.get_content_type() == "multipart/mixed"
    text_part, facts_part = inner.iter_parts()
    text = text_part.get_content()
    assert "compte de gestion.pdf" in text and "cd" * 32 in text
    # The text says where to get the key that signs it.
    assert format_fingerprint(fingerprint) in text
    assert "gpg --locate-keys noreply@greffe.example" in text
    assert "https://greffe.example/.well-known/openpgpkey/hu/" + wkd_hash("noreply") in text
    assert facts_part.get_content_type() == "application/json"
    assert facts_part.get_filename() == "accuse-de-reception.json"
    facts = json.loads(facts_part.get_content())
    jsonschema.validate(facts, load_schema("receipt"))
    assert facts["submission_reference"] == "TJ-PARIS-2026-000001/1"
    assert facts["received_at"] == "2026-11-25T09:30:00Z"
    assert facts["recipient"] == "tuteur@famille.example"
    assert facts["documents"] == [
        {"index": 1, "name": "compte de gestion.pdf", "size": 5000, "sha256": "ab" * 32}
    ]


def test_compose_receipt_queued_before_facts_is_signed_text(
    composer: MailComposer, keyring: GpgKeyring
) -> None:
    # An outbox row written before `documents_json` existed still composes, as before.
    values = {k: v for k, v in RECEIPT_VALUES.items() if k != "documents_json"}

    raw = composer.compose("receipt", "tuteur@famille.example", **values)

    inner = next(parse(raw).iter_parts())
    assert inner.get_content_type() == "text/plain"
    part, signature = signed_part(raw)
    assert keyring.verify_detached(part, signature)


def test_compose_any_kind_can_be_pgp_signed(home: Settings, keyring: GpgKeyring) -> None:
    composer = MailComposer(
        "greffe.example", "Greffe", "greffe", home.dkim_key_file.read_bytes(),
        Templates(home.templates_dir), ReceiptSigner(home.signing_key_file.read_text("ascii")),
        lambda: NOW, pgp_kinds=frozenset({"receipt", "state"}),
    )

    raw = composer.compose("state", "a@b.example", reference="R", status="x", submissions="-")

    part, signature = signed_part(raw)
    assert keyring.verify_detached(part, signature)


def test_compose_receipt_without_signer_refused(home: Settings) -> None:
    composer = MailComposer(
        home.gateway.domain,
        home.gateway.name,
        home.dkim_selector,
        home.dkim_key_file.read_bytes(),
        Templates(home.templates_dir),
        None,
        lambda: NOW,
    )

    with pytest.raises(ConfigError, match="signing key"):
        composer.compose("receipt", "tuteur@famille.example", **RECEIPT_VALUES)


def test_compose_from_names_the_courts_greffe(composer: MailComposer, home: Settings) -> None:
    raw = composer.compose("code", "tuteur@famille.example", **CODE_VALUES,
                           court_name="Tribunal judiciaire de Créteil")
    message = parse(raw)

    [sender] = message["From"].addresses
    assert sender.display_name == "Greffe du Tribunal judiciaire de Créteil"
    assert sender.addr_spec == "noreply@greffe.example"  # the address stays the gateway's
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # 7-bit: an encoded-word
    [from_line] = [line for line in head.split("\r\n") if line.startswith("From: ")]
    assert "=?utf-8?" in from_line and "Créteil" not in from_line
    assert dkim.verify(raw, dnsfunc=published_dns(home))


def test_compose_from_without_court_is_the_gateway(composer: MailComposer) -> None:
    raw = composer.compose("code", "tuteur@famille.example", **CODE_VALUES)

    assert parse(raw)["From"] == "Passerelle du greffe <noreply@greffe.example>"


def test_compose_court_name_cannot_inject_headers(composer: MailComposer) -> None:
    raw = composer.compose("code", "a@b.example", **CODE_VALUES,
                           court_name="Tribunal\r\nBcc: x@evil.example")
    message = parse(raw)

    assert message["Bcc"] is None
    assert message["From"].addresses[0].display_name == "Greffe du Tribunal Bcc: x@evil.example"


def test_compose_subject_value_cannot_inject_headers(composer: MailComposer) -> None:
    raw = composer.compose("rejection", "a@b.example",
                           **{**REJECTION_VALUES, "reference": "R\r\nBcc: x@evil.example"})
    message = parse(raw)

    assert message["Bcc"] is None
    assert message["Subject"] == "Requête R Bcc: x@evil.example rejetée"


@pytest.mark.parametrize("to", ["a@b.example\r\nBcc: x@evil.example", "a@b.example, c@d.example"])
def test_compose_recipient_must_be_one_mailbox(composer: MailComposer, to: str) -> None:
    with pytest.raises(InvalidAddress):
        composer.compose("rejection", to, reference="R", reason="x")


def test_compose_uses_operator_template(home: Settings, tmp_path: Path) -> None:
    (tmp_path / "state.txt").write_text(
        "Subject: Dossier $reference\n\nNous regrettons : $status.\n-- $gateway_name\n",
        encoding="utf-8",
    )
    composer = MailComposer(
        "greffe.example", "Greffe", "greffe", home.dkim_key_file.read_bytes(),
        Templates(tmp_path), None, lambda: NOW,
    )

    raw = composer.compose("state", "a@b.example", reference="R-9", status="hors délai",
                           submissions="-")
    message = parse(raw)

    assert message["Subject"] == "Dossier R-9"
    assert message.get_content().replace("\r\n", "\n") == (
        "Nous regrettons : hors délai.\n-- Greffe\n"
    )


def test_compose_bad_dkim_key_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DKIM"):
        MailComposer("greffe.example", "G", "greffe", b"not a key", Templates(tmp_path), None,
                     lambda: NOW)


def test_compose_repr_hides_keys(composer: MailComposer) -> None:
    assert "PRIVATE" not in repr(composer) and "greffe.example" in repr(composer)

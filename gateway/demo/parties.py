"""The demo's parties besides the gateway: the greffe's court key pair, and a guardian who signs.

The court key pair is made by gpg in a GnuPG home of the demo folder, as a
greffier would make it: only its public half is given to the gateway.  The
guardian's mail server is played by a DKIM key (made like the gateway's own)
whose public half the demo's loopback DNS server publishes, and dkimpy
signs each message with it, as the guardian's provider would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

import dkim
import gnupg
import pikepdf
from pikepdf import Dictionary, Name

from gateway.errors import KeyRefused
from gateway.storage.keys import generate_dkim_key

COURT = "TJ-DEMO"
COURT_NAME = "Tribunal judiciaire de démonstration"
GREFFE_UID = ("Greffe du TJ de démonstration", "greffe@tj-demo.example")
MEASURE = "21/00123"
GUARDIAN_DOMAIN = "exemple.fr"
GUARDIAN = f"tuteur@{GUARDIAN_DOMAIN}"
SELECTOR = "demo"
SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id")
PDF_NAME = "compte-de-gestion-2025.pdf"
# A Unix socket's path holds at most 107 bytes; gpg-agent puts its sockets in the home
# unless /run/user/<uid>/gnupg exists.
_SOCKET_PATH_MAX = 107
_LONGEST_SOCKET = "S.gpg-agent.browser"


@dataclass(frozen=True)
class CourtKeyPair:
    """The greffe's key pair: the secret half stays in `gnupghome`."""

    gnupghome: Path
    fingerprint: str
    armored_public: str


def make_court_key(gnupghome: Path) -> CourtKeyPair:
    """An ed25519 signing key with a cv25519 encryption subkey, made by gpg in `gnupghome`."""
    gpg = gnupg.GPG(gnupghome=str(gnupghome))
    name, email = GREFFE_UID
    spec = gpg.gen_key_input(
        key_type="EDDSA",
        key_curve="ed25519",
        key_usage="sign",
        subkey_type="ECDH",
        subkey_curve="cv25519",
        subkey_usage="encrypt",
        name_real=name,
        name_email=email,
        expire_date="0",
        no_protection=True,
    )
    result = gpg.gen_key(spec)
    if not result.fingerprint:
        hint = ""
        if len(str(gnupghome / _LONGEST_SOCKET)) > _SOCKET_PATH_MAX:
            hint = (
                f" ({gnupghome} is too long a path for gpg-agent's socket: "
                "set TMPDIR to a shorter folder)"
            )
        raise KeyRefused(f"gpg could not make the court's key pair{hint}")
    fingerprint = str(result.fingerprint).upper()
    return CourtKeyPair(gnupghome, fingerprint, str(gpg.export_keys(fingerprint)))


@dataclass
class Guardian:
    """A registered guardian whose provider signs outgoing mail with DKIM (d=exemple.fr)."""

    address: str = GUARDIAN
    domain: str = GUARDIAN_DOMAIN
    selector: str = SELECTOR
    private_pem: bytes = field(default=b"", repr=False)
    public_b64: str = ""

    @classmethod
    def with_new_key(cls) -> Guardian:
        private_pem, public_b64 = generate_dkim_key()
        return cls(private_pem=private_pem, public_b64=public_b64)

    @property
    def dkim_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dkim_record(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_b64}"

    def message(
        self,
        to: str,
        subject: str,
        body: str,
        attachments: list[tuple[str, bytes]] | None = None,
    ) -> bytes:
        """A message from the guardian, with PDF attachments, DKIM-signed: CRLF line ends."""
        message = EmailMessage()
        message["From"] = self.address
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=self.domain)
        message.set_content(body)
        for filename, content in attachments or []:
            message.add_attachment(
                content, maintype="application", subtype="pdf", filename=filename
            )
        raw = message.as_bytes(policy=SMTP)
        signature: bytes = dkim.sign(
            raw,
            self.selector.encode(),
            self.domain.encode(),
            self.private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return signature + raw


def demo_pdf() -> bytes:
    """A one-page PDF made in memory (Helvetica text), opened again to be sure it reads."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    page = pdf.pages[0]
    font = Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica)
    page.Resources = Dictionary(Font=Dictionary(F1=pdf.make_indirect(font)))
    page.Contents = pdf.make_stream(
        b"BT /F1 18 Tf 72 770 Td (Compte de gestion 2025) Tj ET\n"
        b"BT /F1 11 Tf 72 740 Td (Mesure 21/00123 - document de demonstration) Tj ET\n"
    )
    buffer = io.BytesIO()
    pdf.save(buffer, deterministic_id=True)
    data = buffer.getvalue()
    with pikepdf.open(io.BytesIO(data)) as check:
        if len(check.pages) != 1:
            raise ValueError("the demo PDF does not read back")
    return data
